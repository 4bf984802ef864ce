#!/usr/bin/env bash
# The cloud disk formats of the container host: for each output format, the seconds
# slipway spent writing it (from report.json's per-stage times, which start from the
# finished disk.raw) and the file's size, next to disk.raw; then the same conversions
# with qemu-img for comparison (qemu-img writes random ids and time stamps into VHD
# and VMDK, which is why slipway writes those natively).
#
#   sudo bench/outputs.sh                                  # recipes/containerd-host.toml
#   RECIPE=recipes/containerd-host-bookworm.toml sudo bench/outputs.sh
#
# The build is warm after the first run (SLIPWAY_CACHE, default the user cache); the
# format stages do not use the cache, so their times are the same cold or warm.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${RECIPE:-recipes/containerd-host.toml}
SLIPWAY=${SLIPWAY:-./target/release/slipway}
FORMATS=disk,qcow2,vhd,vmdk,gce

work=$(mktemp -d /tmp/slipway-bench-outputs.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { python3 -c 'import time; print(time.time())'; }
t0=$(now)
"$SLIPWAY" --quiet build "$RECIPE" -o "$work/out" --format "$FORMATS" >/dev/null
total=$(python3 -c "import time; print(f'{time.time()-$t0:.1f}')")

echo "== $RECIPE --format $FORMATS (build $total s in all)"
python3 - "$work/out" <<'PY'
import json, os, sys
out = sys.argv[1]
r = json.load(open(os.path.join(out, "report.json")))
secs = {s["stage"]: s["seconds"] for s in r.get("stages", [])}
raw = os.path.getsize(os.path.join(out, "disk.raw"))
print(f"   {'format':<7}{'file':<14}{'seconds':>9}{'MB':>9}{'of raw':>8}")
rows = [("disk", "disk.raw", "disk"), ("qcow2", "disk.qcow2", "qcow2"),
        ("vhd", "disk.vhd", "vhd"), ("vmdk", "disk.vmdk", "vmdk"), ("gce", "disk.tar.gz", "gce")]
for fmt, name, stage in rows:
    size = os.path.getsize(os.path.join(out, name))
    print(f"   {fmt:<7}{name:<14}{secs.get(stage, float('nan')):9.2f}{size/1e6:9.1f}{size/raw:8.0%}")
PY

echo "== the same conversions with qemu-img $(qemu-img --version | head -1 | awk '{print $3}') (not reproducible for vpc/vmdk)"
conv() { # name args...
  local name=$1; shift
  local t; t=$(now)
  qemu-img convert -q -f raw "$@" "$work/out/disk.raw" "$work/q.$name"
  printf '   %-7s%-14s%9.2f%9.1f\n' "$name" "q.$name" \
    "$(python3 -c "import time; print(time.time()-$t)")" \
    "$(python3 -c "import os; print(os.path.getsize('$work/q.$name')/1e6)")"
}
conv vhd -O vpc -o subformat=fixed,force_size=on
conv vmdk -O vmdk -o subformat=streamOptimized
t=$(now)
tar --format=oldgnu -Sczf "$work/q.tar.gz" -C "$work/out" disk.raw
printf '   %-7s%-14s%9.2f%9.1f\n' gce "tar -Sczf" "$(python3 -c "import time; print(time.time()-$t)")" \
  "$(python3 -c "import os; print(os.path.getsize('$work/q.tar.gz')/1e6)")"
