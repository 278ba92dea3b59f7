#!/usr/bin/env bash
# make demo: a local S3 server and a cache agent in a temp dir. Fetches a
# small model, changes one of its files, fetches the new revision (only the
# changed file is downloaded; the rest is shared on disk) and shows status.
# Everything it starts is stopped and the temp dir removed on exit.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REF='s3://demo/tiny-llm?source=local'

"$REPO/hack/tools.sh"
log "building cache-agent"
build_agent

WORK=$(mktemp -d "${TMPDIR:-/tmp}/modelcache-demo.XXXXXX")
cleanup() {
	local rc=$?
	stop_all
	# On a failure (not an interrupt) show the end of the server logs.
	if ((rc != 0 && rc != 130 && rc != 143)); then
		for f in "$WORK"/*.log; do
			[[ -s $f ]] && { echo "--- last lines of $(basename "$f")"; tail -n 15 "$f"; }
		done >&2
		echo "demo failed (exit $rc)" >&2
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_bench_tools "$WORK" s3-seed
seed() { "$WORK/s3-seed" --endpoint "$VGW_ENDPOINT" --bucket demo --prefix tiny-llm \
	--big 3 --big-size 24MiB --small 2 --small-size 2KiB "$@" | sed 's/^/    /'; }

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
"$CACHE_AGENT" prefetch "$REF" --socket "$SOCK" --wait --timeout 2m | sed 's/^/    /'

log "rewriting one weights file in the bucket (a new revision sharing the rest)"
seed --mutate-one

log "cache-agent prefetch '$REF' --wait  (lists again: new revision, one file fetched)"
"$CACHE_AGENT" prefetch "$REF" --socket "$SOCK" --wait --timeout 2m | sed 's/^/    /'

log "cache-agent status"
"$CACHE_AGENT" status --socket "$SOCK"

log "done; stopping everything and removing $WORK"
