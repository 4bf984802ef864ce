//! The image tree: an in-memory, byte-sorted map of every entry of the image (path, kind,
//! mode, owner, mtime, content, link target, xattrs). Packages, overlays and generated
//! files all land here; every writer (dir, tar, OCI layers, file systems) reads it, never
//! the host file system, so ownership is right without root and output is reproducible.
//!
//! Paths are relative to the image root, without a leading `/` (the root itself is "").
//! Merged /usr: paths under `bin`, `sbin` and `lib*` are stored under `usr/`, and the
//! top-level compatibility symlinks are added by [`Tree::add_merged_usr_links`].

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// File content: a byte range of a shared buffer (a decoded package's data.tar, or bytes
/// generated at build time).
#[derive(Clone)]
pub struct Content {
    buf: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl Content {
    /// Content owning `bytes`.
    pub fn bytes(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Content {
            buf: Arc::new(bytes),
            start: 0,
            len,
        }
    }
    /// A range of a shared buffer.
    pub fn slice(buf: Arc<Vec<u8>>, start: usize, len: usize) -> Result<Self> {
        if start.checked_add(len).is_none_or(|end| end > buf.len()) {
            bail!(
                "content range {start}+{len} is outside its buffer of {} bytes",
                buf.len()
            );
        }
        Ok(Content { buf, start, len })
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    /// The length.
    pub fn len(&self) -> u64 {
        self.len as u64
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Content({} bytes)", self.len)
    }
}

/// What an entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A regular file.
    File(Content),
    /// A directory.
    Dir,
    /// A symbolic link with its target as written.
    Symlink(String),
    /// A hard link to another regular file of the tree (by tree path).
    Hardlink(String),
    /// A character device (major, minor).
    CharDevice(u32, u32),
    /// A block device (major, minor).
    BlockDevice(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One entry of the tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Kind and content.
    pub kind: Kind,
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The package that shipped it (None: overlay or generated).
    pub package: Option<Arc<str>>,
}

impl Entry {
    /// A directory owned by root.
    pub fn dir(mode: u32, mtime: u64) -> Self {
        Entry {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
            package: None,
        }
    }
    /// A root-owned file with `bytes`.
    pub fn file(bytes: Vec<u8>, mode: u32, mtime: u64) -> Self {
        Entry {
            kind: Kind::File(Content::bytes(bytes)),
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
            package: None,
        }
    }
    /// A root-owned symlink.
    pub fn symlink(target: &str, mtime: u64) -> Self {
        Entry {
            kind: Kind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
            package: None,
        }
    }
    /// The size of the content (0 for anything but files).
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(c) => c.len(),
            _ => 0,
        }
    }
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

/// Top-level directories that merged /usr folds into `usr/`.
pub const MERGED_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Maps a path into merged-/usr form (`bin/sh` -> `usr/bin/sh`).
pub fn merged_usr(path: &str) -> String {
    let first = path.split('/').next().unwrap_or("");
    if MERGED_DIRS.contains(&first) {
        format!("usr/{path}")
    } else {
        path.to_string()
    }
}

/// Normalizes an absolute or relative image path: no leading `/`, no `.`/empty
/// components; `..` is an error.
pub fn normalize(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("path {path:?} contains `..`"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// The image tree.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Tree::default()
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The entry at `path`, mutable.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        self.entries.get_mut(path)
    }

    /// All entries in byte order of their paths (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Entries below `dir` (not `dir` itself).
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of file sizes.
    pub fn content_size(&self) -> u64 {
        self.entries.values().map(Entry::size).sum()
    }

    /// The first ancestor of `path` that is a symlink, if any.
    pub fn symlink_ancestor(&self, path: &str) -> Option<String> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let anc = &path[..end + i];
            if let Some(Entry {
                kind: Kind::Symlink(_),
                ..
            }) = self.entries.get(anc)
            {
                return Some(anc.to_string());
            }
            end += i + 1;
        }
        None
    }

    /// Creates missing parent directories of `path` (0755, root, `mtime`).
    pub fn ensure_parents(&mut self, path: &str, mtime: u64) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let anc = path[..end + i].to_string();
            match self.entries.get(&anc) {
                None => {
                    self.entries.insert(anc, Entry::dir(0o755, mtime));
                }
                Some(e) if e.is_dir() => {}
                Some(_) => bail!("cannot create {path}: {anc} exists and is not a directory"),
            }
            end += i + 1;
        }
        Ok(())
    }

    /// Inserts or replaces `path`, creating parents. A path that passes through a symlink
    /// is refused: writers would otherwise follow it.
    pub fn put(&mut self, path: &str, entry: Entry) -> Result<()> {
        let path = normalize(path)?;
        if path.is_empty() {
            bail!("cannot replace the root directory");
        }
        if let Some(link) = self.symlink_ancestor(&path) {
            bail!("{path} passes through the symlink {link}");
        }
        self.ensure_parents(&path, entry.mtime)?;
        if entry.is_dir() {
            if let Some(old) = self.entries.get(&path) {
                if !old.is_dir() {
                    bail!("cannot make {path} a directory: something else is there");
                }
            }
        } else if let Some(old) = self.entries.get(&path) {
            if old.is_dir() && self.under(&path).next().is_some() {
                bail!("cannot replace the non-empty directory {path}");
            }
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    /// Inserts `entry` at the already normalized `path` as it is, without creating parents
    /// or checking symlinks: for subsets of a checked tree (such as OCI layers).
    pub fn insert_unchecked(&mut self, path: &str, entry: Entry) {
        self.entries.insert(path.to_string(), entry);
    }

    /// Removes `path` (and, for a directory, everything below it). Returns what was removed.
    pub fn remove(&mut self, path: &str) -> Vec<(String, Entry)> {
        let below: Vec<String> = self.under(path).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for k in below.into_iter().chain(std::iter::once(path.to_string())) {
            if let Some(e) = self.entries.remove(&k) {
                out.push((k, e));
            }
        }
        out
    }

    /// Removes every entry for which `drop` is true (a directory only when everything
    /// below it went too). Returns the removed paths and sizes.
    pub fn retain_paths(
        &mut self,
        mut drop: impl FnMut(&str, &Entry) -> bool,
    ) -> Vec<(String, u64)> {
        let mut removed = Vec::new();
        let keys: Vec<String> = self.entries.keys().rev().cloned().collect();
        for k in keys {
            let Some(e) = self.entries.get(&k) else {
                continue;
            };
            if !drop(&k, e) {
                continue;
            }
            if e.is_dir() && self.under(&k).next().is_some() {
                continue;
            }
            removed.push((k.clone(), e.size()));
            self.entries.remove(&k);
        }
        removed.reverse();
        removed
    }

    /// Adds the merged-/usr compatibility links (`bin -> usr/bin`, ...) for every folded
    /// directory that exists under `usr/`.
    pub fn add_merged_usr_links(&mut self, mtime: u64) -> Result<()> {
        for d in MERGED_DIRS {
            if self
                .entries
                .get(&format!("usr/{d}"))
                .is_some_and(Entry::is_dir)
            {
                if let Some(e) = self.entries.get(*d) {
                    if !matches!(e.kind, Kind::Symlink(_)) {
                        bail!("merged /usr: /{d} exists and is not a symlink");
                    }
                }
                self.entries
                    .insert(d.to_string(), Entry::symlink(&format!("usr/{d}"), mtime));
            }
        }
        Ok(())
    }

    /// Clamps every mtime to at most `epoch` (reproducible builds, SOURCE_DATE_EPOCH).
    pub fn clamp_mtimes(&mut self, epoch: u64) {
        for e in self.entries.values_mut() {
            e.mtime = e.mtime.min(epoch);
        }
    }

    /// Resolves `path` following symlinks inside the tree (at most 40 hops), returning the
    /// final tree path, or None when it leaves the tree or dangles.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut cur = normalize(path).ok()?;
        for _ in 0..40 {
            let mut out: Vec<String> = Vec::new();
            let mut changed = false;
            let parts: Vec<&str> = cur.split('/').filter(|p| !p.is_empty()).collect();
            for (i, part) in parts.iter().enumerate() {
                out.push(part.to_string());
                let so_far = out.join("/");
                if let Some(Entry {
                    kind: Kind::Symlink(t),
                    ..
                }) = self.entries.get(&so_far)
                {
                    let mut base: Vec<String> = if t.starts_with('/') {
                        Vec::new()
                    } else {
                        out[..out.len() - 1].to_vec()
                    };
                    for c in t.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => {
                                base.pop()?;
                            }
                            c => base.push(c.to_string()),
                        }
                    }
                    base.extend(parts[i + 1..].iter().map(|s| s.to_string()));
                    cur = base.join("/");
                    changed = true;
                    break;
                }
            }
            if !changed {
                return self.entries.contains_key(&cur).then_some(cur);
            }
        }
        None
    }
}

