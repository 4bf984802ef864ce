//! Issue "host image", initramfs part: slipway-init boots a real Debian kernel under
//! QEMU (TCG, the `Vm` API's direct-kernel boot) from a GPT disk made with host tools,
//! with a dm-verity squashfs root written by slipway's own squashfs writer (the qemu/
//! suite and tests/it/host_image.rs boot the recipes' full images).
//!
//! The kernel, its modules and busybox come from trixie through slipway itself; the
//! module set and order from the host's depmod/modprobe; the root is squashfs zstd
//! (`disk::squashfs::write_file`, the host image root's options) with a
//! `veritysetup format` hash tree; the disk is laid out with sfdisk per the UAPI
//! Discoverable Partitions Specification. One boot checks: / is the read-only
//! dm-verity device holding squashfs, /var is ext4 and grows into an enlarged disk, /etc is
//! an overlay whose writes land on /var, and after the switch verity is in panic mode
//! (a corrupt block of a root file stops the kernel, without a reboot). Then, on the
//! host, the grown disk: the GPT verifies and var ends at the last usable LBA, and the
//! ext4 fills the partition, so a second boot has nothing to grow.
//!
//! A wrong roothash is a unit test of slipway-init (`init/src/main.rs`); /var and /etc
//! persistence across reboots, the corrupt-superblock stop and everything on the
//! production layout are booted on the real image by the qemu/ suite and
//! tests/it/host_image.rs.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use slipway::boot::qemu::{DirectKernel, Vm, VmSpec};
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
    "squashfs",
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
/// /etc, syncs, then reads the file whose block the test corrupted (verity is in panic
/// mode now, so the kernel stops there); powers off only if the read returned.
const ROOT_INIT: &str = r#"#!/bin/busybox sh
b=/bin/busybox
$b echo ROOT-OK
$b echo "TPM: $($b ls /dev/tpm0 /dev/tpmrm0 2>&1 | $b tr '\n' ' ')"
$b echo "ROOT-DM: $($b cat /sys/block/dm-0/dm/name) ro=$($b cat /sys/block/dm-0/ro)"
$b grep -E ' (/|/var|/etc) ' /proc/mounts | $b sed 's/^/MOUNT: /'
$b echo "VAR-KB: $($b df -k /var | $b tail -n 1 | $b awk '{print $2}')"
$b echo "VAR-MARKER: $($b cat /var/marker 2>/dev/null || $b echo none)"
$b echo "ETC-MARKER: $($b cat /etc/marker 2>/dev/null || $b echo none)"
$b echo var-written-in-the-guest > /var/marker
$b echo etc-written-in-the-guest > /etc/marker
$b sync
$b echo ROOT-DONE
$b cat /corrupt.bin > /dev/null
$b echo "CORRUPT-READ-RETURNED: $?"
$b poweroff -f
"#;

/// The file whose first block the test corrupts on the disk: 256 KiB that do not
/// compress (a sha256 chain), so squashfs stores its two full data blocks as they are and
/// the block is found by content.
fn corrupt_target() -> Vec<u8> {
    use sha2::Digest;
    let mut h: [u8; 32] = sha2::Sha256::digest(b"corrupt.bin").into();
    let mut out = Vec::with_capacity(256 << 10);
    while out.len() < 256 << 10 {
        h = sha2::Sha256::digest(h).into();
        out.extend_from_slice(&h);
    }
    out
}

/// A squashfs root with busybox, the script above and [`corrupt_target`], its hash tree,
/// and the root hash.
struct Root {
    image: PathBuf,
    verity: PathBuf,
    hash: String,
}

fn root_image(dir: &Path, kit: &Kit) -> Root {
    use slipway::tree::{Entry, Tree};
    const EPOCH: u64 = 1_700_000_000;
    let mut tree = Tree::new();
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "run", "var", "etc", "tmp",
    ] {
        tree.put(d, Entry::dir(0o755, EPOCH)).unwrap();
    }
    let file = |bytes: Vec<u8>, mode| Entry::file(bytes, mode, EPOCH);
    let busybox = fs::read(&kit.busybox).unwrap();
    tree.put("bin/busybox", file(busybox, 0o755)).unwrap();
    tree.put("sbin/init", file(ROOT_INIT.into(), 0o755))
        .unwrap();
    tree.put("corrupt.bin", file(corrupt_target(), 0o644))
        .unwrap();
    tree.put("etc/hostname", file(b"slipway-test\n".to_vec(), 0o644))
        .unwrap();
    let image = dir.join("root.img");
    let opts = slipway::disk::squashfs::Options::root(EPOCH);
    slipway::disk::squashfs::write_file(&tree, &image, &opts).unwrap();
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
    size: u64,
}

/// A GPT disk (sfdisk): root, root-verity (UUIDs from the root hash), var (ext4, 64 MiB).
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
    Disk {
        path,
        root_offset: MIB,
        size: total,
    }
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

/// Where the console log is kept after the test: `target/tmp/initramfs-boot/`.
fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("initramfs-boot");
    fs::create_dir_all(&d).unwrap();
    d
}

