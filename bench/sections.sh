# shellcheck shell=bash
# The second-revision and page-cache sections of bench/run.sh. Source it
# after bench/lib.sh.

# bench_revision: a model of 4 big files + small ones changes one big file.
# Per round: a fresh agent fetches the current revision (not timed), one big
# file gets new content (a new variant each round, so no round finds its
# bytes held), the page cache is dropped, and the refresh is timed. What the
# agent fetched, and everything it read through read(2) (sockets: S3 bodies,
# the LIST reply, headers; and files), is compared with the changed file.
bench_revision() {
	local load0 round wall rc0 rc fetched changed manifest cache=$RUN/rev-cache f
	load0="$(loadavg), $(probes)"
	dataset rev "$REV_PREFIX"
	f=$RUN/results-rev
	changed=$(stat -c %s "$S3_DATA/$BUCKET/$DS_PREFIX/model-00001-of-00004.safetensors")
	for ((round = 0; round < RUNS; round++)); do
		log "second revision: round $((round + 1))/$RUNS (load $(loadavg))"
		rm -rf "$cache"
		start_agent "$cache" "$RUN/agent.sock" $((3 * TOTAL_BYTES)) "$RUN/sources.yaml" "$LOGS/agent.log"
		"$CACHE_AGENT" prefetch "$REF" --socket "$RUN/agent.sock" --wait >>"$LOGS/prefetch.log" 2>&1 ||
			die "prefetch of the first revision failed; see $LOGS"
		"$RUN/bin/s3-seed" --endpoint "$VGW_ENDPOINT" --bucket "$BUCKET" --prefix "$DS_PREFIX" --big 4 \
			--big-size "$REV_SIZE" --mutate-one --variant "$(date +%s%N)" >>"$LOGS/seed.log" 2>&1 ||
			die "changing one file failed; see $LOGS/seed.log"
		drop_caches "$RUN/bin/run-stats" "$CACHE_AGENT"
		rc0=$(proc_io "$AGENT_PID" rchar)
		"$RUN/bin/run-stats" -o "$RUN/cost" "$CACHE_AGENT" prefetch "$REF" --socket "$RUN/agent.sock" \
			--wait >>"$LOGS/prefetch.log" 2>&1 || die "prefetch of the second revision failed; see $LOGS"
		rc=$(($(proc_io "$AGENT_PID" rchar) - rc0))
		"$CACHE_AGENT" status --socket "$RUN/agent.sock" -o json >"$RUN/status.json"
		fetched=$(jq -r '[.jobs[].fetchedBytes] | add' "$RUN/status.json")
		[[ $(jq '.models | length' "$RUN/status.json") == 2 ]] || die "second revision: want 2 revisions held"
		manifest=$(find "$cache/manifests" -name '*.json' -printf '%s\n' | sort -g | tail -n 1)
		stop_pid "$AGENT_PID"
		forget_pid "$AGENT_PID"
		read -r wall _ <"$RUN/cost"
		echo "rev $wall $fetched $rc $manifest" >>"$f"
		printf '    second revision %6.2fs  fetched %d bytes  read(2) %d bytes  load %s\n' "$wall" "$fetched" "$rc" "$(loadavg)"
	done
	rm -rf "$cache"
	{
		echo "### Second revision (3 of 4 big files unchanged)"
		echo
		echo "s3://$BUCKET/$DS_PREFIX: $TOTAL_FILES files, $(awk -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }');" \
			"one $changed-byte file rewritten; the agent holds the first revision; page cache dropped; median of $RUNS runs;" \
			"load average (1/5/15 min) $load0 before; $(loadavg), $(probes) after."
		echo
		awk -v c="$changed" -v t="$(median "$f" rev 2)" '$1 == "rev" {
				if ($3 > fe) fe = $3; if ($4 > rc) rc = $4; if ($5 > m) m = $5 }
			END {
				printf "| refresh to the second revision | median s | bytes fetched (max) | changed file + manifest | read(2) by the agent (max) |\n|---|---:|---:|---:|---:|\n"
				printf "| modelcache `prefetch --wait` | %.2f | %d | %d + %d | %d |\n\n", t, fe, c, m, rc
				printf "- bytes fetched <= changed file + manifest: **%s**; everything else the agent read through read(2) came to %d bytes (LIST reply, HTTP headers, API, and the parts that arrived ahead of the hash read back from the page cache to hash them in order)\n", fe <= c + m ? "yes" : "NO", rc - fe
			}' "$f"
		echo
	} >"$RUN/table-rev"
	cat "$RUN/table-rev"
}

