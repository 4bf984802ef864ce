//! The slot writer: consumes a slot's [`Targets`] (where its root, its verity tree and
//! its UKI go: block devices or files) and the verified blob files; writes them in the
//! safe order: root, then verity, each synced, then the UKI last, written under a
//! temporary name and renamed into the ESP directory. Until that rename there is no boot
//! entry for the slot, so an interrupted write leaves nothing to boot into (the slot's
//! old UKI is removed before its root is touched: [`remove_uki`]).
//!
//! Before anything is written, every blob is checked to fit its target (a block
//! device's size; a file grows). The targets come from [`SLOTS`] (`slipway-agent`'s
//! view of the disk; the two-slot disk layout writes it).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Where the slots' targets are listed, under the root.
pub const SLOTS: &str = "run/slipway/update-slots.json";

/// Where one slot's parts go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Targets {
    /// The root partition (or a file).
    pub root: PathBuf,
    /// The verity partition (or a file).
    pub verity: PathBuf,
    /// The ESP directory its UKI goes into (`/efi/EFI/Linux`).
    pub esp_dir: PathBuf,
    /// The disk whose partition table names the slot (absent when the slots are files).
    #[serde(default)]
    pub disk: Option<PathBuf>,
    /// The root and verity partitions' numbers on `disk`.
    #[serde(default)]
    pub partitions: Option<[u32; 2]>,
}

/// The partition labels of a slot that holds a version, and of one that does not.
pub const LABELS: [&str; 2] = ["root-x86-64", "root-x86-64-verity"];
/// The label of a slot being written or holding nothing (the UAPI convention).
pub const EMPTY: &str = "_empty";

/// The slots by name (`a`, `b`), read from [`SLOTS`].
pub fn load(root: &Path) -> Result<BTreeMap<String, Targets>, String> {
    let p = root.join(SLOTS);
    let text = std::fs::read(&p).map_err(|e| {
        format!(
            "reading {}: {e} (the node's disk has one slot; updates need the two-slot layout)",
            p.display()
        )
    })?;
    let slots: BTreeMap<String, Targets> =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", p.display()))?;
    let names: Vec<&str> = slots.keys().map(String::as_str).collect();
    if names != ["a", "b"] {
        return Err(format!(
            "{}: slots {names:?} (expected exactly \"a\" and \"b\")",
            p.display()
        ));
    }
    for (n, t) in &slots {
        for (what, path) in [
            ("root", &t.root),
            ("verity", &t.verity),
            ("esp-dir", &t.esp_dir),
        ] {
            if !path.is_absolute() {
                return Err(format!(
                    "{}: {n}.{what}: {:?} is not absolute",
                    p.display(),
                    path
                ));
            }
        }
    }
    Ok(slots)
}

/// The bytes a target can hold: a block device's size, else unbounded (a file).
fn capacity(p: &Path) -> Result<Option<u64>, String> {
    match std::fs::metadata(p) {
        Ok(m) if m.file_type().is_block_device() => {
            let mut f = File::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?;
            let n = f
                .seek(SeekFrom::End(0))
                .map_err(|e| format!("sizing {}: {e}", p.display()))?;
            Ok(Some(n))
        }
        _ => Ok(None),
    }
}

