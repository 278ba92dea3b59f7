#!/usr/bin/env bash
# make demo: a local S3 server and a cache agent in a temp dir. Fetches a
# small model, changes one of its files, fetches the new revision (only the
# changed file is downloaded; the rest is shared on disk), fetches a second
# model from a local Hugging Face Hub (gated, a selection of its files) and
# shows status.
# As root it then does the main job: it starts the CSI plugin and, over its
# gRPC socket as kubelet would, publishes the model as a pod's inline volume,
# reads it through the read-only bind mount and unpublishes it (bind mounts
# need root; as another user that step is skipped).
# It builds only what it runs: cache-agent, s3-mem (an in-memory S3 server,
# hack/s3-mem), s3-seed (from bench/) and, as root, csi-plugin and csi-call.
# (The tests' S3 server, versitygw, takes longer to build than all of these.)
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
cleanup() {
	local rc=$?
	# Unmount first: the plugin does not unmount on exit (kubelet owns
	# mounts), and rm -rf cannot remove a read-only bind mount.
	local keep_work=false
	if ! unmount_under "$WORK"; then
		echo "could not unmount everything under $WORK; leaving it" >&2
		keep_work=true
	fi
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

start=$SECONDS
log "building cache-agent, s3-mem, hub-mem and s3-seed$($ROOT && echo ", csi-plugin and csi-call")"
# One go build for the main module's programs, so their packages compile in
# parallel; CACHE_AGENT names a cache-agent to use instead of building one.
progs=(./hack/s3-mem ./hack/hub-mem)
[[ -z ${CACHE_AGENT:-} ]] && progs+=(./cmd/cache-agent)
$ROOT && progs+=(./cmd/csi-plugin ./hack/csi-call)
(cd "$REPO" && go build -o "$BIN/" "${progs[@]}") || die "go build ${progs[*]} failed"
CACHE_AGENT=${CACHE_AGENT:-$BIN/cache-agent}
build_bench_tools "$WORK" s3-seed
log "builds done in $((SECONDS - start))s"
demo_start=$SECONDS

# get_object KEY: the bytes of the object, by a plain HTTP GET with bash's
# /dev/tcp (s3-mem asks for no signature; no curl needed).
get_object() {
	local hostport=${S3_ENDPOINT#http://} line
	exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
	printf 'GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" "$hostport" >&3
	IFS= read -r line <&3
	[[ $line == *" 200 "* ]] || die "GET $1: $line"
	while IFS= read -r line <&3 && [[ $line != $'\r' ]]; do :; done
	cat <&3
	exec 3<&-
}

seed() { "$WORK/s3-seed" --endpoint "$S3_ENDPOINT" --bucket demo --prefix tiny-llm \
	--big 3 --big-size 24MiB --small 2 --small-size 2KiB "$@" | indent; }

log "starting s3-mem, an in-memory S3 server"
"$BIN/s3-mem" --endpoint-file "$WORK/s3.endpoint" >"$WORK/s3-mem.log" 2>&1 &
OWNED_PIDS+=("$!")
for _ in $(seq 100); do
	[[ -s $WORK/s3.endpoint ]] && break
	kill -0 "$!" 2>/dev/null || die "s3-mem exited (log: $WORK/s3-mem.log)"
	sleep 0.1
done
S3_ENDPOINT=$(cat "$WORK/s3.endpoint" 2>/dev/null) || die "s3-mem did not start in 10s"
log "s3-mem listening on $S3_ENDPOINT"

log "uploading model s3://demo/tiny-llm: 3 x 24 MiB weights, config.json, tokenizer.json"
seed

# A second model, from a Hugging Face Hub: hub-mem serves a gated repo
# made of these files (the Hub fixture the tests check against the official
# JS client). Weights are LFS files, redirected to its CDN.
HUB_REPO=demo-org/tiny-llm
mkdir -p "$WORK/hub-model/original"
for i in 1 2; do
	head -c $((16 << 20)) /dev/urandom >"$WORK/hub-model/model-0000$i-of-00002.safetensors"
done
head -c $((8 << 20)) /dev/urandom >"$WORK/hub-model/pytorch_model.bin"
head -c $((4 << 20)) /dev/urandom >"$WORK/hub-model/original/consolidated.00.pth"
echo '{"architectures":["LlamaForCausalLM"]}' >"$WORK/hub-model/config.json"
log "starting hub-mem, a Hugging Face Hub serving the gated repo $HUB_REPO (2 x 16 MiB safetensors, an 8 MiB .bin, original/, config.json)"
"$BIN/hub-mem" --repo "$HUB_REPO" --dir "$WORK/hub-model" --token hf_demo \
	--endpoint-file "$WORK/hub.endpoint" >"$WORK/hub-mem.log" 2>&1 &
OWNED_PIDS+=("$!")
for _ in $(seq 100); do
	[[ -s $WORK/hub.endpoint ]] && break
	kill -0 "$!" 2>/dev/null || die "hub-mem exited (log: $WORK/hub-mem.log)"
	sleep 0.1
done
HUB_ENDPOINT=$(cat "$WORK/hub.endpoint" 2>/dev/null) || die "hub-mem did not start in 10s"
indent <"$WORK/hub-mem.log"

write_sources "$WORK/sources.yaml" "$S3_ENDPOINT"
cat >>"$WORK/sources.yaml" <<YAML
  hub:
    type: hf
    endpoint: $HUB_ENDPOINT
    token: hf_demo
YAML
SOCK=$WORK/agent.sock
log "starting cache-agent serve (capacity 1GiB, log $WORK/agent.log)"
start_agent "$WORK/cache" "$SOCK" 1GiB "$WORK/sources.yaml" "$WORK/agent.log"

log "cache-agent prefetch '$REF' --wait"
"$CACHE_AGENT" prefetch "$REF" --socket "$SOCK" --wait --timeout 2m | indent

log "rewriting one weights file in the bucket (a new revision sharing the rest)"
seed --mutate-one

log "cache-agent prefetch '$REF' --wait  (lists again: new revision, one file fetched)"
"$CACHE_AGENT" prefetch "$REF" --socket "$SOCK" --wait --timeout 2m | indent

HF_REF="hf://$HUB_REPO@main?source=hub&include=*.safetensors,*.json"
log "cache-agent prefetch '$HF_REF' --wait  (only the safetensors and config: not the .bin nor original/)"
"$CACHE_AGENT" prefetch "$HF_REF" --socket "$SOCK" --wait --timeout 2m | tee "$WORK/hf-prefetch.out" | indent
HF_DIR=$(grep -o '/[^ ]*$' "$WORK/hf-prefetch.out" | tail -n1)
[[ -d $HF_DIR ]] || die "no model directory in the prefetch output"
log "the Hub model in the cache: ls -l $HF_DIR"
# shellcheck disable=SC2012 # ls -l is the point
ls -l "$HF_DIR" | indent
[[ ! -e $HF_DIR/pytorch_model.bin && ! -e $HF_DIR/original ]] || die "the excluded files are in the model"
hub_file=model-00001-of-00002.safetensors
cached=$(sha256sum <"$HF_DIR/$hub_file" | cut -d' ' -f1)
published=$(sha256sum <"$WORK/hub-model/$hub_file" | cut -d' ' -f1)
echo "    $cached  $hub_file in the cache (checked against the SHA-256 the Hub published)"
echo "    $published  the repo's file"
[[ $cached == "$published" ]] || die "the cached file differs from the repo's"

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
"$BIN/csi-call" info --socket "$CSI_SOCK" | indent

# Pod default/demo-pod with an inline volume "model" of this driver. kubelet
# names it csi-<sha256(pod UID + volume name)>, mounts it under the pod's
# directory and, with podInfoOnMount (deploy/ sets it), adds the pod to the
# volume attributes.
POD_UID=$(cat /proc/sys/kernel/random/uuid)
VOLUME_ID=csi-$(printf '%s%s' "$POD_UID" model | sha256sum | cut -d' ' -f1)
TARGET=$WORK/kubelet/pods/$POD_UID/volumes/kubernetes.io~csi/model/mount
mkdir -p "$(dirname "$TARGET")"
log "NodePublishVolume of pod default/demo-pod's inline volume \"model\", as kubelet sends it"
"$BIN/csi-call" publish --socket "$CSI_SOCK" --volume-id "$VOLUME_ID" --target "$TARGET" --readonly \
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
object=$(get_object "demo/tiny-llm/$FILE" | sha256sum | cut -d' ' -f1)
echo "    $mounted  through the mount"
echo "    $object  the bucket's object (a GET from s3-mem)"
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
"$BIN/csi-call" unpublish --socket "$CSI_SOCK" --volume-id "$VOLUME_ID" --target "$TARGET" | indent
if [[ -e $TARGET ]] || findmnt --mountpoint "$TARGET" >/dev/null; then
	die "$TARGET is still there after unpublish"
fi
echo "    the target is gone: unmounted and removed"
log "done in $((SECONDS - demo_start))s after the builds; unmounting, stopping everything and removing $WORK"
