//! The native squashfs writer: consumes the image [`Tree`] and produces a squashfs 4.0
//! image compressed with zstd, without staging the tree on the host's file system and
//! without any host tool, so it needs no root and its bytes are a function of the tree
//! and the [`Options`] alone (the zstd library is pinned by Cargo.lock).
//!
//! It carries what the tree holds: owners, modes (setuid, setgid, sticky), mtimes,
//! xattrs (`user.`, `trusted.`, `security.`), hard links (one inode, its link count),
//! symlinks, device nodes, FIFOs, and holes (all-zero blocks are not stored). Like
//! mksquashfs it packs files smaller than a block into fragment blocks, shares the data
//! of identical files, and writes the NFS export table.
//!
//! The image, in order (spec: the kernel's `Documentation/filesystems/squashfs.rst`):
//! superblock, zstd options (when the level is not zstd's default), data and fragment
//! blocks, inode table, directory table, fragment table, export table, id table, xattr
//! tables; padded to 4 KiB. Each lookup table is its metadata blocks followed by their
//! positions, and ends where the next begins, as the kernel checks.

mod compress;
mod data;
mod dir;
mod emit;
mod format;
mod inode;
mod memo;
mod metadata;
mod plan;
mod table;
mod xattr;

use crate::tree::{Entry, Kind, Tree};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

/// The host image root's zstd level: 50x faster to write than xz for 17% more bytes
/// (docs/decisions/0016-host-image-root.md).
pub const ROOT_ZSTD_LEVEL: i32 = 3;

/// Which modification time inodes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// Each entry's own mtime, clamped to the epoch (mksquashfs's `SOURCE_DATE_EPOCH`
    /// on a tree staged with its times).
    Clamped,
    /// Every inode the epoch: what the host image got from mksquashfs, whose staged
    /// tree's times were all later than the epoch.
    Epoch,
}

/// How to write the image.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// zstd level, 1 to 22.
    pub level: i32,
    /// `SOURCE_DATE_EPOCH`: the creation time, and the latest mtime.
    pub epoch: u64,
    /// Which mtimes inodes get.
    pub times: Times,
    /// Put the tails of files larger than a block into fragments too (mksquashfs
    /// `-tailends`; off by default there and here).
    pub tail_ends: bool,
    /// The block memo to take unchanged blocks from and to keep this image's blocks in
    /// (see `memo.rs`): a rebuild compresses only what changed. The bytes are the same.
    pub memo: Option<std::path::PathBuf>,
}

impl Options {
    /// The host image root's choices (those of its former mksquashfs call): 128 KiB
    /// blocks, zstd level [`ROOT_ZSTD_LEVEL`], every time the epoch, no tail packing.
    pub fn root(epoch: u64) -> Self {
        Options {
            block_size: 131072,
            level: ROOT_ZSTD_LEVEL,
            epoch,
            times: Times::Epoch,
            tail_ends: false,
            memo: None,
        }
    }

