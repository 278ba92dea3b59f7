#!/usr/bin/env bash
# make scale: what the ModelCache status costs the API server on a big
# cluster. SCALE_NODES simulated nodes (default 1000) fetch SCALE_MODELS
# models each (default 20); every node reports through the agent's real
# reporter and patches its Node's warm labels, and the real status
# controller (its own process) keeps one ModelCache per model. Prints the
# API server's writes per minute (rollout and steady) and the controller's
# CPU, writes them to docs/benchmarks/scale-DATE.md, and puts the summary
# in README.md's "make scale" block. Needs the test tools (make tools): etcd
# and kube-apiserver.
#
#   SCALE_FETCH=10s     one model's download on a node
#   SCALE_PARALLEL=2    downloads at once on a node (--max-downloads)
#   SCALE_ROLLOUT=60s   nodes start fetching within this window
#   SCALE_STEADY=60s    measured after every status is ready
#   SCALE_INTERVAL=15s  the agents' progress interval (their default)
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export SCALE_NODES=${SCALE_NODES:-1000} SCALE_MODELS=${SCALE_MODELS:-20}
export SCALE_FETCH=${SCALE_FETCH:-10s} SCALE_PARALLEL=${SCALE_PARALLEL:-2}
export SCALE_ROLLOUT=${SCALE_ROLLOUT:-60s} SCALE_STEADY=${SCALE_STEADY:-60s} SCALE_INTERVAL=${SCALE_INTERVAL:-15s}
# The commit measured is the one at the start.
commit="$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet || echo ' (with uncommitted changes)')"
out=$(mktemp) summary=$(mktemp)
trap 'rm -f "$out" "$summary"' EXIT
SCALE_OUT=$out SCALE_SUMMARY=$summary MODELCACHE_REQUIRE=1 go test -count=1 -timeout 30m -run '^TestWriteRate$' -v ./pkg/modelstatus

dated=$REPO/docs/benchmarks/scale-$(date -u +%Y-%m-%dT%H%MZ).md
{
	echo "## make scale, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: $(nproc) cores, $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg) at the end;"
	echo "commit $commit. API server, etcd, the"
	echo "simulated nodes and the controller share the machine."
	echo
	cat "$out"
} >"$dated"
echo "wrote $dated"

# The README quotes the summary, with a link to the report.
readme=$REPO/README.md
begin='<!-- make scale writes this block -->' end='<!-- end of make scale block -->'
grep -qF "$begin" "$readme" || die "README.md has no make scale block"
text="$(cat "$summary") ([${dated#"$REPO"/}](${dated#"$REPO"/}), $(date -u +%Y-%m-%d))"
awk -v b="$begin" -v e="$end" -v t="$text" '
	$0 == b { print; print t; skip = 1; next }
	$0 == e { skip = 0 }
	!skip' "$readme" >"$readme.tmp"
mv "$readme.tmp" "$readme"
echo "updated README.md: $text"
