#!/usr/bin/env bash
# Rebuild times of containerd-host with the disk only (`--format disk`), each the median
# of RUNS builds (default 5), as a user would run them, whole-process wall time:
#
#   cold       a cache with the packages (lists, .debs, decoded packages) but no stage
#              entries and no initramfs: every disk stage runs;
#   overlay    one overlay file changed since the last build (a new line each run):
#              the tree and the root image are built again, the rest comes from the
#              stage cache;
#   unchanged  nothing changed: the build's key matches, the verified entry is reused.
#
#   bench/rebuild.sh
#   RUNS=3 SLIPWAY=/path/to/slipway bench/rebuild.sh
#
# The recipe is a copy (recipes/containerd-host.toml, its lock and containerd-host/)
# in a scratch directory, so the overlay edits never touch the repository. The cache is
# a scratch one too: seeded with hard links from $SLIPWAY_CACHE (or ~/.cache/slipway)
# when that has the packages, so nothing is downloaded; its stage entries are its own.
# Each run prints wall/cpu (user + system) seconds; the CPU time tells a loaded
# machine's wait apart from slipway's work, and `uptime` is printed at the start and the
# end. Any user can run it (host disks build rootless since issue 20). Run it with
# nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SLIPWAY=${SLIPWAY:-target/release/slipway}
[ -x "$SLIPWAY" ] || { echo "bench/rebuild.sh: $SLIPWAY not built (run make build)" >&2; exit 1; }
SLIPWAY=$(realpath "$SLIPWAY")
SEED=${SLIPWAY_CACHE:-$HOME/.cache/slipway}

work=$(mktemp -d /tmp/slipway-bench-rebuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/recipes" "$work/cache"
cp recipes/containerd-host.toml "$work/recipes/"
# The lock, when a build in the repository made one (locks are not committed); else the
# warm-up build below locks the copy.
[ -f recipes/containerd-host.toml.lock ] && cp recipes/containerd-host.toml.lock "$work/recipes/"
cp -r recipes/containerd-host "$work/recipes/"
for d in apt blobs decoded; do
  [ -d "$SEED/$d" ] && cp -al "$SEED/$d" "$work/cache/"
done
export SLIPWAY_CACHE=$work/cache
recipe=$work/recipes/containerd-host.toml
out=$work/out
# The overlay file each "overlay" run changes: a sysctl drop-in (a comment line).
changed=$(find "$work/recipes/containerd-host/rootfs" -type f -name '*.conf' | sort | head -1)

now() { date +%s.%N; }
build() { # prints the wall time of one build, and its CPU time (user + system) after a slash
  /usr/bin/time -f '%e/%U/%S' -o "$work/time" \
    "$SLIPWAY" --quiet build "$recipe" -o "$out" --format disk >/dev/null
  awk -F/ '{ printf "%.2f/%.2f\n", $1, $2 + $3 }' "$work/time"
}
# The median of the wall times (field 1) or CPU times (field 2) of "wall/cpu" values.
median() { local f=$1; shift; printf '%s\n' "$@" | cut -d/ -f"$f" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "== $(uptime)"
echo "== warming the package cache (one build)"
build >/dev/null

cold=()
for i in $(seq "$RUNS"); do
  rm -rf "$work/cache/stages" "$work/cache/initramfs"
  cold+=("$(build)")
done
echo "cold (warm package cache):  ${cold[*]}"

overlay=()
for i in $(seq "$RUNS"); do
  echo "# bench/rebuild.sh: change $i $(now)" >>"$changed"
  overlay+=("$(build)")
done
echo "one changed overlay file:   ${overlay[*]}"

build >/dev/null # the last change, built once more so the next runs change nothing
unchanged=()
for i in $(seq "$RUNS"); do
  unchanged+=("$(build)")
done
echo "nothing changed:            ${unchanged[*]}"

sha=$(sha256sum "$out/disk.raw" | cut -d' ' -f1)
echo
echo "containerd-host --format disk, median of $RUNS, seconds, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg):"
printf '  %-28s %6s %8s\n' "" "wall" "cpu"
printf '  %-28s %6s %8s\n' "cold, warm package cache" "$(median 1 "${cold[@]}")" "$(median 2 "${cold[@]}")"
printf '  %-28s %6s %8s   (goal: wall <= 2)\n' "one changed overlay file" "$(median 1 "${overlay[@]}")" "$(median 2 "${overlay[@]}")"
printf '  %-28s %6s %8s   (goal: wall <= 0.5)\n' "nothing changed" "$(median 1 "${unchanged[@]}")" "$(median 2 "${unchanged[@]}")"
echo "  last disk.raw sha256:$sha"
echo "  uptime at the end:$(uptime)"
