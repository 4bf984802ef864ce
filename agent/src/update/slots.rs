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
}

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

/// Removes the UKI `name` from `t`'s ESP directory, if it is there.
pub fn remove_uki(t: &Targets, name: &str) -> Result<(), String> {
    let p = t.esp_dir.join(name);
    match std::fs::remove_file(&p) {
        Ok(()) => sync_dir(&t.esp_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", p.display())),
    }
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
    uki_name: &str,
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
    for (what, src, dest) in [("root", root, &t.root), ("verity", verity, &t.verity)] {
        let n = copy_into(src, dest)?;
        say(format!(
            "wrote the {what} ({n} bytes) to {}",
            dest.display()
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
        };
        // A longer old root is cut to the new one.
        std::fs::write(&t.root, vec![1u8; 100]).unwrap();
        let mut lines = Vec::new();
        write(&t, [&r, &v, &u], "slipway-2.efi", &mut |l| lines.push(l)).unwrap();
        assert_eq!(std::fs::read(&t.root).unwrap(), b"root bytes");
        assert_eq!(std::fs::read(&t.verity).unwrap(), b"tree");
        assert_eq!(
            std::fs::read(t.esp_dir.join("slipway-2.efi")).unwrap(),
            b"MZ uki"
        );
        assert!(lines[2].ends_with("(last)"), "{lines:?}");
        assert_eq!(std::fs::read_dir(&t.esp_dir).unwrap().count(), 1);
        remove_uki(&t, "slipway-2.efi").unwrap();
        remove_uki(&t, "slipway-2.efi").unwrap();
        assert_eq!(std::fs::read_dir(&t.esp_dir).unwrap().count(), 0);
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
