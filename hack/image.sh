#!/usr/bin/env bash
# `make image`: builds the modelcache image (cache-agent + csi-plugin) as an
# OCI image-layout tar without a Docker engine. Same content as the
# Dockerfile: static CGO_ENABLED=0 binaries in /usr/local/bin, CA
# certificates, /etc/passwd, /tmp; nothing else (the plugin mounts with
# mount(2), no mount(8) needed).
#
#   hack/image.sh [REF [OUT.tar]]
#     REF  default ghcr.io/modelcache/modelcache:$VERSION
#     OUT  default _output/image.tar
# Import it with: ctr -n k8s.io images import OUT.tar
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=/usr/local/go/bin:$PATH
fi
# shellcheck source=hack/mkimage.sh
source "$REPO/hack/mkimage.sh"

VERSION=${VERSION:-$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo dev)}
REF=${1:-ghcr.io/modelcache/modelcache:$VERSION}
OUT=${2:-$REPO/_output/image.tar}
ROOT=$REPO/_output/image-rootfs

rm -rf "$ROOT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/ssl/certs" "$ROOT/tmp" "$ROOT/var/lib/modelcache" "$ROOT/run/modelcache"
chmod 1777 "$ROOT/tmp"
(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
	-o "$ROOT/usr/local/bin/" ./cmd/cache-agent ./cmd/csi-plugin)
for b in cache-agent csi-plugin; do
	if ! go version -m "$ROOT/usr/local/bin/$b" | grep -qF 'CGO_ENABLED=0'; then
		echo "image: $b is not a static build" >&2
		exit 1
	fi
done
# S3 endpoints are usually HTTPS: the agent needs the CA bundle.
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca ]] || {
	echo "image: $ca missing (apt-get install ca-certificates)" >&2
	exit 1
}
cp "$ca" "$ROOT/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ROOT/etc/group"

mkimage "$REF" "$ROOT" '["/usr/local/bin/cache-agent"]' '["serve"]' "$OUT"
echo "image: $REF -> $OUT ($(du -h "$OUT" | cut -f1))"
