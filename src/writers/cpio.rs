//! Reproducible initramfs archives: consumes a [`Tree`], produces a cpio archive in the
//! "newc" format (magic `070701`), the one the kernel unpacks into its rootfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst), optionally compressed
//! with zstd or xz.
//!
//! Reproducible like the tar writer: entries in byte order of their paths, mtimes
//! clamped to `SOURCE_DATE_EPOCH`, numeric ids, inode numbers counted from 1 in archive
//! order, no device number of the build host (`devmajor`/`devminor` are 0). Hard-link
//! groups share an inode number and carry `nlink`; as GNU cpio does, only the group's
//! last member carries the data, and the kernel links the earlier names to it.
//! newc has no place for extended attributes; they are left out.

use crate::tree::{Entry, Kind, Tree};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Write;

/// newc magic (no checksums; `070702` would add a sum the kernel ignores).
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFMT: u32 = 0o170000;

/// Options for one archive.
#[derive(Debug, Clone, Copy)]
pub struct CpioOptions {
    /// Latest mtime written; later ones are clamped to it.
    pub epoch: u64,
}

/// How the archive is compressed (every Debian 12 and 13 kernel decodes both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Plain cpio.
    None,
    /// zstd level [`ZSTD_LEVEL`], single-threaded (multi-threaded output differs).
    Zstd,
    /// xz with CRC32 checks (the kernel's xz decoder checks no CRC64 or SHA-256),
    /// LZMA2 preset 9 with an [`XZ_DICT`] dictionary and no BCJ filter.
    Xz,
}

/// The zstd level: 19 is the highest that does not need `--ultra` memory on decode.
pub const ZSTD_LEVEL: i32 = 19;
/// The xz dictionary: 8 MiB, which the kernel's decoder allocates at boot.
pub const XZ_DICT: u32 = 8 << 20;

impl Compression {
    /// The usual file suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
        }
    }
}

struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

fn pad4(w: &mut impl Write, len: usize) -> std::io::Result<()> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..n])
}

fn write_entry(w: &mut impl Write, name: &str, h: &Header, data: &[u8]) -> Result<()> {
    let namesize = name.len() + 1;
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor: the build host's device is nobody's business
        0, // devminor
        h.rdevmajor,
        h.rdevminor,
        u32::try_from(namesize).with_context(|| format!("name too long: {name}"))?,
        0, // check (070701: always 0)
    ];
    let mut head = Vec::with_capacity(110 + namesize + 3);
    head.extend_from_slice(MAGIC);
    for f in fields {
        head.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    head.extend_from_slice(name.as_bytes());
    head.push(0);
    let l = head.len();
    pad4(&mut head, l)?;
    w.write_all(&head)
        .with_context(|| format!("writing cpio header of {name}"))?;
    w.write_all(data)
        .with_context(|| format!("writing cpio data of {name}"))?;
    pad4(w, data.len()).with_context(|| format!("writing cpio data of {name}"))?;
    Ok(())
}

fn clamp32(what: &str, path: &str, v: u64) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{path}: {what} {v} does not fit in newc's 32 bits"))
}

