//! The stage cache: consumes a stage's files and the digest of everything that went
//! into them (its key), produces them again for the same key without running the stage.
//!
//! Entries live under the build cache (`CACHE/stages/KIND/KEY/`): the files, and
//! `index.json` naming each with its size and sha256. An entry appears whole or not at
//! all (filled in a private directory under `stages/tmp/`, then renamed into place; two
//! builds racing to store the same key keep the first), and is never changed afterwards.
//! Every reuse re-hashes its files against the index, as the package cache does
//! (docs/decisions/0026-verified-cache.md): a damaged entry is removed, reported as a
//! warning, and the stage runs again. A hit is hard-linked into the build's staging
//! directory (copied, keeping holes, where the output is on another file system), so the
//! output transaction (src/io/staging.rs) still swaps in a complete set. An entry being
//! removed under a concurrent build is a miss for it, never a half-read file: the hard
//! links it already made stay valid.
//!
//! Clearing: `rm -rf CACHE/stages` while no build runs (docs/host-images.md).

use crate::io::hash::{hex, sha256_file, sha256_sparse_file};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Leftover work directories older than this are removed: a build fills one in seconds.
const STALE_WORK: std::time::Duration = std::time::Duration::from_secs(3600);

/// The digest of a stage's inputs, fed piece by piece; each piece is framed by its label
/// and length so no two different input lists give the same stream.
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// A key for the stage `kind`, format version `version`.
    pub fn new(kind: &str, version: u32) -> Self {
        let mut k = KeyBuilder(Sha256::new());
        k.bytes("stage", kind.as_bytes());
        k.bytes("version", &version.to_le_bytes());
        k
    }

    /// Adds `value` under `label`.
    pub fn bytes(&mut self, label: &str, value: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    /// Adds the text `value` under `label`.
    pub fn text(&mut self, label: &str, value: &str) -> &mut Self {
        self.bytes(label, value.as_bytes())
    }

    /// Adds the sha256 of the file at `path` under `label`.
    pub fn file(&mut self, label: &str, path: &Path) -> Result<&mut Self> {
        let (sha, _) = sha256_file(path)?;
        Ok(self.text(label, &sha))
    }

    /// The key, as 64 hex digits.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// The running slipway binary's sha256, once known in this process.
static SELF_DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The sha256 of the running slipway binary (computed once per process): every key
/// holds it, so a new slipway never reuses an old one's entries.
pub fn self_digest() -> Result<&'static str> {
    if let Some(d) = SELF_DIGEST.get() {
        return Ok(d);
    }
    let exe = std::env::current_exe().context("finding the slipway binary")?;
    let (sha, _) = sha256_file(&exe)?;
    Ok(SELF_DIGEST.get_or_init(|| sha))
}

/// [`self_digest`], remembered across runs in `stages` (`stages/self/`): a stamp
/// ([`crate::io::hash::stamp`]) records the binary's device, inode, size, mtime and
/// ctime with its sha256, so a run of the same binary reads that line instead of
/// hashing 80 MB. A rebuilt or replaced binary has another identity and is hashed.
pub fn self_digest_in(stages: &StageCache) -> Result<&'static str> {
    if let Some(d) = SELF_DIGEST.get() {
        return Ok(d);
    }
    let exe = std::env::current_exe().context("finding the slipway binary")?;
    let dir = stages.root.join("self");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let stamp = dir.join(crate::io::hash::stamp::name_for(&exe));
    let tmp = stages.root.join("tmp").join(format!(
        "self-{}-{:016x}",
        std::process::id(),
        crate::io::atomic::random_u64()
    ));
    let sha = crate::io::hash::stamp::sha256_stamped(&exe, &stamp, tmp)?;
    Ok(SELF_DIGEST.get_or_init(|| sha))
}

/// Adds the host program `program` (its path and sha256) to `k`: a new mksquashfs or
/// mkfs.ext4 may write other bytes.
pub fn tool_into(k: &mut KeyBuilder, program: &str) -> Result<()> {
    match crate::tool::which(program) {
        Some(p) => {
            k.text("tool", program)
                .text("path", &p.display().to_string());
            k.file("tool-sha256", &p)?;
        }
        None => {
            k.text("missing-tool", program);
        }
    }
    Ok(())
}

