//! The content-addressed cache (`$SLIPWAY_CACHE`, default `~/.cache/slipway`).
//!
//! Blobs live at `blobs/sha256/XX/DIGEST`, keyed by content, never by URL. Inserts are
//! atomic renames, so two builds sharing a cache never see a partial file. A blob is
//! re-hashed whenever its size, mtime or inode differ from the stamp written when it was
//! last verified, so a corrupted or truncated entry is detected and fetched again.

use crate::io::hash::sha256_file;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The cache root and its layout.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// The state of one blob.
#[derive(Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Present and verified.
    Valid,
    /// Not in the cache.
    Missing,
    /// Present but its content does not match its digest (it has been removed).
    Corrupt,
}

impl Cache {
    /// Opens the cache at `root`, or `$SLIPWAY_CACHE`, `$XDG_CACHE_HOME/slipway`,
    /// `~/.cache/slipway`, in that order.
    pub fn open(root: Option<PathBuf>) -> Result<Cache> {
        let root = match root {
            Some(r) => r,
            None => default_root()?,
        };
        for sub in ["blobs/sha256", "tmp", "apt", "decoded"] {
            fs::create_dir_all(root.join(sub)).with_context(|| {
                format!("creating cache directory {}", root.join(sub).display())
            })?;
        }
        let root = root
            .canonicalize()
            .with_context(|| format!("opening cache {}", root.display()))?;
        Ok(Cache { root })
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `sha256` lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&sha256[..2])
            .join(sha256)
    }

    fn stamp_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&sha256[..2])
            .join(format!("{sha256}.ok"))
    }

    fn stamp_of(meta: &fs::Metadata) -> String {
        format!(
            "{} {} {} {}",
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        )
    }

    /// Checks the blob: cheap when its stamp matches, a full hash otherwise. A blob that
    /// fails the check is removed so that it is fetched again.
    pub fn check(&self, sha256: &str) -> Result<BlobState> {
        let path = self.blob_path(sha256);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlobState::Missing),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let stamp = Self::stamp_of(&meta);
        if fs::read_to_string(self.stamp_path(sha256)).is_ok_and(|s| s == stamp) {
            return Ok(BlobState::Valid);
        }
        let (digest, _) = sha256_file(&path)?;
        if digest == sha256 {
            crate::io::atomic::write(&self.stamp_path(sha256), stamp.as_bytes())?;
            Ok(BlobState::Valid)
        } else {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(self.stamp_path(sha256));
            Ok(BlobState::Corrupt)
        }
    }

    /// Moves (or copies, across file systems) `src` into the cache after checking that its
    /// content has digest `sha256`. Returns the blob path.
    pub fn insert(&self, src: &Path, sha256: &str) -> Result<PathBuf> {
        let (digest, _) = sha256_file(src)?;
        if digest != sha256 {
            bail!(DigestMismatch {
                what: src.display().to_string(),
                expected: sha256.into(),
                actual: digest
            });
        }
        let dest = self.blob_path(sha256);
        let parent = dest.parent().context("blob path has a parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let tmp = crate::io::atomic::temp_path_for(&dest);
        if fs::rename(src, &tmp).is_err() {
            fs::copy(src, &tmp)
                .with_context(|| format!("copying {} into the cache", src.display()))?;
        }
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
        let meta = fs::metadata(&dest).with_context(|| format!("reading {}", dest.display()))?;
        crate::io::atomic::write(&self.stamp_path(sha256), Self::stamp_of(&meta).as_bytes())?;
        Ok(dest)
    }

    /// A fresh private working directory under the cache (removed when dropped).
    pub fn temp_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(&format!("work-{}-", std::process::id()))
            .tempdir_in(self.root.join("tmp"))
            .context("creating a temporary directory in the cache")
    }

    /// The directory holding apt state for one package source.
    pub fn apt_dir(&self, key: &str) -> PathBuf {
        self.root.join("apt").join(key)
    }

    /// The directory holding decoded packages.
    pub fn decoded_dir(&self) -> PathBuf {
        self.root.join("decoded")
    }
}

fn default_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SLIPWAY_CACHE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p).join("slipway"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".cache/slipway")),
        None => bail!("no cache directory: set SLIPWAY_CACHE or HOME"),
    }
}

/// A file whose content does not have the digest it should.
#[derive(Debug)]
pub struct DigestMismatch {
    /// What was checked.
    pub what: String,
    /// The digest it should have.
    pub expected: String,
    /// The digest it has.
    pub actual: String,
}

impl std::fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: sha256 is {}, expected {}",
            self.what, self.actual, self.expected
        )
    }
}

impl std::error::Error for DigestMismatch {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hash::sha256_hex;

    #[test]
    fn insert_check_and_detect_corruption() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(d.path().join("c"))).unwrap();
        let src = d.path().join("f");
        fs::write(&src, b"package bytes").unwrap();
        let sha = sha256_hex(b"package bytes");
        assert_eq!(cache.check(&sha).unwrap(), BlobState::Missing);
        let p = cache.insert(&src, &sha).unwrap();
        assert_eq!(cache.check(&sha).unwrap(), BlobState::Valid);
        // Same size, different bytes, as a bit flip would leave it.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&p, b"package bytez").unwrap();
        assert_eq!(cache.check(&sha).unwrap(), BlobState::Corrupt);
        assert!(!p.exists(), "a corrupt blob is removed");
    }

    #[test]
    fn insert_rejects_wrong_digest() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(d.path().join("c"))).unwrap();
        let src = d.path().join("f");
        fs::write(&src, b"x").unwrap();
        let err = cache.insert(&src, &sha256_hex(b"y")).unwrap_err();
        assert!(err.downcast_ref::<DigestMismatch>().is_some());
    }
}
