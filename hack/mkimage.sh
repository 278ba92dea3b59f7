#!/usr/bin/env bash
# Writes OCI images (an OCI image-layout tar, what `ctr images import` and
# `docker load` read) from directories, with tar and jq only: no Docker
# engine, no registry.
#
#   hack/mkimage.sh REF ROOTFS ENTRYPOINT_JSON CMD_JSON OUT.tar
#   hack/mkimage.sh localhost/modelcache:dev _output/rootfs '["/usr/local/bin/cache-agent"]' null img.tar
#
# Sourcing the file defines two functions:
#   mkimage REF ROOTFS ENTRYPOINT_JSON CMD_JSON OUT.tar
#     one linux image for the host's GOARCH (the arguments above); index.json
#     lists its manifest with its platform.
#   mkimage_multi REF ENTRYPOINT_JSON CMD_JSON OUT.tar ARCH=ROOTFS...
#     one linux image per ARCH (GOARCH names: amd64, arm64), each from its
#     own rootfs, under one image index; index.json points at that index, as
#     `docker buildx --output type=oci` does. `ctr images import` keeps the
#     host's platform unless given --all-platforms.
#
# Everything is reproducible: layers and the outer tar have sorted names,
# uid/gid 0 and mtime 0, and the JSON is compact with a fixed key order, so
# the same rootfs gives the same digests.
set -euo pipefail

# The helpers below run inside $(...), where set -e does not apply: each
# step ends in `|| return` so a failure reaches the caller.

# mkimage_blob DIR FILE: moves FILE into DIR/blobs/sha256 under its digest
# and prints a descriptor {digest, size} for jq --argjson.
mkimage_blob() {
	local dir=$1 f=$2 d s
	d=$(sha256sum "$f" | cut -d' ' -f1) || return
	s=$(stat -c %s "$f") || return
	mkdir -p "$dir/blobs/sha256" || return
	mv "$f" "$dir/blobs/sha256/$d" || return
	printf '{"digest":"sha256:%s","size":%s}\n' "$d" "$s"
}

# mkimage_platform ARCH: the OCI platform object of linux/ARCH. arm64 says
# variant v8, as Docker and containerd normalise it.
mkimage_platform() {
	case $1 in
	arm64) echo '{"architecture":"arm64","os":"linux","variant":"v8"}' ;;
	*) jq -cn --arg a "$1" '{architecture:$a, os:"linux"}' ;;
	esac
}

# mkimage_manifest DIR ROOTFS ARCH ENTRYPOINT_JSON CMD_JSON: writes the
# layer, config and manifest blobs of one linux/ARCH image into DIR and
# prints the manifest's descriptor, platform included.
mkimage_manifest() {
	local dir=$1 root=$2 arch=$3 ep=$4 cmd=$5 plat layer cfg man
	plat=$(mkimage_platform "$arch") || return
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$dir/layer" . || return
	layer=$(mkimage_blob "$dir" "$dir/layer") || return
	jq -cn --argjson p "$plat" --argjson l "$layer" --argjson ep "$ep" --argjson cmd "$cmd" \
		'$p + {created:"1970-01-01T00:00:00Z",
		  config:{Entrypoint:$ep, Cmd:$cmd, WorkingDir:"/",
		          Env:["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
		  rootfs:{type:"layers", diff_ids:[$l.digest]}}' >"$dir/config" || return
	cfg=$(mkimage_blob "$dir" "$dir/config") || return
	jq -cn --argjson c "$cfg" --argjson l "$layer" \
		'{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json",
		  config:({mediaType:"application/vnd.oci.image.config.v1+json"} + $c),
		  layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar"} + $l]}' >"$dir/manifest" || return
	man=$(mkimage_blob "$dir" "$dir/manifest") || return
	jq -cn --argjson m "$man" --argjson p "$plat" \
		'{mediaType:"application/vnd.oci.image.manifest.v1+json"} + $m + {platform:$p}'
}

# mkimage_layout DIR REF DESCRIPTOR OUT: names DESCRIPTOR REF in index.json
# and writes the layout in DIR to OUT.
mkimage_layout() {
	local dir=$1 ref=$2 desc=$3 out=$4
	jq -cn --argjson d "$desc" --arg ref "$ref" \
		'{schemaVersion:2, manifests:[$d + {annotations:{"io.containerd.image.name":$ref,
		  "org.opencontainers.image.ref.name":($ref|split(":")|last)}}]}' >"$dir/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
	mkdir -p "$(dirname "$out")"
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --mode=go-w,a+rX \
		-C "$dir" -cf "$out" oci-layout index.json blobs
}

mkimage() {
	local ref=$1 root=$2 ep=$3 cmd=$4 out=$5 arch w desc
	arch=$(go env GOARCH 2>/dev/null || echo amd64)
	w=$(mktemp -d)
	desc=$(mkimage_manifest "$w" "$root" "$arch" "$ep" "$cmd")
	mkimage_layout "$w" "$ref" "$desc" "$out"
	rm -rf "$w"
}

mkimage_multi() {
	local ref=$1 ep=$2 cmd=$3 out=$4 w pair d descs=() idx
	shift 4
	(($# > 0)) || {
		echo "mkimage_multi: no ARCH=ROOTFS given" >&2
		return 2
	}
	w=$(mktemp -d)
	for pair in "$@"; do
		d=$(mkimage_manifest "$w" "${pair#*=}" "${pair%%=*}" "$ep" "$cmd")
		descs+=("$d")
	done
	printf '%s\n' "${descs[@]}" | jq -cs \
		'{schemaVersion:2, mediaType:"application/vnd.oci.image.index.v1+json", manifests:.}' >"$w/index"
	idx=$(mkimage_blob "$w" "$w/index")
	idx=$(jq -c '{mediaType:"application/vnd.oci.image.index.v1+json"} + .' <<<"$idx")
	mkimage_layout "$w" "$ref" "$idx" "$out"
	rm -rf "$w"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	if (($# != 5)); then
		echo "usage: $0 REF ROOTFS ENTRYPOINT_JSON CMD_JSON OUT.tar" >&2
		exit 2
	fi
	mkimage "$@"
fi
