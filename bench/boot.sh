#!/usr/bin/env bash
# Boot time of slipway's host images under TCG, QEMU start to the readiness marker
# "slipway-ready (", per phase (bench/boot-measure.py), beside mkosi's published-here
# figure (bench/peers/boot.txt). Each image boots RUNS times (default 5), each time from a
# fresh overlay (so every boot is the machine's first); boot 1 (cold host caches) is
# reported apart from boots 2..RUNS. One more boot with a provisioning config prints the
# top 10 of `systemd-analyze blame` (that boot is not timed: applying a config costs time).
# The boot loader's cost: containerd-host is also built with `[disk] slots = 1` (no
# systemd-boot: the firmware starts the UKI itself) and boots as often; the difference of
# the two medians (phase "kernel", QEMU start to the kernel, and the total) is what
# systemd-boot on the two-slot disk costs (docs/decisions/0047-two-slots-and-systemd-boot.md).
#
#   bench/boot.sh                   containerd-host (built here) and k8s-node
#   RUNS=3 bench/boot.sh
#   K8S_NODE_IMAGE=DIR bench/boot.sh   a k8s-node build output (with disk.raw) to use
#
# k8s-node needs kubelet and kubeadm, which this machine cannot download: without
# K8S_NODE_IMAGE it uses the newest k8s-node image the test suite built with stand-ins
# (target/tmp/fixtures/k8s-node-ci-* or out/ci/fixtures/k8s-node-ci-*), and says so.
# Run it with nothing else running: two guests, or a build beside a guest, halve each
# other on 2 cores. Needs root for the host-image build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SLIPWAY=${SLIPWAY:-target/release/slipway}
OUT=${OUT:-out/bench/boot}
LOCK=${SLIPWAY_VM_LOCK:-/tmp/slipway-vm.lock}
mkdir -p "$OUT"

[ -x "$SLIPWAY" ] || { echo "bench/boot.sh: $SLIPWAY not built (run make build)" >&2; exit 1; }
echo "== building containerd-host"
"$SLIPWAY" build containerd-host -o "$OUT/containerd-host" --format disk -q
images=("containerd-host=$OUT/containerd-host")
# The same image on a one-slot disk: a child recipe that changes [disk] slots only.
one="$OUT/containerd-host-one-slot.toml"
cat > "$one" <<TOML
schema-version = 1
extends = "$(realpath --relative-to="$OUT" recipes/containerd-host.toml)"
[disk]
slots = 1
TOML
echo "== building containerd-host with [disk] slots = 1"
"$SLIPWAY" build "$one" -o "$OUT/containerd-host-one-slot" --format disk -q
images+=("containerd-host-one-slot=$OUT/containerd-host-one-slot")

k8s=${K8S_NODE_IMAGE:-}
if [ -z "$k8s" ]; then
  k8s=$(ls -dt target/tmp/fixtures/k8s-node-ci-* out/ci/fixtures/k8s-node-ci-* 2>/dev/null \
        | while read -r d; do [ -f "$d/disk.raw" ] && echo "$d" && break; done || true)
  [ -n "$k8s" ] && echo "== k8s-node: using $k8s (built by the test suite with stand-in kubelet/kubeadm)"
fi
if [ -n "$k8s" ]; then
  images+=("k8s-node=$k8s")
else
  echo "== k8s-node: skipped: no image (set K8S_NODE_IMAGE, or run the k8s_node test first;"
  echo "   its kubelet and kubeadm cannot be downloaded on this machine)"
fi

cat > "$OUT/blame.toml" <<'TOML'
schema-version = 1

[[file]]
path = "/etc/systemd/system/bench-blame.service"
content = """
[Unit]
Description=bench: systemd-analyze blame on the console
Requires=slipway-ready.service
# multi-user.target too: a target orders itself after what it wants unless told
# otherwise, and this unit is after slipway-ready.service, which is after multi-user.
After=multi-user.target slipway-ready.service
[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/usr/bin/systemd-escape bench:blame
ExecStart=/usr/bin/systemd-analyze blame --no-pager
ExecStart=/usr/bin/systemd-escape bench:done
[Install]
WantedBy=multi-user.target
"""

[systemd]
enable = ["bench-blame.service"]
TOML

for spec in "${images[@]}"; do
  name=${spec%%=*}; dir=${spec#*=}
  : > "$OUT/$name.jsonl"
  for i in $(seq 1 "$RUNS"); do
    flock "$LOCK" bench/boot-measure.py "$dir/disk.raw" --log "$OUT/$name-$i.console" \
      >> "$OUT/$name.jsonl" || { echo "boot $i of $name did not reach slipway-ready: $OUT/$name-$i.console" >&2; exit 1; }
    echo "   $name boot $i: $(tail -1 "$OUT/$name.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["phases"])')"
  done
  flock "$LOCK" bench/boot-measure.py "$dir/disk.raw" --config "$OUT/blame.toml" \
    --log "$OUT/$name-blame.console" > "$OUT/$name-blame.json" || true
done

python3 - "$OUT" "${images[@]}" <<'PY'
import json, statistics, sys
out, specs = sys.argv[1], sys.argv[2:]
peer = open("bench/peers/boot.txt").read().strip().splitlines()[0]
phases = ["kernel", "init", "switch", "ready", "total"]
for spec in specs:
    name = spec.split("=", 1)[0]
    runs = [json.loads(l)["phases"] for l in open(f"{out}/{name}.jsonl")]
    print(f"\n{name}: {len(runs)} boots, seconds (QEMU start -> slipway-ready)")
    print(f"  {'phase':<8} {'boot 1':>7} {'median':>7} {'min':>7} {'max':>7}   (median/min/max of boots 2..{len(runs)})")
    for p in phases:
        later = [r[p] for r in runs[1:] if r[p] is not None] or [r[p] for r in runs if r[p] is not None]
        print(f"  {p:<8} {runs[0][p]:>7} {statistics.median(later):>7.2f} {min(later):>7.2f} {max(later):>7.2f}")
    allt = [r["total"] for r in runs]
    med = statistics.median(allt)
    print(f"  median of all {len(allt)}: {med:.2f} s;  mkosi: {peer}")
    mk = float(peer.split()[0])
    print(f"  ratio slipway/mkosi: {med / mk:.2f}")
    try:
        blame = json.load(open(f"{out}/{name}-blame.json"))["blame"]
        print("  systemd-analyze blame, top 10 (a boot with the blame config):")
        for b in blame[:10]:
            print(f"    {b}")
    except Exception as e:
        print(f"  (no blame: {e})")

def medians(name):
    runs = [json.loads(l)["phases"] for l in open(f"{out}/{name}.jsonl")]
    later = runs[1:] or runs
    return {p: statistics.median([r[p] for r in later]) for p in ("kernel", "total")}
names = [s.split("=", 1)[0] for s in specs]
if "containerd-host" in names and "containerd-host-one-slot" in names:
    two, one = medians("containerd-host"), medians("containerd-host-one-slot")
    print("\nboot loader (systemd-boot, two slots) vs the UKI booted by the firmware (one slot),"
          " medians of boots 2..N:")
    for p in ("kernel", "total"):
        print(f"  {p:<8} two slots {two[p]:.2f} s, one slot {one[p]:.2f} s: loader cost {two[p] - one[p]:+.2f} s")
PY
