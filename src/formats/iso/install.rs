//! `/slipway/install.json`: consumes the host disk's partition table and the payload
//! files written beside it, produces the installer's plan (schema in
//! docs/decisions/0038-iso-layout.md): each partition in disk order with its role, type,
//! name, size and the file (or, for the ESP, one file per logical block size) that fills
//! it, with the file's size and sha256. Root and verity keep the UUIDs derived from the
//! root hash; the ESP and /var get fresh ones at install, so they carry none.

use crate::output::PartitionInfo;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;

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
    /// `esp`, `root`, `verity` or `var`.
    pub role: &'static str,
    /// GPT type GUID.
    pub type_guid: String,
    /// GPT name.
    pub name: String,
    /// The partition UUID (root and verity only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The partition's size in bytes.
    pub size: u64,
    /// The file that fills it (all but the ESP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
    /// The ESP: one file per logical block size ("512", "4096").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, FileRef>>,
}

/// A payload file in `/slipway/`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileRef {
    /// Its name in `/slipway/`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// sha256 (hex).
    pub sha256: String,
}

/// The role of each of the disk's four partitions, in table order.
pub const ROLES: [&str; 4] = ["esp", "root", "verity", "var"];

/// The plan for `partitions` (the host disk's, in table order) filled by `files` (one
/// per role, in the same order; the ESP's two: 512 and 4096).
pub fn plan(
    image: &str,
    version: &str,
    root_hash: &str,
    partitions: &[PartitionInfo],
    esp: [FileRef; 2],
    files: [FileRef; 3],
) -> Result<Install> {
    if partitions.len() != ROLES.len() {
        bail!(
            "the host disk has {} partitions; the installer knows {}",
            partitions.len(),
            ROLES.len()
        );
    }
    let [esp512, esp4096] = esp;
    let mut others = files.into_iter();
    let mut parts = Vec::new();
    for (p, role) in partitions.iter().zip(ROLES) {
        let keeps_uuid = matches!(role, "root" | "verity");
        let (file, files) = if role == "esp" {
            let m = BTreeMap::from([
                ("512".to_string(), esp512.clone()),
                ("4096".to_string(), esp4096.clone()),
            ]);
            (None, Some(m))
        } else {
            (others.next(), None)
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
        }
    }

    #[test]
    fn the_plan_is_kebab_case_in_disk_order() {
        let parts: Vec<PartitionInfo> = ["esp", "root-x86-64", "root-x86-64-verity", "var"]
            .iter()
            .enumerate()
            .map(|(i, n)| PartitionInfo {
                name: n.to_string(),
                type_guid: format!("type-{i}"),
                uuid: format!("uuid-{i}"),
                offset: (i as u64 + 1) << 20,
                size: 1 << 20,
                content: 1000,
            })
            .collect();
        let p = plan(
            "img",
            "1.0",
            "ab",
            &parts,
            [f("esp-512.img", 1 << 20), f("esp-4096.img", 1 << 20)],
            [
                f("root.img", 1000),
                f("verity.img", 10),
                f("var.img", 1 << 20),
            ],
        )
        .unwrap();
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["schema-version"], 1);
        assert_eq!(j["root-hash"], "ab");
        let roles: Vec<_> = j["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ROLES);
        assert_eq!(j["partitions"][0]["files"]["4096"]["path"], "esp-4096.img");
        assert!(j["partitions"][0].get("uuid").is_none());
        assert!(j["partitions"][3].get("uuid").is_none());
        assert_eq!(j["partitions"][1]["uuid"], "uuid-1");
        assert_eq!(j["partitions"][2]["file"]["path"], "verity.img");
        assert_eq!(j["partitions"][1]["type-guid"], "type-1");
        let too_big = plan(
            "img",
            "1.0",
            "ab",
            &parts,
            [f("esp-512.img", 1 << 20), f("esp-4096.img", 1 << 20)],
            [
                f("root.img", 2 << 20),
                f("verity.img", 10),
                f("var.img", 1 << 20),
            ],
        );
        assert!(too_big.is_err());
    }
}
