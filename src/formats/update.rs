//! `--format update`: consumes a built host disk (`disk.raw`, its partition table) and
//! its UKI, produces `update/`, an OCI image layout holding the update payload a node's
//! agent installs into its other slot (docs/updates.md, decision 0045):
//!
//! - one artifact manifest (`artifactType` [`u::ARTIFACT_TYPE`], the empty config),
//!   whose layers are the root image, its dm-verity hash tree and the UKI, in the order
//!   a node writes them, each with a media type of its own;
//! - the manifest's annotations: the image name and version (os-release
//!   `IMAGE_VERSION`), the build time from `SOURCE_DATE_EPOCH`, the root hash the UKI's
//!   `roothash=` pins, the root file system kind, the architecture, the kernel release,
//!   the size of each blob and the boot attempts the node gives it (`disk.tries`);
//! - `index.json` naming the manifest by the version (`org.opencontainers.image.ref.name`).
//!
//! Every byte is a function of the disk and the UKI (no time stamp of its own, fields in
//! a fixed order, maps sorted), so two builds give the same layout. `slipway push`
//! uploads it like any OCI layout.

use crate::output::{HostDisk, Output, PartitionInfo};
use crate::writers::oci::spec::{self, Descriptor, Index, Manifest};
use anyhow::{Context as _, Result};
use slipway_common::update as u;
use std::collections::BTreeMap;
use std::path::Path;

/// The output directory's name.
pub const DIR: &str = "update";

/// What the payload is made of.
pub struct Inputs<'a> {
    /// The image name (`image.name`).
    pub image: &'a str,
    /// The image version (`image.version`, os-release `IMAGE_VERSION`).
    pub version: &'a str,
    /// The Debian architecture.
    pub architecture: &'a str,
    /// Boot attempts before a fallback (`disk.tries`).
    pub tries: u32,
    /// The host disk as built.
    pub disk: &'a HostDisk,
    /// `disk.raw`.
    pub raw: &'a Path,
    /// `uki.efi`.
    pub uki: &'a Path,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
}

/// The root partition and its verity partition of `disk` (GPT names `root-ARCH` and
/// `root-ARCH-verity`, decision 0014).
fn root_partitions(disk: &HostDisk) -> Result<(&PartitionInfo, &PartitionInfo)> {
    let is_verity = |p: &&PartitionInfo| p.name.starts_with("root-") && p.name.ends_with("-verity");
    let roots: Vec<&PartitionInfo> = disk
        .partitions
        .iter()
        .filter(|p| p.name.starts_with("root-") && !is_verity(p))
        .collect();
    let verity: Vec<&PartitionInfo> = disk.partitions.iter().filter(is_verity).collect();
    match (roots.as_slice(), verity.as_slice()) {
        ([r], [v]) => Ok((r, v)),
        _ => anyhow::bail!(
            "the host disk has {} root and {} verity partitions; an update payload is made \
             from exactly one of each",
            roots.len(),
            verity.len()
        ),
    }
}

/// Stores `bytes` as a blob under `blobs`; returns its descriptor.
fn blob_bytes(blobs: &Path, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
    let d = Descriptor::of(media_type, bytes);
    crate::io::atomic::write(&blobs.join(d.hex()), bytes)?;
    Ok(d)
}

/// Copies partition `p` of `raw` into a blob under `blobs`; returns its descriptor.
fn blob_of_partition(
    raw: &Path,
    p: &PartitionInfo,
    blobs: &Path,
    media_type: &str,
) -> Result<Descriptor> {
    let tmp = blobs.join(format!(".partition-{}", p.name));
    crate::formats::iso::extract(raw, p, &tmp)?;
    let (hex, size) = crate::io::hash::sha256_file(&tmp)?;
    let dest = blobs.join(&hex);
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest: format!("sha256:{hex}"),
        size,
        platform: None,
        artifact_type: None,
        annotations: BTreeMap::new(),
        urls: Vec::new(),
    })
}

