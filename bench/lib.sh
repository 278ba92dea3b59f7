# shellcheck shell=bash
# Measuring helpers of bench/run.sh: one timed run of each downloader, the
# per-data-set results, medians and the download table. Source it after
# hack/lib.sh, with RUN, LOGS, CACHE_AGENT and the versitygw set up.

CLK_TCK=$(getconf CLK_TCK)

# loadavg: the 1, 5 and 15 minute load averages. Other work on the machine
# moves every figure, so each table says what the load was. (The bench's own
# downloads add to it: threads waiting for the disk count as load.)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# memprobe: GB/s of writing 1 GiB into fresh page cache (tmpfs), the cost
# every downloader pays per byte it writes. On the sandbox VM this is the
# host backing guest memory, and it swung between 0.5 and 3.0 GB/s within
# an hour: tables measured at different speeds do not compare.
memprobe() {
	local f=/dev/shm/modelcache-bench-probe t0 t1
	t0=$(date +%s%N)
	dd if=/dev/zero of="$f" bs=256k count=4096 status=none 2>/dev/null || { echo "?"; return; }
	t1=$(date +%s%N)
	rm -f "$f"
	awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", 1.073741824 / (ns / 1e9) }'
}

# diskprobe: GB/s of writing 256 MiB to the cache's disk as 4 files at once,
# each fsynced (one stream alone measures fsync latency more than the disk).
# This VM's disk took 2.26 GB/s of the disk floor's writes after a rest
# and throttles to a few hundred MB/s after tens of GB of writes: a table
# measured on a throttled disk says little about anything but the disk.
diskprobe() {
	local f=$BENCH_DIR/probe t0 t1 i p pids=() ok=1
	t0=$(date +%s%N)
	for i in 1 2 3 4; do
		dd if=/dev/zero of="$f.$i" bs=4M count=16 conv=fsync status=none 2>/dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p" || ok=0
	done
	t1=$(date +%s%N)
	rm -f "$f".?
	((ok)) || { echo "?"; return; }
	awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", 0.268435456 / (ns / 1e9) }'
}

