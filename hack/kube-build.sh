#!/usr/bin/env bash
# Builds Kubernetes from the k8s.io/kubernetes module on the Go module proxy
# (no other download exists here) into $REPO/bin/k8s:
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
#
#   hack/kube-build.sh                 all five
#   hack/kube-build.sh kube-apiserver  only the ones named
#
# The recipe is ../shared/k8s-local/up.sh's: a throwaway module that requires
# k8s.io/kubernetes $KV and replaces every staging module (k8s.io/api, …) with
# v0.<minor>.<patch>, then `go build -trimpath`. It uses the default GOCACHE
# and GOMODCACHE, so a second build, or one from a fresh clone on the same
# machine, is a cache hit (~1 min of linking instead of ~10 min cold).
# A binary is rebuilt only when it is missing or reports another version.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KV=${KUBE_VERSION:-v1.35.4}
OUT=$REPO/bin/k8s
WORK=$REPO/_output/kube-build/$KV
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=/usr/local/go/bin:$PATH
fi
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

ALL=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
WANT=("$@")
((${#WANT[@]})) || WANT=("${ALL[@]}")

# version_of BIN: the k8s.io/kubernetes version a binary was built from.
version_of() {
	go version -m "$1" 2>/dev/null | awk '$1 == "mod" && $2 == "k8s.io/kubernetes" { print $3; exit }'
}

todo=()
for b in "${WANT[@]}"; do
	case " ${ALL[*]} " in *" $b "*) ;; *)
		echo "kube-build: unknown binary $b (want one of: ${ALL[*]})" >&2
		exit 2
		;;
	esac
	if [[ -x $OUT/$b && $(version_of "$OUT/$b") == "$KV" ]]; then
		continue
	fi
	todo+=("$b")
done
if ((${#todo[@]} == 0)); then
	echo "kube-build: ${WANT[*]} $KV present in $OUT"
	exit 0
fi

command -v jq >/dev/null || {
	echo "kube-build: needs jq (apt-get install jq)" >&2
	exit 1
}

MINOR=$(echo "$KV" | cut -d. -f2)
SV=v0.${KV#v1.}
mkdir -p "$WORK" "$OUT"
cd "$WORK"
if [[ ! -f go.sum ]] || ! grep -q "k8s.io/kubernetes $KV" go.mod 2>/dev/null; then
	echo "kube-build: resolving k8s.io/kubernetes $KV modules"
	upstream=$(cd / && go mod download -json "k8s.io/kubernetes@$KV" | jq -r .GoMod)
	{
		printf 'module k8sbuild\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KV"
		awk '/^replace \(/{f=1;next} f&&/^\)/{f=0} f&&/=>/{print $1}' "$upstream" |
			while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$SV"; done
		printf ')\n'
	} >go.mod
	printf '//go:build tools\n\npackage tools\n\nimport (\n' >tools.go
	for b in "${ALL[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b" >>tools.go; done
	printf ')\n' >>tools.go
	rm -f go.sum
	go mod tidy
fi
# This directory is under the repository: keep `make verify` (gofmt -l .) clean.
gofmt -w tools.go

LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	LDF="$LDF -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
	LDF="$LDF -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
done
pkgs=()
for b in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
echo "kube-build: go build ${todo[*]} $KV (cold Go caches: ~10 min; warm: ~1 min)"
start=$SECONDS
go build -trimpath -ldflags "$LDF" -o "$OUT/" "${pkgs[@]}"
echo "kube-build: built ${todo[*]} in $((SECONDS - start))s into $OUT"
