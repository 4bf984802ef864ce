//! `/slipway/install.json`: consumes the host disk's partition table and the payload
//! files written beside it, produces the installer's plan (schema in
//! docs/decisions/0038-iso-layout.md): each partition in disk order with its role, type,
//! name, size and the file (or, for the ESP, one file per logical block size) that fills
//! it, with the file's size and sha256. Root and verity keep the UUIDs derived from the
//! root hash; the ESP and /var get fresh ones at install, so they carry none. A
//! two-slot disk's slot B (role `empty`: root and verity labelled `_empty`) keeps its
//! derived UUIDs too and has no file: the installer creates it and writes nothing.
//!
//! Each file also lists its data extents (the 64 KiB pieces that are not all zeros,
//! merged into runs) with the sha256 of those bytes in order: the installer reads,
//! writes and reads back only the extents and zeroes the rest, so an empty /var or the
//! ESP's empty tail costs no copying under TCG (docs/bare-metal.md).

use crate::output::PartitionInfo;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The schema's version.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Install {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The image's name.
    pub image: String,
    /// The image's version.
    pub version: String,
    /// The dm-verity root hash (hex).
    pub root_hash: String,
    /// The partitions, in disk order.
    pub partitions: Vec<Part>,
}

/// One partition of the installed disk.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Part {
    /// `esp`, `root`, `verity`, `empty` (slot B) or `var`.
    pub role: &'static str,
    /// GPT type GUID.
    pub type_guid: String,
    /// GPT name.
    pub name: String,
    /// The partition UUID (root, verity and empty only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The partition's size in bytes.
    pub size: u64,
    /// The file that fills it (all but the ESP and empty partitions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
    /// The ESP: one file per logical block size ("512", "4096").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, FileRef>>,
}

/// A payload file in `/slipway/`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct FileRef {
    /// Its name in `/slipway/`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// sha256 (hex) of the whole file.
    pub sha256: String,
    /// The data extents, `[offset, length]` in bytes, sorted, each a multiple of
    /// [`EXTENT`] from a multiple of it (the last may end at the file's end); the rest
    /// of the file is zeros.
    pub data: Vec<[u64; 2]>,
    /// sha256 (hex) of the extents' bytes, in order.
    pub data_sha256: String,
}

/// The granularity of data extents.
pub const EXTENT: usize = 64 << 10;

/// The [`FileRef`] of `path` (named `name` in `/slipway/`): size, sha256, data extents
/// and their sha256, in one read.
pub fn file_ref(path: &Path, name: &str) -> Result<FileRef> {
    let what = || format!("reading {}", path.display());
    let mut f = std::fs::File::open(path).with_context(what)?;
    let (mut all, mut data) = (Sha256::new(), Sha256::new());
    let mut extents: Vec<[u64; 2]> = Vec::new();
    let mut buf = vec![0u8; EXTENT];
    let mut at = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf).with_context(what)?;
        if n == 0 {
            break;
        }
        let piece = &buf[..n];
        all.update(piece);
        if piece.iter().any(|b| *b != 0) {
            data.update(piece);
            match extents.last_mut() {
                Some(e) if e[0] + e[1] == at => e[1] += n as u64,
                _ => extents.push([at, n as u64]),
            }
        }
        at += n as u64;
    }
    Ok(FileRef {
        path: name.to_string(),
        size: at,
        sha256: crate::io::hash::hex(&all.finalize()),
        data: extents,
        data_sha256: crate::io::hash::hex(&data.finalize()),
    })
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The roles of a one-slot disk's partitions, in table order.
pub const ROLES: [&str; 4] = ["esp", "root", "verity", "var"];
/// The roles of a two-slot disk's partitions, in table order.
pub const ROLES_SLOTS: [&str; 6] = ["esp", "root", "verity", "empty", "empty", "var"];

/// The role of host disk partition `p` (by its GPT name, decision 0014 and 0047).
pub fn role_of(p: &PartitionInfo) -> &'static str {
    match p.name.as_str() {
        "esp" => "esp",
        "var" => "var",
        crate::disk::layout::EMPTY_LABEL => "empty",
        n if n.ends_with("-verity") => "verity",
        _ => "root",
    }
}

/// Checks that `partitions` are a one- or two-slot host disk's.
pub fn check_roles(partitions: &[PartitionInfo]) -> Result<()> {
    let roles: Vec<&str> = partitions.iter().map(role_of).collect();
    if roles != ROLES && roles != ROLES_SLOTS {
        bail!(
            "the host disk's partitions are {roles:?}; the installer knows {ROLES:?} and {ROLES_SLOTS:?}"
        );
    }
    Ok(())
}