# fs_label DIR: the file system DIR is on, as the report names it. An ext4
# without a journal (this sandbox VM's) is not what a node's cache disk
# would be: fsync writes the inode and the parent directory itself instead
# of joining a journal commit, and a file created soon after many were
# deleted pays for ext4's search past recently freed inodes (perf: 13-18%
# of a tool's CPU on the many-file set, where each run follows the previous
# run's rm -rf; see docs/benchmarks.md).
fs_label() {
	local fstype src journal
	read -r fstype src < <(findmnt -n -o FSTYPE,SOURCE -T "$1" 2>/dev/null) || { echo "?"; return; }
	if [[ $fstype == ext4 && -r /sys/fs/ext4/${src##*/}/journal_task ]]; then
		if [[ $(cat "/sys/fs/ext4/${src##*/}/journal_task") == "<none>" ]]; then
			journal=", no journal"
		else
			journal=", with a journal"
		fi
	fi
	echo "$fstype on $src${journal:-}"
}

# probes: the memory and disk probes, for a table's before and after.
probes() { echo "memory probe $(memprobe) GB/s, disk probe $(diskprobe) GB/s"; }

# drop_caches BINARY...: empty the page cache, then read the binaries about
# to run back in, so a run pays for cold data but not for loading a 100 MB
# executable from disk.
drop_caches() {
	sync
	if [[ $DROP_CACHES == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
	cat "$@" >/dev/null
}

# proc_cpu PID: its user+system CPU so far, in seconds (fields 14, 15 of
# /proc/PID/stat, counted after the ")" that ends the command name).
proc_cpu() {
	local stat rest
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	# shellcheck disable=SC2086
	set -- $rest
	awk -v u="${12}" -v s="${13}" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (u + s) / hz }'
}

# proc_io PID FIELD: a counter of /proc/PID/io (read_bytes: from the disk;
# rchar: through read(2) from anything, sockets included).
proc_io() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/io"; }

# dataset NAME PREFIX: makes NAME the data set of the runs that follow; sets
# DS, REF, TOTAL_FILES, TOTAL_BYTES (read from versitygw's posix backend).
dataset() {
	DS=$1
	DS_PREFIX=$2
	REF="s3://$BUCKET/$DS_PREFIX?source=local"
	read -r TOTAL_FILES TOTAL_BYTES < <(find "$S3_DATA/$BUCKET/$DS_PREFIX" -type f -printf '%s\n' |
		awk '{ n++; s += $1 } END { printf "%d %.0f\n", n, s }')
	: >>"$RUN/results-$DS"
}

# check_tree DIR: the destination holds the whole data set.
check_tree() {
	local got
	got=$(find "$1" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d %.0f\n", n, s }')
	[[ $got == "$TOTAL_FILES $TOTAL_BYTES" ]] || die "$1 holds $got (files bytes), want $TOTAL_FILES $TOTAL_BYTES"
}

# record TOOL WALL CPU RSS_KIB [DISK_READ RCHAR FETCHED]: one run's result.
record() {
	echo "$*" >>"$RUN/results-$DS"
	printf '    %-12s %7.2fs  %5.2f GB/s  cpu %6.2fs  rss %4d MiB  load %s\n' "$1" "$2" \
		"$(awk -v b="$TOTAL_BYTES" -v t="$2" 'BEGIN { print b / 1e9 / t }')" "$3" $(($4 / 1024)) "$(loadavg)"
}

# server_cpu: the S3 server's CPU seconds so far; server_record TOOL FROM:
# what it spent since FROM on TOOL's run (the tools' own CPU leaves it out,
# yet on this machine it shares the same cores).
server_cpu() { proc_cpu "$VGW_PID"; }
server_record() {
	echo "$1 $(awk -v a="$2" -v b="$(server_cpu)" 'BEGIN { printf "%.3f", b - a }')" >>"$RUN/server-$DS"
}

# run_modelcache [NAME BINARY]: one timed prefetch of REF with a fresh agent.
run_modelcache() {
	local name=${1:-modelcache} CACHE_AGENT=${2:-$CACHE_AGENT} # start_agent reads CACHE_AGENT
	local cache=$RUN/cache cpu0 cpu1 rd0 rc0 rd rc rss wall ccpu used fetched s0
	rm -rf "$cache"
	# Room for the model twice over, so eviction never plays a part.
	start_agent "$cache" "$RUN/agent.sock" $((2 * TOTAL_BYTES + (1 << 30))) "$RUN/sources.yaml" "$LOGS/agent.log"
	drop_caches "$RUN/bin/run-stats" "$CACHE_AGENT"
	cpu0=$(proc_cpu "$AGENT_PID")
	rd0=$(proc_io "$AGENT_PID" read_bytes)
	rc0=$(proc_io "$AGENT_PID" rchar)
	s0=$(server_cpu)
	"$RUN/bin/run-stats" -o "$RUN/cost" "$CACHE_AGENT" prefetch "$REF" --socket "$RUN/agent.sock" \
		--wait --timeout 30m >>"$LOGS/prefetch.log" 2>&1 || die "prefetch failed; see $LOGS/prefetch.log $LOGS/agent.log"
	cpu1=$(proc_cpu "$AGENT_PID")
	server_record "$name" "$s0"
	rd=$(($(proc_io "$AGENT_PID" read_bytes) - rd0))
	rc=$(($(proc_io "$AGENT_PID" rchar) - rc0))
	rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
	"$CACHE_AGENT" status --socket "$RUN/agent.sock" -o json >"$RUN/status.json"
	used=$(jq -r .usedBytes "$RUN/status.json")
	fetched=$(jq -r '[.jobs[].fetchedBytes] | add' "$RUN/status.json")
	[[ $used == "$TOTAL_BYTES" ]] || die "agent reports usedBytes=$used after prefetch, want $TOTAL_BYTES"
	stop_pid "$AGENT_PID"
	forget_pid "$AGENT_PID"
	read -r wall ccpu _ <"$RUN/cost"
	# CPU of the agent during the prefetch plus the (small) client's.
	record "$name" "$wall" "$(awk -v a="$cpu0" -v b="$cpu1" -v c="$ccpu" 'BEGIN { printf "%.3f", b - a + c }')" \
		"$rss" "$rd" "$rc" "$fetched"
	rm -rf "$cache"
}

# run_tool NAME DEST COMMAND...: one timed run of another downloader.
run_tool() {
	local name=$1 dest=$2 wall cpu rss s0
	shift 2
	# DEST "-": the tool writes nothing (the null run).
	if [[ $dest != - ]]; then
		rm -rf "$dest"
		mkdir -p "$dest"
	fi
	# (the rclone binary too: rclone-sync runs it under sh)
	drop_caches "$RUN/bin/run-stats" "$(command -v "$1")" "$BIN/rclone"
	s0=$(server_cpu)
	"$RUN/bin/run-stats" -o "$RUN/cost" "$@" >>"$LOGS/$name.log" 2>&1 || die "$name failed; see $LOGS/$name.log"
	server_record "$name" "$s0"
	[[ $dest == - ]] || check_tree "$dest"
	read -r wall cpu rss <"$RUN/cost"
	record "$name" "$wall" "$cpu" "$rss"
	[[ $dest == - ]] || rm -rf "$dest"
}

# The tuned rclone of TESTING.md; with many files it also gets more
# transfers (rclone-t16), which suits it better there.
RCLONE_FLAGS=(--transfers 4 --multi-thread-streams 16 --multi-thread-chunk-size 16Mi)
# shellcheck disable=SC2016 # rclone-sync: $@ and $0 are the inner sh's
run_one() {
	local s3=(--endpoint "$VGW_ENDPOINT" --access "$S3_ACCESS" --secret "$S3_SECRET" --bucket "$BUCKET" --prefix "$DS_PREFIX")
	local rc=("$BIN/rclone" --config "$RUN/rclone.conf" copy "bench:$BUCKET/$DS_PREFIX" "$RUN/dst" "${RCLONE_FLAGS[@]}")
	case $1 in
	modelcache) run_modelcache ;;
	baseline) run_modelcache baseline "$BASELINE_AGENT" ;;
	rclone) run_tool rclone "$RUN/dst" "${rc[@]}" ;;
	rclone-t16) run_tool rclone-t16 "$RUN/dst" "${rc[@]}" --transfers 16 --checkers 16 ;;
	# The same copy, timed until its bytes are on disk (sync -f: syncfs of
	# the destination's filesystem), as modelcache's are when it ends.
	rclone-sync) run_tool rclone-sync "$RUN/dst" sh -c '"$@" && sync -f "$0"' "$RUN/dst" "${rc[@]}" ;;
	# 16 files at once: one at a time, the manager would fetch 2,000 small
	# files one part at a time.
	sdk) run_tool sdk "$RUN/dst" "$RUN/bin/sdk-download" "${s3[@]}" --dest "$RUN/dst" --files $((TOTAL_FILES > 100 ? 16 : 1)) ;;
	null) run_tool null - "$RUN/bin/sdk-download" "${s3[@]}" --null ;;
	durable) run_tool durable "$RUN/dst" "$RUN/bin/sdk-download" "${s3[@]}" --durable-sink "$RUN/dst" ;;
	# What the fsync per file costs the durable limit: the same writes,
	# flushed by one syncfs(2) when every part is written. Not a limit for
	# modelcache, whose blobs are each durable before they are published.
	durable-syncfs) run_tool durable-syncfs "$RUN/dst" "$RUN/bin/sdk-download" "${s3[@]}" --durable-sink "$RUN/dst" --durable-sync syncfs ;;
	# The durable limit that also hashes every byte with SHA-256 as it
	# streams, part by part: what a download that checks a content digest
	# before it publishes costs at the least, measured here.
	trust) run_tool trust "$RUN/dst" "$RUN/bin/sdk-download" "${s3[@]}" --durable-sink "$RUN/dst" --sha256 ;;
	# The durable limit's reads and writes with S3 taken out: the parts are
	# read straight from the server's files (in RAM with S3_STORE=tmpfs), so
	# no download that keeps its bytes ends sooner.
	floor) run_tool floor "$RUN/dst" "$RUN/bin/sdk-download" "${s3[@]}" --durable-sink "$RUN/dst" --from-disk "$S3_DATA/$BUCKET" ;;
	*) die "unknown tool $1" ;;
	esac
}

