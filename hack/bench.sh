#!/usr/bin/env bash
# make bench: download speed of cache-agent against rclone and the
# aws-sdk-go-v2 downloader, from a local versitygw, with the page cache
# dropped before every measured run (needs root). All tools run in one
# invocation: the machine is noisy, so only ratios measured together mean
# something. Writes the table to _output/bench.md as well.
#
#   RUNS=3           rounds; each tool runs once per round, medians reported
#   BENCH_SIZE=1GiB  size of each of the 4 big files (64MiB for a smoke run)
#   BENCH_DIR=...    where the bucket data (kept, reused) and scratch dirs live
#   DROP_CACHES=0    run without root and without dropping the page cache
#   CACHE_AGENT=...  benchmark this cache-agent binary instead of building one
#   BASELINE_AGENT=... also run this (older) cache-agent binary, as "baseline",
#                    for a before/after in one run
#   TOOLS="modelcache rclone sdk null durable"  the tools to run (a subset while iterating)
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-3}
BENCH_SIZE=${BENCH_SIZE:-1GiB}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/modelcache-bench}
DROP_CACHES=${DROP_CACHES:-1}
BUCKET=bench
# The default data set is the one the README quotes; other sizes get their
# own prefix so a smoke run does not destroy the big one.
if [[ $BENCH_SIZE == 1GiB ]]; then PREFIX=m4x1g; else PREFIX=m4x${BENCH_SIZE,,}; fi
REF="s3://$BUCKET/$PREFIX?source=local"

if [[ $DROP_CACHES == 1 && ! -w /proc/sys/vm/drop_caches ]]; then
	die "needs root to drop the page cache between runs (or DROP_CACHES=0, less meaningful)"
