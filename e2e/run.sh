#!/usr/bin/env bash
# `make e2e`: modelcache on a real single-node Kubernetes.
#   1. e2e/up.sh: etcd, kube-apiserver, kcm, scheduler, containerd, kubelet
#      (Kubernetes built from source by hack/kube-build.sh, cached in the Go build cache)
#   2. the modelcache image (hack/image.sh, an OCI tar, no Docker engine) → containerd
#   3. versitygw (hack/tools.sh) as S3, hack/hub-mem as a Hugging Face Hub
#      (a gated repo) and hack/registry-mem as an OCI registry, all on
#      loopback; the sources Secret naming them
#   4. helm install charts/modelcache -f deploy/e2e/values.yaml (or, with
#      E2E_INSTALL=kustomize, kubectl apply -k deploy/e2e); wait for the DaemonSet
#   5. go test -tags e2e ./e2e (the assertions; the suite uploads its models)
#   6. on failure: logs of plugin, agent, kubelet, containerd; then e2e/down.sh --purge
# Env: E2E_KEEP=1 leaves the cluster running, versitygw, hub-mem and registry-mem stopped (its sources
#      Secret then points at a closed port; then: e2e/down.sh --purge);
#      E2E_RUN=REGEX passes -run to go test;
#      E2E_INSTALL=helm (default) or kustomize: how modelcache is installed.
#      The default runs the chart; internal/charttest checks that it renders
#      exactly the objects of deploy/e2e, which keeps that overlay honest.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$REPO/hack/lib.sh"
cd "$REPO"

export E2E_DIR=${E2E_DIR:-/tmp/modelcache-e2e}
if [[ $E2E_DIR != /tmp/modelcache-e2e ]]; then
	die "deploy/e2e names /tmp/modelcache-e2e in its hostPaths; E2E_DIR=$E2E_DIR is not supported"
fi
[[ $(id -u) == 0 ]] || die "make e2e runs a kubelet and mounts: it needs root"
export KUBECONFIG=$E2E_DIR/etc/admin.kubeconfig
KUBECTL=$BIN/k8s/kubectl
CSOCK=$E2E_DIR/run/containerd/containerd.sock
IMAGE=localhost/modelcache:e2e
NS=modelcache
T0=$SECONDS
step() { log "[+$((SECONDS - T0))s] $*"; }
kubectl() { "$KUBECTL" "$@"; }

dump() {
	local d=$E2E_DIR/logs
	echo
	echo "================ e2e failed: state and logs (all logs under $d) ================"
	kubectl get nodes,pods -A -o wide 2>&1 || true
	kubectl -n "$NS" describe ds/modelcache-node deploy/modelcache-controller 2>&1 | grep -A12 "^Events:" || true
	for p in $(kubectl -n "$NS" get pods -o name 2>/dev/null); do
		for c in $(kubectl -n "$NS" get "$p" -o jsonpath='{.spec.containers[*].name}' 2>/dev/null); do
			echo "---------------- $p $c (last 80 lines)"
			kubectl -n "$NS" logs "$p" -c "$c" --tail=80 2>&1 || true
			kubectl -n "$NS" logs "$p" -c "$c" --previous --tail=40 2>/dev/null | sed 's/^/[previous] /' || true
		done
	done
	for p in $(kubectl get pods -o name 2>/dev/null); do
		echo "---------------- describe $p"
		kubectl describe "$p" 2>&1 | sed -n '/^Events:/,$p' || true
	done
	echo "---------------- events (default and $NS)"
	kubectl get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 40 || true
	for f in kubelet containerd versitygw hub-mem registry-mem; do
		[[ -f $d/$f.log ]] || continue
		echo "---------------- $f.log (last 60 lines, errors and csi first)"
		grep -iE 'csi|modelcache|error|fail' "$d/$f.log" | tail -n 40 || true
		echo "…"
		tail -n 20 "$d/$f.log"
	done
}