/// Writes `tree` as a newc cpio archive into `w`. The tree's root has no entry of its
/// own (the kernel unpacks into an existing rootfs).
pub fn write_tree<W: Write>(tree: &Tree, opts: CpioOptions, mut w: W) -> Result<W> {
    // Hard-link groups, keyed by the file the links point at: members in archive order.
    let mut groups: HashMap<&str, Vec<&str>> = HashMap::new();
    for (path, e) in tree.iter() {
        if let Kind::Hardlink(target) = &e.kind {
            match tree.get(target).map(|t| &t.kind) {
                Some(Kind::File(_)) => groups.entry(target.as_str()).or_default().push(path),
                _ => bail!(
                    "hard link {path} -> {target}: the target is not a regular file in the tree"
                ),
            }
        }
    }
    for (target, members) in groups.iter_mut() {
        members.push(target);
        members.sort();
    }
    fn group_of<'a>(
        groups: &HashMap<&str, Vec<&str>>,
        path: &'a str,
        e: &'a Entry,
    ) -> Option<&'a str> {
        match &e.kind {
            Kind::Hardlink(t) => Some(t.as_str()),
            Kind::File(_) if groups.contains_key(path) => Some(path),
            _ => None,
        }
    }
    let mut next_ino: u32 = 1;
    let mut group_ino: HashMap<&str, u32> = HashMap::new();
    for (path, e) in tree.iter() {
        let name = if path.is_empty() { "." } else { path.as_str() };
        // A hard-link group member takes its metadata from the file it links to, so
        // that every name of the inode agrees (the kernel matches links by mode too).
        let (meta, group) = match group_of(&groups, path, e) {
            Some(target) => match tree.get(target) {
                Some(t) => (t, Some(target)),
                None => bail!("hard link {path} -> {target}: the target is missing"),
            },
            None => (e, None),
        };
        let ino = match group {
            Some(g) => *group_ino.entry(g).or_insert_with(|| {
                let i = next_ino;
                next_ino += 1;
                i
            }),
            None => {
                let i = next_ino;
                next_ino += 1;
                i
            }
        };
        let mut h = Header {
            ino,
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            nlink: 1,
            mtime: clamp32("mtime", path, meta.mtime.min(opts.epoch))?,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        };
        let mut data: &[u8] = &[];
        match (&meta.kind, group) {
            (Kind::File(c), Some(g)) => {
                let members = &groups[g];
                h.mode |= S_IFREG;
                h.nlink = clamp32("link count", path, members.len() as u64)?;
                if members.last() == Some(&path.as_str()) {
                    data = c.as_slice();
                }
            }
            (Kind::File(c), None) => {
                h.mode |= S_IFREG;
                data = c.as_slice();
            }
            (Kind::Dir, _) => {
                h.mode |= S_IFDIR;
                h.nlink = 2;
            }
            (Kind::Symlink(t), _) => {
                h.mode |= S_IFLNK;
                data = t.as_bytes();
            }
            (Kind::CharDevice(ma, mi), _) | (Kind::BlockDevice(ma, mi), _) => {
                h.mode |= if matches!(meta.kind, Kind::CharDevice(..)) {
                    S_IFCHR
                } else {
                    S_IFBLK
                };
                h.rdevmajor = *ma;
                h.rdevminor = *mi;
            }
            (Kind::Fifo, _) => h.mode |= S_IFIFO,
            (Kind::Hardlink(_), _) => bail!("{path}: a hard link to a hard link"),
        }
        h.filesize = clamp32("size", path, data.len() as u64)?;
        write_entry(&mut w, name, &h, data)?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdevmajor: 0,
        rdevminor: 0,
    };
    write_entry(&mut w, TRAILER, &trailer, &[])?;
    Ok(w)
}

/// Writes `tree` as a cpio archive compressed with `comp` into `w`.
pub fn write_compressed_to<W: Write>(
    tree: &Tree,
    opts: CpioOptions,
    comp: Compression,
    w: W,
) -> Result<W> {
    match comp {
        Compression::None => write_tree(tree, opts, w),
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)
                .context("starting the zstd encoder")?;
            // Frame checksums: the kernel's zstd decoder verifies them.
            enc.include_checksum(true)
                .context("configuring the zstd encoder")?;
            let enc = write_tree(tree, opts, enc)?;
            enc.finish().context("finishing the zstd stream")
        }
        Compression::Xz => {
            let mut lzma = liblzma::stream::LzmaOptions::new_preset(9)
                .context("configuring the xz encoder")?;
            lzma.dict_size(XZ_DICT);
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&lzma);
            let stream = liblzma::stream::Stream::new_stream_encoder(
                &filters,
                liblzma::stream::Check::Crc32,
            )
            .context("starting the xz encoder")?;
            let enc = write_tree(tree, opts, liblzma::write::XzEncoder::new_stream(w, stream))?;
            enc.finish().context("finishing the xz stream")
        }
    }
}

