# shellcheck shell=bash
# Helpers shared by hack/demo.sh, the bench (bench/*.sh) and e2e/run.sh:
# logging, free ports, starting and stopping the processes a script owns,
# building the agent and the bench tools. Source it; it sets REPO and BIN and
# puts Go on PATH.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$REPO/bin
# A fresh machine has Go at /usr/local/go but maybe not on PATH.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH=/usr/local/go/bin:$PATH
fi
export PATH
# The sandbox may point AWS_CA_BUNDLE at a file some tools choke on; every
# endpoint here is plain http on loopback.
unset AWS_CA_BUNDLE

log() { printf '==> %s\n' "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# PIDs this script started; stop_all stops them newest first.
OWNED_PIDS=()

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a port nobody listens on now. Whoever binds it may still
# lose a race, so callers retry when their server fails to start.
free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		if ! port_in_use "$p"; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# wait_port PORT PID SECONDS: wait until PORT accepts connections, failing
# early if PID has exited.
wait_port() {
	local port=$1 pid=$2 deadline=$((SECONDS + $3))
	until port_in_use "$port"; do
		kill -0 "$pid" 2>/dev/null || return 1
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s; reaps it.
stop_pid() {
	local pid=$1
	kill -0 "$pid" 2>/dev/null || {
		wait "$pid" 2>/dev/null || true
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

stop_all() {
	local i
	for ((i = ${#OWNED_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${OWNED_PIDS[i]}"
	done
	OWNED_PIDS=()
}

# forget_pid PID: drop a PID stopped by hand from OWNED_PIDS.
forget_pid() {
	local keep=() p
	for p in "${OWNED_PIDS[@]}"; do
		[[ $p == "$1" ]] || keep+=("$p")
	done
	OWNED_PIDS=("${keep[@]}")
}

S3_ACCESS=testkey
S3_SECRET=testsecret

# start_versitygw DATA_DIR LOG: runs versitygw's posix backend on a free
# loopback port; sets VGW_PORT, VGW_PID, VGW_ENDPOINT. With --keep-alive,
# as AWS S3 keeps connections: without it versitygw answers each
# request with "Connection: close", and a model of 2,000 small files cost
# every client 2,000 TCP connections (strace -c -e connect).
start_versitygw() {
	local data=$1 logf=$2
	mkdir -p "$data"
	for _ in 1 2 3 4 5; do
		VGW_PORT=$(free_port)
		"$BIN/versitygw" --access "$S3_ACCESS" --secret "$S3_SECRET" --region us-east-1 \
			--port "127.0.0.1:$VGW_PORT" --keep-alive posix "$data" >>"$logf" 2>&1 &
		VGW_PID=$!
		OWNED_PIDS+=("$VGW_PID")
		if wait_port "$VGW_PORT" "$VGW_PID" 20; then
			VGW_ENDPOINT=http://127.0.0.1:$VGW_PORT
			return 0
		fi
		stop_pid "$VGW_PID"
		forget_pid "$VGW_PID"
	done
	tail -n 20 "$logf" >&2
	die "versitygw did not start (log: $logf)"
}

# write_sources FILE [ENDPOINT]: the agent's sources file naming the S3
# server at ENDPOINT (default the versitygw started last) as "local".
write_sources() {
	cat >"$1" <<YAML
sources:
  local:
    endpoint: ${2:-$VGW_ENDPOINT}
    region: us-east-1
    pathStyle: true
    accessKeyID: $S3_ACCESS
    secretAccessKey: $S3_SECRET
YAML
}

# build_agent: builds bin/cache-agent unless CACHE_AGENT names a binary to
# use instead; sets CACHE_AGENT.
build_agent() {
	if [[ -n ${CACHE_AGENT:-} ]]; then
		[[ -x $CACHE_AGENT ]] || die "CACHE_AGENT=$CACHE_AGENT is not executable"
		return 0
	fi
	[[ -d $REPO/cmd/cache-agent ]] || die "cmd/cache-agent does not exist yet"
	(cd "$REPO" && go build -o bin/cache-agent ./cmd/cache-agent) || die "building cache-agent failed"
	CACHE_AGENT=$BIN/cache-agent
}

# build_bench_tools DIR NAME...: builds each program bench/NAME (s3-seed,
# sdk-download, ...) into DIR/NAME. bench/ is a module of its own, so what
# only the bench needs stays out of the product's go.mod.
build_bench_tools() {
	local dir=$1 p
	shift
	mkdir -p "$dir"
	for p in "$@"; do
		(cd "$REPO/bench" && go build -o "$dir/$p" "./$p") || die "building bench/$p failed"
	done
}

# start_agent CACHE_DIR SOCKET CAPACITY SOURCES LOG: runs `cache-agent serve`
# and waits until it answers on its socket; sets AGENT_PID.
start_agent() {
	local dir=$1 sock=$2 capacity=$3 sources=$4 logf=$5
	# Port 0: the kernel picks a free one. A port picked here could be taken
	# by then: a bench run of 2,000 files opens thousands of connections, and
	# one of them took the metrics port (bind: address already in use).
	"$CACHE_AGENT" serve --cache-dir "$dir" --socket "$sock" --metrics-addr "127.0.0.1:0" \
		--capacity "$capacity" --sources-file "$sources" >>"$logf" 2>&1 &
	AGENT_PID=$!
	OWNED_PIDS+=("$AGENT_PID")
	local deadline=$((SECONDS + 30))
	until "$CACHE_AGENT" status --socket "$sock" >/dev/null 2>&1; do
		if ! kill -0 "$AGENT_PID" 2>/dev/null || ((SECONDS >= deadline)); then
			tail -n 20 "$logf" >&2
			die "cache-agent did not start (log: $logf)"
		fi
		sleep 0.1
	done
}

# start_csi_plugin SOCKET AGENT_SOCKET CACHE_DIR STATE_DIR LOG: runs
# bin/csi-plugin's node service on SOCKET, outside Kubernetes (no kubelet
# registration, no metrics port), and waits until the socket exists; sets
# CSI_PID.
start_csi_plugin() {
	local sock=$1 agent=$2 cache=$3 state=$4 logf=$5
	"$BIN/csi-plugin" --endpoint "unix://$sock" --mode node --node-id "$(hostname)" \
		--agent-socket "$agent" --cache-dir "$cache" --state-dir "$state" \
		--metrics-addr "" --kubelet-registration=false >>"$logf" 2>&1 &
	CSI_PID=$!
	OWNED_PIDS+=("$CSI_PID")
	local deadline=$((SECONDS + 30))
	until [[ -S $sock ]]; do
		if ! kill -0 "$CSI_PID" 2>/dev/null || ((SECONDS >= deadline)); then
			tail -n 20 "$logf" >&2
			die "csi-plugin did not start (log: $logf)"
		fi
		sleep 0.1
	done
}

# unmount_under DIR: unmounts every mount point under DIR, deepest first, so
# that a script's temp dir can be removed (rm -rf stops at a read-only bind
# mount, and would leave the mount behind). Fails if one stays mounted.
unmount_under() {
	local dir=$1 m rc=0
	# Field 5 of mountinfo is the mount point, octal-escaped (\040 a space).
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" || rc=1
	done < <(awk '{ print $5 }' /proc/self/mountinfo | while read -r m; do
		m=$(printf '%b' "$m")
		[[ $m == "$dir"/* ]] && printf '%s\n' "$m"
	done | sort -r)
	return "$rc"
}