cleanup() {
	local rc=$?
	if ((rc != 0)); then
		dump || true
	fi
	stop_all
	if [[ ${E2E_KEEP:-} == 1 ]]; then
		step "E2E_KEEP=1: cluster left running (KUBECONFIG=$KUBECONFIG; versitygw stopped); stop it with e2e/down.sh --purge"
	else
		step "tearing down"
		"$REPO/e2e/down.sh" --purge >"$E2E_DIR/down.log" 2>&1 || cat "$E2E_DIR/down.log"
	fi
	step "e2e $( ((rc == 0)) && echo passed || echo FAILED) in $((SECONDS - T0))s"
	exit "$rc"
}

E2E_INSTALL=${E2E_INSTALL:-helm}
case $E2E_INSTALL in
helm | kustomize) ;;
*) die "E2E_INSTALL=$E2E_INSTALL: want helm or kustomize" ;;
esac

step "tools (versitygw, kubectl, helm)"
"$REPO/hack/tools.sh"

# One e2e cluster per machine (fixed ports and paths). Several worktrees share
# a development machine: a second `make e2e` waits for the first instead of
# tearing its cluster down as a "leftover" below. The lock is released when
# this script exits (the fd closes), also on a crash.
exec 9>"${E2E_DIR}.lock"
if ! flock -n 9; then
	step "another make e2e holds ${E2E_DIR}.lock; waiting for it (up to 45 min)"
	flock -w 2700 9 || die "another make e2e still runs after 45 min"
fi

# A leftover cluster from an interrupted run would mix old state into this one.
if [[ -d $E2E_DIR/run ]]; then
	step "stopping a previous e2e cluster"
	"$REPO/e2e/down.sh" --purge >/dev/null 2>&1 || true
fi
trap cleanup EXIT
step "cluster up"
# 9>&-: the cluster's daemons must not inherit the lock (E2E_KEEP=1 leaves them running).
"$REPO/e2e/up.sh" 9>&-

step "image $IMAGE"
"$REPO/hack/image.sh" "$IMAGE" "$E2E_DIR/images/modelcache.tar"
ctr --address "$CSOCK" -n k8s.io images import "$E2E_DIR/images/modelcache.tar" >/dev/null

step "versitygw"
mkdir -p "$E2E_DIR/logs"
start_versitygw "$E2E_DIR/s3" "$E2E_DIR/logs/versitygw.log"
SLOW_ADDR=127.0.0.1:$(free_port)

step "hub-mem (a Hugging Face Hub with the gated repo e2e-org/tiny-llm)"
HUB_DIR=$E2E_DIR/hub-model
rm -rf "$HUB_DIR" && mkdir -p "$HUB_DIR/tokenizer"
head -c $((24 << 20)) /dev/urandom >"$HUB_DIR/model.safetensors"
head -c $((6 << 20)) /dev/urandom >"$HUB_DIR/pytorch_model.bin" # excluded by the test's ref
echo '{"architectures":["LlamaForCausalLM"]}' >"$HUB_DIR/config.json"
echo '{"a":1}' >"$HUB_DIR/tokenizer/vocab.json"
go build -o "$BIN/hub-mem" ./hack/hub-mem
rm -f "$E2E_DIR/hub.endpoint"
"$BIN/hub-mem" --repo e2e-org/tiny-llm --dir "$HUB_DIR" --token hf_e2e \
	--endpoint-file "$E2E_DIR/hub.endpoint" >"$E2E_DIR/logs/hub-mem.log" 2>&1 &
OWNED_PIDS+=("$!")
for _ in $(seq 100); do
	[[ -s $E2E_DIR/hub.endpoint ]] && break
	sleep 0.1
done
HUB_ENDPOINT=$(cat "$E2E_DIR/hub.endpoint" 2>/dev/null) || die "hub-mem did not start (log: $E2E_DIR/logs/hub-mem.log)"

step "registry-mem (an OCI registry with the same files as e2e/tiny-llm:v1)"
go build -o "$BIN/registry-mem" ./hack/registry-mem
rm -f "$E2E_DIR/registry.endpoint"
"$BIN/registry-mem" --repo e2e/tiny-llm --tag v1 --dir "$HUB_DIR" \
	--endpoint-file "$E2E_DIR/registry.endpoint" >"$E2E_DIR/logs/registry-mem.log" 2>&1 &
OWNED_PIDS+=("$!")
for _ in $(seq 200); do
	[[ -s $E2E_DIR/registry.endpoint ]] && break
	sleep 0.1