    fn check(&self) -> Result<u32> {
        if !self.block_size.is_power_of_two() || !(4096..=1 << 20).contains(&self.block_size) {
            bail!(
                "squashfs block size {} is not a power of two from 4 KiB to 1 MiB",
                self.block_size
            );
        }
        if !(1..=22).contains(&self.level) {
            bail!("zstd level {} is not from 1 to 22", self.level);
        }
        u32::try_from(self.epoch)
            .with_context(|| format!("epoch {} does not fit squashfs's 32-bit times", self.epoch))
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the file system (the superblock's `bytes_used`).
    pub bytes_used: u64,
    /// Bytes written, padded to 4 KiB.
    pub size: u64,
    /// Number of inodes.
    pub inodes: u32,
    /// Number of fragment blocks.
    pub fragments: u32,
    /// Number of distinct owners and groups.
    pub ids: u16,
    /// Number of distinct xattr sets.
    pub xattr_sets: u32,
    /// Files that share an identical earlier file's data.
    pub duplicates: u64,
    /// Bytes of holes, not stored.
    pub sparse: u64,
}

/// Writes `tree` as a squashfs image into `out`, from its current position.
pub fn write<W: Write + Seek>(tree: &Tree, out: &mut W, opts: &Options) -> Result<Summary> {
    let epoch = opts.check()?;
    let base = out
        .stream_position()
        .context("finding the squashfs image's start")?;
    let plan = plan::Plan::new(tree, Entry::dir(0o755, opts.epoch))
        .context("planning the squashfs image")?;
    let mut sink = data::Sink::new(BufWriter::with_capacity(1 << 20, &mut *out), 0);
    sink.put(&[0u8; format::SUPERBLOCK_SIZE])?;
    let mut flags = format::flags::DUPLICATES | format::flags::EXPORTABLE;
    if opts.tail_ends {
        flags |= format::flags::ALWAYS_FRAGMENTS;
    }
    if opts.level != format::ZSTD_DEFAULT_LEVEL {
        // One uncompressed metadata block holding the level.
        flags |= format::flags::COMPRESSOR_OPTIONS;
        sink.put(&(4 | format::METADATA_UNCOMPRESSED).to_le_bytes())?;
        sink.put(&opts.level.to_le_bytes())?;
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut data = data::DataWriter::new(opts.block_size, opts.level, opts.tail_ends, threads)?;
    if let Some(p) = &opts.memo {
        data = data.with_memo(memo::Memo::open(p, opts.block_size, opts.level)?);
    }
    let mut content = HashMap::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        if let (true, Kind::File(c)) = (n.target == i, &plan.entry(i).kind) {
            let at = data
                .file(&mut sink, c.as_slice())
                .with_context(|| format!("writing the data of /{}", n.path))?;
            content.insert(i, at);
        }
    }
    data.finish(&mut sink)?;
    if let Some(m) = data.memo.take() {
        // A memo that cannot be kept (a full disk) costs the next build time only.
        let _ = m.save();
    }

    let (id_list, ids) = id_table(&plan)?;
    let mut em = emit::Emitter::new(
        &plan,
        emit::Inputs {
            content: &content,
            files: &data.files,
            ids: &ids,
            times: opts.times,
            epoch,
            level: opts.level,
        },
    )?;
    let root_inode = em.root()?;
    let (mut sb, xattr_sets) =
        table::write_tables(&mut sink, &mut em, &plan, &data.fragments, &id_list)?;
    sb.inodes = plan.inodes;
    sb.mkfs_time = epoch;
    sb.block_size = opts.block_size;
    sb.flags = flags;
    sb.root_inode = root_inode;

    let bytes_used = sink.pos;
    let size = bytes_used.div_ceil(format::PAD) * format::PAD;
    sink.put(&vec![0u8; (size - bytes_used) as usize])?;
    sb.bytes_used = bytes_used;
    let mut w = sink.into_inner();
    w.flush().context("writing the squashfs image")?;
    drop(w);
    out.seek(SeekFrom::Start(base))
        .and_then(|_| out.write_all(&sb.encode()))
        .and_then(|_| out.seek(SeekFrom::Start(base + size)))
        .context("writing the squashfs superblock")?;
    Ok(Summary {
        bytes_used,
        size,
        inodes: plan.inodes,
        fragments: sb.fragments,
        ids: sb.ids,
        xattr_sets,
        duplicates: data.duplicates,
        sparse: data.files.iter().map(|f| f.sparse).sum(),
    })
}

/// Writes `tree` as a squashfs image at `path` atomically (a temporary file beside it,
/// fsynced and renamed; nothing is left at `path` on failure), for the root partition:
/// its size is a multiple of 4 KiB, as the dm-verity hash tree needs.
pub fn write_file(
    tree: &Tree,
    path: &Path,
    opts: &Options,
) -> Result<(crate::output::Output, Summary)> {
    let mut f = crate::io::atomic::AtomicFile::create(path)?;
    let summary = write(tree, f.file(), opts)
        .with_context(|| format!("writing squashfs image {}", path.display()))?;
    f.commit()?;
    let (sha256, size) = crate::io::hash::sha256_file(path)?;
    let out = crate::output::Output {
        kind: "squashfs".into(),
        path: path.display().to_string(),
        size,
        sha256,
    };
    Ok((out, summary))
}

/// The distinct owners and groups of every inode, sorted, and each one's index.
fn id_table(plan: &plan::Plan) -> Result<(Vec<u32>, HashMap<u32, u16>)> {
    let mut set = BTreeSet::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        if n.target == i {
            let e = plan.entry(i);
            set.insert(e.uid);
            set.insert(e.gid);
        }
    }
    if set.len() > 65535 {
        bail!(
            "the tree has {} distinct owners and groups; squashfs holds 65535",
            set.len()
        );
    }
    let list: Vec<u32> = set.into_iter().collect();
    let map = list
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, i as u16))
        .collect();
    Ok((list, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_and_trees_say_what_is_wrong() {
        let mut out = std::io::Cursor::new(Vec::new());
        let opts = Options {
            block_size: 3000,
            ..Options::root(0)
        };
        let e = write(&Tree::new(), &mut out, &opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "squashfs block size 3000 is not a power of two from 4 KiB to 1 MiB"
        );
        let e = write(&Tree::new(), &mut out, &Options::root(1 << 33)).unwrap_err();
        assert!(e.to_string().contains("32-bit times"), "{e}");
        let mut t = Tree::new();
        let mut acl = Entry::dir(0o755, 0);
        acl.xattrs
            .insert("system.posix_acl_default".into(), vec![2, 0, 0, 0]);
        t.put("srv", acl).unwrap();
        let e = write(&t, &mut out, &Options::root(0)).unwrap_err();
        assert!(
            format!("{e:#}").contains("/srv: extended attribute \"system.posix_acl_default\""),
            "{e:#}"
        );
    }

    #[test]
    fn an_empty_tree_is_a_root_directory_padded_to_4k() {
        let mut out = std::io::Cursor::new(Vec::new());
        let s = write(&Tree::new(), &mut out, &Options::root(1000)).unwrap();
        let b = out.into_inner();
        assert_eq!((s.inodes, s.size, b.len()), (1, 4096, 4096));
        assert_eq!(&b[..4], b"hsqs");
        // bytes_used is recorded; everything after it is padding.
        let used = u64::from_le_bytes(b[40..48].try_into().unwrap());
        assert_eq!(used, s.bytes_used);
        assert!(b[used as usize..].iter().all(|x| *x == 0));
    }
}
