# modelcache developer targets. Every target works on a fresh clone with Go
# at /usr/local/go; tools the tests need are installed into ./bin.

export PATH := $(if $(shell command -v go),$(PATH),/usr/local/go/bin:$(PATH))

# Binaries to build; a command whose directory does not exist yet is skipped.
COMMANDS := cache-agent csi-plugin
BUILD_CMDS := $(foreach c,$(COMMANDS),$(if $(wildcard cmd/$(c)/*.go),$(c)))
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build tools test verify demo bench clean image e2e fuzz

all: build

build:
	@mkdir -p bin
	@for c in $(BUILD_CMDS); do \
		echo "go build -o bin/$$c ./cmd/$$c"; \
		go build -ldflags "$(LDFLAGS)" -o bin/$$c ./cmd/$$c || exit 1; \
	done

tools:
	hack/tools.sh

# The tests start bin/versitygw themselves; MODELCACHE_REQUIRE=1 makes them
# fail instead of skip when a part they need is missing.
test: tools
	MODELCACHE_VERSITYGW=$(CURDIR)/bin/versitygw MODELCACHE_REQUIRE=1 \
		go test -count=1 -timeout 20m ./...

# Each fuzz target for FUZZTIME (their seed corpora in testdata/fuzz also
# run in every `make test`). A crash leaves its input in testdata/fuzz:
# commit it with the fix, as a regression seed.
# FUZZTIME is a count of inputs, not a duration: with a duration go1.26's
# coordinator can fail a clean run with "context deadline exceeded" when the
# deadline races a busy worker (golang/go#75804, fixed in go1.27). 100000x
# takes 2-40 s per target here.
FUZZTIME ?= 100000x
FUZZ_TARGETS := ./pkg/model:FuzzParseRef ./pkg/model:FuzzRelPath ./pkg/model:FuzzDecodeManifest \
	./pkg/csi:FuzzParseVolumeAttributes ./pkg/csi:FuzzParseSecrets ./pkg/agent:FuzzDecodeRequest \
	./pkg/fetch:FuzzListObjects
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "go test -run '^$$' -fuzz '^$$name\$$' -fuzztime $(FUZZTIME) $$pkg"; \
		go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# gofmt covers bench/ too; go vet runs there apart, as bench/ is a module of
# its own (what only the bench needs stays out of the product's go.mod).
# The CSI plugin runs privileged on every node: it talks to the agent through
# pkg/agentapi only, and links neither the store, the fetcher, the agent's
# engine nor the AWS SDK (STYLE rule 16); pkg/agentapi itself imports no
# package of this module but pkg/model.
MODULE := github.com/modelcache/modelcache
PLUGIN_FORBIDDEN := github.com/aws/aws-sdk-go-v2 $(MODULE)/pkg/cache $(MODULE)/pkg/fetch $(MODULE)/pkg/agent

verify:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd bench && go vet ./...
	@deps=$$(go list -deps ./cmd/csi-plugin) || exit 1; bad=; \
	for p in $(PLUGIN_FORBIDDEN); do \
		hits=$$(echo "$$deps" | grep -E "^$$p(/|$$)" | grep -vE "^$(MODULE)/pkg/agentapi(/|$$)"); \
		if [ -n "$$hits" ]; then bad="$$bad  $$p ($$(echo "$$hits" | wc -l) linked)\n"; fi; \
	done; \
	if [ -n "$$bad" ]; then \
		echo "cmd/csi-plugin links what it must not; it talks to the agent through pkg/agentapi only:"; \
		printf "$$bad"; \
		echo "(who imports it: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/csi-plugin)"; exit 1; \
	fi; echo "cmd/csi-plugin links no store, fetcher, agent engine or AWS SDK"
	@api=$$(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./pkg/agentapi) || exit 1; \
	mdl=$$(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./pkg/model) || exit 1; \
	bad=$$(echo "$$api" | grep -vxF -e "$$mdl" -e "$(MODULE)/pkg/agentapi"); \
	if [ -n "$$bad" ]; then \
		echo "pkg/agentapi must import only the standard library and pkg/model, not:"; \
		echo "$$bad" | sed 's/^/  /'; exit 1; \
	fi; echo "pkg/agentapi imports only the standard library and pkg/model"

demo:
	hack/demo.sh

# Every figure of the bench in one run (bench/run.sh runs bench/publish.sh last).
bench:
	bench/run.sh

# The modelcache image (cache-agent + csi-plugin) as an OCI image-layout tar,
# built without a Docker engine; the Dockerfile builds the same content.
IMAGE ?= ghcr.io/modelcache/modelcache:$(VERSION)
image:
	VERSION=$(VERSION) hack/image.sh $(IMAGE) _output/image.tar

# modelcache on a real one-node Kubernetes (root; see README "End-to-end").
e2e:
	e2e/run.sh

clean:
	rm -rf bin _output
