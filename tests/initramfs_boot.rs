//! Issue "host image", initramfs part: slipway-init boots a real Debian kernel under
//! QEMU (TCG) from a GPT disk made with host tools, with a dm-verity root.
//!
//! The kernel, its modules and busybox come from trixie through slipway itself; the
//! module set and order from the host's depmod/modprobe; the root is erofs with a
//! `veritysetup format` hash tree; the disk is laid out with sfdisk per the UAPI
//! Discoverable Partitions Specification. Checked: / is a read-only dm-verity device,
//! /var is ext4 and grows to an enlarged disk, /var and /etc writes survive a reboot;
//! a corrupt root superblock, a corrupt block of a root binary and a wrong roothash
//! each stop the boot with a message naming the problem, without a reboot loop.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
const VERITY_TYPE: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
const VAR_TYPE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
const MIB: u64 = 1 << 20;
/// Modules the boot needs (with their dependencies, resolved by modprobe).
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "dm_verity",
    "erofs",
    "ext4",
    "overlay",
];

/// True when an ELF file has no program interpreter (statically linked).
fn is_static_elf(p: &Path) -> bool {
    let b = fs::read(p).unwrap();
    assert_eq!(&b[..4], b"\x7fELF");
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36) as usize, u16_at(0x38));
    (0..phnum as usize).all(|i| {
        let t = u32::from_le_bytes(b[phoff + i * phentsize..][..4].try_into().unwrap());
        t != 3 // PT_INTERP
    })
}

/// The kernel, the initramfs and busybox.
struct Kit {
    kernel: PathBuf,
    initrd: PathBuf,
    busybox: PathBuf,
}

/// Builds the kernel tree with slipway and packs the initramfs: slipway-init as /init,
/// the modules (decompressed) and /etc/slipway/modules, as zstd-compressed newc cpio.
fn kit(dir: &Path) -> Kit {
    let t = Instant::now();
    let r = recipe(
        dir,
        "kernel.toml",
        // The kernel's maintainer-script helpers (initramfs-tools, kmod, linux-base) are
        // not needed to take its files: cut them.
        "[image]\nkind = \"base\"\n[packages]\ninclude = [\"linux-image-cloud-amd64\", \"busybox-static\"]\n\
         exclude = [\"kmod\", \"linux-base\", \"initramfs-tools\", \"linux-initramfs-tool\"]\n",
    );
    let out = dir.join("kernel-out");
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            r.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "dir",
        ],
    ));
    eprintln!("kit: slipway build {:.1} s", t.elapsed().as_secs_f64());
    let rootfs = out.join("rootfs");
    let moddir = rootfs.join("usr/lib/modules");
    let kver = fs::read_dir(&moddir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with("cloud-amd64"))
        .expect("no cloud kernel modules");
    let kernel = rootfs.join(format!("boot/vmlinuz-{kver}"));
    assert!(kernel.exists(), "{}", kernel.display());

    // The module set and order, from the host's depmod and modprobe.
    run(Command::new("depmod").arg("-b").arg(&rootfs).arg(&kver));
    let deps = run(Command::new("modprobe")
        .arg("-d")
        .arg(&rootfs)
        .args(["-S", &kver, "--show-depends", "-a"])
        .args(MODULES));
    let stage = dir.join("initramfs");
    let mut list = String::new();
    let prefix = rootfs.to_str().unwrap().trim_end_matches('/').to_string();
    for line in deps.lines() {
        let Some(path) = line.strip_prefix("insmod ") else {
            assert!(line.starts_with("builtin "), "{line}");
            continue;
        };
        let path = path.trim();
        let rel = path.strip_prefix(&prefix).unwrap().trim_start_matches('/');
        // modprobe prints lib/modules/... (via the usrmerge symlink); keep it as given.
        let rel_ko = rel.strip_suffix(".xz").unwrap_or(rel).to_string();
        if list.lines().any(|l| l == rel_ko) {
            continue;
        }
        let dest = stage.join(&rel_ko);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if rel.ends_with(".xz") {
            let st = Command::new("xz")
                .arg("-dc")
                .arg(path)
                .stdout(fs::File::create(&dest).unwrap())
                .status()
                .unwrap();
            assert!(st.success(), "xz -dc {path}");
        } else {
            fs::copy(path, &dest).unwrap();
        }
        list.push_str(&rel_ko);
        list.push('\n');
    }
    assert!(list.contains("dm-verity.ko"), "{deps}");
    fs::create_dir_all(stage.join("etc/slipway")).unwrap();
    fs::write(stage.join("etc/slipway/modules"), &list).unwrap();
    eprintln!("kit: modules {:.1} s", t.elapsed().as_secs_f64());
    let init = static_binary("slipway-init", "SLIPWAY_INIT");
    eprintln!("kit: init {:.1} s", t.elapsed().as_secs_f64());
    assert!(is_static_elf(&init), "{} is not static", init.display());
    fs::copy(&init, stage.join("init")).unwrap();

    let cpio = dir.join("initrd.cpio");
    let files = run(Command::new("find").arg(".").current_dir(&stage));
    let mut sorted: Vec<&str> = files.lines().collect();
    sorted.sort();
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&cpio).unwrap())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        (sorted.join("\n") + "\n").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let initrd = dir.join("initrd.zst");
    run(Command::new("zstd")
        .args(["-q", "-19", "-f"])
        .arg(&cpio)
        .arg("-o")
        .arg(&initrd));
    eprintln!("kit: initramfs {:.1} s", t.elapsed().as_secs_f64());
    Kit {
        kernel,
        initrd,
        busybox: rootfs.join("usr/bin/busybox"),
    }
}

