#!/usr/bin/env bash
# e2e/down.sh - stops what e2e/up.sh started (by recorded PID only) and tears
# down its pods, mounts and network namespaces.
#   e2e/down.sh          stop, keep state (etcd data, certificates, images)
#   e2e/down.sh --purge  also delete $E2E_DIR's state so the next up.sh starts fresh
# Adapted from ../shared/k8s-local/down.sh.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K=${E2E_DIR:-/tmp/modelcache-e2e}
RUN=$K/run CSOCK=$K/run/containerd/containerd.sock
export PATH=/usr/sbin:/usr/bin:/sbin:/bin KUBECONFIG=$K/etc/admin.kubeconfig
kubectl() { "$REPO/bin/k8s/kubectl" "$@"; }
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
stop() { # name [timeout]
	local n=$1 t=${2:-15} p
	alive "$n" || {
		rm -f "$RUN/$n.pid"
		return 0
	}
	p=$(cat "$RUN/$n.pid")
	kill "$p" 2>/dev/null
	for _ in $(seq "$t"); do kill -0 "$p" 2>/dev/null || break; sleep 1; done
	kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
	rm -f "$RUN/$n.pid"
	echo "[e2e-down] stopped $n ($p)"
}
# 1. stop controllers first (else ReplicaSets and DaemonSets re-create the pods
#    we delete), then let kubelet tear pods down properly (CNI DEL, volume
#    unmount, CSI NodeUnpublish) while apiserver, kubelet and containerd are up.
#    Workload pods go before the modelcache DaemonSet: their volumes need the plugin.
stop kube-controller-manager
stop kube-scheduler
if alive kubelet && alive kube-apiserver; then
	kubectl delete pods --all -n default --grace-period=1 --wait=false >/dev/null 2>&1
	kubectl wait --for=delete pods --all -n default --timeout=60s >/dev/null 2>&1
	kubectl delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1
	for _ in $(seq 45); do
		n=$(ctr --address "$CSOCK" -n k8s.io tasks ls -q 2>/dev/null | wc -l)
		[ "$n" = 0 ] && break
		sleep 1
	done
fi
stop kubelet
# 2. anything left in containerd: kill tasks, remove containers (their shims then exit)
if alive containerd; then
	for c in $(ctr --address "$CSOCK" -n k8s.io tasks ls -q 2>/dev/null); do
		ctr --address "$CSOCK" -n k8s.io tasks kill -s KILL "$c" >/dev/null 2>&1
	done
	sleep 1
	for c in $(ctr --address "$CSOCK" -n k8s.io containers ls -q 2>/dev/null); do
		ctr --address "$CSOCK" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1
		ctr --address "$CSOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1
	done
fi
stop containerd
stop kube-apiserver
stop etcd
# 3. leftover mounts under $K (the kubelet root is an rshared self-bind mount), deepest first
findmnt -rn -o TARGET | grep "^$K/" | sort -r | while read -r m; do
	umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
done
if [ "${1:-}" = "--purge" ]; then
	iptables -t nat -S POSTROUTING 2>/dev/null | grep -- '-j CNI-' | grep -- '10.245.0.' | sed 's/^-A/-D/' |
		while read -r r; do eval iptables -t nat "$r" 2>/dev/null; done
	ip link del mce2e0 2>/dev/null
	rm -rf "$K/var" "$K/run" "$K/pki" "$K/etc" "$K/images" "$K/kubelet" "$K/cache" "$K/csi-state" "$K/s3" "$K/helm"
	echo "[e2e-down] purged state under $K"
fi
echo "[e2e-down] done"
