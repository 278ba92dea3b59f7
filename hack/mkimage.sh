#!/usr/bin/env bash
# Writes a one-layer OCI image (an OCI image-layout tar, what
# `ctr images import` and `docker load` read) from a directory, with tar and
# jq only: no Docker engine, no registry.
#
#   hack/mkimage.sh REF ROOTFS ENTRYPOINT_JSON CMD_JSON OUT.tar
#   hack/mkimage.sh localhost/modelcache:dev _output/rootfs '["/usr/local/bin/cache-agent"]' null img.tar
#
# The layer is reproducible: sorted names, uid/gid 0, mtime 0. Sourcing the
# file defines the function mkimage with the same arguments.
set -euo pipefail

mkimage() {
	local ref=$1 root=$2 ep=$3 cmd=$4 out=$5 arch w
	arch=$(go env GOARCH 2>/dev/null || echo amd64)
	w=$(mktemp -d)
	mkdir -p "$w/blobs/sha256"
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$w/layer" .
	local ld ls cd cs md ms
	ld=$(sha256sum "$w/layer" | cut -d' ' -f1)
	ls=$(stat -c %s "$w/layer")
	mv "$w/layer" "$w/blobs/sha256/$ld"
	jq -cn --arg d "sha256:$ld" --arg arch "$arch" --argjson ep "$ep" --argjson cmd "$cmd" \
		'{architecture:$arch, os:"linux", created:"1970-01-01T00:00:00Z",
		  config:{Entrypoint:$ep, Cmd:$cmd, WorkingDir:"/",
		          Env:["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
		  rootfs:{type:"layers", diff_ids:[$d]}}' >"$w/config"
	cd=$(sha256sum "$w/config" | cut -d' ' -f1)
	cs=$(stat -c %s "$w/config")
	mv "$w/config" "$w/blobs/sha256/$cd"
	jq -cn --arg cd "sha256:$cd" --argjson cs "$cs" --arg ld "sha256:$ld" --argjson ls "$ls" \
		'{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json",
		  config:{mediaType:"application/vnd.oci.image.config.v1+json", digest:$cd, size:$cs},
		  layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar", digest:$ld, size:$ls}]}' >"$w/manifest"
	md=$(sha256sum "$w/manifest" | cut -d' ' -f1)
	ms=$(stat -c %s "$w/manifest")
	mv "$w/manifest" "$w/blobs/sha256/$md"
	jq -cn --arg md "sha256:$md" --argjson ms "$ms" --arg ref "$ref" --arg arch "$arch" \
		'{schemaVersion:2, manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",
		  digest:$md, size:$ms, platform:{architecture:$arch, os:"linux"},
		  annotations:{"io.containerd.image.name":$ref,
		               "org.opencontainers.image.ref.name":($ref|split(":")|last)}}]}' >"$w/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci-layout"
	mkdir -p "$(dirname "$out")"
	tar -C "$w" -cf "$out" oci-layout index.json blobs
	rm -rf "$w"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	if (($# != 5)); then
		echo "usage: $0 REF ROOTFS ENTRYPOINT_JSON CMD_JSON OUT.tar" >&2
		exit 2
	fi
	mkimage "$@"
fi
