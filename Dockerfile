# The modelcache image: cache-agent and csi-plugin, static binaries on a
# minimal base. The DaemonSet picks the binary with `command`.
#
#   docker build -t ghcr.io/modelcache/modelcache:dev --build-arg VERSION=dev .
#
# Without a Docker engine, `make image` builds the same content as an OCI
# image-layout tar (hack/image.sh): binaries, CA certificates, /etc/passwd,
# /tmp. The plugin mounts with mount(2), so no mount(8) or shell is needed.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ ./cmd/cache-agent ./cmd/csi-plugin

# distroless/static: CA certificates, /etc/passwd, /tmp, tzdata; no shell.
# Runs as root: the agent owns a hostPath cache and the plugin bind-mounts.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/cache-agent /out/csi-plugin /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/cache-agent"]
CMD ["serve"]
