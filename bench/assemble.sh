#!/usr/bin/env bash
# slipway vs mmdebstrap assembling the same package set from warm caches, side by side.
#
#   bench/assemble.sh                     # trixie, slim (doc/man/locale dropped on both sides)
#   RELEASE=bookworm bench/assemble.sh
#   SLIM=0 bench/assemble.sh              # keep docs, man pages and locales on both sides
#   VARIANT=custom bench/assemble.sh      # mmdebstrap --variant (default essential)
#   MMDEBSTRAP_UPDATE=1 bench/assemble.sh # let mmdebstrap's timed run `apt-get update` too
#
# slipway: a recipe with the containerd-host set (kind base) and, when SLIM=1, `[paths]
# drop` globs for docs, man pages and locales. One `slipway build R --format tar` warms
# the cache; the timed run is a second `slipway build R --format dir,tar` into a fresh
# output directory. Tree size: report.json's tree_bytes and `du -sb OUT/rootfs`.
#
# mmdebstrap: `--mode=root --variant=essential --include=<set>` with the same excludes as
# dpkg path-exclude options. The first run warms a .deb cache directory (and a copy of
# its package lists) kept outside the chroot with hooks, as mmdebstrap's manual shows
# (its /var/cache/apt/archives is fixed inside the chroot, so `Dir::Cache::archives`
# cannot point elsewhere); the timed second run starts with those .debs (hard-linked
# in) and, unless MMDEBSTRAP_UPDATE=1, with the saved lists and --skip=update, so
# neither side touches the network. Tree size: `du -sb`.
#
# The mirror: slipway reads the host's apt sources itself; for mmdebstrap this script
# takes the URIs of the host's deb822 stanza whose Suites name RELEASE (else the first
# Debian stanza, as slipway does) and of the one for RELEASE-security.
set -euo pipefail

RELEASE=${RELEASE:-trixie}
SLIM=${SLIM:-1}
VARIANT=${VARIANT:-essential}
MMDEBSTRAP_UPDATE=${MMDEBSTRAP_UPDATE:-0}
PKGS=(systemd systemd-sysv udev containerd runc iproute2 kmod iptables)

cd "$(dirname "$0")/.."
ROOT=$PWD
SLIPWAY=$ROOT/target/release/slipway

log() { printf '[assemble] %s\n' "$*" >&2; }

if ! command -v mmdebstrap >/dev/null; then
  echo "assemble: mmdebstrap is not installed; install it with:" >&2
  echo "    apt-get install mmdebstrap      (or: scripts/setup-host.sh)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "assemble: run as root (mmdebstrap --mode=root)" >&2
  exit 1
fi
if [ ! -x "$SLIPWAY" ]; then
  log "building slipway (cargo build --release)"
  cargo build --release --locked
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-bench-assemble.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
# fdiv A B: "A/B x", or n/a when B is 0 (too fast to measure).
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
json_num() { sed -n "s/^ *\"$2\": *\([0-9.]*\).*/\1/p" "$1" | head -n1; }

# run_logged LOG CMD...: runs CMD with output to LOG; on failure shows its tail and exits.
run_logged() {
  local logf=$1; shift
  if ! "$@" >"$logf" 2>&1; then
    echo "assemble: command failed: $*" >&2
    tail -n 40 "$logf" >&2
    exit 1
  fi
}

# --- the mirror for mmdebstrap, from the host's apt sources -------------------------
# Prints "suites<TAB>uri" for every enabled deb source (deb822 and one-line formats).
host_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = 1
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          k = line; sub(/:.*/, "", k); k = tolower(k); gsub(/[ \t]/, "", k)
          v = line; sub(/^[^:]*:[ \t]*/, "", v)
          if (k == "types") types = v
          else if (k == "uris") uris = v
          else if (k == "suites") suites = v
          else if (k == "enabled" && v ~ /^no/) enabled = 0
        }
        if (enabled && (" " types " ") ~ / deb /) {
          n = split(uris, u, /[ \t]+/)
          for (j = 1; j <= n; j++) if (u[j] != "") print suites "\t" u[j]
        }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed 's/#.*//' "$f" | awk '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if (i + 1 <= NF) print $(i + 1) "\t" $i
      }'
  done
}