fi
# drop_caches BINARY...: empty the page cache, then read the binaries about
# to run back in, so a run pays for cold data but not for loading a 100 MB
# executable from disk.
drop_caches() {
	sync
	if [[ $DROP_CACHES == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
	cat "$@" >/dev/null
}

"$REPO/hack/tools.sh" bench
log "building cache-agent and the helpers"
build_agent
mkdir -p "$BENCH_DIR"
RUN=$BENCH_DIR/run # scratch: destinations, caches; removed on exit
LOGS=$BENCH_DIR/logs
rm -rf "$RUN" "$LOGS"
mkdir -p "$RUN/bin" "$LOGS"
for p in s3seed sdkget runstat; do
	(cd "$REPO" && go build -o "$RUN/bin/$p" "./hack/$p")
done

cleanup() {
	local rc=$?
	stop_all
	rm -rf "$RUN"
	((rc == 0)) || echo "bench failed (exit $rc); logs in $LOGS" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting versitygw on $BENCH_DIR/s3"
start_versitygw "$BENCH_DIR/s3" "$LOGS/versitygw.log"
log "seeding s3://$BUCKET/$PREFIX: 4 x $BENCH_SIZE + 5 small json (kept for next time)"
"$RUN/bin/s3seed" --endpoint "$VGW_ENDPOINT" --bucket "$BUCKET" --prefix "$PREFIX" \
	--big 4 --big-size "$BENCH_SIZE" --small 5 --small-size 4KiB --skip-existing | sed 's/^/    /'
# What every run must deliver, read from versitygw's posix backend.
read -r TOTAL_FILES TOTAL_BYTES < <(find "$BENCH_DIR/s3/$BUCKET/$PREFIX" -type f -printf '%s\n' |
	awk '{ n++; s += $1 } END { printf "%d %.0f\n", n, s }')
log "data set: $TOTAL_FILES files, $TOTAL_BYTES bytes"

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

CLK_TCK=$(getconf CLK_TCK)
# agent_cpu PID: its user+system CPU so far, in seconds (fields 14, 15 of
# /proc/PID/stat, counted after the ")" that ends the command name).
agent_cpu() {
	local stat rest
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	# shellcheck disable=SC2086
	set -- $rest
	awk -v u="${12}" -v s="${13}" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (u + s) / hz }'
}

# check_tree DIR: the destination holds the whole data set.
check_tree() {
	local got
	got=$(find "$1" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d %.0f\n", n, s }')
	[[ $got == "$TOTAL_FILES $TOTAL_BYTES" ]] || die "$1 holds $got (files bytes), want $TOTAL_FILES $TOTAL_BYTES"
}

# Results: one "tool wall cpu rss_kib" line per run.
RESULTS=$RUN/results
: >"$RESULTS"
record() {
	echo "$1 $2 $3 $4" >>"$RESULTS"
	printf '    %-10s %7.2fs  %5.2f GB/s  cpu %6.2fs  rss %4d MiB\n' "$1" "$2" \
		"$(awk -v b="$TOTAL_BYTES" -v t="$2" 'BEGIN { print b / 1e9 / t }')" "$3" $(($4 / 1024))
}

# run_modelcache [NAME BINARY]: one timed prefetch with a fresh agent.
run_modelcache() {
	local name=${1:-modelcache} CACHE_AGENT=${2:-$CACHE_AGENT} # start_agent reads CACHE_AGENT
	local cache=$RUN/cache cpu0 cpu1 rss wall ccpu used
	rm -rf "$cache"
	# Room for the model twice over, so eviction never plays a part.
	start_agent "$cache" "$RUN/agent.sock" $((2 * TOTAL_BYTES + (1 << 30))) "$RUN/sources.yaml" "$LOGS/agent.log"
	drop_caches "$RUN/bin/runstat" "$CACHE_AGENT"
	cpu0=$(agent_cpu "$AGENT_PID")
	rd0=$(awk '/^read_bytes:/ { print $2 }' "/proc/$AGENT_PID/io")
	"$RUN/bin/runstat" -o "$RUN/cost" "$CACHE_AGENT" prefetch "$REF" --socket "$RUN/agent.sock" \
		--wait --timeout 30m >>"$LOGS/prefetch.log" 2>&1 || die "prefetch failed; see $LOGS/prefetch.log $LOGS/agent.log"
	cpu1=$(agent_cpu "$AGENT_PID")
	[[ $name != modelcache ]] || awk -v a="$rd0" '/^read_bytes:/ { print $2 - a }' "/proc/$AGENT_PID/io" >>"$RUN/agent-reads"
	rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
	used=$("$CACHE_AGENT" status --socket "$RUN/agent.sock" -o json | grep -o '"usedBytes": *[0-9]*' | head -n 1 | grep -o '[0-9]*$' || true)
	[[ $used == "$TOTAL_BYTES" ]] || die "agent reports usedBytes=$used after prefetch, want $TOTAL_BYTES"
	stop_pid "$AGENT_PID"
	forget_pid "$AGENT_PID"
	read -r wall ccpu _ <"$RUN/cost"
	# CPU of the agent during the prefetch plus the (small) client's.
	record "$name" "$wall" "$(awk -v a="$cpu0" -v b="$cpu1" -v c="$ccpu" 'BEGIN { printf "%.3f", b - a + c }')" "$rss"
	rm -rf "$cache"
}

# run_tool NAME DEST COMMAND...: one timed run of an external downloader.
run_tool() {
	local name=$1 dest=$2 wall cpu rss
	shift 2
	# DEST "-": the tool writes nothing (the null run).
	if [[ $dest != - ]]; then
		rm -rf "$dest"
		mkdir -p "$dest"
	fi
	# (the rclone binary too: rclone-sync runs it under sh)
	drop_caches "$RUN/bin/runstat" "$(command -v "$1")" "$BIN/rclone"
	"$RUN/bin/runstat" -o "$RUN/cost" "$@" >>"$LOGS/$name.log" 2>&1 || die "$name failed; see $LOGS/$name.log"
	[[ $dest == - ]] || check_tree "$dest"
	read -r wall cpu rss <"$RUN/cost"
	record "$name" "$wall" "$cpu" "$rss"
	[[ $dest == - ]] || rm -rf "$dest"
}

S3FLAGS=(--endpoint "$VGW_ENDPOINT" --access "$S3_ACCESS" --secret "$S3_SECRET" --bucket "$BUCKET" --prefix "$PREFIX")
run_one() {
	case $1 in
	modelcache) run_modelcache ;;
	baseline) run_modelcache baseline "$BASELINE_AGENT" ;;
	rclone) run_tool rclone "$RUN/dst" "$BIN/rclone" --config "$RUN/rclone.conf" copy "bench:$BUCKET/$PREFIX" "$RUN/dst" \
		--transfers 4 --multi-thread-streams 16 --multi-thread-chunk-size 16Mi ;;
	# The same copy, timed until its bytes are on disk (sync -f: syncfs of
	# the destination's filesystem), as modelcache's are when it ends.
	rclone-sync) run_tool rclone-sync "$RUN/dst" sh -c '"$@" && sync -f "$0"' "$RUN/dst" \
		"$BIN/rclone" --config "$RUN/rclone.conf" copy "bench:$BUCKET/$PREFIX" "$RUN/dst" \
		--transfers 4 --multi-thread-streams 16 --multi-thread-chunk-size 16Mi ;;
	sdk) run_tool sdk "$RUN/dst" "$RUN/bin/sdkget" "${S3FLAGS[@]}" --dest "$RUN/dst" ;;
	null) run_tool null - "$RUN/bin/sdkget" "${S3FLAGS[@]}" --null ;;
	durable) run_tool durable "$RUN/dst" "$RUN/bin/sdkget" "${S3FLAGS[@]}" --durable-sink "$RUN/dst" ;;
	esac
}
read -r -a TOOLS <<<"${TOOLS:-modelcache rclone rclone-sync sdk null durable${BASELINE_AGENT:+ baseline}}"
if [[ " ${TOOLS[*]} " == *" baseline "* && ! -x ${BASELINE_AGENT:-} ]]; then
	die "TOOLS has baseline: set BASELINE_AGENT to an executable cache-agent"
