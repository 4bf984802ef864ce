# slipway: `make image` builds the bundled default recipe; `make test` runs every test.
# Both install the host packages they need first (scripts/setup-host.sh).

CARGO ?= cargo
RECIPE ?= base/static
OUT ?= out

.PHONY: all setup build release static build-tests ci-build clippy-idle release-and-tests init agent node image test test-host test-vm qemu-test check fmt clippy bench clean

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

all: setup build

setup:
	./scripts/setup-host.sh

# The release build and the static in-image binaries run side by side: the latter live
# in their own profile directories (target/init, target/$(INIT_TARGET)/init), so the two
# cargo runs never wait for each other's lock, and their single-threaded LTO links fill
# the core the release build leaves idle. The three static binaries build one after the
# other (they share those directories); one cargo run for all three would unify their
# dependencies' features and grow slipway-init.
#
# SLIPWAY_PREBUILT=1 (set by .ci/run after `make build-tests`): the binaries are there
# already. `cargo build --release` alone would compile the library once more, since
# nextest's --workspace build unifies the dependencies' features across the workspace
# and a plain build does not (96 s of CI).
ifdef SLIPWAY_PREBUILT
build:
	@echo "build: built by make build-tests (SLIPWAY_PREBUILT is set)"
else
build:
	$(MAKE) -j2 release static
endif

release:
	$(CARGO) build --release --locked

static:
	$(MAKE) init
	$(MAKE) agent
	$(MAKE) node

# CI's compile phase: the release build with every test binary (nextest builds the bin
# targets the integration tests run), beside the static binaries.
build-tests:
	$(MAKE) -j2 release-and-tests static

# CI's first phase: the host packages install (network and dpkg) and `cargo fmt --check`
# runs while everything compiles; clippy runs beside it in the idle scheduling class
# (`chrt --idle 0`), on the CPU time the compile leaves (a single-threaded front end,
# the static binaries' LTO links), in a target directory of its own so that it never
# waits for the build's cargo lock (docs/decisions/0046-host-tests-in-the-vm-gaps.md).
ci-build:
	$(MAKE) -j4 setup fmt build-tests clippy-idle

clippy-idle:
	CARGO_TARGET_DIR=$(abspath $(TARGET_DIR))/lint chrt --idle 0 $(MAKE) --no-print-directory clippy

release-and-tests:
	$(CARGO) nextest run --release --locked --workspace --no-run

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

# Tests. Under TCG a guest needs a core to itself, so the tests that boot QEMU run apart
# from everything else and one at a time. Which test modules boot is listed once, in
# .config/nextest.toml (the test group `vm`).
# - test-host: every cargo test that boots nothing, at full parallelism;
# - test-vm: the test modules in the group `vm`, one test at a time, then the qemu/
#   suite (`slipway test`);
# - test: both at once (scripts/test-both.sh): test-vm at normal priority, test-host in
#   the idle scheduling class beside it, on the CPU time the guests leave.
# Images are built once per content key into the fixture cache $(SLIPWAY_FIXTURES),
# shared by every cargo test process and `slipway test` (src/testing/fixtures.rs). Every
# VM holds an exclusive flock on $(SLIPWAY_VM_LOCK) while it runs (src/boot/qemu.rs), so
# no two VMs run at once even across processes; do not run these targets under
# `flock` on that same file (a VM would wait for its own parent).
NEXTEST = $(CARGO) nextest run --release --locked --workspace --no-fail-fast
SLIPWAY_FIXTURES ?= $(abspath $(TARGET_DIR))/tmp/fixtures
SLIPWAY_VM_LOCK ?= $(abspath $(TARGET_DIR))/vm.lock
# The tests use the static binaries `make build` just made (tests/it/common::static_binary):
# left to build them itself, cargo run from inside a test sees another environment and
# rebuilds the agent (rustls and ring, about 30 s), and the next `make agent` rebuilds it
# back.
SLIPWAY_INIT ?= $(abspath $(TARGET_DIR))/release/slipway-init
SLIPWAY_AGENT ?= $(abspath $(TARGET_DIR))/release/slipway-agent
SLIPWAY_NODE ?= $(abspath $(TARGET_DIR))/release/slipway-node
export SLIPWAY_FIXTURES SLIPWAY_VM_LOCK SLIPWAY_INIT SLIPWAY_AGENT SLIPWAY_NODE
TEST_HOST = $(NEXTEST) -E 'not group(vm)'
TEST_VM = $(NEXTEST) -E 'group(vm)'
QEMU_TEST = $(TARGET_DIR)/release/slipway test --junit $(OUT)/test/junit.xml

test: setup build
	OUT=$(OUT) MAKE=$(MAKE) ./scripts/test-both.sh

test-host: setup build
	$(TEST_HOST)

test-vm: setup build
	$(TEST_VM)
	$(QEMU_TEST)

# The boot tests in qemu/*.toml (docs/testing.md) alone: one VM at a time under TCG.
qemu-test: setup build
	$(QEMU_TEST)

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

check: fmt clippy test

bench: setup build
	./bench/resolve.sh

clean:
	rm -rf target $(OUT)
