# One command builds the charm, one runs the tests (see README.md).
GO ?= go
ARCH ?= $(shell $(GO) env GOARCH)

.PHONY: charm test testbed unit e2e bench clean

## charm: build build/github-runner_ubuntu@24.04-$(ARCH).charm and print its path
charm:
	@$(GO) run ./charm/cmd/pack -out build -arch $(ARCH)

## testbed: set up the real parts the tests use (LXD, OpenStack); idempotent, needs root
testbed:
	bash tests/lxd/setup.sh
	bash tests/openstack/setup.sh

## test: set up the test bed, then run every test
test: testbed unit

## unit: run every test against whatever test bed is already up
unit:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 45m ./...

## e2e: the end-to-end test alone (real LXD, Pebble, fake GitHub; run `make testbed` first)
e2e:
	$(GO) test -count=1 -v -timeout 20m ./tests/e2e/

## bench: the benchmarks; each prints BENCH lines (see README.md)
bench:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./... | grep -E '^(BENCH|Benchmark|ok|FAIL)'

clean:
	rm -rf build
