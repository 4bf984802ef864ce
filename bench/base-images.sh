#!/usr/bin/env bash
# Base images: slipway's OCI output beside umoci packing the same content, per recipe.
#
#   bench/base-images.sh                 # every bundled base image and its debug variant
#   bench/base-images.sh static glibc:debug  # some (NAME:debug = `--variant debug`)
#   RUNS=5 bench/base-images.sh          # warm builds timed per recipe (median printed)
#   PEER=0 bench/base-images.sh          # sizes and floors only, no umoci repack
#
# For each recipe:
# - slipway: one build warms the cache (packages fetched, decoded and the compressed
#   layers cached); then RUNS warm `slipway build R --format oci,oci-archive` into fresh
#   output directories are timed (median). Sizes come from report.json: compressed bytes
#   (layers + config), uncompressed layer bytes, number of layers, bytes shared with the
#   base image, and how many of the layers are the base image's own (`shared`: the
#   layers a client that has the parent does not pull again).
# - peer (umoci): `umoci init` + `umoci new`, slipway's own rootfs/ tree copied into the
#   unpacked bundle, then `umoci repack` timed: the same content from the same .debs,
#   packed by umoci (gzip, Go's compress/gzip default level). umoci repacks an unpacked
#   tree, so its time is comparable to slipway's whole warm build, not to its compression.
# - floors: `gzip -9` and `zstd -19` of slipway's rootfs.tar. The gzip floor is what the
#   image's content weighs as one tar compressed as one gzip stream at gzip's highest
#   level: no layer boundaries, no config, the best the standard gzip format does on
#   those files. An image's compressed size minus its gzip floor is the cost of its
#   layering (a child's layers compress apart from its parent's) and of the compressor
#   (flate2's miniz_oxide at level 9 against GNU gzip -9).
# Ratios printed: peer time / slipway time, peer size / slipway size.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SLIPWAY=$ROOT/target/release/slipway
RUNS=${RUNS:-3}
PEER=${PEER:-1}
export SLIPWAY_CACHE=${SLIPWAY_CACHE:-$ROOT/target/bench-cache}

for t in umoci gzip zstd; do
  command -v "$t" >/dev/null || { echo "base-images: $t not found (scripts/setup-host.sh installs it)" >&2; exit 1; }
done
[ -x "$SLIPWAY" ] || cargo build --release --locked

if [ $# -gt 0 ]; then NAMES=("$@"); else
  NAMES=()
  for n in static busybox glibc glibc-full python nginx pause cc nodejs java; do
    [ -f "recipes/base/$n.toml" ] && NAMES+=("$n")
  done
  for n in static busybox glibc glibc-full python nginx pause cc nodejs java; do
    [ -f "recipes/base/$n.toml" ] && NAMES+=("$n:debug")
  done
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-bench-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
jq_() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); i=r['images'][0]; print($2)" "$1"; }

FMT='%-17s %6s %6s %9s %9s %9s %9s %9s | %9s %9s | %8s %8s\n'
printf "$FMT" \
  image layers shared gz_MB shr_MB tar_MB gzip9_MB zstd19_MB umoci_MB umoci_s warm_s s_ratio
for n in "${NAMES[@]}"; do
  base=${n%:debug}
  id=${n/:/-}
  r=recipes/base/$base.toml
  extra=()
  [ "$n" != "$base" ] && extra=(--variant debug)
  "$SLIPWAY" -q build "$r" "${extra[@]}" -o "$WORK/$id-warm" --format oci,oci-archive,tar,dir >/dev/null
  times=()
  for i in $(seq "$RUNS"); do
    t0=$(now)
    "$SLIPWAY" -q build "$r" "${extra[@]}" -o "$WORK/$id-$i" --format oci,oci-archive >/dev/null
    times+=("$(fsub "$(now)" "$t0")")
  done
  warm=$(printf '%s\n' "${times[@]}" | median)
  rep=$WORK/$id-warm/report.json
  layers=$(jq_ "$rep" "len(i['layers'])")
  gz=$(jq_ "$rep" "i['compressed_bytes']")
  tarb=$(jq_ "$rep" "i['uncompressed_bytes']")
  shared=$(jq_ "$rep" "i['shared_bytes']")
  shared_layers=$(jq_ "$rep" "sum(1 for l in i['layers'] if l['inherited'])")
  g9=$(gzip -9 -c "$WORK/$id-warm/rootfs.tar" | wc -c)
  z19=$(zstd -19 -q -c "$WORK/$id-warm/rootfs.tar" | wc -c)
  if [ "$PEER" = 0 ]; then
    printf "$FMT" "$n" "$layers" "$shared_layers" "$(mb "$gz")" "$(mb "$shared")" "$(mb "$tarb")" \
      "$(mb "$g9")" "$(mb "$z19")" - - "$warm" -
    continue
  fi

  # umoci: a fresh image, the same tree copied in, repacked.
  L=$WORK/$id-umoci
  umoci init --layout "$L" >/dev/null
  umoci new --image "$L:latest" >/dev/null
  umoci unpack --rootless --image "$L:latest" "$WORK/$id-bundle" >/dev/null 2>&1
  cp -a "$WORK/$id-warm/rootfs/." "$WORK/$id-bundle/rootfs/"
  t0=$(now)
  umoci repack --image "$L:latest" "$WORK/$id-bundle" >/dev/null 2>&1
  ut=$(fsub "$(now)" "$t0")
  ub=$(python3 - "$L" <<'PY'
import json, sys, os
L = sys.argv[1]
idx = json.load(open(os.path.join(L, "index.json")))
def blob(d): return os.path.join(L, "blobs", *d.split(":"))
m = json.load(open(blob(idx["manifests"][0]["digest"])))
print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])
PY
)
  printf "$FMT" "$n" "$layers" "$shared_layers" "$(mb "$gz")" "$(mb "$shared")" "$(mb "$tarb")" \
    "$(mb "$g9")" "$(mb "$z19")" "$(mb "$ub")" "$ut" "$warm" "$(ratio "$ub" "$gz")"
done
echo "(gz_MB = slipway's compressed image, layers + config; shared = layers reused from the base"
echo " image, shr_MB their bytes; gzip9_MB = the gzip floor, gzip -9 of the flattened rootfs.tar;"
echo " umoci_s = umoci repack time of the same tree; s_ratio = umoci size / slipway size)"
