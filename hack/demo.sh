#!/usr/bin/env bash
# make demo: a local S3 server and a cache agent in a temp dir. Fetches a
# small model, changes one of its files, fetches the new revision (only the
# changed file is downloaded; the rest is shared on disk) and shows status.
# As root it then does the main job: it starts the CSI plugin and, over its
# gRPC socket as kubelet would, publishes the model as a pod's inline volume,
# reads it through the read-only bind mount and unpublishes it (bind mounts
# need root; as another user that step is skipped).
# It builds only what it runs: versitygw (hack/tools.sh s3, in the
# background), cache-agent, s3-seed (from bench/) and, as root, csi-plugin and csi-call.
# Everything it starts is stopped, its mounts unmounted and the temp dir
# removed on exit, failures included.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REF='s3://demo/tiny-llm?source=local'
ROOT=false
[[ $(id -u) == 0 ]] && ROOT=true
indent() { sed 's/^/    /'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/modelcache-demo.XXXXXX")
TOOLS_PID=
cleanup() {
	local rc=$?
	# Unmount first: the plugin does not unmount on exit (kubelet owns
	# mounts), and rm -rf cannot remove a read-only bind mount.
	local keep_work=false
	if ! unmount_under "$WORK"; then
		echo "could not unmount everything under $WORK; leaving it" >&2
		keep_work=true
	fi
	# The versitygw build runs in a session of its own: stop go too.
	[[ -n $TOOLS_PID ]] && { kill -TERM -- "-$TOOLS_PID" 2>/dev/null || true; }
	stop_all
	# On a failure (not an interrupt) show the end of the logs.
	if ((rc != 0 && rc != 130 && rc != 143)); then
		for f in "$WORK"/*.log; do
			[[ -s $f ]] && { echo "--- last lines of $(basename "$f")"; tail -n 15 "$f"; }
		done >&2
		echo "demo failed (exit $rc)" >&2
	fi
	$keep_work || rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# versitygw's cold build is the longest step: it runs beside ours.
start=$SECONDS
setsid -w "$REPO/hack/tools.sh" s3 >"$WORK/tools.log" 2>&1 &
TOOLS_PID=$!
OWNED_PIDS+=("$TOOLS_PID")
log "building cache-agent and s3-seed$($ROOT && echo ", csi-plugin and csi-call") (versitygw beside them)"
build_agent
build_bench_tools "$WORK" s3-seed
if $ROOT; then
	(cd "$REPO" && go build -o bin/csi-plugin ./cmd/csi-plugin && go build -o "$WORK/csi-call" ./hack/csi-call)
fi
log "our builds took $((SECONDS - start))s; waiting for versitygw"
wait "$TOOLS_PID" || die "installing versitygw failed (hack/tools.sh s3)"
forget_pid "$TOOLS_PID"
TOOLS_PID=
grep '^tools:' "$WORK/tools.log" | indent
log "all builds done after $((SECONDS - start))s"
demo_start=$SECONDS

seed() { "$WORK/s3-seed" --endpoint "$VGW_ENDPOINT" --bucket demo --prefix tiny-llm \
	--big 3 --big-size 24MiB --small 2 --small-size 2KiB "$@" | indent; }

log "starting versitygw (S3) in $WORK"
start_versitygw "$WORK/s3" "$WORK/versitygw.log"
log "versitygw listening on $VGW_ENDPOINT"

log "uploading model s3://demo/tiny-llm: 3 x 24 MiB weights, config.json, tokenizer.json"
seed

write_sources "$WORK/sources.yaml"
SOCK=$WORK/agent.sock
log "starting cache-agent serve (capacity 1GiB, log $WORK/agent.log)"
start_agent "$WORK/cache" "$SOCK" 1GiB "$WORK/sources.yaml" "$WORK/agent.log"

log "cache-agent prefetch '$REF' --wait"
"$CACHE_AGENT" prefetch "$REF" --socket "$SOCK" --wait --timeout 2m | indent

log "rewriting one weights file in the bucket (a new revision sharing the rest)"
seed --mutate-one

log "cache-agent prefetch '$REF' --wait  (lists again: new revision, one file fetched)"
"$CACHE_AGENT" prefetch "$REF" --socket "$SOCK" --wait --timeout 2m | indent

log "cache-agent status"
"$CACHE_AGENT" status --socket "$SOCK"

if ! $ROOT; then
	log "skipping the CSI step: publishing a volume bind-mounts the model, which needs root (run make demo as root)"
	log "done in $((SECONDS - demo_start))s after the builds; stopping everything and removing $WORK"
	exit 0
fi
CSI_SOCK=$WORK/csi.sock
log "starting csi-plugin, node service (socket $CSI_SOCK, log $WORK/csi-plugin.log)"
start_csi_plugin "$CSI_SOCK" "$SOCK" "$WORK/cache" "$WORK/csi-state" "$WORK/csi-plugin.log"

log "csi-call info  (what kubelet asks a plugin that registers)"
"$WORK/csi-call" info --socket "$CSI_SOCK" | indent

# Pod default/demo-pod with an inline volume "model" of this driver. kubelet
# names it csi-<sha256(pod UID + volume name)>, mounts it under the pod's
# directory and, with podInfoOnMount (deploy/ sets it), adds the pod to the
# volume attributes.
POD_UID=$(cat /proc/sys/kernel/random/uuid)
VOLUME_ID=csi-$(printf '%s%s' "$POD_UID" model | sha256sum | cut -d' ' -f1)
TARGET=$WORK/kubelet/pods/$POD_UID/volumes/kubernetes.io~csi/model/mount
mkdir -p "$(dirname "$TARGET")"
log "NodePublishVolume of pod default/demo-pod's inline volume \"model\", as kubelet sends it"
"$WORK/csi-call" publish --socket "$CSI_SOCK" --volume-id "$VOLUME_ID" --target "$TARGET" --readonly \
	--access-mode SINGLE_NODE_WRITER --attr "model=$REF" --attr csi.storage.k8s.io/ephemeral=true \
	--attr csi.storage.k8s.io/pod.name=demo-pod --attr csi.storage.k8s.io/pod.namespace=default \
	--attr "csi.storage.k8s.io/pod.uid=$POD_UID" --attr csi.storage.k8s.io/serviceAccount.name=default | indent
echo "    the plugin's log: $(grep -m1 'msg="published model"' "$WORK/csi-plugin.log" | grep -o ' ms=.*')"

log "the model through the bind mount: ls -l .../model/mount"
# shellcheck disable=SC2012 # ls -l is the point: what a pod sees
ls -l "$TARGET" | indent
weights=("$TARGET"/*.safetensors)
FILE=${weights[0]##*/}
log "sha256 of $FILE read through the mount, and of the bucket's object"
mounted=$(sha256sum <"$TARGET/$FILE" | cut -d' ' -f1)
if command -v curl >/dev/null 2>&1; then
	how="GET over S3"
	# S3 wants the payload's hash header; curl's SigV4 signs it but does not add it.
	object=$(curl -sSf --aws-sigv4 aws:amz:us-east-1:s3 --user "$S3_ACCESS:$S3_SECRET" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$VGW_ENDPOINT/demo/tiny-llm/$FILE" |
		sha256sum | cut -d' ' -f1)
else
	how="versitygw's file; no curl"
	object=$(sha256sum <"$WORK/s3/demo/tiny-llm/$FILE" | cut -d' ' -f1)
fi
echo "    $mounted  through the mount"
echo "    $object  the bucket's object ($how)"
[[ $mounted == "$object" ]] || die "the file in the mount differs from the bucket's object"

log "findmnt: a read-only, nosuid, nodev bind mount of the cache's model tree"
findmnt -n -o SOURCE,OPTIONS --mountpoint "$TARGET" | indent
opts=$(findmnt -n -o OPTIONS --mountpoint "$TARGET")
for o in ro nosuid nodev; do
	[[ ,$opts, == *,$o,* ]] || die "the mount lacks $o: $opts"
done
if touch "$TARGET/written-by-demo" 2>"$WORK/touch.err"; then
	die "root wrote into the model volume"
fi
echo "    touch as root: $(sed 's/^touch: //' "$WORK/touch.err")"

log "cache-agent status  (the volume's pin keeps the revision from eviction)"
"$CACHE_AGENT" status --socket "$SOCK" | indent

log "NodeUnpublishVolume"
"$WORK/csi-call" unpublish --socket "$CSI_SOCK" --volume-id "$VOLUME_ID" --target "$TARGET" | indent
if [[ -e $TARGET ]] || findmnt --mountpoint "$TARGET" >/dev/null; then
	die "$TARGET is still there after unpublish"
fi
echo "    the target is gone: unmounted and removed"
log "done in $((SECONDS - demo_start))s after the builds; unmounting, stopping everything and removing $WORK"