/// Copies `src` over the start of `dest` (a block device keeps its size; a file is cut
/// to the copy) and syncs it.
fn copy_into(src: &Path, dest: &Path) -> Result<u64, String> {
    let mut from = File::open(src).map_err(|e| format!("opening {}: {e}", src.display()))?;
    let block = capacity(dest)?.is_some();
    let mut to = File::options()
        .write(true)
        .create(!block)
        .truncate(false)
        .open(dest)
        .map_err(|e| format!("opening {}: {e}", dest.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = from
            .read(&mut buf)
            .map_err(|e| format!("reading {}: {e}", src.display()))?;
        if got == 0 {
            break;
        }
        to.write_all(&buf[..got])
            .map_err(|e| format!("writing {}: {e}", dest.display()))?;
        n += got as u64;
    }
    if !block {
        to.set_len(n)
            .map_err(|e| format!("cutting {}: {e}", dest.display()))?;
    }
    to.sync_all()
        .map_err(|e| format!("syncing {}: {e}", dest.display()))?;
    Ok(n)
}

/// Whether `file` is the UKI of `version` under any boot-counting name:
/// `slipway-V.efi`, `slipway-V+LEFT.efi` or `slipway-V+LEFT-DONE.efi`.
pub fn is_uki_of(file: &str, version: &str) -> bool {
    let Some(rest) = file
        .strip_prefix("slipway-")
        .and_then(|r| r.strip_prefix(version))
        .and_then(|r| r.strip_suffix(".efi"))
    else {
        return false;
    };
    rest.is_empty()
        || rest.strip_prefix('+').is_some_and(|c| {
            let mut parts = c.split('-');
            let ok = |p: Option<&str>| {
                p.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            };
            ok(parts.next()) && parts.clone().count() <= 1 && parts.all(|n| ok(Some(n)))
        })
}

/// Removes `version`'s UKI from `t`'s ESP directory under whatever name boot counting
/// gave it (systemd-boot renames `+N` to `+LEFT-DONE` as it counts); nothing if absent.
pub fn remove_uki(t: &Targets, version: &str) -> Result<(), String> {
    let entries = match std::fs::read_dir(&t.esp_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {}: {e}", t.esp_dir.display())),
    };
    let mut removed = false;
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        if is_uki_of(&name, version) {
            let p = e.path();
            std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(&t.esp_dir)?;
    }
    Ok(())
}

/// Sets the slot's partition entries on its disk (when the slot list names them):
/// `_empty` while it is written, then the UUIDs `roothash=` names (its first and last
/// 128 bits, as slipway-init looks for them) and the labels of a slot in use.
pub fn relabel(t: &Targets, root_hash: Option<&str>) -> Result<(), String> {
    let (Some(disk), Some([root, verity])) = (&t.disk, t.partitions) else {
        return Ok(());
    };
    use slipway_common::gpt::Table;
    use slipway_common::guid::Guid;
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(|e| format!("opening {}: {e}", disk.display()))?;
    let sector = sector_size(disk);
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("sizing {}: {e}", disk.display()))?;
    let mut table =
        Table::read(&f, sector, size / sector).map_err(|e| format!("{}: {e}", disk.display()))?;
    let parts = table.partitions();
    let now = |n: u32| parts.iter().find(|p| p.number == n).map(|p| p.uuid);
    let ids: [Option<Guid>; 2] = match root_hash {
        None => [now(root), now(verity)],
        Some(h) => {
            let bytes = unhex(h)
                .filter(|b| b.len() == 32)
                .ok_or_else(|| format!("root hash {h:?} is not 64 hex digits"))?;
            let half = |r: std::ops::Range<usize>| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&bytes[r]);
                Some(Guid::from_uuid_bytes(a))
            };
            [half(0..16), half(16..32)]
        }
    };
    for (i, n) in [root, verity].into_iter().enumerate() {
        let uuid = ids[i].ok_or_else(|| format!("{}: no partition {n}", disk.display()))?;
        let label = if root_hash.is_some() {
            LABELS[i]
        } else {
            EMPTY
        };
        table
            .relabel(n, uuid, label)
            .map_err(|e| format!("{}: {e}", disk.display()))?;
    }
    table
        .write(&mut f, None)
        .map_err(|e| format!("{}: {e}", disk.display()))
}

/// The bytes of lower-case or upper-case hex text.
fn unhex(h: &str) -> Option<Vec<u8>> {
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The logical sector size of the disk at `p` (sysfs), 512 for a file.
fn sector_size(p: &Path) -> u64 {
    p.file_name()
        .and_then(|n| {
            std::fs::read_to_string(format!(
                "/sys/class/block/{}/queue/logical_block_size",
                n.to_string_lossy()
            ))
            .ok()
        })
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n| n == 512 || n == 4096)
        .unwrap_or(512)
}

fn sync_dir(d: &Path) -> Result<(), String> {
    File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {}: {e}", d.display()))
}