pick_mirror() { # pick_mirror SUITE FALLBACK-REGEX
  local s
  s=$(host_sources)
  # the stanza whose Suites contain SUITE
  awk -F'\t' -v want="$1" '{ n = split($1, a, " "); for (i = 1; i <= n; i++) if (a[i] == want) { print $2; exit } }' <<<"$s" | grep . && return
  # else the first Debian stanza of the same kind (what slipway itself does)
  awk -F'\t' -v re="$2" '{ n = split($1, a, " "); for (i = 1; i <= n; i++) if (a[i] ~ re) { print $2; exit } }' <<<"$s"
}

codenames='^(bullseye|bookworm|trixie|forky|sid|stable|oldstable|testing|unstable)'
if [ -n "${SLIPWAY_MIRROR:-}" ]; then
  MIRROR=${SLIPWAY_MIRROR%/}
  SECURITY=$MIRROR-security
else
  MIRROR=$(pick_mirror "$RELEASE" "$codenames(-updates|-backports)?\$" | head -n1)
  MIRROR=${MIRROR%/}
  SECURITY=$(pick_mirror "$RELEASE-security" "$codenames-security\$" | head -n1)
  SECURITY=${SECURITY%/}
fi
[ -n "$MIRROR" ] || { echo "assemble: no Debian mirror in /etc/apt/sources.list{,.d} (or set SLIPWAY_MIRROR)" >&2; exit 1; }
[ -n "$SECURITY" ] || SECURITY=$MIRROR-security

# --- slipway --------------------------------------------------------------------------
export SLIPWAY_CACHE=$WORK/slipway-cache
recipe=$WORK/containerd-host.toml
{
  echo "schema-version = 1"
  echo "[image]"
  echo "name = \"containerd-host\""
  echo "kind = \"base\""
  echo "[debian]"
  echo "release = \"$RELEASE\""
  echo "[packages]"
  printf 'include = ['
  sep=""
  for p in "${PKGS[@]}"; do printf '%s"%s"' "$sep" "$p"; sep=", "; done
  echo "]"
  if [ "$SLIM" = 1 ]; then
    echo "[paths]"
    echo 'drop = ["usr/share/doc/**", "usr/share/man/**", "usr/share/info/**", "usr/share/locale/**", "usr/share/lintian/**"]'
    echo 'keep = ["usr/share/doc/*/copyright"]'
  fi
} >"$recipe"

slim_text="full tree"
[ "$SLIM" = 1 ] && slim_text="slim: doc/man/info/locale/lintian dropped, copyright kept"
log "release $RELEASE, ${PKGS[*]} ($slim_text)"
log "mmdebstrap mirrors: $MIRROR, $SECURITY"

log "slipway: warm-up build (lock, fetch, assemble; --format tar)"
run_logged "$WORK/slipway-warm.log" "$SLIPWAY" build "$recipe" -o "$WORK/slipway-warm" --format tar
rm -rf "$WORK/slipway-warm"

log "slipway: timed build (--format dir,tar)"
out=$WORK/slipway-out
t0=$(now)
run_logged "$WORK/slipway-build.log" "$SLIPWAY" build "$recipe" -o "$out" --format dir,tar
t1=$(now)
S_TIME=$(fsub "$t1" "$t0")
S_TREE=$(json_num "$out/report.json" tree_bytes)
S_PKGS=$(json_num "$out/report.json" packages)
S_ENTRIES=$(json_num "$out/report.json" tree_entries)
S_DU=$(du -sb "$out/rootfs" | cut -f1)
S_TAR=$(stat -c %s "$out/rootfs.tar")
S_DROPPED=$(grep -o '[0-9.]* MB dropped by path globs' "$WORK/slipway-build.log" | head -n1 || true)
log "slipway: ${S_TIME}s, $S_PKGS packages, tree_bytes $S_TREE, du -sb $S_DU"
rm -rf "$out"