/// The manifest's annotations.
fn annotations(inp: &Inputs, layers: &[Descriptor]) -> BTreeMap<String, String> {
    let size = |t: &str| {
        layers
            .iter()
            .find(|l| l.media_type == t)
            .map_or(0, |l| l.size)
            .to_string()
    };
    [
        (u::TITLE, inp.image.to_string()),
        (u::VERSION, inp.version.to_string()),
        (u::CREATED, spec::rfc3339(inp.epoch)),
        (u::ROOT_HASH, inp.disk.root_hash.clone()),
        (u::ROOT_FS, inp.disk.root_fs.clone()),
        (u::ARCHITECTURE, inp.architecture.to_string()),
        (u::KERNEL, inp.disk.kernel.clone()),
        (u::ROOT_SIZE, size(u::ROOT_TYPE)),
        (u::VERITY_SIZE, size(u::VERITY_TYPE)),
        (u::UKI_SIZE, size(u::UKI_TYPE)),
        (u::TRIES, inp.tries.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A record of the blob `d` in `blobs`, as the build report lists it.
fn record(blobs: &Path, kind: &str, d: &Descriptor) -> Output {
    Output {
        kind: kind.into(),
        path: blobs.join(d.hex()).display().to_string(),
        size: d.size,
        sha256: d.hex().to_string(),
    }
}

/// Writes `update/` into `out`; returns the records of its manifest and blobs.
pub fn write(inp: &Inputs, out: &Path) -> Result<Vec<Output>> {
    let dir = out.join(DIR);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let (root, verity) = root_partitions(inp.disk)?;
    let uki = std::fs::read(inp.uki).with_context(|| format!("reading {}", inp.uki.display()))?;
    let layers = vec![
        blob_of_partition(inp.raw, root, &blobs, u::ROOT_TYPE)?,
        blob_of_partition(inp.raw, verity, &blobs, u::VERITY_TYPE)?,
        blob_bytes(&blobs, u::UKI_TYPE, &uki)?,
    ];
    let titles = ["root.img", "verity.img", "uki.efi"];
    let layers: Vec<Descriptor> = layers
        .into_iter()
        .zip(titles)
        .map(|(mut d, t)| {
            d.annotations.insert(u::TITLE.into(), t.into());
            d
        })
        .collect();
    let config = blob_bytes(&blobs, spec::EMPTY, b"{}")?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: spec::MANIFEST.into(),
        artifact_type: Some(u::ARTIFACT_TYPE.into()),
        config,
        layers: layers.clone(),
        subject: None,
        annotations: annotations(inp, &layers),
    };
    let mut entry = blob_bytes(&blobs, spec::MANIFEST, &spec::to_json(&manifest)?)?;
    entry.artifact_type = Some(u::ARTIFACT_TYPE.into());
    entry
        .annotations
        .insert(spec::REF_NAME.into(), inp.version.into());
    let index = Index {
        schema_version: 2,
        media_type: spec::INDEX.into(),
        manifests: vec![entry.clone()],
        annotations: BTreeMap::new(),
    };
    crate::io::atomic::write(&dir.join("index.json"), &spec::to_json(&index)?)?;
    crate::io::atomic::write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut outputs = vec![record(&blobs, "update-manifest", &entry)];
    for (kind, d) in ["update-root", "update-verity", "update-uki"]
        .iter()
        .zip(&layers)
    {
        outputs.push(record(&blobs, kind, d));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, offset: u64, content: u64) -> PartitionInfo {
        PartitionInfo {
            name: name.into(),
            type_guid: String::new(),
            uuid: String::new(),
            offset,
            size: 1 << 20,
            content,
        }
    }

    fn disk(parts: Vec<PartitionInfo>) -> HostDisk {
        HostDisk {
            kernel: "6.12.0-1-cloud-amd64".into(),
            root_hash: "ab".repeat(32),
            cmdline: String::new(),
            root_fs: "squashfs".into(),
            partitions: parts,
            initramfs_modules: Vec::new(),
            disk_size: 4 << 20,
        }
    }

    /// The layout holds each partition's content and the UKI as blobs in write order,
    /// the annotations carry version, root hash and sizes, and a second write gives the
    /// same bytes.
    #[test]
    fn the_layout_holds_root_verity_and_uki_in_write_order_and_repeats() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        let mut bytes = vec![0u8; 4 << 20];
        bytes[(1 << 20)..(1 << 20) + 5000].fill(7);
        bytes[(2 << 20)..(2 << 20) + 300].fill(9);
        std::fs::write(&raw, &bytes).unwrap();
        let uki = d.path().join("uki.efi");
        std::fs::write(&uki, b"MZ not really a UKI").unwrap();
        let disk = disk(vec![
            part("esp", 0, 100),
            part("root-x86-64", 1 << 20, 5000),
            part("root-x86-64-verity", 2 << 20, 300),
            // Slot B of a two-slot disk: not part of the payload.
            part("_empty", 3 << 20, 0),
            part("_empty", 3 << 20, 0),
            part("var", 3 << 20, 100),
        ]);
        let inp = Inputs {
            image: "containerd-host",
            version: "7",
            architecture: "amd64",
            tries: 3,
            disk: &disk,
            raw: &raw,
            uki: &uki,
            epoch: 1_700_000_000,
        };
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let out_a = write(&inp, &a).unwrap();
        let out_b = write(&inp, &b).unwrap();
        let digests = |o: &[Output]| o.iter().map(|x| x.sha256.clone()).collect::<Vec<_>>();
        assert_eq!(digests(&out_a), digests(&out_b));
        let index: Index =
            serde_json::from_slice(&std::fs::read(a.join("update/index.json")).unwrap()).unwrap();
        let entry = &index.manifests[0];
        assert_eq!(entry.annotations[spec::REF_NAME], "7");
        let m: Manifest = serde_json::from_slice(
            &std::fs::read(a.join("update/blobs/sha256").join(entry.hex())).unwrap(),
        )
        .unwrap();
        let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(types, u::WRITE_ORDER);
        assert_eq!(m.annotations[u::VERSION], "7");
        assert_eq!(m.annotations[u::ROOT_HASH], "ab".repeat(32));
        assert_eq!(m.annotations[u::ROOT_SIZE], "5000");
        assert_eq!(m.annotations[u::VERITY_SIZE], "300");
        assert_eq!(m.annotations[u::TRIES], "3");
        let root = std::fs::read(a.join("update/blobs/sha256").join(m.layers[0].hex())).unwrap();
        assert_eq!(root, vec![7u8; 5000]);
        assert_eq!(m.layers[2].size, 19);
        // No leftovers beside the blobs.
        let names: Vec<String> = std::fs::read_dir(a.join("update/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        assert_eq!(names.len(), 5);
    }

    #[test]
    fn a_disk_with_two_roots_is_refused() {
        let disk = disk(vec![
            part("root-x86-64", 0, 1),
            part("root-x86-64", 1, 1),
            part("root-x86-64-verity", 2, 1),
        ]);
        let e = root_partitions(&disk).unwrap_err().to_string();
        assert!(e.contains("2 root and 1 verity"), "{e}");
    }
}
