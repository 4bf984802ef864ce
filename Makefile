# slipway: `make image` builds the bundled default recipe; `make test` runs every test.
# Both install the host packages they need first (scripts/setup-host.sh).

CARGO ?= cargo
RECIPE ?= base/static
OUT ?= out

.PHONY: all setup build init agent node image test qemu-test check fmt clippy bench clean

# slipway-init (init/) goes into initramfs images: a static binary (static glibc; the musl
# target is not installed), built with its own size-optimised profile and copied next to
# the slipway binary, where slipway looks for it (see docs/initramfs.md).
INIT_TARGET ?= x86_64-unknown-linux-gnu
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
INIT_BIN = $(TARGET_DIR)/$(INIT_TARGET)/init/slipway-init
# slipway-agent (agent/) goes into host images (/usr/lib/slipway/slipway-agent): built the
# same way as slipway-init (see docs/provisioning.md).
AGENT_BIN = $(TARGET_DIR)/$(INIT_TARGET)/init/slipway-agent
# slipway-node (node/) goes into Kubernetes node images: the node-readiness check and a
# CRI client; built the same way (see docs/node-check.md).
NODE_BIN = $(TARGET_DIR)/$(INIT_TARGET)/init/slipway-node

all: build

setup:
	./scripts/setup-host.sh

build:
	$(CARGO) build --release --locked
	$(MAKE) init
	$(MAKE) agent
	$(MAKE) node

init:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --locked --profile init -p slipway-init --target $(INIT_TARGET)
	install -D -m 0755 $(INIT_BIN) $(TARGET_DIR)/release/slipway-init

agent:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --locked --profile init -p slipway-agent --target $(INIT_TARGET)
	install -D -m 0755 $(AGENT_BIN) $(TARGET_DIR)/release/slipway-agent

node:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --locked --profile init -p slipway-node --target $(INIT_TARGET)
	install -D -m 0755 $(NODE_BIN) $(TARGET_DIR)/release/slipway-node

image: setup build
	./target/release/slipway build $(RECIPE) -o $(OUT)/$(notdir $(RECIPE))

# Every test: the cargo tests, then the qemu/ boot-test suite (one VM at a time).
test: setup build
	$(CARGO) nextest run --release --locked --workspace --no-fail-fast
	$(MAKE) qemu-test

# The boot tests in qemu/*.toml (docs/testing.md): one VM at a time under TCG.
qemu-test: setup build
	$(TARGET_DIR)/release/slipway test --junit $(OUT)/test/junit.xml

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

check: fmt clippy test

bench: setup build
	./bench/resolve.sh

clean:
	rm -rf target $(OUT)
