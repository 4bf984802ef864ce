#!/usr/bin/env python3
"""Boots one host image once from a fresh overlay, as `slipway boot` does (q35, OVMF 4M,
TCG, 2 vCPUs, 2 GiB, virtio disk and net, user networking with restrict=on), timestamps
every serial-console line on the host, and prints one JSON object with the phases:

  kernel      QEMU start -> "Linux version"                (firmware, UKI stub)
  init        kernel     -> "slipway-init: started"         (kernel boot)
  switch      init       -> "slipway-init: root ready ..." (modules, verity, /var)
  ready       switch     -> "slipway-ready ("               (systemd to the readiness marker)
  total       QEMU start -> "slipway-ready ("

With --kernel/--initrd/--append the same firmware loads a kernel and initramfs from
fw_cfg instead of the disk's UKI (bench/boot-floor.sh), and --until REGEX ends the boot at
the first line that matches.

BENCH_QEMU_CPU picks another CPU model (default max, as slipway boot). With --config FILE the provisioning config goes in by fw_cfg (bench/boot.sh uses one to
print `systemd-analyze blame` on the console after the marker) and the console is read
until the line "bench:done". Used by bench/boot.sh; usable alone:

  bench/boot-measure.py out/containerd-host/disk.raw
"""
import argparse, json, os, re, select, shutil, subprocess, sys, tempfile, time

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
MARKS = [
    ("kernel", re.compile(r"Linux version \S+")),
    ("init", re.compile(r"slipway-init: started")),
    ("switch", re.compile(r"slipway-init: root ready")),
    ("ready", re.compile(r"^slipway-ready \(")),
]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def qemu_command(work, disk, config, direct=None):
    cmd = ["qemu-system-x86_64", "-accel", os.environ.get("BENCH_QEMU_ACCEL", "tcg"), "-machine", "q35",
           "-cpu", os.environ.get("BENCH_QEMU_CPU", "max"),
           "-m", "2048", "-smp", os.environ.get("BENCH_QEMU_SMP", "2"), "-nodefaults", "-no-user-config", "-display", "none",
           "-serial", "stdio", "-no-reboot",
           "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
           "-drive", f"if=pflash,format=raw,unit=1,file={work}/vars.fd",
           "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]
    if disk:
        cmd += ["-drive", f"file={work}/overlay.qcow2,format=qcow2,if=virtio,discard=unmap"]
    if direct:
        kernel, initrd, append = direct
        cmd += ["-kernel", kernel, "-initrd", initrd, "-append", append]
    if config:
        cmd += ["-fw_cfg", f"name=opt/org.slipway/config,file={os.path.abspath(config)}"]
    return cmd


def boot(disk, config, timeout, log_path, direct=None, until=None):
    work = tempfile.mkdtemp(prefix="slipway-bench-boot-")
    try:
        shutil.copy(OVMF_VARS, f"{work}/vars.fd")
        if disk:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            os.path.abspath(disk), f"{work}/overlay.qcow2"], check=True)
        t0 = time.monotonic()
        p = subprocess.Popen(qemu_command(work, disk, config, direct), stdin=subprocess.DEVNULL, bufsize=0,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen, lines, blame = {}, [], []
        end_re = re.compile(r"^bench:done") if config else MARKS[-1][1]
        if until:
            end_re = re.compile(until)
        in_blame = False
        while time.monotonic() - t0 < timeout:
            # A silent console must not outlive the time-out: wait for a line at most 1 s.
            if not select.select([p.stdout], [], [], 1.0)[0]:
                continue
            raw = p.stdout.readline()
            if not raw:
                break
            t = time.monotonic() - t0
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
            lines.append(f"{t:8.2f} {line}")
            for name, rx in MARKS:
                if name not in seen and rx.search(line):
                    seen[name] = round(t, 2)
            if line.startswith("bench:blame"):
                in_blame = True
            elif in_blame and re.match(r"^\s*[\d.]+m?s ", line):
                blame.append(line.strip())
            if end_re.search(line):
                break
        p.kill()
        p.wait()
        if log_path:
            with open(log_path, "w") as f:
                f.write("\n".join(lines) + "\n")
        return seen, blame
    finally:
        shutil.rmtree(work, ignore_errors=True)


def phases(seen):
    out, prev = {}, 0.0
    for name, _ in MARKS:
        if name not in seen:
            out[name] = None
            continue
        out[name] = round(seen[name] - prev, 2)
        prev = seen[name]
    out["total"] = seen.get("ready")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("disk", help="disk image (\"\" for none, with --kernel)")
    ap.add_argument("--config", help="provisioning config passed by fw_cfg")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--log", help="write the timestamped console here")
    ap.add_argument("--kernel", help="boot this kernel through the firmware's fw_cfg loader")
    ap.add_argument("--initrd", help="with --kernel: the initramfs")
    ap.add_argument("--append", default="", help="with --kernel: the command line")
    ap.add_argument("--until", help="end the boot at the first console line matching this")
    a = ap.parse_args()
    direct = (a.kernel, a.initrd, a.append) if a.kernel else None
    seen, blame = boot(a.disk, a.config, a.timeout, a.log, direct, a.until)
    print(json.dumps({"disk": a.disk, "seen": seen, "phases": phases(seen), "blame": blame[:10]}))
    last = "init" if a.until else "ready"
    return 0 if last in seen else 1


if __name__ == "__main__":
    sys.exit(main())
