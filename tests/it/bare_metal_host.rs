//! Bare metal (issue 22), host side (no boots; the boots are `bare_metal`):
//! `--format iso` and `--format netboot` of the container host pinned to the `metal`
//! platform (`tests/files/metal/containerd-host-metal.toml`), and the ISO's embed area.
//!
//! - `iso_and_netboot_are_reproducible_and_hold_the_disk`: a second build into another
//!   directory gives the fixture's `install.iso` and every `netboot/` file byte for byte; the ISO's
//!   PVD carries `SLIPWAY-<id>`, its El Torito catalog and hybrid GPT point at
//!   `/efiboot.img`, whose `BOOTX64.EFI` is the installer UKI (command line
//!   `slipway.install=1 slipway.media=<id>`, the image's kernel); `install.json` lists
//!   each payload file with the sha256 of the bytes it holds and its data extents
//!   (every byte outside them zero, their sha256 right), and the root, verity and
//!   /var files are the disk's partitions; the netboot UKI carries `roothash=` and
//!   `root.cpio` ahead of the initramfs.
//! - `embed_config_changes_only_the_area_and_refuses_bad_configs`: `slipway iso
//!   embed-config` changes no byte outside the 64 KiB area (compared byte by byte),
//!   `show-config` prints what went in; a config larger than the area, or one the
//!   agent's validator refuses, exits 2 and leaves the ISO as it was.
//! - `config_cpio_holds_a_checked_config`: `slipway netboot config-cpio`.
//!
//! The first build is a fixture (`common::fixtures::build`), shared with the boot tests;
//! its key covers slipway-init, so it always bundles the init under test.
#![allow(clippy::unwrap_used)]

use crate::common::iso::iso_file;
use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// The container host pinned to the `metal` platform.
const RECIPE: &str = "tests/files/metal/containerd-host-metal.toml";
const FORMATS: &str = "disk,iso,netboot";

pub(crate) fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RECIPE)
}

/// The shared build (install.iso, netboot/, disk.raw, ...).
pub(crate) fn shared_build() -> PathBuf {
    fixtures::build(&recipe_path().display().to_string(), &["--format", FORMATS])
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    slipway::io::hash::sha256_hex(bytes)
}

/// The bytes of each partition of `disk.raw` named in the manifest, by GPT name.
fn partition(out: &Path, raw: &[u8], name: &str) -> Vec<u8> {
    let m = json(&fs::read(out.join("manifest.json")).unwrap());
    let parts = m["partitions"].as_array().unwrap();
    let p = parts.iter().find(|p| p["name"] == name).unwrap();
    let (off, len) = (
        p["offset"].as_u64().unwrap() as usize,
        p["content"].as_u64().unwrap() as usize,
    );
    raw[off..off + len].to_vec()
}