# bench_warm: the first full read of a held model (read-tree: every file
# front to back) after the page cache was dropped, against the same read
# after `prefetch --cached --warm-page-cache`, and the first read right
# after the download itself (no drop: what the download left in memory).
bench_warm() {
	local load0 round cache=$RUN/warm-cache tree out f bytes cold warmup warm after_fetch
	load0="$(loadavg), $(probes)"
	dataset warm "$COLD_PREFIX"
	f=$RUN/results-warm
	rm -rf "$cache"
	start_agent "$cache" "$RUN/agent.sock" $((2 * TOTAL_BYTES)) "$RUN/sources.yaml" "$LOGS/agent.log"
	drop_caches "$CACHE_AGENT"
	"$CACHE_AGENT" prefetch "$REF" --socket "$RUN/agent.sock" --wait >>"$LOGS/prefetch.log" 2>&1 ||
		die "prefetch failed; see $LOGS"
	tree=$("$CACHE_AGENT" status --socket "$RUN/agent.sock" -o json | jq -r '.models[0].path')
	[[ -d $tree ]] || die "no model tree after prefetch"
	read -r _ after_fetch < <("$RUN/bin/read-tree" "$tree")
	for ((round = 0; round < RUNS; round++)); do
		log "page-cache warm-up: round $((round + 1))/$RUNS (load $(loadavg))"
		drop_caches "$RUN/bin/read-tree"
		read -r bytes cold < <("$RUN/bin/read-tree" "$tree")
		((bytes == TOTAL_BYTES)) || die "read-tree read $bytes bytes, want $TOTAL_BYTES"
		drop_caches "$RUN/bin/read-tree" "$RUN/bin/run-stats" "$CACHE_AGENT"
		out=$("$RUN/bin/run-stats" -o "$RUN/cost" "$CACHE_AGENT" prefetch "$REF" --socket "$RUN/agent.sock" \
			--cached --wait --warm-page-cache 2>&1) || die "prefetch --warm-page-cache failed: $out"
		echo "$out" >>"$LOGS/prefetch.log"
		read -r warmup _ <"$RUN/cost"
		read -r _ warm < <("$RUN/bin/read-tree" "$tree")
		echo "warm $cold $warmup $warm" >>"$f"
		printf '    read after drop %6.2fs  warm-up %6.2fs  read after warm-up %6.2fs  load %s\n' "$cold" "$warmup" "$warm" "$(loadavg)"
	done
	stop_pid "$AGENT_PID"
	forget_pid "$AGENT_PID"
	rm -rf "$cache"
	{
		echo "### Page-cache warm-up (first read of the model)"
		echo
		echo "s3://$BUCKET/$DS_PREFIX held by the agent ($(awk -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }')):" \
			"every file read once front to back in 1 MiB reads (bench/read-tree); median of $RUNS runs;" \
			"load average (1/5/15 min) $load0 before; $(loadavg), $(probes) after."
		echo
		echo "| first read of the model | median s | GB/s |"
		echo "|---|---:|---:|"
		local row
		for row in "after the page cache was dropped:2" "warm-up: \`prefetch --cached --warm-page-cache --wait\`:3" \
			"after the warm-up:4"; do
			awk -v l="${row%:*}" -v b="$TOTAL_BYTES" -v t="$(median "$f" warm "${row##*:}")" \
				'BEGIN { printf "| %s | %.2f | %.2f |\n", l, t, b / 1e9 / t }'
		done
		awk -v l="right after the download (no drop, one run)" -v b="$TOTAL_BYTES" -v t="$after_fetch" \
			'BEGIN { printf "| %s | %.2f | %.2f |\n", l, t, b / 1e9 / t }'
		echo
		echo "- first read after warm-up vs after a dropped cache: $(ratio "$(median "$f" warm 2)" "$(median "$f" warm 4)")x faster"
		echo
	} >"$RUN/table-warm"
	cat "$RUN/table-warm"
}
