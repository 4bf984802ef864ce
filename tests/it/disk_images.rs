//! Disk pieces of host images, checked with the reference tools: the squashfs-xz root
//! (unsquashfs extracts the tree back; the native zstd root's read-back is
//! tests/it/squashfs.rs), the EFI system partition
//! (mtools and fsck.vfat read it), the UKI (objdump lists its sections, objcopy dumps
//! them back, `.cmdline` byte for byte), and all of them byte-identical when built from
//! different staging folders under a moved clock (faketime). The systemd stub, the
//! kernel and busybox come from trixie through slipway (a `--format dir` fixture built
//! once per run). That a slipway UKI starts from the ESP under OVMF and the kernel gets
//! its `.cmdline` is proven by every boot of a host image (`slipway test`'s `qemu/`
//! suite and the Vm-API tests), which start the real UKI that way.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use slipway::tree::{Entry, Kind, Tree};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const EPOCH: u64 = 1_700_000_000;
const UUID: [u8; 16] = [0x5a; 16];
const VOLUME_ID: u32 = 0x5117_3a7e;
const CMDLINE: &str = "console=ttyS0 no_timer_check panic=-1 slipway.test=uki-cmdline";

/// The parts recipe: the kernel's maintainer-script helpers are not needed to take its
/// files.
const PARTS_RECIPE: &str = "schema-version = 1\n[image]\nkind = \"base\"\n[packages]\n\
     include = [\"systemd-boot-efi\", \"linux-image-cloud-amd64\", \"busybox-static\"]\n\
     exclude = [\"kmod\", \"linux-base\", \"initramfs-tools\", \"linux-initramfs-tool\"]\n";

/// The root of a trixie tree with systemd-boot-efi, the cloud kernel and busybox: a
/// fixture (`slipway build --format dir`, once per run for every test process; the
/// fixture cache locks the recipe before keying it).
fn parts() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("disk-images-parts");
        fs::create_dir_all(&dir).unwrap();
        // Every test process writes the recipe: one at a time, and only when it differs,
        // so no process keys a half-written file.
        let lock = fs::File::create(dir.join("recipe.flock")).unwrap();
        let guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        let r = dir.join("parts.toml");
        if fs::read_to_string(&r).ok().as_deref() != Some(PARTS_RECIPE) {
            fs::write(&r, PARTS_RECIPE).unwrap();
        }
        drop(guard);
        fixtures::build(r.to_str().unwrap(), &["--format", "dir"]).join("rootfs")
    })
}

/// The kernel image and its release in the parts tree.
fn kernel(root: &Path) -> (PathBuf, String) {
    let k = fs::read_dir(root.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("vmlinuz-"))
        .expect("no kernel in the parts tree");
    let release = k.trim_start_matches("vmlinuz-").to_string();
    (root.join("boot").join(k), release)
}

fn stub(root: &Path) -> Vec<u8> {
    fs::read(root.join("usr/lib/systemd/boot/efi/linuxx64.efi.stub")).unwrap()
}

/// A tree with every kind of entry, foreign owners, special modes, real binaries.
fn sample_tree(root: &Path) -> Tree {
    let mut t = Tree::new();
    let bb = fs::read(root.join("usr/bin/busybox")).unwrap();
    t.put("usr/bin/busybox", Entry::file(bb, 0o755, EPOCH - 5))
        .unwrap();
    t.put("usr/bin/sh", Entry::symlink("busybox", EPOCH))
        .unwrap();
    let mut su = Entry::file(b"#!/bin/sh\necho su\n".to_vec(), 0o4755, EPOCH);
    su.gid = 0;
    t.put("usr/bin/su", su).unwrap();
    let text: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
        .collect();
    t.put("usr/share/doc/big.txt", Entry::file(text, 0o644, EPOCH))
        .unwrap();
    t.put(
        "usr/share/doc/hard.txt",
        Entry {
            kind: Kind::Hardlink("usr/share/doc/big.txt".into()),
            ..Entry::file(Vec::new(), 0o644, EPOCH)
        },
    )
    .unwrap();
    let mut owned = Entry::file(b"owned by 1000:1001\n".to_vec(), 0o640, EPOCH);
    owned.uid = 1000;
    owned.gid = 1001;
    t.put("home/user/note", owned).unwrap();
    let mut home = Entry::dir(0o750, EPOCH);
    home.uid = 1000;
    home.gid = 1001;
    t.put("home/user", home).unwrap();
    t.put("tmp", Entry::dir(0o1777, EPOCH)).unwrap();
    t.put(
        "etc/os-release",
        Entry::file(b"ID=debian\n".to_vec(), 0o644, EPOCH),
    )
    .unwrap();
    t.put(
        "dev/null",
        Entry {
            kind: Kind::CharDevice(1, 3),
            ..Entry::file(Vec::new(), 0o666, EPOCH)
        },
    )
    .unwrap();
    t.put("etc/empty", Entry::file(Vec::new(), 0o600, EPOCH))
        .unwrap();
    t
}

