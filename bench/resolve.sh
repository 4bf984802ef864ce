#!/usr/bin/env bash
# Resolve and fetch times of slipway, cold and warm cache, next to apt resolving the
# same package sets (`apt-get install --simulate` on slipway's own apt state).
#
#   bench/resolve.sh                    # trixie
#   RELEASE=bookworm bench/resolve.sh   # bookworm
#   RUNS=5 bench/resolve.sh             # repetitions of each warm phase (default 3)
#   SETS=containerd bench/resolve.sh    # only some sets: containerd, flask
#
# Cold: a fresh, empty SLIPWAY_CACHE: `slipway lock R` (includes fetching the package
# lists) then `slipway fetch R` (downloads every .deb). Warm: the same cache again:
# `slipway lock --update R` (lists refreshed, then resolve), `slipway --offline lock
# --update R` (pure resolve from the cached lists) and `slipway fetch R` (all cached).
# Warm phases use hyperfine when it is installed (scripts/setup-host.sh installs it),
# else the mean of RUNS runs timed with `date +%s.%N`. Cold phases run once.
# The mirror comes from the host's apt sources (slipway reads them itself).
set -euo pipefail

RELEASE=${RELEASE:-trixie}
RUNS=${RUNS:-3}
SETS=${SETS:-containerd flask}

cd "$(dirname "$0")/.."
ROOT=$PWD
SLIPWAY=$ROOT/target/release/slipway

log() { printf '[resolve] %s\n' "$*" >&2; }

if [ ! -x "$SLIPWAY" ]; then
  log "building slipway (cargo build --release)"
  cargo build --release --locked
fi
command -v apt-get >/dev/null || { echo "resolve: apt-get not found" >&2; exit 1; }

HYPERFINE=""
if command -v hyperfine >/dev/null && [ "${NO_HYPERFINE:-0}" != 1 ]; then
  HYPERFINE=$(command -v hyperfine)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-bench-resolve.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A PKGS=(
  [containerd]="systemd systemd-sysv udev containerd runc iproute2 kmod iptables"
  [flask]="python3-minimal python3-flask"
)

now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
# fdiv A B: "A/B x", or n/a when B is 0 (too fast to measure).
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
# json_num FILE KEY: the first integer value of "KEY" in a JSON file (slipway --json output).
json_num() { sed -n "s/^ *\"$2\": *\([0-9.]*\).*/\1/p" "$1" | head -n1; }

# time_once OUT CMD...: runs CMD once (stdout to OUT, stderr to OUT.err); sets SECS.
time_once() {
  local out=$1; shift
  local t0 t1
  t0=$(now)
  if ! "$@" >"$out" 2>"$out.err"; then
    echo "resolve: command failed: $*" >&2
    cat "$out.err" >&2
    exit 1
  fi
  t1=$(now)
  SECS=$(fsub "$t1" "$t0")
}

# time_warm OUT CMD...: mean seconds of RUNS runs (hyperfine if present); sets SECS.
# The last run's stdout is left in OUT (a separate plain run when hyperfine times).
time_warm() {
  local out=$1; shift
  if [ -n "$HYPERFINE" ]; then
    local cmd="" a
    for a in "$@"; do cmd+="$(printf '%q ' "$a")"; done
    "$HYPERFINE" --style none --runs "$RUNS" --export-json "$out.hf.json" \
      --output=null "$cmd" >"$out.hf.log" 2>&1 || {
      echo "resolve: hyperfine failed for: $*" >&2
      cat "$out.hf.log" >&2
      exit 1
    }
    SECS=$(sed -n 's/^ *"mean": *\([0-9.eE+-]*\).*/\1/p' "$out.hf.json" | head -n1)
    SECS=$(awk -v s="$SECS" 'BEGIN { printf "%.3f", s }')
    "$@" >"$out" 2>"$out.err"
  else
    local i total=0
    for ((i = 0; i < RUNS; i++)); do
      time_once "$out" "$@"
      total=$(awk -v a="$total" -v b="$SECS" 'BEGIN { printf "%.6f", a + b }')
    done
    SECS=$(awk -v t="$total" -v n="$RUNS" 'BEGIN { printf "%.3f", t / n }')
  fi
}

ROWS=()   # "set|phase|seconds|packages|MB"
RATIOS=() # "set|text"
row() { ROWS+=("$1|$2|$3|$4|$5"); printf '[resolve]   %-10s %-34s %8ss %5s pkgs %8s MB\n' "$1" "$2" "$3" "$4" "$5" >&2; }

timer="date +%s.%N (mean of $RUNS)"
[ -n "$HYPERFINE" ] && timer="hyperfine (mean of $RUNS)"
log "release $RELEASE, sets: $SETS; warm phases timed with $timer"

