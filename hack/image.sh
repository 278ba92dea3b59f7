#!/usr/bin/env bash
# `make image`: builds the modelcache image (cache-agent, csi-plugin,
# modelcache-controller) for linux/amd64 and linux/arm64 as one OCI
# image-layout tar (an image index of one image per platform) without a
# Docker engine. Same content as the Dockerfile: static CGO_ENABLED=0
# binaries in /usr/local/bin, CA certificates, /etc/passwd, /tmp; nothing
# else (the plugin mounts with mount(2), no mount(8) needed).
#
#   hack/image.sh [REF [OUT.tar]]
#     REF  default ghcr.io/modelcache/modelcache:$VERSION
#     OUT  default _output/image.tar
#   IMAGE_ARCHS  GOARCH values to build, default "amd64 arm64"
# Import it with: ctr -n k8s.io images import OUT.tar (keeps the node's
# platform). Check it with: make image-check.
set -euo pipefail
umask 022 # file modes in the layer must not depend on the caller's umask

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=/usr/local/go/bin:$PATH
fi
# shellcheck source=hack/mkimage.sh
source "$REPO/hack/mkimage.sh"

VERSION=${VERSION:-$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo dev)}
REF=${1:-ghcr.io/modelcache/modelcache:$VERSION}
OUT=${2:-$REPO/_output/image.tar}
read -ra ARCHS <<<"${IMAGE_ARCHS:-amd64 arm64}"
# The commands in /usr/local/bin (internal/imagecheck's tests list the same).
CMDS=(cache-agent csi-plugin modelcache-controller)

# S3 endpoints are usually HTTPS: the agent needs the CA bundle.
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca ]] || {
	echo "image: $ca missing (apt-get install ca-certificates)" >&2
	exit 1
}

roots=()
for arch in "${ARCHS[@]}"; do
	root=$REPO/_output/image-rootfs-$arch
	rm -rf "$root"
	mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib/modelcache" "$root/run/modelcache"
	chmod 1777 "$root/tmp"
	(cd "$REPO" && GOOS=linux GOARCH=$arch CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X main.version=$VERSION" -o "$root/usr/local/bin/" "${CMDS[@]/#/./cmd/}")
	# A cheap guard here; make image-check opens the finished tar and checks
	# each ELF header.
	for b in "${CMDS[@]}"; do
		info=$(go version -m "$root/usr/local/bin/$b")
		if ! grep -qF 'CGO_ENABLED=0' <<<"$info" || ! grep -qE "GOARCH=$arch\$" <<<"$info"; then
			echo "image: $b is not a static linux/$arch build" >&2
			exit 1
		fi
	done
	cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
	roots+=("$arch=$root")
done

mkimage_multi "$REF" '["/usr/local/bin/cache-agent"]' '["serve"]' "$OUT" "${roots[@]}"
echo "image: $REF (${ARCHS[*]}) -> $OUT ($(du -h "$OUT" | cut -f1))"
