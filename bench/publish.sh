#!/usr/bin/env bash
# make bench (the publish section): warm publish latency of the CSI plugin. Starts
# versitygw, cache-agent and csi-plugin, then times NodePublishVolume +
# NodeUnpublishVolume of a cached model N times over the CSI socket, for a
# 1 GiB one-file model and a ~4 GiB 200-file model. Needs root (bind mounts).
#
#   ITERATIONS=1000  publish+unpublish pairs per model
#   BENCH_DIR=...    where data and logs go (default /tmp/modelcache-bench)
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

ITERATIONS=${ITERATIONS:-1000}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/modelcache-bench}
BUCKET=bench
[[ $(id -u) == 0 ]] || die "needs root: the plugin bind-mounts"

"$REPO/hack/tools.sh" s3
build_agent
RUN=$BENCH_DIR/publish-run
LOGS=$BENCH_DIR/publish-logs # not logs/: bench.sh empties that one
rm -rf "$RUN"
mkdir -p "$RUN/bin" "$LOGS"
log "building csi-plugin and the helpers"
(cd "$REPO" && go build -o "$BIN/csi-plugin" ./cmd/csi-plugin) || die "building csi-plugin failed"
build_bench_tools "$RUN/bin" s3-seed publish-latency

cleanup() {
	local rc=$?
	stop_all
	# A failed run may leave the bench target mounted.
	unmount_under "$RUN" || true
	rm -rf "$RUN"
	((rc == 0)) || echo "publish bench failed (exit $rc); logs in $LOGS" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

S3_DATA=${S3_DATA:-$BENCH_DIR/s3}
log "starting versitygw on $S3_DATA"
start_versitygw "$S3_DATA" "$LOGS/versitygw.log"
log "seeding the models (kept for next time)"
"$RUN/bin/s3-seed" --endpoint "$VGW_ENDPOINT" --bucket "$BUCKET" --prefix p1x1g \
	--big 1 --big-size 1GiB --skip-existing | sed 's/^/    /'
"$RUN/bin/s3-seed" --endpoint "$VGW_ENDPOINT" --bucket "$BUCKET" --prefix p200x20m \
	--big 200 --big-size 20MiB --skip-existing | sed 's/^/    /'
write_sources "$RUN/sources.yaml"
start_agent "$RUN/cache" "$RUN/agent.sock" $((8 << 30)) "$RUN/sources.yaml" "$LOGS/publish-agent.log"
start_csi_plugin "$RUN/csi.sock" "$RUN/agent.sock" "$RUN/cache" "$RUN/state" "$LOGS/csi-plugin.log"

log "prefetching both models (cold; not part of the figures)"
for m in p1x1g p200x20m; do
	"$CACHE_AGENT" prefetch "s3://$BUCKET/$m?source=local" --socket "$RUN/agent.sock" --wait --timeout 30m \
		>>"$LOGS/publish-prefetch.log" 2>&1 || die "prefetch of $m failed; see $LOGS"
done

log "warm publish latency, $ITERATIONS iterations each (ms)"
echo "load average (1/5/15 min) before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-28s %s  %s  %s\n' "model" "publish p50 p99 max" "unpublish p50 p99 max" "pair p50 p99 max"
"$RUN/bin/publish-latency" --csi "$RUN/csi.sock" --model "s3://$BUCKET/p1x1g?source=local" \
	--label "1 GiB, 1 file" --n "$ITERATIONS" --dir "$RUN/targets"
"$RUN/bin/publish-latency" --csi "$RUN/csi.sock" --model "s3://$BUCKET/p200x20m?source=local" \
	--label "3.9 GiB, 200 files" --n "$ITERATIONS" --dir "$RUN/targets"
echo "load average (1/5/15 min) after: $(cut -d' ' -f1-3 /proc/loadavg); goal: publish p99 < 5 ms"
log "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