#[test]
fn iso_and_netboot_are_reproducible_and_hold_the_disk() {
    // One build of its own, compared with the fixture's.
    let a = shared_build();
    let b = tempfile::Builder::new()
        .prefix("bare-metal-again-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let out_b = b.path().join("two");
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            &recipe_path().display().to_string(),
            "-o",
            &out_b.display().to_string(),
            "--format",
            FORMATS,
        ],
    ));
    for f in [
        "install.iso",
        "netboot/uki.efi",
        "netboot/root.cpio",
        "netboot/boot.ipxe",
    ] {
        let (x, y) = (
            fs::read(a.join(f)).unwrap(),
            fs::read(out_b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f} differs between two builds: {} vs {}",
            sha(&x),
            sha(&y)
        );
    }
    let iso = fs::read(a.join("install.iso")).unwrap();
    assert_eq!(iso.len() % 2048, 0);
    let raw = fs::read(a.join("disk.raw")).unwrap();
    let manifest = json(&fs::read(a.join("manifest.json")).unwrap());
    let root_hash = manifest["root_hash"].as_str().unwrap();
    let id = slipway::formats::iso::media_id(root_hash).unwrap();
    assert_eq!(id.len(), 32);
    let volset = String::from_utf8_lossy(&iso[32768 + 190..32768 + 318])
        .trim_end()
        .to_string();
    assert_eq!(volset, format!("SLIPWAY-{id}"));
    // El Torito: the boot record names the catalog, whose default entry is /efiboot.img;
    // the hybrid GPT's one partition is the same bytes.
    assert_eq!(&iso[34816 + 7..34816 + 30], b"EL TORITO SPECIFICATION");
    let cat = u32::from_le_bytes(iso[34816 + 0x47..34816 + 0x4b].try_into().unwrap()) as usize;
    let entry = &iso[cat * 2048 + 32..cat * 2048 + 64];
    assert_eq!(entry[0], 0x88, "bootable, no emulation");
    let boot_lba = u32::from_le_bytes(entry[8..12].try_into().unwrap()) as usize;
    let efiboot = iso_file(&iso, "EFIBOOT.IMG;1");
    assert_eq!(
        &iso[boot_lba * 2048..boot_lba * 2048 + efiboot.len()],
        &efiboot[..]
    );
    assert!(
        efiboot.len() < 32 << 20,
        "below El Torito's 16-bit sector count"
    );
    assert_eq!(&iso[512..520], b"EFI PART");
    let esp_first = u64::from_le_bytes(iso[1024 + 32..1024 + 40].try_into().unwrap()) as usize;
    assert_eq!(
        esp_first * 512,
        boot_lba * 2048,
        "the GPT's ESP is the boot image"
    );
    check_installer_uki(&efiboot, &id, &fs::read(a.join("vmlinuz")).unwrap());
    // install.json: every file is what it says, and the root, verity and /var are the
    // disk's partitions.
    let plan = json(&iso_file(&iso, "SLIPWAY/INSTALL.JSON;1"));
    assert_eq!(plan["schema-version"], 1);
    assert_eq!(plan["root-hash"], root_hash);
    let parts = plan["partitions"].as_array().unwrap();
    let roles: Vec<&str> = parts.iter().map(|p| p["role"].as_str().unwrap()).collect();
    // Two slots (decision 0047): slot B's pair is created empty, with no file.
    assert_eq!(roles, ["esp", "root", "verity", "empty", "empty", "var"]);
    let mut files = vec![];
    for p in parts {
        if let Some(f) = p.get("file") {
            files.push(f.clone());
        }
        if let Some(m) = p.get("files") {
            files.extend(["512", "4096"].map(|k| m[k].clone()));
        }
    }
    for f in &files {
        let name = f["path"].as_str().unwrap().to_ascii_uppercase();
        let bytes = iso_file(&iso, &format!("SLIPWAY/{name};1"));
        assert_eq!(bytes.len() as u64, f["size"].as_u64().unwrap(), "{name}");
        assert_eq!(sha(&bytes), f["sha256"].as_str().unwrap(), "{name}");
        check_extents(&bytes, f, &name);
    }
    for (file, part) in [
        ("ROOT.IMG", 1),
        ("VERITY.IMG", 2),
        ("VAR.IMG", 5),
        ("ESP-512.IMG", 0),
    ] {
        let name = parts[part]["name"].as_str().unwrap();
        assert!(
            iso_file(&iso, &format!("SLIPWAY/{file};1")) == partition(&a, &raw, name),
            "{file} is not partition {name} of disk.raw"
        );
    }
    assert_eq!(parts[1]["uuid"].as_str().unwrap().len(), 36);
    assert!(parts[0].get("uuid").is_none() && parts[5].get("uuid").is_none());
    check_slot_b(&parts[3..5]);
    let esp4k = iso_file(&iso, "SLIPWAY/ESP-4096.IMG;1");
    assert_eq!(
        u16::from_le_bytes([esp4k[11], esp4k[12]]),
        4096,
        "bytes per sector"
    );
    let area = iso_file(&iso, "SLIPWAY/CONFIG.AREA;1");
    assert_eq!(area.len(), 65536);
    assert_eq!(&area[..21], b"SLIPWAY-EMBED-V1\n\0\0\0\0");
    check_netboot(
        &a,
        root_hash,
        &partition(&a, &raw, parts[1]["name"].as_str().unwrap()),
    );
}

