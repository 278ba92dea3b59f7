# shellcheck shell=bash
# The "multi" and "big" sections of bench/run.sh: many models at once, and
# one very large model. Source it after bench/lib.sh.

MULTI_MODELS=${MULTI_MODELS:-8}
MULTI_SIZE=${MULTI_SIZE:-512MiB}
BIG_FILES=${BIG_FILES:-10}
BIG_FILE_SIZE=${BIG_FILE_SIZE:-2GiB}
BIG_WINDOW=${BIG_WINDOW:-2GiB}

# multi_prefix I: the prefix of the I-th distinct model of the multi set.
multi_prefix() { echo "multi${MULTI_MODELS}x${MULTI_SIZE,,}-$1"; }

# seed_multi: MULTI_MODELS models of one MULTI_SIZE file each, every one
# with content of its own (no two share a byte to deduplicate).
seed_multi() {
	local i
	for ((i = 0; i < MULTI_MODELS; i++)); do
		seed --prefix "$(multi_prefix "$i")" --big 1 --big-size "$MULTI_SIZE" --small 1 --seed $((100 + i))
	done
}

# now: seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# multi_round NAME: one round of the multi section with $CACHE_AGENT (a
# fresh agent each time): the one model alone, then the MULTI_MODELS at
# once. Appends to $f (bench_multi's): "one-NAME S", "all-NAME S",
# "model-NAME S" for each model and "rss-NAME KiB" (the at-once agent's
# VmHWM). Reads cache, single, single_bytes, sizes and refs of bench_multi.
multi_round() {
	local name=$1 t0 t1 i one all rss pids=()
	rm -rf "$cache"
	start_agent "$cache" "$RUN/agent.sock" $((2 * single_bytes + (1 << 30))) "$RUN/sources.yaml" "$LOGS/agent.log"
	drop_caches "$CACHE_AGENT"
	t0=$(now)
	"$CACHE_AGENT" prefetch "$single" --socket "$RUN/agent.sock" --wait --timeout 30m >>"$LOGS/prefetch.log" 2>&1 ||
		die "prefetch of the one model failed; see $LOGS"
	t1=$(now)
	one=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	stop_pid "$AGENT_PID"
	forget_pid "$AGENT_PID"

	rm -rf "$cache"
	start_agent "$cache" "$RUN/agent.sock" $((2 * sizes + (1 << 30))) "$RUN/sources.yaml" "$LOGS/agent.log"
	drop_caches "$CACHE_AGENT"
	t0=$(now)
	for ((i = 0; i < MULTI_MODELS; i++)); do
		(
			"$CACHE_AGENT" prefetch "${refs[i]}" --socket "$RUN/agent.sock" --wait --timeout 30m >>"$LOGS/prefetch.log" 2>&1 || exit 1
			now >"$RUN/multi-end-$i"
		) &
		pids+=($!)
	done
	for i in "${pids[@]}"; do
		wait "$i" || die "a prefetch of the multi set failed; see $LOGS"
	done
	all=0
	for ((i = 0; i < MULTI_MODELS; i++)); do
		t1=$(awk -v a="$t0" -v b="$(cat "$RUN/multi-end-$i")" 'BEGIN { printf "%.3f", b - a }')
		echo "model-$name $t1" >>"$f"
		all=$(awk -v a="$all" -v b="$t1" 'BEGIN { print (b > a ? b : a) }')
	done
	rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
	stop_pid "$AGENT_PID"
	forget_pid "$AGENT_PID"
	rm -rf "$cache"
	printf '%s\n' "one-$name $one" "all-$name $all" "rss-$name $rss" >>"$f"
	printf '    %-10s one model %6.2fs   %d at once %6.2fs   peak RSS %d MiB   load %s\n' "$name" "$one" "$MULTI_MODELS" "$all" $((rss / 1024)) "$(loadavg)"
}

# multi_row NAME LABEL: the table row of NAME's rounds in $f.
multi_row() {
	local one all first last rss
	one=$(median "$f" "one-$1" 2)
	all=$(median "$f" "all-$1" 2)
	first=$(awk -v t="model-$1" '$1 == t && (f == "" || $2 < f) { f = $2 } END { print f }' "$f")
	last=$(awk -v t="model-$1" '$1 == t && $2 > w { w = $2 } END { print w }' "$f")
	rss=$(awk -v t="rss-$1" '$1 == t && $2 > m { m = $2 } END { printf "%.0f", m / 1024 }' "$f")
	printf '| %s | %.2f | %.2f | %s | %.2f | %.2f | %s |\n' "$2" "$one" "$all" "$(ratio "$all" "$one")" "$first" "$last" "$rss"
}