for set in $SETS; do
  [ -n "${PKGS[$set]:-}" ] || { echo "resolve: unknown set '$set' (containerd, flask)" >&2; exit 2; }
  read -r -a pkgs <<<"${PKGS[$set]}"
  dir=$WORK/$set
  mkdir -p "$dir/cache"
  recipe=$dir/$set.toml
  {
    echo "schema-version = 1"
    echo "[debian]"
    echo "release = \"$RELEASE\""
    echo "[packages]"
    printf 'include = ['
    sep=""
    for p in "${pkgs[@]}"; do printf '%s"%s"' "$sep" "$p"; sep=", "; done
    echo "]"
  } >"$recipe"
  export SLIPWAY_CACHE=$dir/cache
  log "$set: ${pkgs[*]}"

  # --- cold -----------------------------------------------------------------
  log "$set: cold lock (empty cache: package lists + resolve)"
  time_once "$dir/lock-cold.json" "$SLIPWAY" --json lock "$recipe"
  n=$(json_num "$dir/lock-cold.json" packages); b=$(json_num "$dir/lock-cold.json" bytes)
  row "$set" "slipway lock (cold)" "$SECS" "$n" "$(mb "$b")"
  cold_lock=$SECS

  log "$set: cold fetch (download every .deb)"
  time_once "$dir/fetch-cold.json" "$SLIPWAY" --json fetch "$recipe"
  n=$(json_num "$dir/fetch-cold.json" packages); b=$(json_num "$dir/fetch-cold.json" bytes)
  dl=$(json_num "$dir/fetch-cold.json" downloaded)
  row "$set" "slipway fetch (cold, $dl downloaded)" "$SECS" "$n" "$(mb "$b")"
  cold_fetch=$SECS

  # --- warm -----------------------------------------------------------------
  log "$set: warm lock --update (lists refreshed, resolve)"
  time_warm "$dir/lock-warm.json" "$SLIPWAY" --json lock --update "$recipe"
  n=$(json_num "$dir/lock-warm.json" packages); b=$(json_num "$dir/lock-warm.json" bytes)
  row "$set" "slipway lock --update (warm)" "$SECS" "$n" "$(mb "$b")"

  log "$set: warm --offline lock --update (pure resolve from cached lists)"
  time_warm "$dir/lock-offline.json" "$SLIPWAY" --json --offline lock --update "$recipe"
  n=$(json_num "$dir/lock-offline.json" packages); b=$(json_num "$dir/lock-offline.json" bytes)
  row "$set" "slipway --offline lock --update" "$SECS" "$n" "$(mb "$b")"
  offline=$SECS
  offline_n=$n

  log "$set: warm fetch (everything cached)"
  time_warm "$dir/fetch-warm.json" "$SLIPWAY" --json fetch "$recipe"
  n=$(json_num "$dir/fetch-warm.json" packages); b=$(json_num "$dir/fetch-warm.json" bytes)
  row "$set" "slipway fetch (warm)" "$SECS" "$n" "$(mb "$b")"
  warm_fetch=$SECS

  # --- the peer: apt on slipway's own apt state -----------------------------
  confs=("$SLIPWAY_CACHE"/apt/*/apt.conf)
  [ -f "${confs[0]}" ] || { echo "resolve: no apt state under $SLIPWAY_CACHE/apt" >&2; exit 1; }
  [ ${#confs[@]} -eq 1 ] || log "$set: several apt states, using ${confs[0]}"
  export APT_CONFIG=${confs[0]}
  log "$set: apt-get install --simulate (APT_CONFIG=$APT_CONFIG)"
  time_warm "$dir/apt-sim.txt" apt-get install --simulate -q "${pkgs[@]}"
  an=$(grep -c '^Inst ' "$dir/apt-sim.txt" || true)
  # Download size of apt's solution, from --print-uris (not timed).
  ab=$(apt-get install --print-uris -qq "${pkgs[@]}" 2>/dev/null \
    | awk 'substr($1, 1, 1) == "\047" { s += $3 } END { printf "%d", s }')
  row "$set" "apt-get install --simulate" "$SECS" "$an" "$(mb "$ab")"
  apt_sim=$SECS
  unset APT_CONFIG

  RATIOS+=("$set|slipway offline resolve / apt simulate = $offline / $apt_sim = $(fdiv "$offline" "$apt_sim") ($offline_n vs $an packages)")
  RATIOS+=("$set|slipway cold lock / offline resolve   = $(fdiv "$cold_lock" "$offline"); cold fetch / warm fetch = $(fdiv "$cold_fetch" "$warm_fetch")")
  unset SLIPWAY_CACHE
done

# --- summary ------------------------------------------------------------------
echo
echo "=== slipway resolve benchmark: release $RELEASE, $(nproc) cores, $("$SLIPWAY" --version) ==="
echo "    warm phases: $timer; cold phases: one run, fresh empty cache"
printf '%-11s %-36s %9s %9s %9s\n' "set" "phase" "seconds" "packages" "MB"
printf '%-11s %-36s %9s %9s %9s\n' "-----------" "------------------------------------" "---------" "---------" "---------"
for r in "${ROWS[@]}"; do
  IFS='|' read -r s p t n m <<<"$r"
  printf '%-11s %-36s %9s %9s %9s\n' "$s" "$p" "$t" "$n" "$m"
done
echo
echo "ratios:"
for r in "${RATIOS[@]}"; do
  IFS='|' read -r s t <<<"$r"
  printf '  %-10s %s\n' "$s" "$t"
done