/// Writes `root`, `verity` and `uki` (verified files) into `t`: root, verity, then the
/// UKI as `uki_name` (temporary name, sync, rename, sync the directory).
pub fn write(
    t: &Targets,
    files: [&Path; 3],
    (uki_name, root_hash): (&str, &str),
    say: &mut dyn FnMut(String),
) -> Result<(), String> {
    let [root, verity, uki] = files;
    for (src, dest) in [(root, &t.root), (verity, &t.verity)] {
        let size = std::fs::metadata(src)
            .map_err(|e| format!("reading {}: {e}", src.display()))?
            .len();
        if let Some(cap) = capacity(dest)? {
            if size > cap {
                return Err(format!(
                    "{} ({size} bytes) does not fit {} ({cap} bytes); nothing was written",
                    src.display(),
                    dest.display()
                ));
            }
        }
    }
    relabel(t, None)?;
    for (what, src, dest) in [("root", root, &t.root), ("verity", verity, &t.verity)] {
        say(format!("writing the {what} to {}", dest.display()));
        let n = copy_into(src, dest)?;
        say(format!(
            "wrote the {what} ({n} bytes) to {}",
            dest.display()
        ));
    }
    relabel(t, Some(root_hash))?;
    if t.disk.is_some() {
        say(format!(
            "labelled the slot's partitions with the ids roothash={root_hash} names"
        ));
    }
    std::fs::create_dir_all(&t.esp_dir)
        .map_err(|e| format!("creating {}: {e}", t.esp_dir.display()))?;
    let tmp = t.esp_dir.join(format!(".{uki_name}.tmp"));
    copy_into(uki, &tmp)?;
    let dest = t.esp_dir.join(uki_name);
    std::fs::rename(&tmp, &dest)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), dest.display()))?;
    sync_dir(&t.esp_dir)?;
    say(format!("wrote the UKI to {} (last)", dest.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::tests::tempfile_lite::Dir;

    #[test]
    fn root_and_verity_then_the_uki_under_its_name() {
        let d = Dir::new();
        let src = |n: &str, b: &[u8]| {
            let p = d.0.join(n);
            std::fs::write(&p, b).unwrap();
            p
        };
        let (r, v, u) = (
            src("r", b"root bytes"),
            src("v", b"tree"),
            src("u", b"MZ uki"),
        );
        let t = Targets {
            root: d.0.join("slot-root"),
            verity: d.0.join("slot-verity"),
            esp_dir: d.0.join("esp/EFI/Linux"),
            disk: None,
            partitions: None,
        };
        // A longer old root is cut to the new one.
        std::fs::write(&t.root, vec![1u8; 100]).unwrap();
        let mut lines = Vec::new();
        let hash = "ab".repeat(32);
        write(&t, [&r, &v, &u], ("slipway-2+3.efi", &hash), &mut |l| {
            lines.push(l)
        })
        .unwrap();
        assert_eq!(std::fs::read(&t.root).unwrap(), b"root bytes");
        assert_eq!(std::fs::read(&t.verity).unwrap(), b"tree");
        assert_eq!(
            std::fs::read(t.esp_dir.join("slipway-2+3.efi")).unwrap(),
            b"MZ uki"
        );
        assert!(lines.last().unwrap().ends_with("(last)"), "{lines:?}");
        assert_eq!(std::fs::read_dir(&t.esp_dir).unwrap().count(), 1);
        // Boot counting renamed it; another version's UKI stays.
        std::fs::rename(
            t.esp_dir.join("slipway-2+3.efi"),
            t.esp_dir.join("slipway-2+0-3.efi"),
        )
        .unwrap();
        std::fs::write(t.esp_dir.join("slipway-22.efi"), b"MZ").unwrap();
        remove_uki(&t, "2").unwrap();
        remove_uki(&t, "2").unwrap();
        let left: Vec<_> = std::fs::read_dir(&t.esp_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["slipway-22.efi"]);
    }

    /// A slot on a disk (a file with a GPT): `_empty` while written, then the ids of
    /// the root hash, as slipway-init reads them; the other partitions are untouched.
    #[test]
    fn the_slot_gets_the_ids_its_root_hash_names() {
        use slipway_common::gpt::{types, Partition, Table};
        use slipway_common::guid::Guid;
        let d = Dir::new();
        let disk = d.0.join("disk.img");
        let sectors = 64 * 2048;
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk)
            .unwrap();
        f.set_len(sectors * 512).unwrap();
        let part = |number: u32, type_guid: Guid| Partition {
            number,
            type_guid,
            uuid: Guid([number as u8; 16]),
            first_lba: 2048 * u64::from(number),
            last_lba: 2048 * u64::from(number) + 2047,
            attributes: 0,
            name: format!("p{number}"),
            sector_size: 512,
        };
        let parts = [
            part(1, types::ESP),
            part(2, types::ROOT_X86_64),
            part(3, types::ROOT_VERITY_X86_64),
            part(4, types::ROOT_X86_64),
            part(5, types::ROOT_VERITY_X86_64),
        ];
        Table::new(512, sectors, Guid([9; 16]), &parts)
            .unwrap()
            .write(&mut f, None)
            .unwrap();
        let t = Targets {
            root: d.0.join("r"),
            verity: d.0.join("v"),
            esp_dir: d.0.join("esp"),
            disk: Some(disk.clone()),
            partitions: Some([4, 5]),
        };
        let read = || {
            let f = File::open(&disk).unwrap();
            Table::read(&f, 512, sectors).unwrap().partitions()
        };
        relabel(&t, None).unwrap();
        let now = read();
        assert_eq!((now[3].name.as_str(), now[3].uuid), (EMPTY, Guid([4; 16])));
        assert_eq!(now[4].name, EMPTY);
        let hash = format!("{}{}", "12".repeat(16), "ef".repeat(16));
        relabel(&t, Some(&hash)).unwrap();
        let now = read();
        assert_eq!(now[3].uuid, Guid::from_uuid_bytes([0x12; 16]));
        assert_eq!(now[4].uuid, Guid::from_uuid_bytes([0xef; 16]));
        assert_eq!(
            (now[3].name.as_str(), now[4].name.as_str()),
            (LABELS[0], LABELS[1])
        );
        assert_eq!(now[..3], parts[..3]);
        assert!(relabel(&t, Some("xyz"))
            .unwrap_err()
            .contains("64 hex digits"));
    }

    #[test]
    fn uki_names_of_a_version_under_boot_counting() {
        for yes in [
            "slipway-2.efi",
            "slipway-2+3.efi",
            "slipway-2+0-3.efi",
            "slipway-2+1-1.efi",
        ] {
            assert!(is_uki_of(yes, "2"), "{yes}");
        }
        for no in [
            "slipway-22.efi",
            "slipway-2+.efi",
            "slipway-2+1-.efi",
            "slipway-2+1-1-1.efi",
            "slipway-2.1.efi",
            "slipway-2+x.efi",
            "other-2.efi",
        ] {
            assert!(!is_uki_of(no, "2"), "{no}");
        }
    }

    #[test]
    fn slots_must_be_a_and_b_with_absolute_paths() {
        let d = Dir::new();
        std::fs::create_dir_all(d.0.join("run/slipway")).unwrap();
        let p = d.0.join(SLOTS);
        let one = r#"{"root": "/r", "verity": "/v", "esp-dir": "/e"}"#;
        std::fs::write(&p, format!(r#"{{"a": {one}, "b": {one}}}"#)).unwrap();
        assert_eq!(load(&d.0).unwrap().len(), 2);
        std::fs::write(&p, format!(r#"{{"a": {one}}}"#)).unwrap();
        assert!(load(&d.0).unwrap_err().contains("expected exactly"));
        let rel = r#"{"root": "r", "verity": "/v", "esp-dir": "/e"}"#;
        std::fs::write(&p, format!(r#"{{"a": {one}, "b": {rel}}}"#)).unwrap();
        assert!(load(&d.0).unwrap_err().contains("b.root"));
    }
}
