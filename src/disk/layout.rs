//! Laying out `disk.raw`: consumes the partitions' contents (ESP and /var as files, the
//! root and its verity tree in memory) and the root slot's size, produces the GPT disk
//! (UAPI Discoverable Partitions Specification types; root and verity UUIDs are the
//! halves of the root hash, the other ids derive from it), written sparse and atomically.
//!
//! One slot: `esp`, root, verity, `var`. Two slots (decision 0047): `esp`, root A,
//! verity A, root B, verity B, `var`; slot B has the root and verity types of slot A,
//! the label `_empty` (the UAPI convention for a partition that holds nothing yet, which
//! discovery skips), UUIDs derived from the root hash, and nothing written into it (a
//! hole in the sparse image). /var is last, so that it can grow to the end of the disk.

use crate::disk::gpt::{self, Guid, Want};
use crate::disk::image::derive;
use crate::output::PartitionInfo;
use crate::recipe::Recipe;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

fn mib_up(n: u64) -> u64 {
    n.div_ceil(gpt::ALIGN) * gpt::ALIGN
}

/// The four partitions' contents, in table order.
pub struct Contents<'a> {
    /// The ESP image, streamed from its file.
    pub esp: &'a Path,
    /// The root file system image.
    pub root: &'a [u8],
    /// Its verity hash tree.
    pub verity: &'a [u8],
    /// The /var file system image, streamed from its file.
    pub var: &'a Path,
    /// The partition sizes of each root slot; `None`: one slot, sized to its contents.
    pub slot: Option<crate::disk::slots::SlotSizes>,
}

/// The label of a root or verity partition that holds nothing yet.
pub const EMPTY_LABEL: &str = "_empty";

/// What goes into one partition: bytes in memory, a file copied in pieces, or nothing.
enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
    Empty,
}

impl Source<'_> {
    fn len(&self) -> Result<u64> {
        match self {
            Source::Empty => Ok(0),
            Source::Bytes(b) => Ok(b.len() as u64),
            Source::File(p) => Ok(std::fs::metadata(p)
                .with_context(|| format!("reading {}", p.display()))?
                .len()),
        }
    }

    fn write_at(&self, f: &std::fs::File, offset: u64, what: &str) -> Result<()> {
        let what = &format!("{what} into the disk image");
        match self {
            Source::Empty => Ok(()),
            Source::Bytes(b) => crate::io::sparse::write_at(f, b, offset, what),
            Source::File(p) => crate::io::sparse::copy_at(f, p, offset, what),
        }
    }
}

/// Lays out the GPT of `r`'s disk around `c` (ESP and /var of `sizes`; partition UUIDs
/// from the root hash `hash_bytes`, the disk GUID from `disk_id`) and writes `disk.raw`
/// into `out`, sparse and atomic. Returns the file, its partitions, sha256 and size.
pub fn write_gpt_disk(
    r: &Recipe,
    c: &Contents,
    sizes: (u64, u64),
    hash_bytes: &[u8],
    disk_id: &[u8],
    out: &Path,
) -> Result<(PathBuf, Vec<PartitionInfo>, String, u64)> {
    let (root_type, verity_type) = match r.debian.architecture.as_str() {
        "amd64" => (gpt::types::ROOT_X86_64, gpt::types::ROOT_VERITY_X86_64),
        "arm64" => (gpt::types::ROOT_ARM64, gpt::types::ROOT_VERITY_ARM64),
        a => {
            return Err(r.origin_of("debian.architecture").err(format!(
                "host images for {a} are not supported yet (amd64, arm64)"
            )))
        }
    };
    let wants = wants(r, c, sizes, hash_bytes, (root_type, verity_type));
    let layout = gpt::layout(Guid::from_hash(disk_id), &wants, 0)?;
    let disk_path = out.join("disk.raw");
    let mut af = crate::io::atomic::AtomicFile::create(&disk_path)?;
    {
        let file = af.file();
        file.set_len(layout.size)
            .with_context(|| format!("sizing {}", disk_path.display()))?;
        layout.write_table(file)?;
    }
    let mut contents = vec![
        (Source::File(c.esp), "the ESP"),
        (Source::Bytes(c.root), "the root file system"),
        (Source::Bytes(c.verity), "the verity hash tree"),
    ];
    if c.slot.is_some() {
        contents.push((Source::Empty, "slot B's root"));
        contents.push((Source::Empty, "slot B's verity tree"));
    }
    contents.push((Source::File(c.var), "the /var file system"));
    let mut partitions = Vec::new();
    for (p, (data, what)) in layout.partitions.iter().zip(contents) {
        let len = data.len()?;
        if len > p.size() {
            bail!("{what} ({len} bytes) does not fit its partition");
        }
        data.write_at(af.file(), p.offset(), what)?;
        partitions.push(PartitionInfo {
            name: p.name.clone(),
            type_guid: p.type_guid.to_text(),
            uuid: p.uuid.to_text(),
            offset: p.offset(),
            size: p.size(),
            content: len,
        });
    }
    af.commit()?;
    let (disk_sha, disk_size) = crate::io::hash::sha256_sparse_file(&disk_path)?;
    Ok((disk_path, partitions, disk_sha, disk_size))
}

/// The partitions of `r`'s disk (see the module doc) for the contents `c`, ESP and /var
/// of `sizes`, ids from the root hash `hash_bytes`, root and verity of `types`.
fn wants(
    r: &Recipe,
    c: &Contents,
    sizes: (u64, u64),
    hash_bytes: &[u8],
    (root_type, verity_type): (Guid, Guid),
) -> Vec<Want> {
    let half = |h: &[u8]| {
        let mut b = [0u8; 16];
        b.copy_from_slice(h);
        Guid::from_uuid_bytes(b)
    };
    let derived = |what: &[u8]| Guid::from_hash(&derive(&[what, hash_bytes]));
    const READ_ONLY: u64 = 1 << 60;
    let suffix = if r.debian.architecture == "arm64" {
        "arm64"
    } else {
        "x86-64"
    };
    let (root_size, verity_size) = match c.slot {
        Some(s) => (s.root, s.verity),
        None => (mib_up(c.root.len() as u64), mib_up(c.verity.len() as u64)),
    };
    let mut wants = vec![
        Want {
            type_guid: gpt::types::ESP,
            uuid: derived(b"slipway-esp"),
            name: "esp".into(),
            size: sizes.0,
            attributes: 0,
        },
        Want {
            type_guid: root_type,
            uuid: half(&hash_bytes[..16]),
            name: format!("root-{suffix}"),
            size: root_size,
            attributes: READ_ONLY,
        },
        Want {
            type_guid: verity_type,
            uuid: half(&hash_bytes[16..]),
            name: format!("root-{suffix}-verity"),
            size: verity_size,
            attributes: READ_ONLY,
        },
    ];
    if c.slot.is_some() {
        for (type_guid, what, size) in [
            (root_type, &b"slipway-empty-root"[..], root_size),
            (verity_type, &b"slipway-empty-verity"[..], verity_size),
        ] {
            wants.push(Want {
                type_guid,
                uuid: derived(what),
                name: EMPTY_LABEL.into(),
                size,
                attributes: READ_ONLY,
            });
        }
    }
    wants.push(Want {
        type_guid: gpt::types::VAR,
        uuid: derived(b"slipway-var"),
        name: "var".into(),
        size: sizes.1,
        attributes: 0,
    });
    wants
}