/// One file of an entry, as its index lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its name in the entry (a plain file name).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Index {
    files: Vec<FileRecord>,
    /// What the stage returns besides its files (JSON of the stage's own type).
    meta: serde_json::Value,
}

/// A file to store in an entry.
pub struct StoredFile {
    /// Its name in the entry (a plain file name).
    pub name: String,
    /// Where it is now.
    pub path: PathBuf,
    /// Its sha256, when known (hashed while it was written); else it is hashed here.
    pub sha256: Option<String>,
}

impl StoredFile {
    /// `path` as `name`, hashed when stored.
    pub fn new(name: &str, path: PathBuf) -> Self {
        StoredFile {
            name: name.into(),
            path,
            sha256: None,
        }
    }
}

/// A verified entry.
#[derive(Debug)]
pub struct Entry {
    dir: PathBuf,
    /// Its files, each checked against its digest.
    pub files: Vec<FileRecord>,
    /// What the stage stored beside the files.
    pub meta: serde_json::Value,
}

impl Entry {
    /// The path of the entry's file `name` (read-only: entries never change).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The record of `name`.
    pub fn record(&self, name: &str) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Puts the file `name` at `dest` (a path that does not exist yet): a hard link, or
    /// a sparse copy across file systems.
    pub fn place(&self, name: &str, dest: &Path) -> Result<()> {
        let src = self.path(name);
        match fs::hard_link(&src, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
                crate::io::sparse::copy_file(&src, dest, crate::io::atomic::FILE_MODE)
            }
            Err(e) => {
                Err(e).with_context(|| format!("linking {} to {}", src.display(), dest.display()))
            }
        }
    }
}

/// The stage cache under a build cache directory.
#[derive(Debug, Clone)]
pub struct StageCache {
    root: PathBuf,
}

impl StageCache {
    /// The stage cache in the build cache `cache_root` (`CACHE/stages`), made private.
    pub fn open(cache_root: &Path) -> Result<StageCache> {
        let root = cache_root.join("stages");
        let work = root.join("tmp");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&work)
            .with_context(|| format!("creating {}", work.display()))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", root.display()))?;
        let c = StageCache { root };
        c.remove_stale_work();
        Ok(c)
    }

    /// The stage cache's directory (`CACHE/stages`): stages keep side caches under it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(key)
    }

    /// The entry of `kind` under `key`, verified; None when there is none. A damaged
    /// entry is removed and `warnings` says so.
    pub fn get(&self, kind: &str, key: &str, warnings: &mut Vec<String>) -> Option<Entry> {
        let dir = self.dir(kind, key);
        let index = match fs::read(dir.join("index.json")) {
            Ok(b) => b,
            Err(_) => return None,
        };
        match verify(&dir, &index) {
            Ok(e) => Some(e),
            Err(e) => {
                warnings.push(format!(
                    "stage cache: {} was damaged and is removed (built again): {e:#}",
                    dir.display()
                ));
                self.remove(&dir);
                None
            }
        }
    }

    /// Stores `files` (name, path, and its sha256 when the caller hashed it while
    /// writing it; the paths are hard-linked, or copied) and `meta` as the entry of
    /// `kind` under `key`. A concurrent build that stored the key first wins; either
    /// entry holds the same bytes.
    pub fn put(
        &self,
        kind: &str,
        key: &str,
        files: &[StoredFile],
        meta: serde_json::Value,
    ) -> Result<()> {
        let work = self.root.join("tmp").join(format!(
            "new-{}-{:016x}",
            std::process::id(),
            crate::io::atomic::random_u64()
        ));
        let _reg = crate::io::signals::register(&work);
        crate::io::atomic::create_dir(&work, 0o700)?;
        let res = self.fill_and_rename(&work, kind, key, files, meta);
        if res.is_err() || work.exists() {
            let _ = crate::io::atomic::remove_tree(&work);
        }
        res
    }

    fn fill_and_rename(
        &self,
        work: &Path,
        kind: &str,
        key: &str,
        files: &[StoredFile],
        meta: serde_json::Value,
    ) -> Result<()> {
        let mut records = Vec::new();
        for StoredFile {
            name,
            path: src,
            sha256,
        } in files
        {
            if name.contains('/') || name == "index.json" || name.starts_with('.') {
                bail!("stage cache: bad file name {name:?}");
            }
            let dest = work.join(name);
            match fs::hard_link(src, &dest) {
                Ok(()) => {}
                Err(_) => crate::io::sparse::copy_file(src, &dest, crate::io::atomic::FILE_MODE)?,
            }
            let (sha256, size) = match sha256 {
                Some(sha) => {
                    let size = fs::metadata(&dest)
                        .with_context(|| format!("reading {}", dest.display()))?
                        .len();
                    (sha.clone(), size)
                }
                None => sha256_sparse_file(&dest)?,
            };
            records.push(FileRecord {
                name: name.clone(),
                size,
                sha256,
            });
        }
        let index = serde_json::to_vec_pretty(&Index {
            files: records,
            meta,
        })
        .context("serializing a stage cache index")?;
        crate::io::atomic::write_mode(&work.join("index.json"), &index, 0o600)?;
        let parent = self.root.join(kind);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        match fs::rename(work, self.dir(kind, key)) {
            Ok(()) => Ok(()),
            // Stored meanwhile by another build (ENOTEMPTY/EEXIST): keep that one.
            Err(e) if self.dir(kind, key).join("index.json").exists() => {
                let _ = e;
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("storing {}", self.dir(kind, key).display())),
        }
    }

    /// Removes the entry `dir` in one step (renamed aside, then deleted).
    fn remove(&self, dir: &Path) {
        let dead = self.root.join("tmp").join(format!(
            "dead-{}-{:016x}",
            std::process::id(),
            crate::io::atomic::random_u64()
        ));
        if fs::rename(dir, &dead).is_ok() {
            let _ = crate::io::atomic::remove_tree(&dead);
        }
    }

    /// Removes work directories left by killed builds.
    fn remove_stale_work(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_WORK);
            if old {
                let _ = crate::io::atomic::remove_tree(&e.path());
            }
        }
    }
}

