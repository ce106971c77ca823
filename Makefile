# One entry point for building and testing cniwasm. `make seed` and
# `make test` set up a fresh machine first (Debian packages, wasm target).

CARGO ?= cargo

.PHONY: all setup plugins build test unit-test lint seed bench clean

all: build

setup:
	./scripts/setup.sh

# The wasm plugins, copied to plugins-wasm/out/<type>.wasm.
plugins:
	./plugins-wasm/build.sh

# The runtime, the cniwasm binary and the test binaries, in one dev build.
build: plugins
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd plugins-wasm && $(CARGO) fmt --all --check && $(CARGO) clippy --release -- -D warnings

# Every test: unit tests, the plugins' own tests on the host target, and the
# integration tests, which need root and create their own namespaces.
test: setup build
	$(CARGO) test --workspace
	./plugins-wasm/test.sh

# The seed scenario end to end, in namespaces the script creates and removes.
seed: setup build
	./scripts/seed-demo.sh

# The benchmark against the reference plugins and a native floor, on a
# release build, in namespaces it creates and removes; see docs/performance.md.
bench: plugins
	./bench/run.sh

clean:
	$(CARGO) clean
	cd plugins-wasm && $(CARGO) clean
	rm -rf plugins-wasm/out