/// A finished boot: its console and the disk as the guest left it (raw).
struct Boot {
    log: String,
    /// Seconds from QEMU's start to `ROOT-OK`, and to the kernel's panic.
    root_ok: Option<f64>,
    stopped: Option<f64>,
    grown: PathBuf,
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
        self.log
            .lines()
            .find_map(|l| l.strip_prefix(k.as_str()).map(str::to_string))
    }
}

/// Boots `disk` (through the Vm API's overlay, enlarged by `grow` bytes) with the kit's
/// kernel and initramfs until the kernel panics or QEMU exits, then 3 s more (to see
/// that nothing follows, such as a reboot); saves the console as `squashfs-root.log` in
/// [`log_dir`] and the overlay as a raw file.
fn boot(kit: &Kit, disk: &Disk, append: &str, grow: u64, dir: &Path) -> Boot {
    let timeout = Duration::from_secs(240);
    let mut spec = VmSpec::direct(DirectKernel {
        kernel: kit.kernel.clone(),
        initrd: Some(kit.initrd.clone()),
        // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer probe
        // can miss its window and panic ("IO-APIC + timer doesn't work").
        cmdline: format!("console=ttyS0 no_timer_check {append}"),
    });
    spec.disk = disk.path.clone();
    spec.disk_size = Some(disk.size + grow);
    spec.memory_mib = 1024;
    spec.cpus = 1;
    spec.network = false;
    // swtpm beside the VM (issue 21's `tpm` key): the cloud kernel's built-in TPM TIS/CRB
    // driver gives the guest /dev/tpm0, which the root's init lists.
    spec.tpm = true;
    let work = dir.join("vm");
    let mut vm = Vm::start(&spec, &work).expect("starting QEMU (run scripts/setup-host.sh)");
    let root_ok = vm.wait_console(timeout, |c| c.contains("ROOT-OK")).unwrap();
    let left = timeout.saturating_sub(vm.started.elapsed());
    let stopped = vm
        .wait_console(left, |c| c.contains("---[ end Kernel panic"))
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let log = vm.kill();
    let saved = log_dir().join("squashfs-root.log");
    fs::write(&saved, &log).unwrap();
    eprintln!("console saved as {}", saved.display());
    let grown = dir.join("grown.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(work.join("overlay.qcow2"))
        .arg(&grown));
    Boot {
        log,
        root_ok,
        stopped,
        grown,
    }
}

/// The last partition's (type, first sector, end sector exclusive) and the disk's
/// sectors, from sfdisk.
fn last_partition_and_disk_sectors(disk: &Path) -> (String, u64, u64, u64) {
    let dump = run(Command::new("sfdisk").arg("--dump").arg(disk));
    let last = dump.lines().rfind(|l| l.contains("start=")).unwrap();
    let field = |k: &str| -> String {
        last.split(',')
            .find_map(|f| {
                f.split_once('=')
                    .filter(|(a, _)| a.trim().ends_with(k))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {k} in {last:?}"))
    };
    let start: u64 = field("start").parse().unwrap();
    let size: u64 = field("size").parse().unwrap();
    (
        field("type").to_lowercase(),
        start,
        start + size,
        fs::metadata(disk).unwrap().len() / 512,
    )
}

/// A `Key: value` field of `dumpe2fs -h`.
fn e2_field(dump: &str, key: &str) -> u64 {
    dump.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key:?} in dumpe2fs:\n{dump}"))
        .trim()
        .parse()
        .unwrap()
}

/// The grown disk as the next boot would find it: the GPT verifies with sfdisk (backup
/// header at the new end, so the kernel does not warn "Alt. header is not at the
/// end"), var ends at the last usable LBA (slipway-init's grow has nothing to do: the
/// `grows_the_last_partition_to_an_enlarged_disk` unit test in common/src/gpt/tests.rs shows a
/// second grow is a no-op), and the ext4's on-disk superblock already spans the whole
/// partition (slipway-init resizes only when the partition holds more blocks than the
/// superblock says). The guest's /var and /etc writes are in that ext4.
fn check_grown_disk(b: &Boot, disk: &Disk, dir: &Path) {
    let verify = run(Command::new("sfdisk").arg("--verify").arg(&b.grown));
    assert!(verify.contains("No errors detected"), "{verify}");
    let (kind, start, end, sectors) = last_partition_and_disk_sectors(&b.grown);
    assert_eq!(kind, VAR_TYPE, "the last partition is var");
    assert!(sectors * 512 > disk.size, "the disk was not enlarged");
    // 33 sectors at the end: the backup entry array (32) and header (1).
    assert_eq!(end, sectors - 33, "var must end at the last usable LBA");

    let var = dir.join("var-after.img");
    let bytes = fs::read(&b.grown).unwrap();
    fs::write(&var, &bytes[(start * 512) as usize..(end * 512) as usize]).unwrap();
    drop(bytes);
    let dump = run(Command::new("dumpe2fs").arg("-h").arg(&var));
    let (blocks, block_size) = (
        e2_field(&dump, "Block count"),
        e2_field(&dump, "Block size"),
    );
    assert_eq!(
        blocks,
        (end - start) * 512 / block_size,
        "the ext4 does not fill the grown var partition: the next boot would grow it again"
    );
    let var_kb: u64 = b.value("VAR-KB").unwrap().trim().parse().unwrap();
    assert!(
        blocks * block_size / 1024 >= var_kb,
        "the guest's df saw {var_kb} KiB, more than the ext4 on the disk holds"
    );
    eprintln!(
        "var after the boot: {blocks} blocks of {block_size} bytes, journal to replay: {}",
        dump.contains("needs_recovery")
    );
    // The guest never unmounted /var: replay its journal (on the copy), then the
    // file system must check clean without a change.
    if dump.contains("needs_recovery") {
        run(Command::new("debugfs")
            .args(["-w", "-R", "journal_run"])
            .arg(&var));
    }
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&var)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn finds errors in the grown ext4 (needs_recovery: {}):\n{}",
        dump.contains("needs_recovery"),
        text(&fsck)
    );
    for (path, want) in [
        ("/marker", "var-written-in-the-guest\n"),
        // /etc's overlay keeps its upper layer on /var (slipway-init's ETC_STATE).
        (
            "/lib/slipway/etc/upper/marker",
            "etc-written-in-the-guest\n",
        ),
    ] {
        let got = run(Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(&var));
        assert_eq!(got, want, "{path} in the var partition after the boot");
    }
}