/// The ESP's files: a UKI-sized payload and a loader entry.
fn esp_files(uki: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "loader/entries/slipway.conf".into(),
            b"title slipway\n".to_vec(),
        ),
        ("EFI/BOOT/BOOTX64.EFI".into(), uki.to_vec()),
    ]
}

/// A tiny initramfs (slipway's cpio writer): busybox as /init's shell, printing the
/// kernel command line and UKI-OK, then powering off.
fn tiny_initrd(root: &Path) -> Vec<u8> {
    let mut t = Tree::new();
    let bb = fs::read(root.join("usr/bin/busybox")).unwrap();
    t.put("bin/busybox", Entry::file(bb, 0o755, EPOCH)).unwrap();
    t.put(
        "init",
        Entry::file(
            b"#!/bin/busybox sh\n/bin/busybox mkdir -p /proc\n/bin/busybox mount -t proc proc /proc\n\
              echo \"UKI-CMDLINE: $(/bin/busybox cat /proc/cmdline)\"\necho UKI-OK\n\
              /bin/busybox poweroff -f\n"
                .to_vec(),
            0o755,
            EPOCH,
        ),
    )
    .unwrap();
    t.put(
        "dev/console",
        Entry {
            kind: Kind::CharDevice(5, 1),
            ..Entry::file(Vec::new(), 0o600, EPOCH)
        },
    )
    .unwrap();
    slipway::writers::cpio::write_compressed_to(
        &t,
        slipway::writers::cpio::CpioOptions { epoch: EPOCH },
        slipway::writers::cpio::Compression::Zstd,
        Vec::new(),
    )
    .unwrap()
}

fn build_uki(root: &Path) -> Vec<u8> {
    let (k, release) = kernel(root);
    slipway::disk::uki::build_uki(&slipway::disk::uki::Parts {
        stub: &stub(root),
        kernel: &fs::read(k).unwrap(),
        initrd: &tiny_initrd(root),
        cmdline: CMDLINE,
        os_release: &fs::read(root.join("usr/lib/os-release")).unwrap(),
        uname: Some(&release),
    })
    .unwrap()
}

/// The artifacts [`write_all`] writes.
const ARTIFACTS: [&str; 4] = ["root-zstd.squashfs", "root.squashfs", "esp.img", "uki.efi"];

/// Writes root-zstd.squashfs (the native writer, the host image root's options),
/// root.squashfs (mksquashfs, xz), esp.img and uki.efi into `out` (from `epoch`).
fn write_all(root: &Path, out: &Path, epoch: u64) {
    fs::create_dir_all(out).unwrap();
    slipway::disk::squashfs::write_file(
        &sample_tree(root),
        &out.join("root-zstd.squashfs"),
        &slipway::disk::squashfs::Options::root(epoch),
    )
    .unwrap();
    slipway::disk::erofs::write_root(
        &sample_tree(root),
        slipway::disk::erofs::RootFs::SquashfsXz,
        epoch,
        &UUID,
        "amd64",
        &out.join("root.squashfs"),
    )
    .unwrap();
    let uki = build_uki(root);
    fs::write(out.join("uki.efi"), &uki).unwrap();
    let esp = slipway::disk::esp::build_esp(&esp_files(&uki), 64 << 20, VOLUME_ID, epoch).unwrap();
    fs::write(out.join("esp.img"), esp).unwrap();
}