/// Writes `tree` as a (compressed) cpio archive to the file `path`, atomically, hashing
/// while writing; returns what was written.
pub fn write_compressed(
    tree: &Tree,
    opts: CpioOptions,
    comp: Compression,
    path: &std::path::Path,
) -> Result<crate::output::Output> {
    let mut f = crate::io::atomic::AtomicFile::create(path)?;
    let w =
        crate::io::hash::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f.file()));
    let w = write_compressed_to(tree, opts, comp, w)
        .with_context(|| format!("writing {}", path.display()))?;
    let (buf, sha256, size) = w.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    f.commit()?;
    Ok(crate::output::Output {
        kind: format!("cpio{}", comp.suffix()),
        path: path.display().to_string(),
        size,
        sha256,
    })
}

/// One entry read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// The name as stored.
    pub name: String,
    /// Inode number.
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device number for device nodes.
    pub rdev: (u32, u32),
    /// The data (file content, or a symlink's target).
    pub data: Vec<u8>,
}

impl CpioEntry {
    /// The file type bits (`mode & S_IFMT`).
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }
    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == S_IFREG
    }
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }
    /// True for a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }
}

/// Reads a newc archive (up to its trailer) back into entries, checking every length.
pub fn parse(bytes: &[u8]) -> Result<Vec<CpioEntry>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let head = bytes
            .get(pos..pos + 110)
            .with_context(|| format!("truncated header at offset {pos}"))?;
        if &head[..6] != MAGIC && &head[..6] != b"070702" {
            bail!(
                "offset {pos}: bad magic {:?}",
                String::from_utf8_lossy(&head[..6])
            );
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&head[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .with_context(|| format!("offset {pos}: field {i} is not hex"))?;
            *v = s;
        }
        let namesize = f[11] as usize;
        let name_start = pos + 110;
        let name_bytes = bytes
            .get(name_start..name_start + namesize)
            .with_context(|| format!("offset {pos}: truncated name"))?;
        let name = match name_bytes.split_last() {
            Some((0, n)) => String::from_utf8(n.to_vec())
                .with_context(|| format!("offset {pos}: name is not UTF-8"))?,
            _ => bail!("offset {pos}: name is not NUL-terminated"),
        };
        let data_start = (name_start + namesize).next_multiple_of(4);
        let size = f[6] as usize;
        let data = bytes
            .get(data_start..data_start + size)
            .with_context(|| format!("{name}: truncated data"))?;
        pos = (data_start + size).next_multiple_of(4);
        if name == TRAILER {
            return Ok(out);
        }
        out.push(CpioEntry {
            name,
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            rdev: (f[9], f[10]),
            data: data.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.put(
            "init",
            Entry::file(b"#!/bin/sh\n".to_vec(), 0o755, 3_000_000_000),
        )
        .unwrap();
        t.put("usr/bin/busybox", Entry::file(b"BB".to_vec(), 0o755, 7))
            .unwrap();
        let mut link = Entry::file(vec![], 0o644, 1);
        link.kind = Kind::Hardlink("usr/bin/busybox".into());
        t.put("usr/bin/ash", link.clone()).unwrap();
        t.put("usr/sbin/modprobe", link).unwrap();
        t.put("bin", Entry::symlink("usr/bin", 7)).unwrap();
        let mut console = Entry::file(vec![], 0o600, 7);
        console.kind = Kind::CharDevice(5, 1);
        t.put("dev/console", console).unwrap();
        let mut sda = Entry::file(vec![], 0o660, 7);
        sda.kind = Kind::BlockDevice(8, 0);
        sda.gid = 6;
        t.put("dev/sda", sda).unwrap();
        let mut fifo = Entry::file(vec![], 0o644, 7);
        fifo.kind = Kind::Fifo;
        t.put("run/initctl", fifo).unwrap();
        t.put(
            &format!("usr/share/{}", "n".repeat(300)),
            Entry::file(vec![1; 5], 0o444, 7),
        )
        .unwrap();
        t
    }

    #[test]
    fn same_bytes_twice_and_parses_back() {
        let opts = CpioOptions { epoch: 100 };
        let a = write_tree(&sample(), opts, Vec::new()).unwrap();
        let b = write_tree(&sample(), opts, Vec::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len() % 4, 0);
        let entries = parse(&a).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "byte order");
        assert_eq!(names[0], "bin");
        let by = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(by("init").mtime, 100, "mtime clamped");
        assert_eq!(by("init").mode, S_IFREG | 0o755);
        // Hard-link group: one inode, nlink 3, data on the last member only.
        let group = ["usr/bin/ash", "usr/bin/busybox", "usr/sbin/modprobe"].map(by);
        assert!(group.iter().all(|e| e.ino == group[0].ino && e.nlink == 3));
        assert!(group
            .iter()
            .all(|e| e.mode == S_IFREG | 0o755 && e.mtime == 7));
        assert_eq!(group[0].data, b"");
        assert_eq!(group[1].data, b"");
        assert_eq!(group[2].data, b"BB");
        assert_eq!(by("bin").mode, S_IFLNK | 0o777);
        assert_eq!(by("bin").data, b"usr/bin");
        assert_eq!(by("dev/console").mode, S_IFCHR | 0o600);
        assert_eq!(by("dev/console").rdev, (5, 1));
        assert_eq!(by("dev/sda").mode, S_IFBLK | 0o660);
        assert_eq!((by("dev/sda").rdev, by("dev/sda").gid), ((8, 0), 6));
        assert_eq!(by("run/initctl").mode, S_IFIFO | 0o644);
        let mut inos: Vec<u32> = entries.iter().map(|e| e.ino).collect();
        inos.sort();
        inos.dedup();
        assert_eq!(
            inos.len(),
            entries.len() - 2,
            "unique inodes except the links"
        );
    }

    #[test]
    fn compressed_archives_decode_to_the_plain_one() {
        let opts = CpioOptions { epoch: 100 };
        let plain = write_tree(&sample(), opts, Vec::new()).unwrap();
        let z = write_compressed_to(&sample(), opts, Compression::Zstd, Vec::new()).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), plain);
        let x = write_compressed_to(&sample(), opts, Compression::Xz, Vec::new()).unwrap();
        // Stream flags byte 7: check type 1 = CRC32 (xz file format 2.1.1.2).
        assert_eq!(&x[..6], b"\xfd7zXZ\0");
        assert_eq!(x[7], 1, "CRC32 check");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(&x[..]), &mut out).unwrap();
        assert_eq!(out, plain);
        assert_eq!(
            x,
            write_compressed_to(&sample(), opts, Compression::Xz, Vec::new()).unwrap()
        );
    }

    #[test]
    fn dangling_hard_links_and_truncation_are_errors() {
        let mut t = Tree::new();
        let mut link = Entry::file(vec![], 0o644, 1);
        link.kind = Kind::Hardlink("missing".into());
        t.put("a", link).unwrap();
        assert!(write_tree(&t, CpioOptions { epoch: 1 }, Vec::new()).is_err());
        let a = write_tree(&sample(), CpioOptions { epoch: 1 }, Vec::new()).unwrap();
        for cut in [0, 50, 111, a.len() / 2, a.len() - 4] {
            assert!(parse(&a[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn any_tree_round_trips(
            files in proptest::collection::btree_map(
                "[a-c]{1,3}(/[a-c]{1,3}){0,2}",
                (proptest::collection::vec(any::<u8>(), 0..40), 0u32..0o7777, 0u64..200),
                1..12,
            ),
        ) {
            let mut t = Tree::new();
            for (p, (data, mode, mtime)) in &files {
                // Skip paths whose parent is already a file.
                let _ = t.put(p, Entry::file(data.clone(), *mode, *mtime));
            }
            let opts = CpioOptions { epoch: 150 };
            let bytes = write_tree(&t, opts, Vec::new()).unwrap();
            prop_assert_eq!(&bytes, &write_tree(&t, opts, Vec::new()).unwrap());
            let back = parse(&bytes).unwrap();
            prop_assert_eq!(back.len(), t.len());
            for (e, (path, te)) in back.iter().zip(t.iter()) {
                prop_assert_eq!(&e.name, path);
                prop_assert_eq!(e.mode & 0o7777, te.mode & 0o7777);
                prop_assert_eq!(u64::from(e.mtime), te.mtime.min(150));
                match &te.kind {
                    Kind::File(c) => {
                        prop_assert!(e.is_file());
                        prop_assert_eq!(&e.data[..], c.as_slice());
                    }
                    Kind::Dir => prop_assert!(e.is_dir()),
                    _ => prop_assert!(false, "unexpected kind"),
                }
            }
        }
    }
}