# run_rounds TOOL...: RUNS rounds of every tool on the current data set,
# after one unmeasured run of the durable sink: the first writer after a
# quiet spell pays for the VM's memory and disk coming back (a second or
# more on this machine), and without the priming run that was always the
# first tool of the first round. The order changes every round, and so does
# each tool's predecessor (whose deleted files and freed memory it meets):
# round r takes every s-th tool from offset r, s coprime with the count.
run_rounds() {
	local tools=("$@") n=$# round i s steps=()
	for ((s = 1; s < n || s == 1; s++)); do
		(($(gcd "$s" "$n") == 1)) && steps+=("$s")
	done
	log "$DS: priming run (durable sink, not measured)"
	run_one durable >/dev/null
	sed -i '$d' "$RUN/results-$DS" "$RUN/server-$DS"
	for ((round = 0; round < RUNS; round++)); do
		log "$DS: round $((round + 1))/$RUNS (load $(loadavg))"
		s=${steps[round % ${#steps[@]}]}
		for ((i = 0; i < n; i++)); do
			run_one "${tools[(round + i * s) % n]}"
		done
	done
}
gcd() {
	local a=$1 b=$2 t
	while ((b)); do
		t=$((a % b))
		a=$b
		b=$t
	done
	echo "$a"
}

# median FILE TOOL FIELD: the median of one column of TOOL's lines in FILE.
median() {
	awk -v t="$2" -v f="$3" '$1 == t { print $f }' "$1" | sort -g |
		awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# tool_label TOOL: the table's name for it.
tool_label() {
	case $1 in
	modelcache) echo "modelcache (cache-agent prefetch --wait)" ;;
	baseline) echo "modelcache baseline ($(basename "$(dirname "$BASELINE_AGENT")")/$(basename "$BASELINE_AGENT"))" ;;
	rclone) echo "rclone v1.76.0 copy ${RCLONE_FLAGS[*]}" ;;
	rclone-t16) echo "rclone, same flags + --transfers 16 --checkers 16" ;;
	rclone-sync) echo "rclone, same flags, then sync -f (bytes on disk)" ;;
	sdk) echo "aws-sdk-go-v2 s3 manager, 16 x 16 MiB parts" ;;
	null) echo "server limit: 16 x 16 MiB ranged GETs to /dev/null" ;;
	durable) echo "durable limit: same GETs, pwrite at offsets, writeback per part, fsync per file" ;;
	durable-syncfs) echo "the durable limit with one syncfs at the end instead of an fsync per file" ;;
	trust) echo "trust limit: the durable limit, also hashing every byte (SHA-256) as it streams" ;;
	floor) echo "disk floor: the durable limit with the parts read from the server's files (no S3)" ;;
	esac
}

