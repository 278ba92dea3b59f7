#!/usr/bin/env bash
# Installs the pinned Go tools into $REPO/bin, each only if it is missing or
# another version:
#   hack/tools.sh         versitygw (the S3 server the tests start)
#   hack/tools.sh bench   versitygw and rclone (the benchmark's baseline)
# The version is read back from the binary's build info (go version -m), so
# no stamp files are needed and a hand-installed binary of the right version
# counts.
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

mkdir -p "$BIN"
ensure versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0
case "${1:-}" in
"") ;;
bench) ensure rclone github.com/rclone/rclone v1.76.0 ;;
*)
	echo "usage: $0 [bench]" >&2
	exit 2
	;;
esac