/// Not a test on its own: the child process of
/// [`built_twice_from_other_folders_and_clocks_is_identical`] (SLIPWAY_DISK_CHILD=out dir).
#[test]
fn child_writes_artifacts() {
    let Some(out) = std::env::var_os("SLIPWAY_DISK_CHILD") else {
        return;
    };
    let root = PathBuf::from(std::env::var_os("SLIPWAY_DISK_PARTS").unwrap());
    let epoch = std::env::var("SLIPWAY_DISK_EPOCH")
        .unwrap()
        .parse()
        .unwrap();
    write_all(&root, Path::new(&out), epoch);
}

/// Runs [`child_writes_artifacts`] in a new process, its temporary files in `dir/tmp`,
/// under `faketime` when `clock` is given.
fn child(dir: &Path, clock: Option<&str>, epoch: u64) -> PathBuf {
    let out = dir.join("out");
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match clock {
        Some(c) => {
            let mut c2 = Command::new("faketime");
            c2.arg(c).arg(&exe);
            c2
        }
        None => Command::new(&exe),
    };
    cmd.args([
        "--exact",
        "disk_images::child_writes_artifacts",
        "--nocapture",
    ])
    .env("SLIPWAY_DISK_CHILD", &out)
    .env("SLIPWAY_DISK_PARTS", parts())
    .env("SLIPWAY_DISK_EPOCH", epoch.to_string())
    .env("TMPDIR", &tmp)
    .env_remove("SOURCE_DATE_EPOCH");
    run(&mut cmd);
    for f in ARTIFACTS {
        assert!(out.join(f).is_file(), "the child wrote no {f}");
    }
    out
}

#[test]
fn built_twice_from_other_folders_and_clocks_is_identical() {
    let d = tempfile::tempdir().unwrap();
    let a = child(&d.path().join("first/staging-a"), None, EPOCH);
    let b = child(
        &d.path().join("second-folder/deeper/b"),
        Some("2033-03-03 03:03:03"),
        EPOCH,
    );
    for f in ARTIFACTS {
        let (x, y) = (fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between the two builds");
    }
    // The epoch does reach the images (so the comparison above could fail).
    let c = child(&d.path().join("c"), None, EPOCH + 86_400 * 400);
    for f in &ARTIFACTS[..3] {
        assert_ne!(
            fs::read(a.join(f)).unwrap(),
            fs::read(c.join(f)).unwrap(),
            "{f} does not depend on the epoch"
        );
    }
}

#[test]
fn squashfs_root_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let tree = sample_tree(parts());
    let img = d.path().join("root.squashfs");
    let o = slipway::disk::erofs::write_root(
        &tree,
        slipway::disk::erofs::RootFs::SquashfsXz,
        EPOCH,
        &UUID,
        "amd64",
        &img,
    )
    .unwrap();
    assert_eq!(o.size % 4096, 0);
    assert_eq!(o.sha256, slipway::io::hash::sha256_file(&img).unwrap().0);
    let stat = run(Command::new("unsquashfs").arg("-s").arg(&img));
    assert!(stat.contains("Compression xz"), "{stat}");
    assert!(stat.contains("x86"), "no BCJ filter:\n{stat}");
    assert!(stat.contains("Tue Nov 14 22:13:20 2023"), "{stat}");
    let x = d.path().join("x");
    run(Command::new("unsquashfs")
        .arg("-q")
        .arg("-n")
        .arg("-d")
        .arg(&x)
        .arg(&img));
    for (p, e) in tree.iter() {
        let got = x.join(p);
        let m = fs::symlink_metadata(&got).unwrap_or_else(|_| panic!("{p} is missing"));
        assert_eq!((m.uid(), m.gid()), (e.uid, e.gid), "{p}: owner");
        assert_eq!(m.mtime() as u64, EPOCH, "{p}: mtime");
        match &e.kind {
            Kind::File(c) => assert_eq!(fs::read(&got).unwrap(), c.as_slice(), "{p}"),
            Kind::Hardlink(t) => assert_eq!(m.ino(), fs::metadata(x.join(t)).unwrap().ino()),
            Kind::Symlink(t) => assert_eq!(fs::read_link(&got).unwrap().to_str().unwrap(), t),
            Kind::CharDevice(a, b) => {
                assert_eq!(m.rdev(), nix::sys::stat::makedev(*a as u64, *b as u64))
            }
            _ => {}
        }
        if !matches!(e.kind, Kind::Symlink(_)) {
            assert_eq!(m.mode() & 0o7777, e.mode & 0o7777, "{p}: mode");
        }
    }
    assert!(o.size < tree.content_size());
}