/// Slot B's partitions in install.json: labelled `_empty`, with their UUIDs, no file.
fn check_slot_b(parts: &[serde_json::Value]) {
    for p in parts {
        assert_eq!(p["name"], "_empty");
        assert_eq!(p["uuid"].as_str().unwrap().len(), 36);
        assert!(p.get("file").is_none() && p.get("files").is_none(), "{p}");
    }
}

/// The data extents of a payload file: every byte outside them is zero, their bytes
/// hash to `data-sha256`, and they leave out most of the empty /var.
fn check_extents(bytes: &[u8], f: &serde_json::Value, name: &str) {
    let mut data = Vec::new();
    let mut at = 0;
    for e in f["data"].as_array().unwrap() {
        let (off, len) = (
            e[0].as_u64().unwrap() as usize,
            e[1].as_u64().unwrap() as usize,
        );
        assert!(off >= at && off % 4096 == 0, "{name}: extent {e}");
        assert!(
            bytes[at..off].iter().all(|b| *b == 0),
            "{name}: data before {off}"
        );
        data.extend_from_slice(&bytes[off..off + len]);
        at = off + len;
    }
    assert!(
        bytes[at..].iter().all(|b| *b == 0),
        "{name}: data after {at}"
    );
    assert_eq!(sha(&data), f["data-sha256"].as_str().unwrap(), "{name}");
    if name == "VAR.IMG" {
        assert!(
            data.len() * 8 < bytes.len(),
            "{name}: {} data bytes",
            data.len()
        );
    }
}

/// The installer UKI in the boot image: the image's kernel, the installer's command line.
fn check_installer_uki(efiboot: &[u8], id: &str, vmlinuz: &[u8]) {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("efiboot.img");
    fs::write(&img, efiboot).unwrap();
    let uki = d.path().join("BOOTX64.EFI");
    run(std::process::Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&img)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&uki));
    let pe = fs::read(&uki).unwrap();
    let info = slipway::disk::uki::pe_info(&pe).unwrap();
    let cmdline = String::from_utf8_lossy(info.section_data(&pe, ".cmdline").unwrap()).to_string();
    assert!(
        cmdline.starts_with(&format!(
            "slipway.install=1 slipway.media={id} console=ttyS0"
        )),
        "{cmdline}"
    );
    assert!(!cmdline.contains("roothash="), "{cmdline}");
    assert!(info.section_data(&pe, ".linux").unwrap() == vmlinuz);
}

/// The netboot UKI: roothash=, the root in the initrd ahead of the initramfs.
fn check_netboot(out: &Path, root_hash: &str, root: &[u8]) {
    let pe = fs::read(out.join("netboot/uki.efi")).unwrap();
    let info = slipway::disk::uki::pe_info(&pe).unwrap();
    let cmdline = String::from_utf8_lossy(info.section_data(&pe, ".cmdline").unwrap()).to_string();
    assert!(
        cmdline.starts_with(&format!(
            "roothash={root_hash} slipway.root=initrd slipway.var=tmpfs console=ttyS0"
        )),
        "{cmdline}"
    );
    let cpio = fs::read(out.join("netboot/root.cpio")).unwrap();
    let initrd = info.section_data(&pe, ".initrd").unwrap();
    assert!(
        initrd.starts_with(&cpio),
        "root.cpio leads the UKI's initrd"
    );
    assert!(initrd[cpio.len()..] == fs::read(out.join("initrd")).unwrap()[..]);
    let entries = slipway::writers::cpio::parse(&cpio).unwrap();
    let f = entries
        .iter()
        .find(|e| e.name == "slipway/root.img")
        .unwrap();
    assert!(
        f.data == root,
        "slipway/root.img is the disk's root partition"
    );
    assert!(entries.iter().any(|e| e.name == "slipway/verity.img"));
    let script = fs::read_to_string(out.join("netboot/boot.ipxe")).unwrap();
    assert!(
        script.starts_with("#!ipxe\n") && script.contains("chain uki.efi"),
        "{script}"
    );
}