/// The plan for `partitions` (the host disk's, in table order) filled by `files` (one
/// per role with a file, in the same order; the ESP's two: 512 and 4096).
pub fn plan(
    image: &str,
    version: &str,
    root_hash: &str,
    partitions: &[PartitionInfo],
    esp: [FileRef; 2],
    files: [FileRef; 3],
) -> Result<Install> {
    check_roles(partitions)?;
    let [esp512, esp4096] = esp;
    let mut others = files.into_iter();
    let mut parts = Vec::new();
    for p in partitions {
        let role = role_of(p);
        let keeps_uuid = matches!(role, "root" | "verity" | "empty");
        let (file, files) = match role {
            "esp" => {
                let m = BTreeMap::from([
                    ("512".to_string(), esp512.clone()),
                    ("4096".to_string(), esp4096.clone()),
                ]);
                (None, Some(m))
            }
            "empty" => (None, None),
            _ => (others.next(), None),
        };
        for f in file.iter().chain(files.iter().flat_map(|m| m.values())) {
            if f.size > p.size {
                bail!(
                    "{} ({} bytes) does not fit the {role} partition ({} bytes)",
                    f.path,
                    f.size,
                    p.size
                );
            }
        }
        parts.push(Part {
            role,
            type_guid: p.type_guid.clone(),
            name: p.name.clone(),
            uuid: keeps_uuid.then(|| p.uuid.clone()),
            size: p.size,
            file,
            files,
        });
    }
    Ok(Install {
        schema_version: SCHEMA_VERSION,
        image: image.to_string(),
        version: version.to_string(),
        root_hash: root_hash.to_string(),
        partitions: parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64) -> FileRef {
        FileRef {
            path: path.into(),
            size,
            sha256: "00".repeat(32),
            data: vec![[0, size]],
            data_sha256: "00".repeat(32),
        }
    }

    #[test]
    fn extents_skip_zero_pieces_and_hash_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("var.img");
        // data, two zero pieces, data, one zero piece, a short data tail.
        let mut bytes = vec![0u8; 6 * EXTENT + 100];
        bytes[5] = 1;
        bytes[3 * EXTENT + 7] = 2;
        bytes[3 * EXTENT + EXTENT - 1] = 3;
        bytes[6 * EXTENT + 99] = 4;
        std::fs::write(&p, &bytes).unwrap();
        let r = file_ref(&p, "var.img").unwrap();
        let e = EXTENT as u64;
        assert_eq!(r.size, bytes.len() as u64);
        assert_eq!(r.data, [[0, e], [3 * e, e], [6 * e, 100]]);
        assert_eq!(r.sha256, crate::io::hash::sha256_hex(&bytes));
        let mut data = bytes[..EXTENT].to_vec();
        data.extend_from_slice(&bytes[3 * EXTENT..4 * EXTENT]);
        data.extend_from_slice(&bytes[6 * EXTENT..]);
        assert_eq!(r.data_sha256, crate::io::hash::sha256_hex(&data));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["data-sha256"], r.data_sha256.as_str());
        std::fs::write(&p, vec![0u8; 3 * EXTENT]).unwrap();
        assert!(file_ref(&p, "var.img").unwrap().data.is_empty());
    }

    /// Partitions named `names`, in disk order (an `_empty` one has no content).
    fn parts_named(names: &[&str]) -> Vec<PartitionInfo> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| PartitionInfo {
                name: n.to_string(),
                type_guid: format!("type-{i}"),
                uuid: format!("uuid-{i}"),
                offset: (i as u64 + 1) << 20,
                size: 1 << 20,
                content: if *n == "_empty" { 0 } else { 1000 },
            })
            .collect()
    }

    /// The plan of `parts` with a root image of `root` bytes.
    fn plan_of(parts: &[PartitionInfo], root: u64) -> Result<Install> {
        plan(
            "img",
            "1.0",
            "ab",
            parts,
            [f("esp-512.img", 1 << 20), f("esp-4096.img", 1 << 20)],
            [
                f("root.img", root),
                f("verity.img", 10),
                f("var.img", 1 << 20),
            ],
        )
    }

    /// The roles of a plan's partitions, as JSON says them.
    fn roles(j: &serde_json::Value) -> Vec<String> {
        j["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["role"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_plan_is_kebab_case_in_disk_order() {
        let parts = parts_named(&["esp", "root-x86-64", "root-x86-64-verity", "var"]);
        let p = plan_of(&parts, 1000).unwrap();
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["schema-version"], 1);
        assert_eq!(j["root-hash"], "ab");
        assert_eq!(roles(&j), ROLES);
        assert_eq!(j["partitions"][0]["files"]["4096"]["path"], "esp-4096.img");
        assert!(j["partitions"][0].get("uuid").is_none());
        assert!(j["partitions"][3].get("uuid").is_none());
        assert_eq!(j["partitions"][1]["uuid"], "uuid-1");
        assert_eq!(j["partitions"][2]["file"]["path"], "verity.img");
        assert_eq!(j["partitions"][1]["type-guid"], "type-1");
        let too_big = plan_of(&parts, 2 << 20);
        assert!(too_big.is_err());
    }

    #[test]
    fn slot_b_keeps_its_uuids_and_has_no_file() {
        let names = [
            "esp",
            "root-x86-64",
            "root-x86-64-verity",
            "_empty",
            "_empty",
            "var",
        ];
        let parts = parts_named(&names);
        let p = plan_of(&parts, 1000).unwrap();
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(roles(&j), ROLES_SLOTS);
        for i in [3, 4] {
            let e = &j["partitions"][i];
            assert_eq!(e["uuid"], format!("uuid-{i}"));
            assert_eq!(e["name"], "_empty");
            assert!(e.get("file").is_none() && e.get("files").is_none(), "{e}");
        }
        assert_eq!(j["partitions"][5]["file"]["path"], "var.img");
        assert!(check_roles(&parts[..5]).is_err());
    }
}
