//! The container-host disk image as built: `recipes/containerd-host.toml` built with
//! slipway (the exact `disk.raw` users get, from the shared fixture cache), damaged
//! and booted under QEMU (OVMF, q35, TCG), and bad input.
//!
//! The booted checks of a healthy image (multi-user with no failed unit, the verity
//! root, /var grown into an enlarged disk, /etc and /var surviving reboot and crash,
//! slipway base images under containerd, provisioning) and of a corrupt root superblock
//! (`qemu/integrity.toml`) are `slipway test`'s `qemu/` suite, which `make test` runs
//! after these tests. Reproducibility of the whole disk is
//! `cloud_formats::built_again_offline_under_a_moved_clock_is_identical`.
//!
//! - `a_corrupt_block_of_systemd_panics_after_switch_root`: the root file system
//!   rebuilt in-process from the same tree equals the disk's root partition; one byte
//!   flipped in a block of `/usr/lib/systemd/systemd` (the first program run after
//!   switch-root) lets slipway-init mount the root and hand over, then the kernel
//!   panics with dm-verity's `device corrupted` (the panic mode slipway-init arms
//!   before switch-root), and QEMU does not boot again.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use slipway::boot::qemu::{Vm, VmSpec};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const RECIPE: &str = "recipes/containerd-host.toml";
/// TCG boots on a loaded 2-core machine: generous, but bounded.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RECIPE)
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

/// Where console logs are kept: `target/tmp/host-image/`.
fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("host-image");
    fs::create_dir_all(&d).unwrap();
    d
}

fn keep_log(vm: &Vm, name: &str) {
    fs::write(log_dir().join(format!("{name}.log")), vm.console()).unwrap();
}

/// The size of the squashfs superblock, whose table pointers change with any file.
const SQUASHFS_SUPERBLOCK: usize = 96;

/// The first offset past the superblock at which two squashfs images differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .skip(SQUASHFS_SUPERBLOCK)
        .position(|(x, y)| x != y)
        .map(|p| p + SQUASHFS_SUPERBLOCK)
}

/// The offset, inside the root file system image, of a block holding the start of
/// `/usr/lib/systemd/systemd`: the root image is rebuilt in-process from the same tree
/// (which must give the partition's bytes exactly), then again with that file's first
/// bytes changed; the first byte that differs belongs to the file's first block.
fn systemd_block_offset(out: &Path, root_bytes: &[u8]) -> u64 {
    let (mut tree, epoch) = host_root_tree(&recipe_path());
    let write = |t: &slipway::tree::Tree, name: &str| {
        let p = out.join(name);
        let opts = slipway::disk::squashfs::Options::root(epoch);
        slipway::disk::squashfs::write_file(t, &p, &opts).unwrap();
        fs::read(p).unwrap()
    };
    let same = write(&tree, "root-again.img");
    assert!(
        same == root_bytes,
        "the root file system rebuilt from the same tree differs from the disk's"
    );
    let path = slipway::tree::normalize("usr/lib/systemd/systemd").unwrap();
    let e = tree.get_mut(&path).unwrap();
    let slipway::tree::Kind::File(c) = &e.kind else {
        panic!("systemd is not a file");
    };
    let mut bytes = c.as_slice().to_vec();
    for b in bytes.iter_mut().take(64) {
        *b ^= 0x5a;
    }
    e.kind = slipway::tree::Kind::File(slipway::tree::Content::bytes(bytes));
    let changed = write(&tree, "root-changed.img");
    first_difference(&same, &changed).expect("changing systemd changed nothing") as u64
}

