#!/usr/bin/env bash
# make bench: every figure of issue 5 in one run, from a local versitygw,
# with the page cache dropped before every measured run (needs root). The
# machine is noisy, so only figures measured together mean something; each
# table carries the load average. Writes the report to _output/bench.md too.
#
#   cold     4 big files + 5 small json: cache-agent against rclone, the
#            aws-sdk-go-v2 downloader, the server limit, the durable limit,
#            the trust limit (the durable limit hashing every byte) and
#            the disk floor (the same writes, the parts read from the
#            server's files instead of S3);
#            CPU per GB, the agent's peak RSS, proof of no second read
#   many     the same comparison on 2,000 shards of varied size (2 GiB), and
#            the durable limit with one syncfs instead of an fsync per file
#   multi    8 distinct models of 512 MiB at once against one model of 4 GiB
#            (bench/concurrent.sh): total time, and no model starved
#   big      one 20 GiB model (10 x 2 GiB, from a second S3 server with its
#            data on disk): GB/s and RSS per 2 GiB window
#   rev      a second revision sharing 3 of the 4 big files: bytes and time
#   warm     first read of a held model after a dropped page cache, and
#            after `prefetch --warm-page-cache`
#   hub      a cold hf:// fetch against the official JS client (bench/hub.sh)
#   publish  warm CSI publish latency (bench/publish.sh)
#
#   RUNS=5           rounds; each tool runs once per round, medians reported
#   SECTIONS="cold many multi big rev warm hub publish"   a subset while iterating
#   MULTI_MODELS=8 MULTI_SIZE=512MiB   the multi set
#   BIG_FILES=10 BIG_FILE_SIZE=2GiB BIG_WINDOW=2GiB   the big model
#   TOOLS="modelcache rclone ..."           the downloaders of cold and many
#   BENCH_SIZE=1GiB  size of each big file (64MiB for a smoke run, which also
#                    makes the many-file model 200 files, 128 MiB)
#   MANY_FILES=2000 MANY_TOTAL=2GiB   the many-file model
#   BENCH_DIR=...    where the bucket data (kept, reused) and scratch dirs live
#   S3_STORE=auto    where the S3 server keeps its files: tmpfs (/dev/shm, as a
#                    remote S3 looks to the node: its reads cost the cache's
#                    disk nothing) when the data sets fit in RAM with room to
#                    spare, else disk ($BENCH_DIR/s3, sharing the cache's
#                    disk); tmpfs or disk forces one
#   KEEP_S3_DATA=1   keep the data sets in tmpfs after the run (by default
#                    they are removed: they pin up to 16 GB of RAM)
#   DROP_CACHES=0    run without root and without dropping the page cache
#   CACHE_AGENT=...  benchmark this cache-agent binary instead of building one
#   BASELINE_AGENT=... also run this (older) cache-agent binary, as "baseline",
#                    for a before/after in one run
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
# shellcheck source=bench/sections.sh
source "$REPO/bench/sections.sh"
# shellcheck source=bench/concurrent.sh
source "$REPO/bench/concurrent.sh"
# shellcheck source=bench/hub.sh
source "$REPO/bench/hub.sh"

RUNS=${RUNS:-5}
BENCH_SIZE=${BENCH_SIZE:-1GiB}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/modelcache-bench}
DROP_CACHES=${DROP_CACHES:-1}
read -r -a SECTIONS <<<"${SECTIONS:-cold many multi big rev warm hub publish}"
BUCKET=bench
# The default data sets are the ones docs/benchmarks.md describes; other sizes get
# their own prefixes so a smoke run does not destroy the big ones.
if [[ $BENCH_SIZE == 1GiB ]]; then
	COLD_PREFIX=m4x1g
	MANY_FILES=${MANY_FILES:-2000} MANY_TOTAL=${MANY_TOTAL:-2GiB}
else
	COLD_PREFIX=m4x${BENCH_SIZE,,}
	MANY_FILES=${MANY_FILES:-200} MANY_TOTAL=${MANY_TOTAL:-128MiB}
fi
MANY_PREFIX=m${MANY_FILES}
[[ $MANY_FILES == 2000 && $MANY_TOTAL == 2GiB ]] || MANY_PREFIX=m${MANY_FILES}x${MANY_TOTAL,,}
# The second revision's goal (bytes fetched = the changed file) does not
# depend on size: a smaller set leaves RAM for the others on tmpfs.
REV_SIZE=${REV_SIZE:-256MiB}
REV_PREFIX=rev4x${REV_SIZE,,}

# prefixes: the data sets the chosen sections read from the main S3 server.
prefixes() {
	local i
	if has cold || has warm || has multi; then echo "$COLD_PREFIX"; fi
	if has many; then echo "$MANY_PREFIX"; fi
	if has rev; then echo "$REV_PREFIX"; fi
	if has multi; then for ((i = 0; i < MULTI_MODELS; i++)); do multi_prefix "$i"; done; fi
}

