# slipway: `make image` builds the bundled default recipe; `make test` runs every test.
# Both install the host packages they need first (scripts/setup-host.sh).

CARGO ?= cargo
RECIPE ?= base/static
OUT ?= out

.PHONY: all setup build init image test check fmt clippy bench clean

# slipway-init (init/) goes into initramfs images: a static binary (static glibc; the musl
# target is not installed), built with its own size-optimised profile and copied next to
# the slipway binary, where slipway looks for it (see docs/initramfs.md).
INIT_TARGET ?= x86_64-unknown-linux-gnu
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
INIT_BIN = $(TARGET_DIR)/$(INIT_TARGET)/init/slipway-init

all: build

setup:
	./scripts/setup-host.sh

build:
	$(CARGO) build --release --locked
	$(MAKE) init

init:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --locked --profile init -p slipway-init --target $(INIT_TARGET)
	install -D -m 0755 $(INIT_BIN) $(TARGET_DIR)/release/slipway-init

image: setup build
	./target/release/slipway build $(RECIPE) -o $(OUT)/$(notdir $(RECIPE))

test: setup build
	$(CARGO) nextest run --release --locked --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

check: fmt clippy test

bench: setup build
	./bench/resolve.sh

clean:
	rm -rf target $(OUT)