/// The root file system's /sbin/init: reports what the test checks, writes to /var and
/// /etc, powers off.
const ROOT_INIT: &str = r#"#!/bin/busybox sh
b=/bin/busybox
$b echo ROOT-OK
$b echo "ROOT-DM: $($b cat /sys/block/dm-0/dm/name) ro=$($b cat /sys/block/dm-0/ro)"
$b grep -E ' (/|/var|/etc) ' /proc/mounts | $b sed 's/^/MOUNT: /'
$b echo "VAR-KB: $($b df -k /var | $b tail -n 1 | $b awk '{print $2}')"
$b echo "VAR-MARKER: $($b cat /var/marker 2>/dev/null || $b echo none)"
$b echo "ETC-MARKER: $($b cat /etc/marker 2>/dev/null || $b echo none)"
$b echo persisted > /var/marker
$b echo persisted > /etc/marker
$b sync
$b echo ROOT-DONE
$b poweroff -f
"#;

/// An erofs root with busybox and the script above, its hash tree, and the root hash.
struct Root {
    image: PathBuf,
    verity: PathBuf,
    hash: String,
}

fn root_image(dir: &Path, kit: &Kit) -> Root {
    let tree = dir.join("root-tree");
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "run", "var", "etc", "tmp",
    ] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    fs::copy(&kit.busybox, tree.join("bin/busybox")).unwrap();
    fs::write(tree.join("sbin/init"), ROOT_INIT).unwrap();
    run(Command::new("chmod")
        .arg("0755")
        .arg(tree.join("sbin/init"))
        .arg(tree.join("bin/busybox")));
    fs::write(tree.join("etc/hostname"), "slipway-test\n").unwrap();
    let image = dir.join("root.img");
    run(Command::new("mkfs.erofs").arg(&image).arg(&tree));
    let verity = dir.join("verity.img");
    let out = run(Command::new("veritysetup")
        .arg("format")
        .arg(&image)
        .arg(&verity));
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .expect("no root hash")
        .trim()
        .to_string();
    assert_eq!(hash.len(), 64, "{out}");
    Root {
        image,
        verity,
        hash,
    }
}