/// The digest of `entries`: each one's path, kind, content or target, mode, owner, mtime
/// and extended attributes.
pub fn digest<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Entry)>) -> String {
    use sha2::{Digest, Sha256};
    let entries: Vec<(&String, &Entry)> = entries.into_iter().collect();
    let contents = content_digests(&entries);
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for ((p, e), content) in entries.iter().zip(contents) {
        field(p.as_bytes());
        let (tag, body): (&[u8], Vec<u8>) = match &e.kind {
            Kind::File(_) => (b"f", content.to_vec()),
            Kind::Dir => (b"d", Vec::new()),
            Kind::Symlink(s) => (b"l", s.as_bytes().to_vec()),
            Kind::Hardlink(s) => (b"h", s.as_bytes().to_vec()),
            Kind::CharDevice(a, b) => (b"c", [a.to_le_bytes(), b.to_le_bytes()].concat()),
            Kind::BlockDevice(a, b) => (b"b", [a.to_le_bytes(), b.to_le_bytes()].concat()),
            Kind::Fifo => (b"p", Vec::new()),
        };
        field(tag);
        field(&body);
        let meta = [
            e.mode.to_le_bytes(),
            e.uid.to_le_bytes(),
            e.gid.to_le_bytes(),
        ]
        .concat();
        field(&meta);
        field(&e.mtime.to_le_bytes());
        for (n, v) in &e.xattrs {
            field(n.as_bytes());
            field(v);
        }
        field(b"end");
    }
    crate::io::hash::hex(&h.finalize())
}

