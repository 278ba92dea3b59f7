# The modelcache image: cache-agent, csi-plugin and modelcache-controller,
# static binaries on a minimal base. The DaemonSet and the Deployment pick
# the binary with `command`.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -t ghcr.io/modelcache/modelcache:dev --build-arg VERSION=dev .
#
# The builder runs on the build machine's own platform and cross-compiles
# (GOOS/GOARCH from TARGETOS/TARGETARCH, CGO_ENABLED=0), so an arm64 image
# needs no emulation. Without a Docker engine, `make image` builds the same
# content for the same two platforms as an OCI image-layout tar
# (hack/image.sh): binaries, CA certificates, /etc/passwd, /tmp. The plugin
# mounts with mount(2), so no mount(8) or shell is needed.

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/ \
      ./cmd/cache-agent ./cmd/csi-plugin ./cmd/modelcache-controller

# distroless/static: CA certificates, /etc/passwd, /tmp, tzdata; no shell.
# Multi-platform itself, so each target platform gets its own base.
# Runs as root: the agent owns a hostPath cache and the plugin bind-mounts
# (the controller's Deployment sets runAsUser 65532, the nonroot user).
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/cache-agent /out/csi-plugin /out/modelcache-controller /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/cache-agent"]
CMD ["serve"]
