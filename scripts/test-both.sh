#!/usr/bin/env bash
# Runs both sides of the test suite at once (`make test`, and CI's test phase):
#
# - the VM side, `make test-vm`, at normal priority: the tests that boot, one VM at a
#   time, then `slipway test` on qemu/;
# - the host side, `make test-host`, in the idle scheduling class (`chrt --idle 0`,
#   SCHED_IDLE): the kernel runs it only on CPU time that nothing else wants. A TCG guest
#   leaves a core idle whenever it waits (for a timer, a DHCP lease, the test's next
#   command, a reboot), and an image build between two boots leaves one too; the host
#   side fills those gaps and never takes a cycle the guest asks for
#   (docs/decisions/0046-host-tests-in-the-vm-gaps.md).
#
# The host side's output goes to $OUT/test-host.log and is printed once both sides are
# done. The run fails when either side fails, or when the host side booted a VM (its
# boots are counted in a log of their own: a module that boots is missing from the `vm`
# group in .config/nextest.toml).
#
# `make setup build` runs once before (the Makefile's `test` target); the two sides are
# started with `-o setup -o build` so that neither runs them again beside the other.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out}
mkdir -p "$out"
host_log=$out/test-host.log
host_boots=$out/test-host-boots.log
: >"$host_boots"
MAKE=${MAKE:-make}
now() { date +%s; }

start=$(now)
(
  export SLIPWAY_BOOT_LOG=$host_boots
  exec chrt --idle 0 "$MAKE" --no-print-directory -o setup -o build test-host
) >"$host_log" 2>&1 &
host=$!

"$MAKE" --no-print-directory -o setup -o build test-vm
vm_rc=$?
vm_done=$(now)
echo "=== test-vm: exit $vm_rc after $((vm_done - start)) s; waiting for test-host"
wait "$host"
host_rc=$?
host_done=$(now)

echo "=== test-host output ($host_log):"
cat "$host_log"
echo "=== test-host: exit $host_rc after $((host_done - start)) s (idle scheduling class, beside test-vm)"
echo "=== test-vm: exit $vm_rc after $((vm_done - start)) s"
boots=$(wc -l <"$host_boots")
if [ "$boots" -gt 0 ]; then
  echo "=== test-host booted QEMU $boots times: a test module that boots is missing from the vm group in .config/nextest.toml" >&2
  exit 1
fi
if [ "$vm_rc" -ne 0 ] || [ "$host_rc" -ne 0 ]; then
  exit 1
fi
