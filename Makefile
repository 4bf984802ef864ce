# slipway: `make image` builds the bundled default recipe; `make test` runs every test.
# Both install the host packages they need first (scripts/setup-host.sh).

CARGO ?= cargo
RECIPE ?= base/static
OUT ?= out

.PHONY: all setup build image test check fmt clippy bench clean

all: build

setup:
	./scripts/setup-host.sh

build:
	$(CARGO) build --release --locked

image: setup build
	./target/release/slipway build $(RECIPE) -o $(OUT)/$(notdir $(RECIPE))

test: setup
	$(CARGO) build --release --locked
	$(CARGO) nextest run --release --locked --no-fail-fast

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

check: fmt clippy test

bench: setup build
	./bench/resolve.sh

clean:
	rm -rf target $(OUT)