/// Boots `disk` until slipway-init gives up or the kernel panics; returns the console.
fn boot_corrupt(disk: &Path, dir: &Path, name: &str) -> String {
    let mut spec = VmSpec::new(disk);
    spec.network = false;
    let mut vm = Vm::start(&spec, dir).unwrap();
    let seen = vm
        .wait_console(BOOT_TIMEOUT, |c| {
            c.contains("slipway-init: boot stopped") || c.contains("end Kernel panic")
        })
        .unwrap();
    // Watch a little longer: nothing may follow (no reboot loop, no second boot).
    std::thread::sleep(Duration::from_secs(3));
    keep_log(&vm, name);
    let c = vm.kill();
    assert!(
        seen.is_some(),
        "{name}: the boot did not stop:\n{}",
        vm.tail(60)
    );
    assert_eq!(
        c.matches("Linux version").count(),
        1,
        "{name}: the machine booted again:\n{}",
        vm.tail(60)
    );
    c
}

#[test]
fn a_corrupt_block_of_systemd_panics_after_switch_root() {
    let out = fixtures::host_image("containerd-host");
    let d = tempfile::tempdir().unwrap();
    let m = manifest(&out);
    let disk = fs::read(out.join("disk.raw")).unwrap();

    let root = &m["partitions"][1];
    assert_eq!(root["type_guid"], "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    let root_off = root["offset"].as_u64().unwrap();
    let root_len = root["content"].as_u64().unwrap();
    let root_bytes = &disk[root_off as usize..(root_off + root_len) as usize];
    let sys_off = systemd_block_offset(d.path(), root_bytes);
    eprintln!("systemd's first block is at root offset {sys_off}");

    // One byte in systemd's first block: the root mounts, exec of systemd hits it.
    // (A byte of the superblock is qemu/integrity.toml.)
    let sys = d.path().join("sys.raw");
    fs::write(&sys, &disk).unwrap();
    let off = root_off + sys_off;
    let f = fs::OpenOptions::new().write(true).open(&sys).unwrap();
    f.write_all_at(&[disk[off as usize] ^ 0xff], off).unwrap();
    drop(f);
    let c = boot_corrupt(&sys, &d.path().join("vm-sys"), "corrupt-systemd");
    assert!(
        c.contains("slipway-init: root ready"),
        "the corrupt block was hit before the root was ready"
    );
    assert!(
        c.contains("device-mapper: verity") && c.contains("is corrupted"),
        "no verity error on the console"
    );
    assert!(
        c.contains("dm-verity device corrupted"),
        "no verity panic on the console"
    );
}

#[test]
fn bad_input_fails_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // A base recipe cannot make a disk.
    let t = fails(
        slipway(
            &shared_cache(),
            &[
                "build",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("recipes/base/static.toml")
                    .to_str()
                    .unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--format",
                "disk",
            ],
        ),
        2,
    );
    assert!(t.contains("need a host recipe"), "{t}");
    // A bad [disk] size names the file and key.
    let r = recipe(
        d.path(),
        "bad-disk.toml",
        "[image]\nkind = \"host\"\n[packages]\ninclude = [\"systemd\"]\n[disk]\nesp-size = \"64MB\"\n",
    );
    let t = fails(slipway(&shared_cache(), &["build", r.to_str().unwrap()]), 2);
    assert!(
        t.contains("bad-disk.toml") && t.contains("esp-size") && t.contains("not a size"),
        "{t}"
    );
    // Not root, with `root-fs = "squashfs-xz"` (the one root mksquashfs still writes from
    // a tree staged with its owners): refused before locking or fetching, with the
    // reason. The default root builds as any user (tests/it/cloud_formats.rs).
    let nobody = d.path().join("nobody");
    fs::create_dir(&nobody).unwrap();
    fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(&nobody, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let xz = nobody.join("xz.toml");
    fs::write(
        &xz,
        "schema-version = 1\n[image]\nkind = \"host\"\n[packages]\ninclude = [\"systemd\"]\n[disk]\nroot-fs = \"squashfs-xz\"\n",
    )
    .unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["build", xz.to_str().unwrap(), "-o"])
        .arg(nobody.join("out"))
        .env("SLIPWAY_CACHE", nobody.join("cache"))
        .output()
        .unwrap();
    let t = fails(o, 2);
    assert!(t.contains("needs root") && t.contains("squashfs-xz"), "{t}");
    assert!(!nobody.join("out").exists());
    assert!(!xz.with_extension("toml.lock").exists());
    assert!(!out.exists());
}