fi
for ((round = 0; round < RUNS; round++)); do
	log "round $((round + 1))/$RUNS"
	# Each round starts with the next tool, so none always runs right after
	# the same neighbour (disk still busy discarding the last one's files).
	for ((i = 0; i < ${#TOOLS[@]}; i++)); do
		run_one "${TOOLS[(i + round) % ${#TOOLS[@]}]}"
	done
done

# The table: medians over the rounds; peak RSS is the largest seen.
# median TOOL FIELD: the median of one column (2 wall, 3 cpu) of TOOL's runs.
median() {
	awk -v t="$1" -v f="$2" '$1 == t { print $f }' "$RESULTS" | sort -g |
		awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2 }'
}
declare -A WALL CPU RSS
for t in "${TOOLS[@]}"; do
	n=$(awk -v t="$t" '$1 == t' "$RESULTS" | wc -l)
	((n == RUNS)) || die "$t has $n results, want $RUNS"
	WALL[$t]=$(median "$t" 2)
	CPU[$t]=$(median "$t" 3)
	RSS[$t]=$(awk -v t="$t" '$1 == t && $4 > r { r = $4 } END { printf "%d", r }' "$RESULTS")
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

mkdir -p "$REPO/_output"
OUT=$REPO/_output/bench.md
{
	echo "Download of s3://$BUCKET/$PREFIX ($TOTAL_FILES files, $(awk -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }')) from versitygw on loopback;"
	echo "median of $RUNS run(s), page cache dropped before each$([[ $DROP_CACHES == 1 ]] || echo ' (NOT: DROP_CACHES=0)'), fresh destination each run."
	echo
	echo "| tool | median s | GB/s | CPU s per GB | peak RSS MiB |"
	echo "|---|---:|---:|---:|---:|"
	for t in "${TOOLS[@]}"; do
		case $t in
		modelcache) label="modelcache (cache-agent prefetch --wait)" ;;
		baseline) label="modelcache baseline ($(basename "$(dirname "$BASELINE_AGENT")")/$(basename "$BASELINE_AGENT"))" ;;
		rclone-sync) label="rclone, same flags, then sync -f (bytes on disk)" ;;
		rclone) label="rclone v1.76.0 copy, 4 transfers x 16 streams x 16Mi" ;;
		sdk) label="aws-sdk-go-v2 s3 manager, 16 x 16 MiB parts" ;;
		null) label="server limit: 16 x 16 MiB ranged GETs to /dev/null" ;;
		durable) label="durable limit: same GETs, pwrite at offsets, writeback per part, fsync" ;;
		esac
		awk -v l="$label" -v w="${WALL[$t]}" -v c="${CPU[$t]}" -v r="${RSS[$t]}" -v b="$TOTAL_BYTES" \
			'BEGIN { printf "| %s | %.2f | %.2f | %.2f | %d |\n", l, w, b / 1e9 / w, c / (b / 1e9), r / 1024 }'
	done
	echo
	# ratio line LABEL A B: A's time / B's time, when both ran.
	if [[ -n ${WALL[rclone]:-} && -n ${WALL[modelcache]:-} ]]; then
		echo "- rclone time / modelcache time: $(ratio "${WALL[rclone]}" "${WALL[modelcache]}")"
	fi
	if [[ -n ${WALL[rclone-sync]:-} && -n ${WALL[modelcache]:-} ]]; then
		echo "- (rclone + sync) time / modelcache time: $(ratio "${WALL[rclone-sync]}" "${WALL[modelcache]}")"
	fi
	if [[ -n ${WALL[baseline]:-} && -n ${WALL[modelcache]:-} ]]; then
		echo "- baseline time / modelcache time: $(ratio "${WALL[baseline]}" "${WALL[modelcache]}")"
	fi
	if [[ -n ${WALL[sdk]:-} && -n ${WALL[modelcache]:-} ]]; then
		echo "- SDK time / modelcache time: $(ratio "${WALL[sdk]}" "${WALL[modelcache]}")"
	fi
	if [[ -n ${WALL[null]:-} && -n ${WALL[modelcache]:-} ]]; then
		echo "- modelcache speed / server limit: $(ratio "${WALL[null]}" "${WALL[modelcache]}")"
	fi
	if [[ -n ${WALL[durable]:-} && -n ${WALL[modelcache]:-} ]]; then
		echo "- modelcache speed / durable limit: $(ratio "${WALL[durable]}" "${WALL[modelcache]}")"
	fi
	echo
	echo "Peak RSS: the agent's VmHWM for modelcache, the process's maxrss for the others."
	echo "CPU: the agent's user+system during the prefetch plus the CLI's; the process's own for the others (the S3 server's not included)."
	echo "Durability: modelcache, rclone + sync and the durable limit have every byte on disk when they end; rclone and the SDK leave theirs in dirty page cache."
	if [[ -s $RUN/agent-reads ]]; then
		echo "Second reads: the agent read $(sort -g "$RUN/agent-reads" | tail -n 1) bytes from disk during a prefetch at most (/proc/PID/io read_bytes): leaves are hashed while they stream."
	fi
	echo
	echo "Machine: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), $(go version | awk '{ print $3 }'), versitygw v1.8.0."
} >"$OUT"
echo
cat "$OUT"
echo
log "table written to ${OUT#"$REPO"/}; bucket data kept in $BENCH_DIR/s3 (rm -rf $BENCH_DIR to free it)"
