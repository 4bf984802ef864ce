#!/usr/bin/env bash
# The native squashfs writer (src/disk/squashfs/) beside mksquashfs on containerd-host's
# read-only root, in one run: time (median of RUNS, default 3) and size of each, and
# their ratios. mksquashfs runs with the host image's flags (zstd level 3, 128 KiB
# blocks, -reproducible, SOURCE_DATE_EPOCH) on the tree staged once with its owners; the
# "today's path" line times what the native writer replaces: staging + mksquashfs + pad.
# The tree is assembled in-process from the shared package cache (tests/it/squashfs.rs,
# bench_native_beside_mksquashfs).
#
#   bench/squashfs.sh
#   RUNS=5 bench/squashfs.sh
#
# Needs root (the staged tree keeps its owners) and mksquashfs (squashfs-tools). Run it
# with nothing else running: both writers use every core.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNS=${RUNS:-3}
OUT=${OUT:-out/bench/squashfs}
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "bench/squashfs.sh: needs root (the staged tree for mksquashfs keeps its owners)" >&2; exit 1; }
command -v mksquashfs >/dev/null || { echo "bench/squashfs.sh: mksquashfs not found (Debian: squashfs-tools)" >&2; exit 1; }
export SLIPWAY_INIT=${SLIPWAY_INIT:-$PWD/target/release/slipway-init}
export SLIPWAY_AGENT=${SLIPWAY_AGENT:-$PWD/target/release/slipway-agent}
[ -x "$SLIPWAY_AGENT" ] || { echo "bench/squashfs.sh: $SLIPWAY_AGENT not built (run make build)" >&2; exit 1; }
echo "== containerd-host root: native squashfs writer beside mksquashfs (RUNS=$RUNS)"
cargo test --release --locked --test it -- --ignored --exact squashfs::bench_native_beside_mksquashfs \
  --nocapture > "$OUT/bench.log" 2>&1 || { cat "$OUT/bench.log" >&2; exit 1; }
grep '^bench: ' "$OUT/bench.log" | sed 's/^bench: /   /' | tee "$OUT/result.txt"