/// The sha256 of each file's content among `entries` (zeros for other kinds), hashed on
/// every core: a host root's 180 MB took a tenth of a second on one.
fn content_digests(entries: &[(&String, &Entry)]) -> Vec<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let one = |(_, e): &(&String, &Entry)| match &e.kind {
        Kind::File(c) => Sha256::digest(c.as_slice()).into(),
        _ => [0u8; 32],
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 || entries.len() < 64 {
        return entries.iter().map(one).collect();
    }
    // Runs of about equal bytes, so one large file does not leave a core idle.
    let total: usize = entries.iter().map(|(_, e)| e.size() as usize).sum();
    let per = total.div_ceil(threads).max(1);
    let mut runs: Vec<&[(&String, &Entry)]> = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, (_, e)) in entries.iter().enumerate() {
        acc += e.size() as usize;
        if acc >= per {
            runs.push(&entries[start..=i]);
            (start, acc) = (i + 1, 0);
        }
    }
    runs.push(&entries[start..]);
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| s.spawn(move || run.iter().map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_created_and_sorted() {
        let mut t = Tree::new();
        t.put("/usr/bin/env", Entry::file(b"x".to_vec(), 0o755, 5))
            .unwrap();
        t.put("/usr/bin-old", Entry::dir(0o755, 5)).unwrap();
        let paths: Vec<&String> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(
            paths,
            ["usr", "usr/bin", "usr/bin-old", "usr/bin/env"]
                .map(String::from)
                .iter()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn symlinks_are_not_followed_on_insert() {
        let mut t = Tree::new();
        t.put("x", Entry::symlink("/tmp", 0)).unwrap();
        let e = t.put("x/evil", Entry::file(vec![], 0o644, 0)).unwrap_err();
        assert!(e.to_string().contains("passes through the symlink x"));
        assert!(t
            .put("../etc/passwd", Entry::file(vec![], 0o644, 0))
            .is_err());
    }

    #[test]
    fn merged_usr_and_resolve() {
        assert_eq!(merged_usr("bin/sh"), "usr/bin/sh");
        assert_eq!(merged_usr("etc/x"), "etc/x");
        let mut t = Tree::new();
        t.put("usr/bin/dash", Entry::file(vec![1], 0o755, 0))
            .unwrap();
        t.put("usr/bin/sh", Entry::symlink("dash", 0)).unwrap();
        t.add_merged_usr_links(0).unwrap();
        assert_eq!(t.resolve("/bin/sh").as_deref(), Some("usr/bin/dash"));
        t.put("etc/up", Entry::symlink("../../../x", 0)).unwrap();
        assert_eq!(t.resolve("etc/up"), None);
    }

    #[test]
    fn retain_drops_empty_dirs_only() {
        let mut t = Tree::new();
        t.put("usr/share/doc/a/copyright", Entry::file(vec![1], 0o644, 0))
            .unwrap();
        t.put("usr/share/doc/a/README", Entry::file(vec![1, 2], 0o644, 0))
            .unwrap();
        let removed =
            t.retain_paths(|p, _| p.starts_with("usr/share/doc") && !p.ends_with("copyright"));
        assert_eq!(removed, [("usr/share/doc/a/README".to_string(), 2)]);
        assert!(t.get("usr/share/doc/a").is_some());
    }
}
