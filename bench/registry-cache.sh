#!/usr/bin/env bash
# Three machines' build times of one recipe, side by side (issue 26), whole-process wall
# and CPU seconds:
#
#   A cold        an empty cache (only the package lists, copied, so the index
#                 download is not timed): every .deb from the Debian mirror, every stage
#                 built, everything pushed with --cache-to and the fleet's key;
#   B registry    another empty cache, the Debian mirror overridden to a closed port:
#                 everything from --cache-from (a host image's signed stage entry, a base
#                 image's packages), nothing built that the registry had;
#   local warm    machine A again: its own cache holds everything.
#
#   bench/registry-cache.sh                      # containerd-host --format disk
#   RECIPE=recipes/base/python.toml FORMAT=oci bench/registry-cache.sh
#   SLIPWAY=/path/to/slipway bench/registry-cache.sh
#
# The registry is Debian's docker-registry on 127.0.0.1 with scratch storage (loopback:
# a fleet's network adds its own transfer time). The lock must exist (slipway lock).
# Outputs of A and B are compared byte for byte. Run it with nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${RECIPE:-recipes/containerd-host.toml}
FORMAT=${FORMAT:-disk}
SLIPWAY=${SLIPWAY:-target/release/slipway}
[ -x "$SLIPWAY" ] || { echo "bench/registry-cache.sh: $SLIPWAY not built (run make build)" >&2; exit 1; }
[ -f "$RECIPE.lock" ] || { echo "bench/registry-cache.sh: $RECIPE.lock missing (run slipway lock $RECIPE)" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "bench/registry-cache.sh: docker-registry not installed (Debian: docker-registry)" >&2; exit 1; }
SLIPWAY=$(realpath "$SLIPWAY")
SEED=${SLIPWAY_CACHE:-$HOME/.cache/slipway}

work=$(mktemp -d /tmp/slipway-bench-registry.XXXXXX)
reg_pid=
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
closed=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
repo=127.0.0.1:$port/bench/cache

openssl genpkey -algorithm ed25519 -out "$work/fleet.pem" 2>/dev/null
openssl pkey -in "$work/fleet.pem" -pubout -out "$work/fleet.pub.pem"
mkdir -p "$work/a/cache" "$work/b/cache"
[ -d "$SEED/apt" ] && cp -a "$SEED/apt" "$work/a/cache/"
export SLIPWAY_CACHE_CONFIG=/dev/null

build() { # MACHINE OUT ARGS...: prints wall/cpu seconds of one build
  local m=$1 out=$2; shift 2
  SLIPWAY_CACHE=$work/$m/cache /usr/bin/time -f '%e/%U/%S' -o "$work/time" \
    "$SLIPWAY" --quiet build "$RECIPE" -o "$work/$out" --format "$FORMAT" "$@" >/dev/null
  awk -F/ '{ printf "%.2f/%.2f\n", $1, $2 + $3 }' "$work/time"
}
sums() { (cd "$1" && find . -type f ! -name report.json -print0 | sort -z | xargs -0 sha256sum); }

a=$(build a out-a --cache-to "$repo" --cache-signing-key "$work/fleet.pem")
b=$(SLIPWAY_MIRROR=http://127.0.0.1:$closed/debian build b out-b \
  --cache-from "$repo" --cache-trusted-key "$work/fleet.pub.pem")
warm=$(build a out-warm)
same=no
[ "$(sums "$work/out-a")" = "$(sums "$work/out-b")" ] && same=yes

echo "$(basename "$RECIPE" .toml) --format $FORMAT, seconds, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg):"
printf '  %-34s %6s %8s\n' "" "wall" "cpu"
printf '  %-34s %6s %8s\n' "A cold (mirror, builds, pushes)" "${a%/*}" "${a#*/}"
printf '  %-34s %6s %8s\n' "B from the registry (no mirror)" "${b%/*}" "${b#*/}"
printf '  %-34s %6s %8s\n' "local warm (A again)" "${warm%/*}" "${warm#*/}"
echo "  B's outputs byte-identical to A's: $same"
echo "  registry: $(du -sh "$work/storage" | cut -f1) stored"
[ "$same" = yes ]