/// The UUID text of 16 bytes of hex.
fn uuid_of(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Where things are on the disk.
struct Disk {
    path: PathBuf,
    root_offset: u64,
    size_before_growth: u64,
}

/// A GPT disk (sfdisk): root, root-verity (UUIDs from the root hash), var (ext4, 64 MiB);
/// then enlarged by 200 MiB so the first boot must grow /var.
fn make_disk(dir: &Path, root: &Root, name: &str) -> Disk {
    let align = |n: u64| n.div_ceil(MIB) * MIB;
    let root_size = align(fs::metadata(&root.image).unwrap().len());
    let verity_size = align(fs::metadata(&root.verity).unwrap().len());
    let var_size = 64 * MIB;
    let total = MIB + root_size + verity_size + var_size + MIB;
    let path = dir.join(format!("{name}.raw"));
    let f = fs::File::create(&path).unwrap();
    f.set_len(total).unwrap();
    let sectors = |n: u64| n / 512;
    let script = format!(
        "label: gpt\nunit: sectors\n\
         start={}, size={}, type={ROOT_TYPE}, uuid={}, name=root-x86-64\n\
         start={}, size={}, type={VERITY_TYPE}, uuid={}, name=root-x86-64-verity\n\
         start={}, size={}, type={VAR_TYPE}, name=var\n",
        sectors(MIB),
        sectors(root_size),
        uuid_of(&root.hash[..32]),
        sectors(MIB + root_size),
        sectors(verity_size),
        uuid_of(&root.hash[32..]),
        sectors(MIB + root_size + verity_size),
        sectors(var_size),
    );
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "sfdisk failed:\n{script}");
    let var = dir.join(format!("{name}-var.img"));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-L", "var"])
        .arg(&var)
        .arg("64M"));
    for (img, off) in [
        (&root.image, MIB),
        (&root.verity, MIB + root_size),
        (&var, MIB + root_size + verity_size),
    ] {
        f.write_all_at(&fs::read(img).unwrap(), off).unwrap();
    }
    f.set_len(total + 200 * MIB).unwrap();
    Disk {
        path,
        root_offset: MIB,
        size_before_growth: total,
    }
}

/// Where the console logs are kept after the test: `target/tmp/initramfs-boot/`.
fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("initramfs-boot");
    fs::create_dir_all(&d).unwrap();
    d
}

/// A finished (or stopped) boot.
struct Boot {
    log: String,
    /// QEMU exited by itself (power-off) rather than being killed.
    exited: bool,
    secs: f64,
    /// Seconds from QEMU's start to `ROOT-OK` on the console.
    root_ok: Option<f64>,
}

impl Boot {
    fn tail(&self) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
    fn has(&self, s: &str) -> bool {
        self.log.contains(s)
    }
    /// The value after `KEY: ` on the console.
    fn value(&self, key: &str) -> Option<String> {
        let k = format!("{key}: ");
        self.log.lines().find_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix(k.as_str())
                .map(str::to_string)
        })
    }
}

/// Boots the disk; stops when QEMU exits, or 3 s after `stop_at` or a kernel panic shows up
/// on the console (to see that nothing follows, such as a reboot), or panics at the
/// timeout. Saves the console log as `<name>.log` in [`log_dir`].
fn boot(kit: &Kit, disk: &Path, append: &str, stop_at: Option<&str>, name: &str) -> Boot {
    let timeout = Duration::from_secs(240);
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(&kit.initrd)
        // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer probe can
        // miss its window and panic ("IO-APIC + timer doesn't work").
        .args(["-append", &format!("console=ttyS0 no_timer_check {append}")])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (log, readers) = capture_console(&mut child);
    let mut seen_at: Option<Instant> = None;
    let mut root_ok = None;
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if root_ok.is_none() && log.lock().unwrap().contains("ROOT-OK") {
            root_ok = Some(start.elapsed().as_secs_f64());
        }
        // A kernel panic ends every boot (the expected one, or a failure to report).
        if seen_at.is_none()
            && stop_at
                .into_iter()
                .chain(["---[ end Kernel panic"])
                .any(|s| log.lock().unwrap().contains(s))
        {
            seen_at = Some(Instant::now());
        }
        if seen_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break false;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let l = log.lock().unwrap().clone();
            fs::write(log_dir().join(format!("{name}.log")), &l).unwrap();
            panic!("boot {name} timed out after {timeout:?}; console:\n{l}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    for r in readers {
        r.join().unwrap();
    }
    let log = log.lock().unwrap().clone();
    fs::write(log_dir().join(format!("{name}.log")), &log).unwrap();
    Boot {
        log,
        exited,
        secs: start.elapsed().as_secs_f64(),
        root_ok,
    }
}