# s3_store prints where the S3 server's files go (S3_STORE above). In RAM,
# data sets of sections not chosen are dropped first (they cost memory the
# run needs, and are seeded again in a minute when wanted); the chosen ones
# go there if they fit with 8 GiB to spare for the downloads' page cache,
# dirty data and the tools: with less, reclaim slowed every tool twice over.
s3_store() {
	local need=0 gi=$((1 << 30)) have=0 avail shm=/dev/shm/modelcache-bench-s3 p d
	case ${S3_STORE:-auto} in
	disk) echo "$BENCH_DIR/s3" && return ;;
	tmpfs | auto) ;;
	*) die "S3_STORE=$S3_STORE: want auto, tmpfs or disk" ;;
	esac
	local keep
	keep=" $(prefixes | tr '\n' ' ') "
	for d in "$shm/$BUCKET"/*/; do
		[[ -d $d ]] || continue
		p=$(basename "$d")
		[[ $keep == *" $p "* ]] || rm -rf "$d"
	done
	[[ ${S3_STORE:-auto} == tmpfs ]] && echo "$shm" && return
	local big many multi rev
	big=$(numfmt --from=iec-i "${BENCH_SIZE%B}") many=$(numfmt --from=iec-i "${MANY_TOTAL%B}")
	multi=$(numfmt --from=iec-i "${MULTI_SIZE%B}") rev=$(numfmt --from=iec-i "${REV_SIZE%B}")
	if has cold || has warm || has multi; then need=$((need + 4 * big)); fi
	if has multi; then need=$((need + MULTI_MODELS * multi)); fi
	if has many; then need=$((need + many)); fi
	if has rev; then need=$((need + 4 * rev)); fi
	# What is seeded already in tmpfs (all of it wanted, now) costs nothing more.
	have=$(du -sb "$shm" 2>/dev/null | cut -f1 || true)
	need=$((need - ${have:-0}))
	avail=$(($(awk '/^MemAvailable/ { print $2 }' /proc/meminfo) * 1024))
	if [[ -d /dev/shm ]] && ((need + 8 * gi < avail)) &&
		((need < $(df --output=avail -B1 /dev/shm | tail -1))); then
		echo "$shm"
	else
		echo "$BENCH_DIR/s3"
	fi
}
if [[ $DROP_CACHES == 1 && ! -w /proc/sys/vm/drop_caches ]]; then
	die "needs root to drop the page cache between runs (or DROP_CACHES=0, less meaningful)"
fi
has() { [[ " ${SECTIONS[*]} " == *" $1 "* ]]; }

S3_DATA=$(s3_store)
case $S3_DATA in
/dev/shm/*) S3_WHERE="its data on tmpfs ($S3_DATA), as a remote S3 would be" S3_STORE_LABEL="in RAM" ;;
*) S3_WHERE="its data on the cache's disk ($S3_DATA)" S3_STORE_LABEL="on the cache's disk: its reads slow every tool but the floor" ;;
esac
export S3_DATA
"$REPO/hack/tools.sh" bench
log "building cache-agent and the helpers"
build_agent
mkdir -p "$BENCH_DIR"
RUN=$BENCH_DIR/run # scratch: destinations, caches; removed on exit
LOGS=$BENCH_DIR/logs
rm -rf "$RUN" "$LOGS"
mkdir -p "$LOGS"
build_bench_tools "$RUN/bin" s3-seed sdk-download run-stats read-tree sha-rate
# SHA-256 bytes per CPU-second on one core: each table's trust floor.
SHA_RATE=$("$RUN/bin/sha-rate")

cleanup() {
	local rc=$?
	stop_all
	rm -rf "$RUN"
	# Data sets in tmpfs pin RAM (16 GB with every section) that whatever runs
	# next needs: the page-cache warm-up, for one, finds no memory to fill.
	# Seeding them again takes a few seconds a GB.
	if [[ ${S3_DATA:-} == /dev/shm/* && ${KEEP_S3_DATA:-0} != 1 ]]; then
		rm -rf "$S3_DATA" "$S3_DATA-publish"
	fi
	((rc == 0)) || echo "bench failed (exit $rc); logs in $LOGS" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting versitygw, $S3_WHERE"
start_versitygw "$S3_DATA" "$LOGS/versitygw.log"
seed() { "$RUN/bin/s3-seed" --endpoint "$VGW_ENDPOINT" --bucket "$BUCKET" --skip-existing "$@" | sed 's/^/    /'; }
log "seeding the data sets"
if has cold || has warm || has multi; then seed --prefix "$COLD_PREFIX" --big 4 --big-size "$BENCH_SIZE" --small 5; fi
if has multi; then seed_multi; fi
if has many; then seed --prefix "$MANY_PREFIX" --many "$MANY_FILES" --many-total "$MANY_TOTAL"; fi
if has rev; then seed --prefix "$REV_PREFIX" --big 4 --big-size "$REV_SIZE" --small 5; fi

write_sources "$RUN/sources.yaml"
cat >"$RUN/rclone.conf" <<CONF
[bench]
type = s3
provider = Other
endpoint = $VGW_ENDPOINT
region = us-east-1
access_key_id = $S3_ACCESS
secret_access_key = $S3_SECRET
force_path_style = true
CONF

read -r -a TOOLS <<<"${TOOLS:-modelcache rclone rclone-sync sdk null durable trust floor${BASELINE_AGENT:+ baseline}}"
if [[ " ${TOOLS[*]} " == *" baseline "* && ! -x ${BASELINE_AGENT:-} ]]; then
	die "TOOLS has baseline: set BASELINE_AGENT to an executable cache-agent"
fi
if has cold; then
	load0="$(loadavg), $(probes)"
	dataset cold "$COLD_PREFIX"
	run_rounds "${TOOLS[@]}"
	download_table "Cold fetch: 4 big files + 5 small" "$load0" "${TOOLS[@]}"
fi
if has many; then
	load0="$(loadavg), $(probes)"
	dataset many "$MANY_PREFIX"
	many_tools=("${TOOLS[@]}")
	[[ " ${TOOLS[*]} " != *" rclone "* ]] || many_tools+=(rclone-t16)
	# With 2,000 files, what the durable limit's fsync per file costs it.
	[[ " ${TOOLS[*]} " != *" durable "* ]] || many_tools+=(durable-syncfs)
	run_rounds "${many_tools[@]}"
	download_table "Many small files: $MANY_FILES shards of varied size" "$load0" "${many_tools[@]}"
fi
if has multi; then bench_multi; fi
if has rev; then bench_revision; fi
if has warm; then bench_warm; fi
if has hub; then bench_hub; fi
# The publish latency before the big model: right after its 40 GB of
# fetches the disk is still throttled and the load high, and p99 doubled
# (2026-12-04T1525Z: 6.93 ms; 3.00 ms a minute later, alone).
if has publish; then
	log "warm publish latency (bench/publish.sh; load $(loadavg))"
	# Its 5 GB of models beside the others' (in tmpfs, not written to the
	# disk it is timed on), removed before the big section needs the RAM.
	BENCH_DIR=$BENCH_DIR S3_DATA=$S3_DATA-publish "$REPO/bench/publish.sh" | tee "$RUN/publish.out"
	[[ $S3_DATA != /dev/shm/* || ${KEEP_S3_DATA:-0} == 1 ]] || rm -rf "$S3_DATA-publish"
fi
# Last of the disk-bound sections: its 60 GB of writes (seed, fetch, the
# durable limit) can use up the VM's disk burst, and every section after it
# would pay for that.
if has big; then bench_big; fi
stop_all

mkdir -p "$REPO/_output"
OUT=$REPO/_output/bench.md
{
	echo "## make bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
		"Linux $(uname -r), $(go version | awk '{ print $3 }'), versitygw v1.8.0 on loopback with $S3_WHERE, caches and downloads on $(fs_label "$BENCH_DIR"), cache-agent $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'), SHA-256 at $(awk -v r="$SHA_RATE" 'BEGIN { printf "%.2f", r / 1e9 }') GB per CPU-second on one core."
	echo
	for s in cold many multi rev warm hub big; do
		[[ ! -f $RUN/table-$s ]] || cat "$RUN/table-$s"
	done
	echo "Peak RSS: the agent's VmHWM for modelcache, the process's maxrss for the others."
	echo "CPU: the agent's user+system during the prefetch plus the CLI's; the process's own for the others (the S3 server's not included)."
	echo "Durability: modelcache, rclone + sync, the durable and trust limits and the disk floor have every byte on disk when they end; rclone and the SDK leave theirs in dirty page cache."
	echo
} >"$OUT"
if has publish; then
	{
		echo "### Warm publish (CSI NodePublishVolume + NodeUnpublishVolume of a cached model, ms)"
		echo
		echo '```'
		sed -n '/^load average/,$p' "$RUN/publish.out" | grep -v '^==>' || true
		echo '```'
		echo
	} >>"$OUT"
fi
# A dated copy under docs/benchmarks/, to commit: results are what the command
# wrote, never retyped.
DATED=$REPO/docs/benchmarks/$(date -u +%Y-%m-%dT%H%MZ).md
mkdir -p "$(dirname "$DATED")"
cp "$OUT" "$DATED"
echo
cat "$OUT"
log "report written to ${OUT#"$REPO"/} and ${DATED#"$REPO"/}; bucket data $([[ $S3_DATA == /dev/shm/* && ${KEEP_S3_DATA:-0} != 1 ]] && echo "in tmpfs is removed on exit (KEEP_S3_DATA=1 keeps it)" || echo "kept in $S3_DATA (rm -rf it to free it)")"