#[test]
fn esp_reads_back_with_mtools_and_fsck() {
    let d = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for size in [16u64 << 20, 64 << 20] {
        let esp =
            slipway::disk::esp::build_esp(&esp_files(&payload), size, VOLUME_ID, EPOCH).unwrap();
        assert_eq!(esp.len() as u64, size);
        let img = d.path().join(format!("esp-{size}.img"));
        fs::write(&img, &esp).unwrap();
        let fsck = run(Command::new("fsck.vfat").arg("-n").arg(&img));
        eprintln!("{fsck}");
        let dir = run(Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i"])
            .arg(&img)
            .arg("::/EFI/BOOT"));
        assert!(dir.contains("BOOTX64  EFI"), "{dir}");
        assert!(dir.contains("Serial Number is 5117-3A7E"), "{dir}");
        assert!(
            dir.contains("2023-11-14"),
            "not stamped with the epoch:\n{dir}"
        );
        let back = d.path().join("back.efi");
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .arg("::/EFI/BOOT/BOOTX64.EFI")
            .arg(&back));
        assert!(fs::read(&back).unwrap() == payload, "content differs");
        if size >= 64 << 20 {
            // BS_FilSysType of a FAT32 boot sector.
            assert_eq!(&esp[82..87], b"FAT32", "not FAT32");
        }
    }
    assert!(slipway::disk::esp::build_esp(&esp_files(&payload), 2 << 20, 1, EPOCH).is_err());
}

#[test]
fn uki_has_sections_objcopy_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let root = parts();
    let uki = build_uki(root);
    let p = d.path().join("uki.efi");
    fs::write(&p, &uki).unwrap();
    let h = run(Command::new("objdump").arg("-h").arg(&p));
    let names: Vec<&str> = h
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    for s in [
        ".osrel", ".cmdline", ".uname", ".initrd", ".linux", ".sdmagic",
    ] {
        assert!(names.contains(&s), "no {s}:\n{h}");
    }
    // The payload follows the stub's sections, .linux last.
    assert_eq!(
        names.iter().rev().find(|n| n.starts_with('.')),
        Some(&".linux"),
        "{h}"
    );
    let dump = d.path().join("cmdline");
    run(Command::new("objcopy")
        .arg(format!("--dump-section=.cmdline={}", dump.display()))
        .arg(&p)
        .arg(d.path().join("scratch.efi")));
    assert_eq!(fs::read_to_string(&dump).unwrap(), CMDLINE);
    let (k, _) = kernel(root);
    let linux = d.path().join("linux");
    run(Command::new("objcopy")
        .arg(format!("--dump-section=.linux={}", linux.display()))
        .arg(&p)
        .arg(d.path().join("scratch2.efi")));
    assert!(
        fs::read(linux).unwrap() == fs::read(k).unwrap(),
        ".linux differs"
    );
    // The PE checksum agrees with objcopy's (which copies the UKI and stamps its own time).
    let copy = d.path().join("copy.efi");
    run(Command::new("objcopy").arg(&p).arg(&copy));
    let copied = fs::read(&copy).unwrap();
    let nt = u32::from_le_bytes(copied[0x3c..0x40].try_into().unwrap()) as usize;
    let stored = u32::from_le_bytes(copied[nt + 88..nt + 92].try_into().unwrap());
    assert_ne!(stored, 0, "objcopy wrote no checksum");
    assert_eq!(slipway::disk::uki::pe_checksum(&copied).unwrap(), stored);
    let info = slipway::disk::uki::pe_info(&uki).unwrap();
    assert_eq!(
        info.timestamp,
        slipway::disk::uki::pe_info(&stub(root)).unwrap().timestamp
    );
    // A UKI is refused as a stub.
    let again = slipway::disk::uki::build_uki(&slipway::disk::uki::Parts {
        stub: &uki,
        kernel: b"k",
        initrd: b"i",
        cmdline: "x",
        os_release: b"ID=x\n",
        uname: None,
    });
    assert!(again.is_err());
}
