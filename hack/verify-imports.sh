#!/usr/bin/env bash
# `make verify`: the house's import rules (docs/architecture.md, "Packages
# and import rules"), checked on the full dependency graph of each package,
# so an indirect import breaks them as surely as a direct one.
#
#   PACKAGE       may link only (ONLY) / must not link (NOT) the listed
#                 prefixes of import paths
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=/usr/local/go/bin:$PATH
fi
M=github.com/modelcache/modelcache
AWS="github.com/aws/aws-sdk-go-v2 github.com/aws/smithy-go"
KUBE="k8s.io/ sigs.k8s.io/"
ENGINE="$M/pkg/cache $M/pkg/fetch $M/pkg/agent"
UPPER="$M/pkg/agent $M/pkg/csi $M/pkg/prefetch $M/pkg/provisioner $M/pkg/webhook $M/pkg/modelstatus $M/cmd"

failed=0
# deps PKG: the non-standard packages PKG links, itself excluded.
deps() { go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' "./$1" | grep -vxF "$M/$1"; }

# matches PREFIX...: the lines of stdin that are, or are under, a prefix
# (a prefix ending in / matches anything under it; one ending in $ only
# itself). pkg/agent does not match pkg/agentapi.
matches() {
	local re="" p
	for p in "$@"; do
		case $p in
		*/) re+="|^${p//./\\.}" ;;
		*\$) re+="|^${p//./\\.}" ;;
		*) re+="|^${p//./\\.}(/|\$)" ;;
		esac
	done
	grep -E "${re#|}" || true
}

# rule PKG only|not PREFIX...
rule() {
	local pkg=$1 kind=$2 bad
	shift 2
	local all
	all=$(deps "$pkg") || { echo "verify-imports: go list ./$pkg failed" >&2; exit 1; }
	if [[ $kind == only ]]; then
		bad=$(comm -23 <(echo "$all" | sort) <(echo "$all" | matches "$@" | sort))
	else
		bad=$(echo "$all" | matches "$@")
	fi
	bad=$(echo "$bad" | grep -vxF "$M/pkg/agentapi" | grep -v '^$' || true)
	if [[ -n $bad ]]; then
		echo "import rule broken: $pkg $([[ $kind == only ]] && echo "may link only" || echo "must not link") $*; it links:"
		echo "$bad" | sed 's/^/    /' | head -20
		echo "    (who imports what: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./$pkg)"
		failed=1
	fi
}

# The domain model and the agent's API are leaves: a caller of the API
# links nothing it does not call.
rule pkg/model only github.com/cespare/xxhash
rule pkg/agentapi only github.com/cespare/xxhash "$M/pkg/model"
# Sources list and read models; they know nothing of the store or of who
# calls them. The Hub client needs only the standard library.
rule pkg/source only github.com/cespare/xxhash "$M/pkg/model"
rule pkg/source/hf only github.com/cespare/xxhash "$M/pkg/model" "$M/pkg/source"
# The registry client is oras-go's: it brings the OCI spec types and
# x/sync, nothing else (no docker/cli, no credential helpers).
rule pkg/source/oci only github.com/cespare/xxhash "$M/pkg/model" "$M/pkg/source" \
	oras.land/oras-go/v2 github.com/opencontainers/go-digest github.com/opencontainers/image-spec golang.org/x/sync
# The GCS client is the JSON API over net/http: x/oauth2 for tokens (and
# the metadata client it brings for workload identity), not the SDK.
rule pkg/source/gcs only github.com/cespare/xxhash "$M/pkg/model" "$M/pkg/source" \
	golang.org/x/oauth2 cloud.google.com/go/compute/metadata
# The store knows nothing of S3, Kubernetes or gRPC; the fetcher (which
# writes into the store) nothing of Kubernetes or gRPC; neither knows who
# calls it.
rule pkg/cache not $AWS $KUBE google.golang.org/grpc "$M/pkg/fetch" $UPPER
rule pkg/fetch not $KUBE google.golang.org/grpc $UPPER
# The API types are a leaf: Kubernetes' API machinery and nothing of ours,
# so every side (agent, controller, CLI) can read them.
rule pkg/apis/v1alpha1 not "$M/" $AWS google.golang.org/grpc k8s.io/client-go
# Callers of the agent talk to it through pkg/agentapi, never to its engine.
rule pkg/prefetch not $ENGINE $AWS
rule pkg/modelstatus not $ENGINE $AWS
rule pkg/csi not $ENGINE $AWS
rule pkg/provisioner not $ENGINE $AWS
rule pkg/webhook not $ENGINE $AWS
# The plugin runs privileged on every node: it links no store, fetcher,
# agent engine or AWS SDK (STYLE rule 16). It never talks to the API server
# either, so it links no client-go: the provisioner, which needs it, is
# cmd/modelcache-controller.
rule cmd/csi-plugin not $ENGINE $AWS k8s.io/client-go "$M/pkg/provisioner" "$M/pkg/source/" cloud.google.com/
# The controller talks to the API server only: no store, fetcher, agent
# engine or AWS SDK.
rule cmd/modelcache-controller not $ENGINE $AWS
# The agent's prefetch controller uses two typed clients and plain
# informers: the informer factory and the full clientset (every API group's
# client, informer and lister) would double the agent's cold build.
rule cmd/cache-agent not k8s.io/client-go/informers 'k8s.io/client-go/kubernetes$'
# Azure: the SDK (and MSAL, for workload identity) is the fetcher's alone;
# the plugin and the controller link none of it. azblob v1.8.1+ would bring
# Apache Arrow (for an opt-in listing format) into the agent: refused.
AZURE="github.com/Azure/ github.com/AzureAD/"
rule pkg/source/az only github.com/cespare/xxhash "$M/pkg/model" "$M/pkg/source" github.com/Azure/azure-sdk-for-go/sdk/ \
	golang.org/x/net golang.org/x/text
rule cmd/csi-plugin not $AZURE
rule cmd/modelcache-controller not $AZURE
rule cmd/cache-agent not github.com/apache/arrow-go

if ((failed)); then exit 1; fi
echo "import rules hold (hack/verify-imports.sh)"
