SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -euc
MAKEFLAGS += --warn-undefined-variables --no-print-directory

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO ?= go
FUZZTIME ?= 30s
# A count, not a duration: a duration ends the run through a context
# deadline, which `go test -fuzz` can report as a failure ("context deadline
# exceeded") on a busy machine.
FUZZTIME_TEST ?= 2000x
# Packages tested at once. The cluster, chaos and process-level packages
# each run several agents; on a 2-core machine running them side by side
# under -race starves Raft and health checks into spurious failures.
TEST_P ?= 1
PKGS := ./...

.PHONY: all build run test test-hosts quick chaos fuzz lint tidy deps-check bench bench-tcp bench-autoscale clean

all: build

## build: bin/loadmesh, a static binary
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/loadmesh ./cmd/loadmesh

## run: a throwaway single-node agent with a built-in demo backend
run: build
	./bin/loadmesh agent --dev

## test: the whole suite, multi-node and process-level tests included, with
## -race, then every fuzz target briefly (FUZZTIME_TEST inputs)
test:
	GOTRACEBACK=all $(GO) test -race -shuffle=on -count=1 -timeout=20m -p $(TEST_P) $(PKGS)
	@$(MAKE) fuzz FUZZTIME=$(FUZZTIME_TEST)

## quick: the fast inner loop (skips multi-node tests)
quick:
	$(GO) test -short -count=1 $(PKGS)

## chaos: the chaos suite alone, verbose, about 3 minutes (test/chaos/README.md);
## its report also goes to bin/chaos-report.txt. As root it also fills a
## node's disk and partitions the network; otherwise those scenarios skip
chaos:
	@mkdir -p bin
	GOTRACEBACK=all LOADMESH_CHAOS_REPORT=$(CURDIR)/bin/chaos-report.txt $(GO) test -race -count=1 -timeout=10m -v ./test/chaos/

## test-hosts: the multi-host test bed, verbose, about 1.5 minutes (test/netns/doc.go):
## agents in network namespaces on a bridge; partitions, a 2/3 split, clock skew.
## Needs root and iproute2, else it skips; its report also goes to bin/hosts-report.txt
test-hosts: build
	GOTRACEBACK=all LOADMESH_TEST_HOSTS=1 LOADMESH_E2E_BINARY=$(CURDIR)/bin/loadmesh \
	  LOADMESH_HOSTS_REPORT=$(CURDIR)/bin/hosts-report.txt $(GO) test -count=1 -timeout=10m -v ./test/netns/

## fuzz: run every fuzz target for FUZZTIME
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## lint: gofmt, go vet and the dependency arrow
lint: deps-check
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)

## tidy: go mod tidy must change nothing
tidy:
	$(GO) mod tidy
	git diff --exit-code go.mod go.sum

## deps-check: scheduler must not depend on memberlist, raft or quic-go
deps-check:
	@if $(GO) list -deps ./scheduler/... | grep -E 'hashicorp/(memberlist|raft)|quic-go'; then \
	  echo "scheduler must not import memberlist, raft or quic-go"; exit 1; fi

## bench: benchmarks against the bare backend and HAProxy (see docs/benchmarks.md)
bench: build
	./test/bench/run.sh

## bench-tcp: TCP services against HAProxy in mode tcp, about 3 minutes (see docs/benchmarks.md);
## make bench runs it too, after lmbench
bench-tcp:
	./test/bench/run.sh tcp

## bench-scale: 25, 50, 100 and (memory allowing) 200 agents in one process on loopback:
## convergence, load propagation, failure detection, gossip bytes, CPU and memory per agent,
## Raft voters; at most about 15 minutes, plus up to 10 waiting for a busy machine's load
## average to drop (see docs/scaling.md). Results also go to bin/scalebench.json
.PHONY: bench-scale
bench-scale:
	@mkdir -p bin
	$(GO) build -o bin/scalebench ./test/bench/cmd/scalebench
	./bin/scalebench -json bin/scalebench.json

## bench-cache: the response cache on 3 real agents, Zipf GET workload: no cache, per-node
## cache and mesh cache in the same run, about 4 minutes (see docs/benchmarks.md)
.PHONY: bench-cache
bench-cache: build
	$(GO) build -o bin/cachebench ./test/bench/cmd/cachebench
	./bin/cachebench -bin bin/loadmesh -version $(VERSION)

## bench-autoscale: autoscaler reaction on a real 4-agent cluster, about 6 minutes (see docs/autoscaling.md)
bench-autoscale: build
	$(GO) build -o bin/reactbench ./test/bench/cmd/reactbench
	./bin/reactbench -bin bin/loadmesh -version $(VERSION)

clean:
	rm -rf bin
