# shellcheck shell=bash
# The hf:// section of bench/run.sh. Source it after bench/lib.sh.

# bench_hub: a cold fetch of a Hugging Face Hub repo (4 LFS weights of
# BENCH_SIZE and a config, served from memory by hack/hub-mem: the fixture
# Hub of internal/hubtest, redirecting LFS files to its CDN) by cache-agent
# (`prefetch --wait`: every byte hashed, checked against the published
# SHA-256 and fsynced) against the official JS client's snapshotDownload
# (@huggingface/hub 2.17.5, as hack/tools.sh installs it; one file at a
# time, no hash), timed until its bytes are on disk too (sync -f). Page
# cache dropped before each run; the order alternates per round.
bench_hub() {
	local load0 round i t f=$RUN/results-hub dir=$BENCH_DIR/hub-model cache=$RUN/hub-cache js=$RUN/hub-js
	local repo=bench-org/m4 size ep
	load0="$(loadavg), $(probes)"
	size=$(numfmt --from=iec-i "${BENCH_SIZE%B}")
	if [[ ! -f $dir/.complete-$size ]]; then
		log "hub: making the repo's files in $dir (kept for next time)"
		rm -rf "$dir" && mkdir -p "$dir"
		for i in 1 2 3 4; do
			head -c "$size" /dev/urandom >"$dir/model-0000$i-of-00004.safetensors"
		done
		echo '{"architectures":["LlamaForCausalLM"]}' >"$dir/config.json"
		touch "$dir/.complete-$size"
	fi
	(cd "$REPO" && go build -o "$RUN/bin/hub-mem" ./hack/hub-mem) || die "building hack/hub-mem failed"
	# hub-mem serves every regular file under --dir: keep the marker out.
	mkdir -p "$RUN/hub-repo" && cp -l "$dir"/*.safetensors "$dir"/config.json "$RUN/hub-repo/" 2>/dev/null ||
		cp "$dir"/*.safetensors "$dir"/config.json "$RUN/hub-repo/"
	rm -f "$RUN/hub.endpoint"
	"$RUN/bin/hub-mem" --repo "$repo" --dir "$RUN/hub-repo" --endpoint-file "$RUN/hub.endpoint" >"$LOGS/hub-mem.log" 2>&1 &
	OWNED_PIDS+=("$!")
	for _ in $(seq 600); do
		[[ -s $RUN/hub.endpoint ]] && break
		sleep 0.1
	done
	ep=$(cat "$RUN/hub.endpoint" 2>/dev/null) || die "hub-mem did not start; see $LOGS/hub-mem.log"
	printf 'sources:\n  hub:\n    type: hf\n    endpoint: %s\n' "$ep" >"$RUN/hub-sources.yaml"
	read -r TOTAL_FILES TOTAL_BYTES < <(find "$RUN/hub-repo" -type f -printf '%s\n' |
		awk '{ n++; s += $1 } END { printf "%d %.0f\n", n, s }')
	: >"$f"
	for ((round = 0; round < RUNS; round++)); do
		log "hub: round $((round + 1))/$RUNS (load $(loadavg))"
		for t in $( ((round % 2)) && echo "js modelcache" || echo "modelcache js"); do
			rm -rf "$cache" "$js"
			if [[ $t == modelcache ]]; then
				start_agent "$cache" "$RUN/agent.sock" $((2 * TOTAL_BYTES)) "$RUN/hub-sources.yaml" "$LOGS/agent.log"
				drop_caches "$CACHE_AGENT"
				"$RUN/bin/run-stats" -o "$RUN/cost" "$CACHE_AGENT" prefetch "hf://$repo?source=hub" \
					--socket "$RUN/agent.sock" --wait >>"$LOGS/prefetch.log" 2>&1 || die "hub: prefetch failed; see $LOGS"
				stop_pid "$AGENT_PID"
				forget_pid "$AGENT_PID"
			else
				mkdir -p "$js"
				drop_caches "$(command -v node)"
				"$RUN/bin/run-stats" -o "$RUN/cost" env HFJS="$BIN/hfjs" sh -c \
					'node "$1" "$2" "$3" main "$4" >"$4.out" && sync -f "$4"' _ \
					"$REPO/internal/hubtest/testdata/snapshot.mjs" "$ep" "$repo" "$js" >>"$LOGS/hub-js.log" 2>&1 ||
					die "hub: the JS client failed; see $LOGS/hub-js.log and $js.out"
			fi
			read -r wall cpu _ <"$RUN/cost"
			echo "$t $wall $cpu" >>"$f"
			printf '    %-10s %6.2fs  load %s\n' "$t" "$wall" "$(loadavg)"
		done
	done
	rm -rf "$cache" "$js" "$RUN/hub-repo"
	local mc jsw
	mc=$(median "$f" modelcache 2)
	jsw=$(median "$f" js 2)
	{
		echo "### Cold hf:// fetch: 4 LFS files + 1 config from a Hub"
		echo
		echo "hf://$repo from hack/hub-mem (internal/hubtest's Hub and CDN on loopback, the repo in memory): $TOTAL_FILES files," \
			"$(awk -v b="$TOTAL_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }'); median of $RUNS runs, page cache dropped before each$([[ $DROP_CACHES == 1 ]] || echo ' (NOT: DROP_CACHES=0)');" \
			"load average (1/5/15 min) $load0 before; $(loadavg), $(probes) after."
		echo
		echo "| tool | median s | GB/s |"
		echo "|---|---:|---:|"
		awk -v w="$mc" -v b="$TOTAL_BYTES" 'BEGIN { printf "| modelcache (cache-agent prefetch --wait; SHA-256 checked, fsynced) | %.2f | %.2f |\n", w, b / 1e9 / w }'
		awk -v w="$jsw" -v b="$TOTAL_BYTES" 'BEGIN { printf "| @huggingface/hub 2.17.5 snapshotDownload, then sync -f | %.2f | %.2f |\n", w, b / 1e9 / w }'
		echo
		echo "- JS client time / modelcache time: **$(ratio "$jsw" "$mc")**"
		echo
	} >"$RUN/table-hub"
	cat "$RUN/table-hub"
}