done
REGISTRY=$(cat "$E2E_DIR/registry.endpoint" 2>/dev/null) || die "registry-mem did not start (log: $E2E_DIR/logs/registry-mem.log)"

src=$E2E_DIR/sources.yaml
cat >"$src" <<YAML
sources:
  local:
    endpoint: $VGW_ENDPOINT
    region: us-east-1
    pathStyle: true
    accessKeyID: $S3_ACCESS
    secretAccessKey: $S3_SECRET
  # The suite serves a throttled proxy to versitygw here while it runs.
  slow:
    endpoint: http://$SLOW_ADDR
    region: us-east-1
    pathStyle: true
    accessKeyID: $S3_ACCESS
    secretAccessKey: $S3_SECRET
  # TestSharedClaim (e2e/claim_test.go): the same server and keys as local,
  # each for one namespace only (the test creates and deletes both).
  team-a:
    endpoint: $VGW_ENDPOINT
    region: us-east-1
    pathStyle: true
    accessKeyID: $S3_ACCESS
    secretAccessKey: $S3_SECRET
    namespaces: [e2e-claim-a]
  team-b:
    endpoint: $VGW_ENDPOINT
    region: us-east-1
    pathStyle: true
    accessKeyID: $S3_ACCESS
    secretAccessKey: $S3_SECRET
    namespaces: [e2e-claim-b]
  hub:
    type: hf
    endpoint: $HUB_ENDPOINT
    token: hf_e2e
  ocireg:
    type: oci
    registry: $REGISTRY
    plainHTTP: true
YAML

if [[ $E2E_INSTALL == helm ]]; then
	step "helm install modelcache charts/modelcache -f deploy/e2e/values.yaml"
	# helm's config and cache stay with the cluster's state. The sources go in
	# from the file: not on a command line, and helm prints only its notes.
	HELM_CONFIG_HOME=$E2E_DIR/helm/config HELM_CACHE_HOME=$E2E_DIR/helm/cache HELM_DATA_HOME=$E2E_DIR/helm/data \
		"$BIN/helm" install modelcache charts/modelcache --namespace "$NS" --create-namespace \
		-f deploy/e2e/values.yaml --set-file sources.inline="$src"
else
	step "kubectl apply -k deploy/e2e"
	kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	kubectl -n "$NS" create secret generic modelcache-sources --from-file=sources.yaml="$src" \
		--dry-run=client -o yaml | kubectl apply -f - >/dev/null
	kubectl apply -k deploy/e2e
fi
# The DaemonSet controller needs the ServiceAccount's token controller first;
# rollout status waits for the pod to be created and ready.
kubectl -n "$NS" rollout status ds/modelcache-node --timeout=180s
kubectl -n "$NS" rollout status deploy/modelcache-controller --timeout=120s
node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
for _ in $(seq 60); do
	kubectl get csinode "$node" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null | grep -qw modelcache.csi.io && break
	sleep 1
done
kubectl get csinode "$node" -o jsonpath='{.spec.drivers[*].name}' | grep -qw modelcache.csi.io ||
	die "kubelet did not register modelcache.csi.io (CSINode $node)"
step "modelcache.csi.io registered on $node"

step "go test -tags e2e ./e2e"
MODELCACHE_E2E_S3=$VGW_ENDPOINT MODELCACHE_E2E_S3_ACCESS=$S3_ACCESS MODELCACHE_E2E_S3_SECRET=$S3_SECRET \
	MODELCACHE_E2E_SLOW_ADDR=$SLOW_ADDR MODELCACHE_E2E_HUB_DIR=$HUB_DIR MODELCACHE_E2E_REGISTRY=$REGISTRY MODELCACHE_E2E_AGENT_SOCKET=$E2E_DIR/run/modelcache/agent.sock \
	MODELCACHE_E2E_KUBELET_ROOT=$E2E_DIR/kubelet MODELCACHE_E2E_PLUGIN_METRICS=http://127.0.0.1:19091/metrics MODELCACHE_E2E_KUBECTL=$KUBECTL \
	go test -tags e2e -count=1 -v -timeout 20m ${E2E_RUN:+-run "$E2E_RUN"} ./e2e/