#[test]
fn squashfs_verity_root_var_growth_and_panic_on_corruption() {
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
    // One byte of /corrupt.bin, which the root's init reads last. squashfs packs data
    // blocks without alignment, so its data is found at any offset, and the byte is
    // flipped in the first 4 KiB block of the image that holds nothing but corrupt.bin
    // (the one before is shared with busybox's last block, read at exec).
    let image = fs::read(&root.image).unwrap();
    let head = &corrupt_target()[..4096];
    let at = image
        .windows(head.len())
        .position(|w| w == head)
        .expect("corrupt.bin's first block not found stored uncompressed in the squashfs image")
        as u64;
    let own = at.next_multiple_of(4096);
    assert!(
        own + 4096 <= at + (128 << 10),
        "corrupt.bin's first data block is too short"
    );
    flip(&disk.path, disk.root_offset + own + 2000);

    let b = boot(
        &kit,
        &disk,
        &format!("roothash={}", root.hash),
        200 * MIB,
        d.path(),
    );
    eprintln!(
        "boot: ROOT-OK after {:.1} s, stopped after {:.1} s",
        b.root_ok.unwrap_or(f64::NAN),
        b.stopped.unwrap_or(f64::NAN)
    );
    assert!(
        b.has("ROOT-DONE"),
        "the root's init did not finish:\n{}",
        b.tail()
    );
    let done = b.log.find("ROOT-DONE").unwrap();
    assert_console_clean(
        &b.log[..done],
        "squashfs boot before the corrupt read",
        &["slipway-init: boot stopped", "Call Trace"],
        &b.tail(),
    );
    assert_eq!(
        b.value("TPM").as_deref().map(str::trim),
        Some("/dev/tpm0 /dev/tpmrm0"),
        "the guest has no TPM device (spec.tpm starts swtpm):\n{}",
        b.tail()
    );
    assert_eq!(
        b.value("ROOT-DM").as_deref(),
        Some("root ro=1"),
        "{}",
        b.tail()
    );
    let mounts: Vec<&str> = b
        .log
        .lines()
        .filter_map(|l| l.strip_prefix("MOUNT: "))
        .collect();
    for want in [
        "/dev/mapper/root / squashfs ro,",
        "/dev/vda3 /var ext4 rw,",
        "overlay /etc overlay rw,",
    ] {
        assert!(
            mounts.iter().any(|m| m.starts_with(want)),
            "{want}: {mounts:?}"
        );
    }
    let var_kb: u64 = b.value("VAR-KB").unwrap().trim().parse().unwrap();
    assert!(
        var_kb > 200 * 1024,
        "/var is {var_kb} KiB: not grown\n{}",
        b.tail()
    );
    assert_eq!(b.value("VAR-MARKER").as_deref(), Some("none"));
    assert_eq!(b.value("ETC-MARKER").as_deref(), Some("none"));

    // After the switch verity is in panic mode: the corrupt block stops the kernel,
    // and nothing follows (no reboot).
    assert!(b.stopped.is_some(), "no kernel panic:\n{}", b.tail());
    assert!(
        b.has("Kernel panic - not syncing: dm-verity device corrupted"),
        "{}",
        b.tail()
    );
    assert!(b.log[done..].contains("is corrupted"), "{}", b.tail());
    assert!(!b.has("CORRUPT-READ-RETURNED"), "{}", b.tail());
    assert_eq!(b.log.matches("Linux version").count(), 1, "{}", b.tail());

    check_grown_disk(&b, &disk, d.path());
}