/// Reads the index `bytes` of the entry `dir` and checks every file against it.
fn verify(dir: &Path, bytes: &[u8]) -> Result<Entry> {
    let index: Index = serde_json::from_slice(bytes).context("reading index.json")?;
    for f in &index.files {
        let p = dir.join(&f.name);
        if f.name.contains('/') {
            bail!("index.json names {:?}", f.name);
        }
        let meta = fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        if !meta.is_file() || meta.len() != f.size {
            bail!(
                "{} is not the {}-byte file its index lists",
                p.display(),
                f.size
            );
        }
        // By its data regions: `disk.raw` is mostly holes, which need not be read to be
        // hashed as the zeros they are.
        let (sha, _) = sha256_sparse_file(&p)?;
        if sha != f.sha256 {
            bail!(
                "{} has sha256 {sha}, its index says {}",
                p.display(),
                f.sha256
            );
        }
    }
    Ok(Entry {
        dir: dir.to_path_buf(),
        files: index.files,
        meta: index.meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_frame_their_pieces() {
        let mut a = KeyBuilder::new("k", 1);
        a.text("x", "ab").text("y", "c");
        let mut b = KeyBuilder::new("k", 1);
        b.text("x", "a").text("y", "bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn entries_come_back_verified_and_a_damaged_one_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let c = StageCache::open(d.path()).unwrap();
        let src = d.path().join("out.img");
        fs::write(&src, b"root image").unwrap();
        let mut w = Vec::new();
        assert!(c.get("root", "k1", &mut w).is_none());
        c.put(
            "root",
            "k1",
            &[StoredFile::new("root.img", src.clone())],
            serde_json::json!({"hash": "abc"}),
        )
        .unwrap();
        // Stored twice (a concurrent build): the first stays.
        c.put(
            "root",
            "k1",
            &[StoredFile::new("root.img", src.clone())],
            serde_json::json!({}),
        )
        .unwrap();
        let e = c.get("root", "k1", &mut w).unwrap();
        assert_eq!(e.meta["hash"], "abc");
        let placed = d.path().join("placed.img");
        e.place("root.img", &placed).unwrap();
        assert_eq!(fs::read(&placed).unwrap(), b"root image");
        assert!(w.is_empty());
        // One flipped byte in the entry (through the hard link): a miss, and gone.
        fs::write(&placed, b"root imagE").unwrap();
        assert!(c.get("root", "k1", &mut w).is_none());
        assert!(w[0].contains("damaged"), "{w:?}");
        assert!(!d.path().join("stages/root/k1").exists());
    }
}
