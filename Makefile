# One command builds the charm, one runs the tests (see README.md).
GO ?= go
ARCH ?= $(shell $(GO) env GOARCH)

.PHONY: charm test testbed unit bench clean

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

clean:
	rm -rf build