# --- mmdebstrap -------------------------------------------------------------------
debs=$WORK/mm-debs
lists=$WORK/mm-lists
mkdir -p "$debs" "$lists"
mm_args=(
  --mode=root
  --variant="$VARIANT"
  --include="$(IFS=,; echo "${PKGS[*]}")"
  --aptopt='Acquire::Languages "none"'
  --skip=essential/unlink
  # put the cached .debs where mmdebstrap's apt looks (hard links when possible)
  --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\"; for f in $(printf %q "$debs")/*.deb; do [ -e \"\$f\" ] || continue; cp -l \"\$f\" \"\$1/var/cache/apt/archives/\" 2>/dev/null || cp \"\$f\" \"\$1/var/cache/apt/archives/\"; done"
  # and keep what it downloaded (and its package lists) for the next run
  --customize-hook="for f in \"\$1\"/var/cache/apt/archives/*.deb; do [ -e \"\$f\" ] || continue; [ -e $(printf %q "$debs")/\"\${f##*/}\" ] || cp -l \"\$f\" $(printf %q "$debs")/ 2>/dev/null || cp \"\$f\" $(printf %q "$debs")/; done"
)
if [ "$SLIM" = 1 ]; then
  mm_args+=(
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
  )
fi
sources=(
  "deb $MIRROR $RELEASE main"
  "deb $MIRROR $RELEASE-updates main"
  "deb $SECURITY $RELEASE-security main"
)

log "mmdebstrap: warm-up run (--variant=$VARIANT --mode=root; downloads the .debs)"
run_logged "$WORK/mm-warm.log" mmdebstrap "${mm_args[@]}" \
  --customize-hook="cp -a \"\$1\"/var/lib/apt/lists/. $(printf %q "$lists")/" \
  "$RELEASE" "$WORK/mm-warm" "${sources[@]}"
M_DEBS=$(find "$debs" -name '*.deb' | wc -l)
rm -rf "$WORK/mm-warm"
log "mmdebstrap: $M_DEBS .debs cached"

timed_args=("${mm_args[@]}")
update_text="apt-get update skipped (lists from the warm-up run)"
if [ "$MMDEBSTRAP_UPDATE" = 1 ]; then
  update_text="runs apt-get update (network)"
else
  timed_args+=(
    --skip=update
    --setup-hook="mkdir -p \"\$1/var/lib/apt/lists\"; cp -a $(printf %q "$lists")/. \"\$1/var/lib/apt/lists/\""
  )
fi

log "mmdebstrap: timed run ($update_text)"
mm_out=$WORK/mm-out
t0=$(now)
run_logged "$WORK/mm-timed.log" mmdebstrap "${timed_args[@]}" "$RELEASE" "$mm_out" "${sources[@]}"
t1=$(now)
M_TIME=$(fsub "$t1" "$t0")
M_DU=$(du -sb "$mm_out" | cut -f1)
M_PKGS=$(dpkg-query --admindir="$mm_out/var/lib/dpkg" -W -f='${db:Status-Abbrev}\n' 2>/dev/null | grep -c '^ii' || true)
M_NEW=$(( $(find "$debs" -name '*.deb' | wc -l) - M_DEBS ))
[ "$M_NEW" -eq 0 ] || log "mmdebstrap: note: the timed run downloaded $M_NEW .debs the warm-up had not"
log "mmdebstrap: ${M_TIME}s, $M_PKGS packages, du -sb $M_DU"

# --- summary ------------------------------------------------------------------------
echo
echo "=== slipway vs mmdebstrap: assemble ${PKGS[*]} ==="
echo "    release $RELEASE, $(nproc) cores, $("$SLIPWAY" --version), $(mmdebstrap --version)"
echo "    $slim_text; warm caches, second run timed with date +%s.%N"
echo "    slipway: build --format dir,tar (no maintainer scripts run)"
echo "    mmdebstrap: --mode=root --variant=$VARIANT, output a directory; $update_text"
printf '%-12s %9s %9s %14s %14s %14s\n' "tool" "seconds" "packages" "tree MB (du)" "content MB" "tar MB"
printf '%-12s %9s %9s %14s %14s %14s\n' "slipway" "$S_TIME" "$S_PKGS" "$(mb "$S_DU")" "$(mb "$S_TREE")" "$(mb "$S_TAR")"
printf '%-12s %9s %9s %14s %14s %14s\n' "mmdebstrap" "$M_TIME" "$M_PKGS" "$(mb "$M_DU")" "-" "-"
echo
echo "ratios:"
echo "  time  mmdebstrap / slipway = $M_TIME / $S_TIME = $(fdiv "$M_TIME" "$S_TIME")"
echo "  size  mmdebstrap / slipway (du -sb) = $M_DU / $S_DU = $(fdiv "$M_DU" "$S_DU")"
echo "  slipway tree entries: $S_ENTRIES; report.json tree_bytes $S_TREE${S_DROPPED:+; $S_DROPPED}"
