#!/usr/bin/env bash
# e2e/up.sh - brings up a REAL single-node Kubernetes v1.35.4 for the e2e
# suite, with nothing pulled from a registry:
#   Debian: etcd-server containerd runc containernetworking-plugins busybox-static iptables conntrack
#   bin/k8s: kube-apiserver kcm scheduler kubelet kubectl, built by hack/kube-build.sh (Go build cache)
# State, certificates, configs and logs live under $E2E_DIR (default
# /tmp/modelcache-e2e; deploy/e2e names its paths, so keep the default there).
# Every TCP listener is on 127.0.0.1. The kubelet root is $E2E_DIR/kubelet.
# Adapted from ../shared/k8s-local/up.sh. Stop it with e2e/down.sh [--purge].
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K=${E2E_DIR:-/tmp/modelcache-e2e}
export PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
NODE=$(hostname | tr 'A-Z' 'a-z')
KB=$REPO/bin/k8s
LOG=$K/logs RUN=$K/run VAR=$K/var ETC=$K/etc PKI=$K/pki IMG=$K/images KUBELET_ROOT=$K/kubelet
CSOCK=$RUN/containerd/containerd.sock
mkdir -p "$LOG" "$RUN" "$VAR" "$ETC" "$PKI" "$IMG" "$KUBELET_ROOT"
T0=$SECONDS
log() { echo "[e2e-up +$((SECONDS - T0))s] $*"; }
export KUBECONFIG=$ETC/admin.kubeconfig
kubectl() { "$KB/kubectl" "$@"; }

# ---------------------------------------------------------------- 0. host prerequisites
if ! command -v etcd >/dev/null || ! command -v containerd >/dev/null || [ ! -x /usr/lib/cni/bridge ] ||
	! command -v busybox >/dev/null || ! command -v iptables >/dev/null || ! command -v conntrack >/dev/null ||
	! command -v jq >/dev/null || ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
	log "apt-get install (etcd-server containerd runc CNI plugins busybox-static iptables conntrack)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server containerd runc \
		containernetworking-plugins busybox-static iptables conntrack openssl jq ca-certificates curl >"$LOG/apt.log" 2>&1
fi
swapon --show 2>/dev/null | grep -q . && log "note: swap is on (failSwapOn=false is set)"
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true

# ---------------------------------------------------------------- 1. Kubernetes binaries (cached Go build)
"$REPO/hack/kube-build.sh"