/// Asserts a healthy boot: no panic, no oops, one kernel start.
fn assert_clean(b: &Boot) {
    for bad in [
        "Kernel panic",
        "Oops",
        "BUG:",
        "slipway-init: boot stopped",
        "Call Trace",
    ] {
        assert!(!b.has(bad), "console shows {bad:?}:\n{}", b.tail());
    }
    assert_eq!(b.log.matches("Linux version").count(), 1, "{}", b.tail());
}

/// The end of the last partition and the disk's size, from sfdisk.
fn var_end_and_disk_sectors(disk: &Path) -> (u64, u64) {
    let dump = run(Command::new("sfdisk").arg("--dump").arg(disk));
    let last = dump.lines().rfind(|l| l.contains("start=")).unwrap();
    let field = |k: &str| -> u64 {
        last.split(',')
            .find_map(|f| {
                f.split_once('=')
                    .filter(|(a, _)| a.trim().ends_with(k))
                    .map(|(_, v)| v.trim().parse().unwrap())
            })
            .unwrap()
    };
    assert!(
        last.contains(VAR_TYPE.to_uppercase().as_str()) || last.contains(VAR_TYPE),
        "{dump}"
    );
    (
        field("start") + field("size"),
        fs::metadata(disk).unwrap().len() / 512,
    )
}

#[test]
fn verity_root_var_growth_and_persistence() {
    let d = tempfile::tempdir().unwrap();
    let kit = kit(d.path());
    let initrd_size = fs::metadata(&kit.initrd).unwrap().len();
    eprintln!("initramfs: {initrd_size} bytes (zstd -19)");
    assert!(
        initrd_size < 3 * MIB,
        "initramfs is {initrd_size} bytes, over 3 MiB"
    );
    let root = root_image(d.path(), &kit);
    let disk = make_disk(d.path(), &root, "disk");
    let append = format!("roothash={}", root.hash);

    let first = boot(&kit, &disk.path, &append, None, "first-boot");
    eprintln!(
        "first boot: ROOT-OK after {:.1} s, power-off after {:.1} s",
        first.root_ok.unwrap_or(f64::NAN),
        first.secs
    );
    assert!(first.exited && first.has("ROOT-DONE"), "{}", first.tail());
    assert_clean(&first);
    assert_eq!(
        first.value("ROOT-DM").as_deref(),
        Some("root ro=1"),
        "{}",
        first.tail()
    );
    let mounts: Vec<String> = first
        .log
        .lines()
        .filter_map(|l| l.strip_prefix("MOUNT: "))
        .map(str::to_string)
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("/dev/mapper/root / erofs ro,")),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("/dev/vda3 /var ext4 rw,")),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("overlay /etc overlay rw,")),
        "{mounts:?}"
    );
    let var_kb: u64 = first.value("VAR-KB").unwrap().trim().parse().unwrap();
    assert!(
        var_kb > 200 * 1024,
        "/var is {var_kb} KiB: not grown\n{}",
        first.tail()
    );
    assert_eq!(first.value("VAR-MARKER").as_deref(), Some("none"));
    assert_eq!(first.value("ETC-MARKER").as_deref(), Some("none"));
    // The rewritten GPT verifies with sfdisk, and var ends where the disk's usable area does.
    let verify = run(Command::new("sfdisk").arg("--verify").arg(&disk.path));
    assert!(verify.contains("No errors detected"), "{verify}");
    let (var_end, disk_sectors) = var_end_and_disk_sectors(&disk.path);
    assert_eq!(
        var_end,
        disk_sectors - 33,
        "var must end at the last usable LBA"
    );
    assert!(disk_sectors * 512 > disk.size_before_growth);

    let second = boot(&kit, &disk.path, &append, None, "second-boot");
    eprintln!("second boot: {:.1} s to power-off", second.secs);
    assert!(
        second.exited && second.has("ROOT-DONE"),
        "{}",
        second.tail()
    );
    assert_clean(&second);
    // The kernel agrees the GPT now spans the disk; nothing grew again.
    assert!(
        !second.has("Alt. header is not at the end"),
        "{}",
        second.tail()
    );
    assert!(!second.has("slipway-init: grew"), "{}", second.tail());
    assert_eq!(
        second.value("VAR-MARKER").as_deref(),
        Some("persisted"),
        "{}",
        second.tail()
    );
    assert_eq!(
        second.value("ETC-MARKER").as_deref(),
        Some("persisted"),
        "{}",
        second.tail()
    );
    let var_kb2: u64 = second.value("VAR-KB").unwrap().trim().parse().unwrap();
    assert_eq!(var_kb2, var_kb, "/var changed size on the second boot");
}