# download_table TITLE LOAD_BEFORE TOOL...: the medians of the current data
# set as a markdown table with its ratios, into $RUN/table-$DS. Sets
# WALL_<ds>_<tool> style values in the associative arrays WALL and CPU.
declare -A WALL CPU RSS SCPU
download_table() {
	local title=$1 load0=$2 t n best_rclone="" f=$RUN/results-$DS
	shift 2
	for t in "$@"; do
		n=$(awk -v t="$t" '$1 == t' "$f" | wc -l)
		((n == RUNS)) || die "$DS: $t has $n results, want $RUNS"
		WALL[$DS.$t]=$(median "$f" "$t" 2)
		CPU[$DS.$t]=$(median "$f" "$t" 3)
		SCPU[$DS.$t]=$(median "$RUN/server-$DS" "$t" 2)
		RSS[$DS.$t]=$(awk -v t="$t" '$1 == t && $4 > r { r = $4 } END { printf "%d", r }' "$f")
		if [[ $t == rclone || $t == rclone-t16 ]] && { [[ -z $best_rclone ]] ||
			awk -v a="${WALL[$DS.$t]}" -v b="${WALL[$DS.$best_rclone]}" 'BEGIN { exit !(a < b) }'; }; then
			best_rclone=$t
		fi
	done
	{
		echo "### $title"
		echo
		echo "s3://$BUCKET/$DS_PREFIX: $TOTAL_FILES files, $(awk -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }');" \
			"median of $RUNS runs, page cache dropped before each$([[ $DROP_CACHES == 1 ]] || echo ' (NOT: DROP_CACHES=0)');" \
			"load average (1/5/15 min) $load0 before; $(loadavg), $(probes) after."
		echo
		echo "| tool | median s | GB/s | CPU s per GB | S3 server CPU s per GB | peak RSS MiB |"
		echo "|---|---:|---:|---:|---:|---:|"
		for t in "$@"; do
			awk -v l="$(tool_label "$t")" -v w="${WALL[$DS.$t]}" -v c="${CPU[$DS.$t]}" -v s="${SCPU[$DS.$t]}" -v r="${RSS[$DS.$t]}" -v b="$TOTAL_BYTES" \
				'BEGIN { printf "| %s | %.2f | %.2f | %.2f | %.2f | %d |\n", l, w, b / 1e9 / w, c / (b / 1e9), s / (b / 1e9), r / 1024 }'
		done
		echo
		local mc=${WALL[$DS.modelcache]:-} trust="" limit=${WALL[$DS.trust]:-}
		if [[ -n $mc ]]; then
			# The trust floor: the least time a download built like the durable
			# limit that also keeps this cache's promise of a checked SHA-256
			# can take here. The durable limit's CPU and its share of the S3
			# server's, plus SHA-256 of every byte at this machine's rate,
			# spread over every core: on a node the S3 server is elsewhere,
			# here it takes the same cores. Every term is measured in this run;
			# it is a reference, not a proof that no design spends less.
			if [[ -n ${CPU[$DS.durable]:-} && -n ${SHA_RATE:-} ]]; then
				trust=$(awk -v c="${CPU[$DS.durable]}" -v s="${SCPU[$DS.durable]}" -v b="$TOTAL_BYTES" -v r="$SHA_RATE" -v n="$(nproc)" \
					'BEGIN { printf "%.3f", (c + s + b / r) / n }')
			fi
			[[ -z $best_rclone ]] || goal "$best_rclone time / modelcache time" "${WALL[$DS.$best_rclone]}" "$mc" 1.3 "$trust" "$limit"
			[[ -z ${WALL[$DS.rclone-sync]:-} ]] || goal "(rclone + sync) time / modelcache time" "${WALL[$DS.rclone-sync]}" "$mc" 1.3 "$trust" "$limit"
			[[ -z ${WALL[$DS.null]:-} ]] || goal "modelcache speed / server limit" "${WALL[$DS.null]}" "$mc" 0.90 "$trust" "$limit"
			[[ -z ${WALL[$DS.durable]:-} ]] || echo "- modelcache speed / durable limit: $(ratio "${WALL[$DS.durable]}" "$mc")"
			[[ -z ${WALL[$DS.floor]:-} ]] || goal "disk floor time / modelcache time" "${WALL[$DS.floor]}" "$mc" 0.90 "$trust" "$limit" "; S3 data $S3_STORE_LABEL"
			[[ -z ${WALL[$DS.sdk]:-} ]] || goal "SDK time / modelcache time" "${WALL[$DS.sdk]}" "$mc" 1.0 "$trust" "$limit"
			# No tool ends before the CPU it and the server need, spread over
			# every core, is spent.
			local line="" ncpu
			ncpu=$(nproc)
			for t in modelcache durable floor sdk; do
				[[ -n ${CPU[$DS.$t]:-} ]] || continue
				line+="$(awk -v t="$t" -v c="${CPU[$DS.$t]}" -v s="${SCPU[$DS.$t]}" -v n="$ncpu" 'BEGIN { printf "%s%s %.2f s", (t == "modelcache" ? "" : ", "), t, (c + s) / n }')"
			done
			[[ -z $line ]] || echo "- CPU floor, (the tool's CPU + the S3 server's) / $ncpu CPUs: $line"
			if [[ -n $trust ]]; then
				echo "- trust floor: **$(awk -v t="$trust" 'BEGIN { printf "%.2f", t }') s** = (durable limit's CPU + the S3 server's + SHA-256 of $(awk -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }')" \
					"at $(awk -v r="$SHA_RATE" 'BEGIN { printf "%.2f", r / 1e9 }') GB per CPU-s) / $ncpu CPUs: a download with the durable limit's reads and writes that also hashes every byte ends no sooner here;" \
					"modelcache time / trust floor: **$(ratio "$mc" "$trust")**"
			fi
			# The goal proposed where those above are out of reach: modelcache
			# within 10% of the trust limit, which keeps the same promises
			# (bytes durable, SHA-256 of each) with nothing else to do.
			[[ -z $limit ]] || echo "- trust limit (measured) time / modelcache time: **$(ratio "$limit" "$mc")**" \
				"(proposed goal >= 0.90: $(awk -v l="$limit" -v m="$mc" 'BEGIN { print (l / m >= 0.90 ? "met" : "NOT met") }'))"
			[[ -z ${WALL[$DS.baseline]:-} ]] || echo "- baseline time / modelcache time: $(ratio "${WALL[$DS.baseline]}" "$mc")"
			if [[ -n ${CPU[$DS.rclone]:-} ]]; then
				echo "- CPU per GB: modelcache $(awk -v c="${CPU[$DS.modelcache]}" -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f", c / (b / 1e9) }') s," \
					"rclone $(awk -v c="${CPU[$DS.rclone]}" -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f", c / (b / 1e9) }') s" \
					"(user+system of the process; the S3 server's own CPU not included)"
			fi
			echo "- agent peak RSS: $((RSS[$DS.modelcache] / 1024)) MiB (VmHWM over the runs; goal < 64 MiB)"
			# Fields 5-7 of modelcache's lines: disk reads, rchar, fetched bytes.
			awk '$1 == "modelcache" { if ($5 > d) d = $5; r = $6 / $7; if (r > x) x = r }
				END { printf "- second reads: the agent read at most %d bytes from disk during a prefetch (/proc/PID/io read_bytes), and read(2) returned at most %.3f bytes per byte fetched (rchar, sockets included): %s\n", d, x,
					(x <= 1.01 ? "each byte is hashed as it streams, never read back" : "the excess over 1 is bytes read back from the page cache to hash them in order") }' "$f"
		fi
		echo
	} >"$RUN/table-$DS"
	cat "$RUN/table-$DS"
}

# goal LABEL OTHER_S MODELCACHE_S GOAL TRUST_S LIMIT_S [NOTE]: one goal line,
# OTHER / modelcache >= GOAL, with its verdict. A goal modelcache misses is
# called out of reach only when the trust floor (see download_table) would
# miss it too: then meeting it here takes less CPU than the durable limit's
# reads and writes plus the hash. When only the trust limit (LIMIT_S, the
# durable limit hashing every byte, measured in this run) misses it, the
# line says so beside NOT met.
goal() {
	awk -v l="$1" -v o="$2" -v m="$3" -v g="$4" -v t="$5" -v lim="$6" -v note="${7:-}" 'BEGIN {
		r = o / m
		if (r >= g) v = "met"
		else if (t != "" && o / t < g) v = sprintf("out of reach here: at the trust floor it would be %.2f", o / t)
		else if (lim != "" && o / lim < g) v = sprintf("NOT met; the trust limit measured here reaches %.2f", o / lim)
		else v = "NOT met"
		printf "- %s: **%.2f** (goal >= %s%s: %s)\n", l, r, g, note, v
	}'
}