/// A copy of the shared ISO to patch.
pub(crate) fn iso_copy(dir: &Path) -> PathBuf {
    let p = dir.join("install.iso");
    fs::copy(shared_build().join("install.iso"), &p).unwrap();
    p
}

#[test]
fn embed_config_changes_only_the_area_and_refuses_bad_configs() {
    let d = tempfile::tempdir().unwrap();
    let iso = iso_copy(d.path());
    let before = fs::read(&iso).unwrap();
    let cache = shared_cache();
    let show = |iso: &Path| {
        let o = slipway(&cache, &["iso", "show-config", &iso.display().to_string()]);
        ok(o.clone());
        o.stdout
    };
    assert_eq!(show(&iso), b"", "a new ISO's area is empty");
    let config = d.path().join("node.toml");
    let text = "schema-version = 1\nhostname = \"metal-1\"\n";
    fs::write(&config, text).unwrap();
    let p = |x: &Path| x.display().to_string();
    ok(slipway(
        &cache,
        &["iso", "embed-config", &p(&iso), &p(&config)],
    ));
    let after = fs::read(&iso).unwrap();
    assert_eq!(after.len(), before.len());
    let changed: Vec<usize> = (0..after.len())
        .filter(|i| after[*i] != before[*i])
        .collect();
    let (first, last) = (changed[0], *changed.last().unwrap());
    assert!(
        first % 2048 == 17,
        "the change starts at the length field: {first}"
    );
    assert!(last - first < 65536, "changed bytes span {first}..={last}");
    assert_eq!(&before[first - 17..first], b"SLIPWAY-EMBED-V1\n");
    assert_eq!(show(&iso), text.as_bytes());
    // Too large, and invalid: exit 2, the ISO untouched.
    let big = d.path().join("big.toml");
    fs::write(&big, format!("{text}# {}\n", "x".repeat(65536))).unwrap();
    let e = fails(
        slipway(&cache, &["iso", "embed-config", &p(&iso), &p(&big)]),
        2,
    );
    assert!(
        e.contains("embed area holds a config of at most 65515 bytes"),
        "{e}"
    );
    let bad = d.path().join("bad.toml");
    fs::write(&bad, "schema-version = 1\nhostname = \"Not A Hostname!\"\n").unwrap();
    let e = fails(
        slipway(&cache, &["iso", "embed-config", &p(&iso), &p(&bad)]),
        2,
    );
    assert!(e.contains("bad.toml"), "{e}");
    assert!(
        fs::read(&iso).unwrap() == after,
        "a refused config leaves the ISO as it was"
    );
    let names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "no temporary file left: {names:?}");
    // Not an ISO of ours.
    let e = fails(slipway(&cache, &["iso", "show-config", &p(&config)]), 2);
    assert!(e.contains("no slipway embed area"), "{e}");
}

#[test]
fn config_cpio_holds_a_checked_config() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("node.toml");
    fs::write(&config, "schema-version = 1\nhostname = \"pxe-1\"\n").unwrap();
    let out = d.path().join("config-52-54-00-12-34-56.cpio");
    let p = |x: &Path| x.display().to_string();
    ok(slipway(
        &shared_cache(),
        &["netboot", "config-cpio", &p(&config), "-o", &p(&out)],
    ));
    let entries = slipway::writers::cpio::parse(&fs::read(&out).unwrap()).unwrap();
    let f = entries
        .iter()
        .find(|e| e.name == "slipway/config.toml")
        .unwrap();
    assert_eq!(f.data, fs::read(&config).unwrap());
    fs::write(&config, "schema-version = 1\nhostnme = \"pxe-1\"\n").unwrap();
    let bad = d.path().join("bad.cpio");
    fails(
        slipway(
            &shared_cache(),
            &["netboot", "config-cpio", &p(&config), "-o", &p(&bad)],
        ),
        2,
    );
    assert!(!bad.exists());
}