/// Flips one bit of the disk at `off`.
fn flip(disk: &Path, off: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, off).unwrap();
}

/// Asserts the boot stopped instead of looping: one kernel start, no root init.
fn assert_stopped(b: &Boot) {
    assert_eq!(
        b.log.matches("Linux version").count(),
        1,
        "rebooted:\n{}",
        b.tail()
    );
    assert!(!b.has("ROOT-OK"), "the root's init ran:\n{}", b.tail());
    assert!(!b.exited || !b.has("Linux version"), "{}", b.tail());
}

#[test]
fn corruption_and_a_wrong_roothash_stop_the_boot() {
    let d = tempfile::tempdir().unwrap();
    let kit = kit(d.path());
    let root = root_image(d.path(), &kit);
    let append = format!("roothash={}", root.hash);

    // Three disks, booted at once (each QEMU is one TCG thread).
    let bad_sb = make_disk(d.path(), &root, "bad-superblock");
    // One byte of the erofs superblock (block 0 of the root, at 1024): dm-verity fails
    // the read, and slipway-init names the step and the device.
    flip(&bad_sb.path, bad_sb.root_offset + 1024 + 0x20);

    // One byte of the first block of /bin/busybox, which the root's init script runs:
    // after the switch, verity is in panic mode, so the kernel stops with the verity
    // error and does not reboot.
    let image = fs::read(&root.image).unwrap();
    let head = &fs::read(&kit.busybox).unwrap()[..4096];
    let at = (0..image.len() / 4096)
        .map(|i| i * 4096)
        .find(|&o| image.get(o..o + 4096) == Some(head))
        .expect("busybox's first block not found block-aligned in the erofs image")
        as u64;
    let bad_bin = make_disk(d.path(), &root, "bad-busybox");
    flip(&bad_bin.path, bad_bin.root_offset + at + 2000);

    // A root hash that names no partition (checked quickly: rootwait=2).
    let good = make_disk(d.path(), &root, "wrong-hash");
    let wrong: String = root.hash.chars().rev().collect();
    let wrong_append = format!("roothash={wrong} rootwait=2");

    let (b1, b2, b3) = std::thread::scope(|s| {
        let t1 = s.spawn(|| {
            boot(
                &kit,
                &bad_sb.path,
                &append,
                Some("boot stopped"),
                "bad-superblock",
            )
        });
        let t2 = s.spawn(|| {
            boot(
                &kit,
                &bad_bin.path,
                &append,
                Some("dm-verity device corrupted"),
                "bad-busybox",
            )
        });
        let t3 = s.spawn(|| {
            boot(
                &kit,
                &good.path,
                &wrong_append,
                Some("boot stopped"),
                "wrong-hash",
            )
        });
        (t1.join().unwrap(), t2.join().unwrap(), t3.join().unwrap())
    });

    eprintln!("corrupt superblock: stopped after {:.1} s", b1.secs);
    assert!(
        b1.has("device-mapper: verity") && b1.has("is corrupted"),
        "no verity error:\n{}",
        b1.tail()
    );
    assert!(
        b1.has("slipway-init: mount-root: /dev/mapper/root (verity over vda1): reading the file-system superblock: Input/output error"),
        "no init error line naming the step:\n{}",
        b1.tail()
    );
    assert_stopped(&b1);

    eprintln!("corrupt /bin/busybox: stopped after {:.1} s", b2.secs);
    assert!(
        b2.has("Kernel panic - not syncing: dm-verity device corrupted"),
        "{}",
        b2.tail()
    );
    assert!(b2.has("is corrupted"), "{}", b2.tail());
    assert!(b2.has("slipway-init: root ready"), "{}", b2.tail());
    assert_stopped(&b2);

    let want = format!(
        "slipway-init: find-root: partition UUID {0}: no partition with UUID {0} (the first 128 bits of roothash=)",
        uuid_of(&wrong[..32])
    );
    assert!(b3.has(&want), "expected {want:?}:\n{}", b3.tail());
    assert_stopped(&b3);
}
