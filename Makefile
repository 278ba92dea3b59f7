# modelcache developer targets. Every target works on a fresh clone with Go
# at /usr/local/go; tools the tests need are installed into ./bin.

export PATH := $(if $(shell command -v go),$(PATH),/usr/local/go/bin:$(PATH))

# Binaries to build; a command whose directory does not exist yet is skipped.
COMMANDS := cache-agent csi-plugin modelcache-controller
BUILD_CMDS := $(foreach c,$(COMMANDS),$(if $(wildcard cmd/$(c)/*.go),$(c)))
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build tools test verify demo bench clean image image-check e2e fuzz scale

all: build

build:
	@mkdir -p bin
	@for c in $(BUILD_CMDS); do \
		echo "go build -o bin/$$c ./cmd/$$c"; \
		go build -ldflags "$(LDFLAGS)" -o bin/$$c ./cmd/$$c || exit 1; \
	done

tools:
	hack/tools.sh

# The tests start bin/versitygw (and bin/azurite) themselves; MODELCACHE_REQUIRE=1 makes them
# fail instead of skip when a part they need is missing.
test: tools
	MODELCACHE_VERSITYGW=$(CURDIR)/bin/versitygw MODELCACHE_FAKEGCS=$(CURDIR)/bin/fake-gcs-server MODELCACHE_REQUIRE=1 \
		MODELCACHE_AZURITE=$(CURDIR)/bin/azurite/node_modules/.bin/azurite-blob \
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
	./pkg/fetch:FuzzListObjects ./pkg/model:FuzzFilter ./pkg/source/hf:FuzzTreeEntries \
	./pkg/source/oci:FuzzManifestFiles ./pkg/source/oci:FuzzDockerConfigLogin ./pkg/source/az:FuzzListPage \
	./pkg/source/gcs:FuzzListPage
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "go test -run '^$$' -fuzz '^$$name\$$' -fuzztime $(FUZZTIME) $$pkg"; \
		go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# gofmt (bench/ too), vet (bench/ apart: a module of its own, so what only
# the bench needs stays out of the product's go.mod), and the import rules
# (hack/verify-imports.sh): the CSI plugin links no store, fetcher, agent
# engine, AWS SDK or client-go; modelcache-controller no store, fetcher,
# agent engine or AWS SDK; pkg/agentapi and pkg/model are leaves.
verify:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd bench && go vet ./...
	hack/verify-imports.sh

demo:
	hack/demo.sh

# Every figure of the bench in one run (bench/run.sh also runs bench/publish.sh, before the big model).
bench:
	bench/run.sh

# What ModelCache status costs a 1,000-node cluster's API server (writes
# per minute, controller CPU), into docs/benchmarks/scale-DATE.md.
scale: tools
	hack/scale.sh

# The modelcache image (cache-agent, csi-plugin, modelcache-controller) as an
# OCI image-layout tar holding an image index for linux/amd64 and linux/arm64
# (IMAGE_ARCHS), built without a Docker engine; the Dockerfile builds the same
# content.
IMAGE ?= ghcr.io/modelcache/modelcache:$(VERSION)
image:
	VERSION=$(VERSION) hack/image.sh $(IMAGE) _output/image.tar

# Builds the image, then opens the tar and checks each platform's binaries:
# ELF machine of the platform, statically linked, CGO_ENABLED=0, -trimpath
# (internal/imagecheck).
image-check: image
	MODELCACHE_IMAGE=$(CURDIR)/_output/image.tar go test -count=1 -run '^TestImage$$' -v ./internal/imagecheck

# modelcache on a real one-node Kubernetes (root; see docs/development.md).
e2e:
	e2e/run.sh

clean:
	rm -rf bin _output
