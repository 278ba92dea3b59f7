#!/usr/bin/env bash
# Installs what the tests start, each only if it is missing or another
# version:
#   hack/tools.sh         versitygw (the S3 server), etcd (Debian's
#                         etcd-server, via apt-get) and bin/k8s/kube-apiserver,
#                         kube-scheduler (hack/kube-build.sh) for internal/kubetest; helm and
#                         bin/k8s/kubectl (its kustomize) for internal/charttest;
#                         bin/azurite (npm) for internal/aztest
#   hack/tools.sh bench   the same and rclone (the benchmark's baseline)
#   hack/tools.sh s3      versitygw only (bench/publish.sh: it starts nothing else)
# The version of a Go tool is read back from the binary's build info
# (go version -m), so no stamp files are needed and a hand-installed binary of
# the right version counts.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$REPO/bin
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=/usr/local/go/bin:$PATH
fi

# ensure NAME PACKAGE VERSION
ensure() {
	local name=$1 pkg=$2 version=$3 have=""
	if [[ -x $BIN/$name ]]; then
		# "mod <module> <version> <sum>" is the main module's line.
		have=$(go version -m "$BIN/$name" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')
	fi
	if [[ $have == "$version" ]]; then
		echo "tools: $name $version present"
		return 0
	fi
	echo "tools: installing $name $version${have:+ (have $have)}; a cold build takes minutes"
	local start=$SECONDS
	# Run outside the repo so its go.mod plays no part.
	(cd / && GOBIN=$BIN go install "$pkg@$version")
	echo "tools: $name $version installed in $((SECONDS - start))s"
}

# apt_ensure COMMAND PACKAGE: install a Debian package when COMMAND is missing.
apt_ensure() {
	local cmd=$1 pkg=$2
	if command -v "$cmd" >/dev/null 2>&1; then
		echo "tools: $cmd present"
		return 0
	fi
	if ! command -v apt-get >/dev/null 2>&1 || [[ $(id -u) != 0 ]]; then
		echo "tools: $cmd missing; install the $pkg package (apt-get needs root)" >&2
		return 1
	fi
	echo "tools: installing $pkg (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null ||
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; }
}

# npm_ensure DIR PACKAGE VERSION: install an npm package into $BIN/DIR (npm
# --prefix, so node_modules lands there and nothing global changes) when it
# is missing or another version. The version is read back from its
# package.json, as ensure reads it from a Go binary.
npm_ensure() {
	local dir=$BIN/$1 pkg=$2 version=$3 have=""
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		echo "tools: node and npm missing; install Node.js 20 or later (with npm) for $pkg, which the tests run" >&2
		return 1
	fi
	local manifest=$dir/node_modules/$pkg/package.json
	if [[ -f $manifest ]]; then
		have=$(node -p 'require(process.argv[1]).version' "$manifest" 2>/dev/null || true)
	fi
	if [[ $have == "$version" ]]; then
		echo "tools: $pkg $version present"
		return 0
	fi
	echo "tools: installing $pkg $version${have:+ (have $have)}"
	mkdir -p "$dir"
	npm install --no-audit --no-fund --prefix "$dir" "$pkg@$version" >/dev/null
	echo "tools: $pkg $version installed"
}

mode=${1:-}
case $mode in
"" | bench | s3) ;;
*)
	echo "usage: $0 [bench|s3]" >&2
	exit 2
	;;
esac

mkdir -p "$BIN"
ensure versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0
if [[ $mode == s3 ]]; then exit 0; fi
# internal/kubetest: a real etcd and kube-apiserver.
apt_ensure etcd etcd-server
apt_ensure jq jq # hack/kube-build.sh reads the module graph with it
# kubectl: internal/charttest renders deploy/ with its kustomize, the one
# `kubectl apply -k` uses; make e2e needs it anyway.
"$REPO/hack/kube-build.sh" kube-apiserver kubectl kube-scheduler
# internal/charttest: helm lint and helm template of charts/modelcache.
ensure helm helm.sh/helm/v3/cmd/helm v3.22.0
# internal/hubtest: the official JS Hub client checks the fixture Hub.
npm_ensure hfjs @huggingface/hub 2.17.5
# internal/aztest: Azurite, the Azure Blob Storage emulator (azurite-blob).
npm_ensure azurite azurite 3.37.0
# internal/gcstest: a GCS JSON API server for pkg/source/gcs and gs:// refs.
ensure fake-gcs-server github.com/fsouza/fake-gcs-server v1.56.1
if [[ $mode == bench ]]; then
	ensure rclone github.com/rclone/rclone v1.76.0
fi
