#!/usr/bin/env bash
# The floors under a host image's early boot (issue 15): the same firmware (OVMF 4M under
# TCG, as bench/boot-measure.py runs it) and the same kernel, started three ways, each
# timed from QEMU start to "Linux version" (firmware + loader) and from there to
# "slipway-init: started" (the kernel's own start, initramfs unpacking included):
#
#   disk      the image's disk: OVMF -> ESP -> the UKI (systemd-stub) -> kernel + initramfs
#   fw_cfg    OVMF loads the image's own kernel and initramfs from QEMU's fw_cfg (no ESP,
#             no stub) with the UKI's command line
#   minimal   as fw_cfg, with an initramfs that holds nothing but slipway-init
#
# The differences say what the ESP and stub cost, and what the initramfs's contents cost
# over an empty one; what is left is the firmware's and the kernel's own floor.
#
#   bench/boot-floor.sh [IMAGE_DIR]     (default: out/containerd-host; RUNS=3)
# Needs: a built host image (disk.raw, uki.efi, vmlinuz, initrd), qemu, OVMF, objcopy, cpio.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-out/containerd-host}
RUNS=${RUNS:-3}
LOCK=${SLIPWAY_VM_LOCK:-/tmp/slipway-vm.lock}
INIT=${SLIPWAY_INIT:-target/release/slipway-init}
OUT=$(mktemp -d /tmp/slipway-boot-floor.XXXXXX)
for f in disk.raw uki.efi vmlinuz initrd; do
  [ -f "$DIR/$f" ] || { echo "boot-floor: $DIR/$f missing (build a host image first)" >&2; exit 2; }
done
[ -x "$INIT" ] || { echo "boot-floor: $INIT missing (make init)" >&2; exit 2; }

objcopy -O binary --only-section=.cmdline "$DIR/uki.efi" "$OUT/cmdline"
cmdline=$(tr -d '\0\n' < "$OUT/cmdline")
mkdir -p "$OUT/minimal"
install -m 0755 "$INIT" "$OUT/minimal/init"
(cd "$OUT/minimal" && echo init | cpio --quiet -o -H newc -R 0:0) > "$OUT/minimal.cpio"
echo "== boot floors: $DIR, $RUNS boots each, results in $OUT"
echo "   initramfs: $(stat -c %s "$DIR/initrd") bytes; minimal: $(stat -c %s "$OUT/minimal.cpio") bytes (uncompressed)"

until_init='slipway-init: started'
for i in $(seq 1 "$RUNS"); do
  flock "$LOCK" bench/boot-measure.py "$DIR/disk.raw" --until "$until_init" --timeout 60 \
    --log "$OUT/disk-$i.console" >> "$OUT/disk.jsonl"
  flock "$LOCK" bench/boot-measure.py "" --kernel "$DIR/vmlinuz" --initrd "$DIR/initrd" \
    --append "$cmdline" --until "$until_init" --timeout 60 --log "$OUT/fw_cfg-$i.console" >> "$OUT/fw_cfg.jsonl"
  flock "$LOCK" bench/boot-measure.py "" --kernel "$DIR/vmlinuz" --initrd "$OUT/minimal.cpio" \
    --append "$cmdline" --until "$until_init" --timeout 60 --log "$OUT/minimal-$i.console" >> "$OUT/minimal.jsonl"
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
print(f"  {'start':8} {'QEMU->kernel':>14} {'kernel->/init':>14}   (median [min-max] of the runs, s)")
for name in ["disk", "fw_cfg", "minimal"]:
    runs = [json.loads(l)["phases"] for l in open(f"{out}/{name}.jsonl")]
    cells = []
    for ph in ["kernel", "init"]:
        v = [r[ph] for r in runs if r[ph] is not None]
        cells.append(f"{statistics.median(v):5.2f} [{min(v):.2f}-{max(v):.2f}]" if v else "n/a")
    print(f"  {name:8} {cells[0]:>14} {cells[1]:>14}")
PY
