# One command builds the charm, one runs the tests (see README.md).
GO ?= go
ARCH ?= $(shell $(GO) env GOARCH)

.PHONY: charm test testbed unit e2e chaos bench fuzz clean

## charm: build build/github-runner_ubuntu@24.04-$(ARCH).charm and print its path
charm:
	@$(GO) run ./charm/cmd/pack -out build -arch $(ARCH)

## testbed: set up the real parts the tests use (LXD, OpenStack, Prometheus and promtool
## for the COS tests); idempotent, needs root
testbed:
	command -v promtool >/dev/null || apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 prometheus >/dev/null
	bash tests/lxd/setup.sh
	bash tests/openstack/setup.sh

## test: set up the test bed, run every test, then a short run of every fuzz target
## (a count, not a time: Go 1.26's -fuzztime deadline can fail a clean run, golang/go#75804)
test: testbed unit
	$(MAKE) fuzz FUZZTIME=5000x

## unit: run every test against whatever test bed is already up. The fault
## suite runs alone, after the rest: it restarts the LXD daemon under test;
## then the chaos test, alone too, since LXD's load is part of what it tests,
## on a 5-minute schedule (make test CHAOS_DURATION=10m for a longer one).
CHAOS_DURATION ?= 5m
unit:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 45m $$($(GO) list ./... | grep -v -e /tests/faults -e /tests/chaos)
	$(GO) test -count=1 -timeout 30m ./tests/faults/
	CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -count=1 -timeout 30m ./tests/chaos/

## chaos: the chaos test alone, verbose: CHAOS_DURATION=30m runs its schedule
## longer (10m by default), CHAOS_SEED=<seed> replays one
chaos:
	$(GO) test -count=1 -v -timeout 3h ./tests/chaos/

## e2e: the end-to-end test alone (real LXD, Pebble, fake GitHub; run `make testbed` first)
e2e:
	$(GO) test -count=1 -v -timeout 20m ./tests/e2e/

## bench: the benchmarks, one package at a time (they time real LXD and OpenStack, which
## another package's would slow); each prints BENCH lines (see README.md). As root with LXD up,
## the Debian base image of the Debian benchmarks is built first (once per machine: cached)
bench:
	@if [ "$$(id -u)" = 0 ] && timeout 10 lxc query /1.0 >/dev/null 2>&1; then LXD_TEST_SKIP_SMOKE=1 bash tests/lxd/debian.sh; fi
	$(GO) test -p 1 -count=1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./... | grep -E '^(BENCH|Benchmark|ok|FAIL)'

# Fuzz targets as package:Target; their seeds are in each package's testdata/fuzz/.
FUZZ_TARGETS = charm:FuzzParseSettings src/config:FuzzParseCloudsYAML src/github:FuzzRunnerPage \
	src/config:FuzzParse src/config:FuzzParseSize src/config:FuzzParseLabels \
	src/config:FuzzParsePath src/config:FuzzParseDenylist src/service:FuzzHandler
FUZZTIME ?= 10s

## fuzz: run every fuzz target for FUZZTIME (default 10s); a failing input is written
## to the package's testdata/fuzz/<Target>/. A bare "context deadline exceeded" with no
## failing input is Go's -fuzztime race (golang/go#75804), reported but not a failure.
fuzz:
	@for spec in $(FUZZ_TARGETS); do \
		pkg=$${spec%%:*}; target=$${spec##*:}; \
		echo "fuzz $$target ./$$pkg $(FUZZTIME)"; \
		if ! out=$$($(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./$$pkg/ 2>&1); then \
			if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
				echo "  $$target: -fuzztime deadline race (golang/go#75804), no failing input"; \
			else echo "$$out"; exit 1; fi; \
		fi; \
	done

clean:
	rm -rf build
