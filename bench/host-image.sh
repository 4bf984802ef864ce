#!/usr/bin/env bash
# The container-host disk image: build times (cold, warm, after one overlay file
# changed; with slipway's per-stage times), sizes (by partition, compressed, initramfs,
# largest packages) and boot time (median of BOOTS boots, QEMU start to
# multi-user.target on the console, TCG), next to mkosi 14's numbers for the same
# bookworm package set as measured for issue 5 on a machine of this kind (mkosi is not
# run here: it needs debootstrap and a bootable mkosi config of its own; the ratios use
# those recorded numbers and say so).
#
#   sudo bench/host-image.sh                 # recipes/containerd-host.toml, 5 boots
#   RECIPE=recipes/containerd-host-bookworm.toml BOOTS=3 sudo bench/host-image.sh
#
# Cold = an empty slipway cache (package lists and .debs downloaded); warm = the same
# cache, a fresh output directory; overlay = a copy of the recipe whose overlay has one
# changed file (the lock, the decoded packages and the layer caches stay warm).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${RECIPE:-recipes/containerd-host.toml}
BOOTS=${BOOTS:-5}
SLIPWAY=${SLIPWAY:-./target/release/slipway}
TIMEOUT=${TIMEOUT:-300}
# mkosi 14 on this machine kind, same bookworm package set (issue 5).
MKOSI_WARM=51; MKOSI_INCR=27.6; MKOSI_MB=222; MKOSI_INITRD_MB=22.7; MKOSI_BOOT=41.6

work=$(mktemp -d /tmp/slipway-bench-host.XXXXXX)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

secs() { python3 -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.2f}")' "$1"; }
now() { python3 -c 'import time; print(time.time())'; }
stages() { python3 - "$1" <<'PY'
import json,sys
r=json.load(open(sys.argv[1]))
print("   stages: " + ", ".join(f"{s['stage']} {s['seconds']:.2f}" for s in r.get("stages",[])))
PY
}

build() { # name cache out recipe
  local t0; t0=$(now)
  SLIPWAY_CACHE=$2 "$SLIPWAY" --quiet build "$4" -o "$3" >/dev/null
  local s; s=$(secs "$t0")
  printf '%-8s build: %6.2f s\n' "$1" "$s" >&2
  stages "$3/report.json" >&2 || true
  echo "$s"
}

echo "== $RECIPE"
cold=$(build cold "$work/cache" "$work/cold" "$RECIPE")
warm=$(build warm "$work/cache" "$work/warm" "$RECIPE")
# One overlay file changed, in a copy of the recipe directory.
mkdir -p "$work/recipes"
cp -a "$(dirname "$RECIPE")"/. "$work/recipes/"
r2="$work/recipes/$(basename "$RECIPE")"
motd="$work/recipes/containerd-host/rootfs/etc/motd"
mkdir -p "$(dirname "$motd")"; echo "changed $(date +%s%N)" > "$motd"
SLIPWAY_CACHE=$work/cache "$SLIPWAY" --quiet lock "$r2" >/dev/null
incr=$(build overlay "$work/cache" "$work/incr" "$r2")

python3 - "$work/warm/manifest.json" <<'PY'
import json,sys
m=json.load(open(sys.argv[1]))
print("== sizes")
for p in m["partitions"]:
    print(f"   {p['name']:<22} partition {p['size']/1e6:8.1f} MB, content {p['content']/1e6:8.1f} MB")
for a in m["artifacts"]:
    print(f"   {a['name']:<22} {a['size']/1e6:8.2f} MB")
print(f"   initramfs modules: {len(m['initramfs_modules'])}")
PY
gz=$(gzip -c "$work/warm/disk.raw" | wc -c)
zst=$(zstd -19 -T2 -c "$work/warm/disk.raw" 2>/dev/null | wc -c)
initrd=$(stat -c %s "$work/warm/initrd")
echo "   disk.raw gzip -9:  $(python3 -c "print(f'{$gz/1e6:.1f}')") MB; zstd -19: $(python3 -c "print(f'{$zst/1e6:.1f}')") MB"
echo "== largest packages (installed size)"
SLIPWAY_CACHE=$work/cache "$SLIPWAY" inspect "$RECIPE" --top 8 2>/dev/null | sed -n '1,12p' | sed 's/^/   /'

echo "== boots ($BOOTS, TCG, 2 vCPUs, 2 GiB; QEMU start to multi-user.target)"
times=()
for i in $(seq 1 "$BOOTS"); do
  st="$work/boot$i"; log="$work/boot$i.log"
  t0=$(now)
  "$SLIPWAY" boot "$work/warm" --state "$st" </dev/null >"$log" 2>&1 &
  pid=$!
  t=""
  for _ in $(seq 1 $((TIMEOUT * 5))); do
    if grep -aq "Reached target multi-user.target" "$log"; then t=$(secs "$t0"); break; fi
    sleep 0.2
  done
  pkill -f "$st" 2>/dev/null || true; wait $pid 2>/dev/null || true
  echo "   boot $i: ${t:-timeout}"
  [ -n "$t" ] && times+=("$t")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}')

echo "== slipway vs mkosi 14 (recorded numbers, see the header)"
python3 - "$warm" "$incr" "$zst" "$initrd" "$median" "$cold" <<PY
import sys
warm,incr,zst,initrd,boot,cold=map(float,sys.argv[1:])
rows=[("warm build s",warm,$MKOSI_WARM),("one overlay file s",incr,$MKOSI_INCR),
      ("image MB (zstd -19)",zst/1e6,$MKOSI_MB),("initramfs MB",initrd/1e6,$MKOSI_INITRD_MB),
      ("boot to multi-user s",boot,$MKOSI_BOOT)]
print(f"   {'':<22}{'slipway':>10}{'mkosi':>10}{'ratio':>8}")
for n,s,m in rows: print(f"   {n:<22}{s:10.2f}{m:10.2f}{m/s if s else float('nan'):8.1f}x")
print(f"   cold build (downloads included): {cold:.1f} s")
PY