# ---------------------------------------------------------------- 2. local images (no registry reachable)
# shellcheck source=hack/mkimage.sh
source "$REPO/hack/mkimage.sh"
if [ ! -f "$IMG/pause.tar" ] || [ ! -f "$IMG/busybox.tar" ]; then
	log "building pause + busybox images"
	rm -rf "$IMG/rootfs-pause" "$IMG/rootfs-busybox"
	mkdir -p "$IMG/rootfs-pause" "$IMG/rootfs-busybox"/{bin,etc,tmp}
	(cd "$REPO" && go build -trimpath -ldflags='-s -w' -o "$IMG/rootfs-pause/pause" ./e2e/pause)
	cp /usr/bin/busybox "$IMG/rootfs-busybox/bin/busybox"
	for a in $(/usr/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$IMG/rootfs-busybox/bin/$a"; done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$IMG/rootfs-busybox/etc/passwd"
	echo 'root:x:0:' >"$IMG/rootfs-busybox/etc/group"
	mkimage registry.k8s.io/pause:3.10.1 "$IMG/rootfs-pause" '["/pause"]' null "$IMG/pause.tar"
	mkimage docker.io/library/busybox:1.35 "$IMG/rootfs-busybox" null '["sh"]' "$IMG/busybox.tar"
fi

# ---------------------------------------------------------------- 3. PKI + kubeconfigs (openssl)
if [ ! -f "$PKI/ca.crt" ]; then
	log "creating certificates"
	(
		cd "$PKI"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=e2e-ca" 2>/dev/null
		openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 -subj "/CN=e2e-front-proxy-ca" 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		mk() { # name CN O SAN [ca]
			local n=$1 cn=$2 o=$3 san=$4 ca=${5:-ca}
			openssl genrsa -out "$n.key" 2048 2>/dev/null
			openssl req -new -key "$n.key" -out "$n.csr" -subj "/CN=$cn${o:+/O=$o}" 2>/dev/null
			{
				echo "basicConstraints=CA:FALSE"
				echo "keyUsage=digitalSignature,keyEncipherment"
				if [ -n "$san" ]; then
					echo "extendedKeyUsage=serverAuth,clientAuth"
					echo "subjectAltName=$san"
				else echo "extendedKeyUsage=clientAuth"; fi
			} >"$n.ext"
			openssl x509 -req -in "$n.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -out "$n.crt" -days 3650 -extfile "$n.ext" 2>/dev/null
		}
		mk apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:$NODE,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
		mk apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
		mk front-proxy-client front-proxy-client "" "" front-proxy-ca
		mk admin kubernetes-admin system:masters ""
		mk controller-manager system:kube-controller-manager "" ""
		mk scheduler system:kube-scheduler "" ""
		mk kubelet "system:node:$NODE" system:nodes "IP:127.0.0.1,DNS:localhost,DNS:$NODE"
	)
	for n in admin controller-manager scheduler kubelet; do
		f=$ETC/$n.kubeconfig
		rm -f "$f"
		kubectl config set-cluster e2e --server=https://127.0.0.1:6443 --certificate-authority="$PKI/ca.crt" --embed-certs --kubeconfig="$f" >/dev/null
		kubectl config set-credentials "$n" --client-certificate="$PKI/$n.crt" --client-key="$PKI/$n.key" --embed-certs --kubeconfig="$f" >/dev/null
		kubectl config set-context default --cluster=e2e --user="$n" --kubeconfig="$f" >/dev/null
		kubectl config use-context default --kubeconfig="$f" >/dev/null
	done
fi

# ---------------------------------------------------------------- 4. configs
mkdir -p "$ETC/containerd" "$ETC/cni/net.d" "$ETC/manifests" "$VAR/containerd" "$RUN/containerd"
containerd config default | sed \
	-e "s#^root = .*#root = \"$VAR/containerd\"#" -e "s#^state = .*#state = \"$RUN/containerd\"#" \
	-e "/^\[grpc\]/,/^\[/ s#^  address = .*#  address = \"$CSOCK\"#" \
	-e "/^\[ttrpc\]/,/^\[/ s#^  address = .*#  address = \"$RUN/containerd/containerd.sock.ttrpc\"#" \
	-e "s#sandbox_image = .*#sandbox_image = \"registry.k8s.io/pause:3.10.1\"#" \
	-e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"/usr/lib/cni\"#" -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$ETC/cni/net.d\"#" \
	-e "s#SystemdCgroup = .*#SystemdCgroup = false#" \
	-e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" >"$ETC/containerd/config.toml"
# restrict_oom_score_adj: no CAP_SYS_RESOURCE here; runc cannot lower oom_score_adj (kubelet asks -998 for pause)
cat >"$ETC/cni/net.d/10-bridge.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "e2e-bridge", "plugins": [
  {"type": "bridge", "bridge": "mce2e0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$VAR/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
cat >"$ETC/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CSOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
resolvConf: /etc/resolv.conf
staticPodPath: $ETC/manifests
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
EOF

# ---------------------------------------------------------------- 5. start daemons
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
start() { # name cmd...
	local n=$1
	shift
	if alive "$n"; then
		log "$n already running (pid $(cat "$RUN/$n.pid"))"
		return
	fi
	setsid nohup "$@" >>"$LOG/$n.log" 2>&1 </dev/null &
	echo $! >"$RUN/$n.pid"
	log "started $n pid $(cat "$RUN/$n.pid")"
}
waitfor() { # desc seconds cmd...
	local d=$1 s=$2
	shift 2
	for _ in $(seq "$s"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
	log "TIMEOUT waiting for $d"
	return 1
}
for p in 6443 12379 12380 10250 10248 10257 10259; do
	if ! alive kube-apiserver && (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		log "error: 127.0.0.1:$p is already in use (another cluster? see ss -ltnp)"
		exit 1
	fi
done
mkdir -p "$VAR/etcd"
start etcd etcd --name e2e --data-dir "$VAR/etcd" --listen-client-urls http://127.0.0.1:12379 \
	--advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
	--initial-advertise-peer-urls http://127.0.0.1:12380 --initial-cluster e2e=http://127.0.0.1:12380 \
	--listen-metrics-urls http://127.0.0.1:12381 --log-level warn
waitfor etcd 30 curl -sf http://127.0.0.1:12379/health

start kube-apiserver "$KB/kube-apiserver" --etcd-servers=http://127.0.0.1:12379 --bind-address=127.0.0.1 --secure-port=6443 \
	--advertise-address=127.0.0.1 --endpoint-reconciler-type=none --enable-aggregator-routing=true \
	--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local --service-account-key-file="$PKI/sa.pub" \
	--service-account-signing-key-file="$PKI/sa.key" --service-cluster-ip-range=10.96.0.0/16 \
	--authorization-mode=Node,RBAC --allow-privileged=true --enable-admission-plugins=NodeRestriction \
	--kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
	--kubelet-preferred-address-types=Hostname,InternalIP \
	--requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
	--requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group --requestheader-extra-headers-prefix=X-Remote-Extra- \
	--proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key"
waitfor kube-apiserver 90 kubectl get --raw /readyz

start kube-controller-manager "$KB/kube-controller-manager" --kubeconfig="$ETC/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$ETC/controller-manager.kubeconfig" --authorization-kubeconfig="$ETC/controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
	--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
	--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --service-cluster-ip-range=10.96.0.0/16
start kube-scheduler "$KB/kube-scheduler" --kubeconfig="$ETC/scheduler.kubeconfig" --authentication-kubeconfig="$ETC/scheduler.kubeconfig" \
	--authorization-kubeconfig="$ETC/scheduler.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false

start containerd containerd --config "$ETC/containerd/config.toml"
waitfor containerd 30 ctr --address "$CSOCK" version
for t in pause busybox; do ctr --address "$CSOCK" -n k8s.io images import "$IMG/$t.tar" >/dev/null; done

start kubelet "$KB/kubelet" --config="$ETC/kubelet-config.yaml" --kubeconfig="$ETC/kubelet.kubeconfig" \
	--root-dir="$KUBELET_ROOT"
waitfor "node Ready" 120 kubectl wait --for=condition=Ready "node/$NODE" --timeout=2s
log "node ready: $(kubectl get node "$NODE" --no-headers 2>/dev/null)"
log "done. export KUBECONFIG=$KUBECONFIG"