# bench_multi: MULTI_MODELS distinct models fetched at once by one agent,
# against one model of the same total size (the cold set), each round both;
# with BASELINE_AGENT, that agent too in each round, for an A/B.
# Goals (issue 16): all of them within 1.1x the one model's time, and none
# starved: each ends within 2x its fair share. With the bandwidth shared
# evenly, N models of 1/N of the bytes each all end when the one big model
# would: the fair share of each is the one model's time.
bench_multi() {
	local load0 round cache=$RUN/multi-cache f=$RUN/results-multi i single refs=() sizes=0 agents=(modelcache)
	load0="$(loadavg), $(probes)"
	[[ -z ${BASELINE_AGENT:-} ]] || agents+=(baseline)
	dataset cold "$COLD_PREFIX"
	single=$REF
	local single_bytes=$TOTAL_BYTES
	for ((i = 0; i < MULTI_MODELS; i++)); do
		refs+=("s3://$BUCKET/$(multi_prefix "$i")?source=local")
		sizes=$((sizes + $(find "$S3_DATA/$BUCKET/$(multi_prefix "$i")" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')))
	done
	: >"$f"
	for ((round = 0; round < RUNS; round++)); do
		log "models at once: round $((round + 1))/$RUNS (load $(loadavg))"
		# Alternate which agent goes first, as the other sections rotate.
		local order=("${agents[@]}")
		if ((round % 2 == 1 && ${#agents[@]} > 1)); then order=(baseline modelcache); fi
		local a
		for a in "${order[@]}"; do
			if [[ $a == baseline ]]; then
				CACHE_AGENT=$BASELINE_AGENT multi_round baseline
			else
				multi_round modelcache
			fi
		done
	done
	local m_one m_all worst
	m_one=$(median "$f" one-modelcache 2)
	m_all=$(median "$f" all-modelcache 2)
	worst=$(awk '$1 == "model-modelcache" && $2 > w { w = $2 } END { print w }' "$f")
	{
		echo "### Models at once: $MULTI_MODELS distinct models of $MULTI_SIZE against one of the same size in all"
		echo
		echo "One model: s3://$BUCKET/$COLD_PREFIX ($(awk -v b="$single_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }')); at once: $MULTI_MODELS models," \
			"$(awk -v b="$sizes" 'BEGIN { printf "%.2f GB", b / 1e9 }') in all, no byte shared, each \`prefetch --wait\` started together" \
			"against one agent (default --max-downloads and --concurrency); page cache dropped; medians of $RUNS rounds; load $load0 before, $(loadavg), $(probes) after."
		echo
		echo "| agent | one model, median s | $MULTI_MODELS at once, until the last ends, median s | at once / one | first to end (min over rounds) s | last to end (max over rounds) s | peak RSS at once (max) MiB |"
		echo "|---|---:|---:|---:|---:|---:|---:|"
		multi_row modelcache "$(tool_label modelcache)"
		[[ -z ${BASELINE_AGENT:-} ]] || multi_row baseline "$(tool_label baseline)"
		echo
		awk -v one="$m_one" -v all="$m_all" -v worst="$worst" -v n="$MULTI_MODELS" 'BEGIN {
			r = all / one; s = worst / one
			printf "- %d at once / one model: **%.3f** (goal <= 1.10: %s)\n", n, r, (r <= 1.10 ? "met" : "NOT met")
			printf "- slowest model / its fair share (the one model'"'"'s time): **%.2f** (goal <= 2: %s)\n", s, (s <= 2 ? "met" : "NOT met")
		}'
		echo
	} >"$RUN/table-multi"
	cat "$RUN/table-multi"
}

# bench_big: one model of BIG_FILES x BIG_FILE_SIZE (20 GiB), served by a
# second versitygw whose data is on disk ($BENCH_DIR/s3-big: it does not fit
# in RAM beside the page cache). The agent's progress and RSS are sampled
# every half second; the table gives GB/s and the RSS for each BIG_WINDOW of
# the fetch. Goals: throughput steady from the first window to the last,
# RSS flat.
bench_big() {
	local load0 cache=$RUN/big-cache data=$BENCH_DIR/s3-big samples=$RUN/big-samples vgw_pid=$VGW_PID vgw_endpoint=$VGW_ENDPOINT
	local big_pid big_endpoint ref pf t0 prefix="big${BIG_FILES}x${BIG_FILE_SIZE,,}" total
	load0="$(loadavg), $(probes)"
	start_versitygw "$data" "$LOGS/versitygw-big.log"
	big_pid=$VGW_PID big_endpoint=$VGW_ENDPOINT
	VGW_PID=$vgw_pid VGW_ENDPOINT=$vgw_endpoint
	log "seeding the big model on disk ($data; kept for next time)"
	"$RUN/bin/s3-seed" --endpoint "$big_endpoint" --bucket "$BUCKET" --skip-existing --prefix "$prefix" \
		--big "$BIG_FILES" --big-size "$BIG_FILE_SIZE" --small 2 --seed 200 | sed 's/^/    /'
	total=$(find "$data/$BUCKET/$prefix" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
	write_sources "$RUN/sources-big.yaml" "$big_endpoint"
	ref="s3://$BUCKET/$prefix?source=local"
	rm -rf "$cache"
	start_agent "$cache" "$RUN/agent.sock" $((total + (1 << 30))) "$RUN/sources-big.yaml" "$LOGS/agent.log"
	drop_caches "$CACHE_AGENT"
	log "the big model: $(awk -v b="$total" 'BEGIN { printf "%.1f GB", b / 1e9 }') (load $(loadavg))"
	t0=$(now)
	"$CACHE_AGENT" prefetch "$ref" --socket "$RUN/agent.sock" --wait --timeout 60m >>"$LOGS/prefetch.log" 2>&1 &
	pf=$!
	: >"$samples"
	while kill -0 "$pf" 2>/dev/null; do
		printf '%s %s %s\n' "$(now)" \
			"$("$CACHE_AGENT" status --socket "$RUN/agent.sock" -o json 2>/dev/null | jq -r '[.jobs[] | select(.state != "ready") | .doneBytes] | add // 0')" \
			"$(awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT_PID/status")" >>"$samples"
		sleep 0.5
	done
	wait "$pf" || die "prefetch of the big model failed; see $LOGS"
	printf '%s %s %s\n' "$(now)" "$total" "$(awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT_PID/status")" >>"$samples"
	local hwm
	hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
	stop_pid "$AGENT_PID"
	forget_pid "$AGENT_PID"
	rm -rf "$cache"
	# The durable limit, on the same data and disk, sampled by what it has
	# passed to pwrite(2) (its files are preallocated: du would not do).
	local dest=$RUN/big-dst d0 dpid dhwm=0 wc rss
	rm -rf "$dest"
	mkdir -p "$dest"
	drop_caches "$RUN/bin/sdk-download"
	log "the big model, durable limit (load $(loadavg))"
	d0=$(now)
	"$RUN/bin/sdk-download" --endpoint "$big_endpoint" --access "$S3_ACCESS" --secret "$S3_SECRET" --bucket "$BUCKET" \
		--prefix "$prefix" --durable-sink "$dest" >>"$LOGS/durable-big.log" 2>&1 &
	dpid=$!
	: >"$RUN/big-durable"
	while kill -0 "$dpid" 2>/dev/null; do
		wc=$(proc_io "$dpid" wchar 2>/dev/null) || break
		rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$dpid/status" 2>/dev/null) || break
		dhwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$dpid/status" 2>/dev/null) || break
		printf '%s %s %s\n' "$(now)" "$wc" "$rss" >>"$RUN/big-durable"
		sleep 0.5
	done
	wait "$dpid" || die "the durable limit failed on the big model; see $LOGS/durable-big.log"
	printf '%s %s %s\n' "$(now)" "$total" "$rss" >>"$RUN/big-durable"
	rm -rf "$dest"
	stop_pid "$big_pid"
	forget_pid "$big_pid"
	local window
	window=$(numfmt --from=iec-i "${BIG_WINDOW%B}")
	{
		echo "### One big model: $BIG_FILES x $BIG_FILE_SIZE"
		echo
		echo "s3://$BUCKET/$prefix, $(awk -v b="$total" 'BEGIN { printf "%.2f GB", b / 1e9 }'), from a second versitygw with its data on disk" \
			"($data: $(awk -v b="$total" 'BEGIN { printf "%.0f", b / 2^30 }') GiB do not fit in RAM beside the page cache); page cache dropped; one run;" \
			"progress and RSS sampled every 0.5 s; load $load0 before, $(loadavg), $(probes) after."
		echo
		echo "modelcache (\`cache-agent prefetch --wait\`, progress from \`status\`):"
		echo
		window_table "$samples" "$t0" "$window" "$total" "$hwm"
		echo
		echo "The durable limit on the same server and disk (the same ranged GETs, \`pwrite\` at offsets, fsync per file; no hashing, no store), progress from its \`wchar\`:"
		echo
		window_table "$RUN/big-durable" "$d0" "$window" "$total" "$dhwm"
		echo
	} >"$RUN/table-big"
	# A dip both show is the disk's: say so rather than leave a bare NO.
	if [[ $(grep -c "steady if >= 0.80: NO" "$RUN/table-big") == 2 ]]; then
		echo "- neither download was steady: the durable limit, which neither hashes nor stores, slowed down on the same disk too (run right after it), so the dips are the disk's (this VM throttles writes after tens of GB)" >>"$RUN/table-big"
		echo >>"$RUN/table-big"
	fi
	# The proposed goal where the disk throttles (issue 16): no less steady
	# than a download that only writes, on the same disk.
	local steady
	mapfile -t steady < <(sed -n 's/.*slowest window \/ median window: \*\*\([0-9.]*\)\*\*.*/\1/p' "$RUN/table-big")
	if ((${#steady[@]} == 2)); then
		echo "- modelcache's slowest / median window against the durable limit's: **${steady[0]}** against ${steady[1]} (proposed goal, no lower: $(awk -v a="${steady[0]}" -v b="${steady[1]}" 'BEGIN { print (a >= b ? "met" : "NOT met") }'))" >>"$RUN/table-big"
		echo >>"$RUN/table-big"
	fi
	cat "$RUN/table-big"
}

# window_table SAMPLES T0 WINDOW TOTAL HWM: from lines "time bytes rss_kib",
# GB/s and the largest RSS of each WINDOW bytes, linear between samples;
# then whether the rate was steady and the RSS flat. A remainder of less
# than half a window (the model's small files after 10 x 2 GiB) joins the
# last window: alone it was a window of a few KB that also held the final
# commit, whose "rate" of 0.00 GB/s was the slowest window of every run.
window_table() {
	awk -v t0="$2" -v w="$3" -v total="$4" -v hwm="$5" '
			function edge_of(k) { return total - k * w < w / 2 ? total : k * w }
			# When the download passed each window edge: linear between samples.
			{ t[NR] = $1; d[NR] = $2; r[NR] = $3 }
			END {
				printf "| window | GB/s | RSS max MiB |\n|---|---:|---:|\n"
				prev = t0; k = 1; n = 0; rmax = 0; lo = 0; tl = t0
				for (i = 1; i <= NR; i++) {
					if (r[i] > rmax) rmax = r[i]
					# fin: the last window is out, whatever samples follow (the
					# agent reports 0 bytes once the job is ready).
					while (!fin && (edge_of(k) <= d[i] || (i == NR && (k - 1) * w < total))) {
						edge = edge_of(k)
						at = d[i] > lo ? tl + (t[i] - tl) * (edge - lo) / (d[i] - lo) : t[i]
						n++; rates[n] = (edge - (k - 1) * w) / (at - prev) / 1e9; rss[n] = rmax
						printf "| %.1f-%.1f GiB | %.2f | %.0f |\n", (k - 1) * w / 2^30, edge / 2^30, rates[n], rmax / 1024
						# The sample that crossed the edge stands for the next window too.
						prev = at; k++; rmax = r[i]
						if (edge >= total) fin = 1
					}
					lo = d[i]; tl = t[i]
				}
				# Steady: the slowest window against the median one (mawk has no sort).
				for (i = 1; i <= n; i++) s[i] = rates[i]
				for (i = 2; i <= n; i++) for (j = i; j > 1 && s[j] < s[j-1]; j--) { x = s[j]; s[j] = s[j-1]; s[j-1] = x }
				med = n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
				printf "\n- whole fetch: **%.2f GB/s**; slowest window / median window: **%.2f** (steady if >= 0.80: %s)\n", total / (t[NR] - t0) / 1e9, s[1] / med, (s[1] / med >= 0.8 ? "yes" : "NO")
				printf "- RSS: first window %.0f MiB, last %.0f MiB, peak (VmHWM) %.0f MiB (flat if the last is within 16 MiB of the first: %s; under 64 MiB: %s)\n", rss[1] / 1024, rss[n] / 1024, hwm / 1024, (rss[n] - rss[1] <= 16 * 1024 ? "yes" : "NO"), (hwm < 64 * 1024 ? "yes" : "NO")
			}' "$1"
}
