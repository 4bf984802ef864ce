//! The content-addressed cache (`$SLIPWAY_CACHE`, default `~/.cache/slipway`).
//!
//! Blobs live at `blobs/sha256/XX/DIGEST`, keyed by content, never by URL. Every use
//! checks the whole blob ([`Cache::check`], docs/decisions/0026-verified-cache.md): it
//! is hashed in full unless its stamp (`DIGEST.verified`, src/fetch/stamped.rs) records
//! it with the same device, inode, size, mtime and ctime, as hashed in the last day. A
//! byte changed through the file system changes the ctime, which nothing can set back
//! (docs/decisions/0044-verification-stamps.md). Inserts are verified, then renamed
//! into place from a private work directory, so two builds sharing a cache never see a
//! partial file and no temporary name in a shared directory can be planted in advance.
//!
//! Work directories (`tmp/work-*`) hold downloads and decodes in progress. Each is locked
//! (`flock`) by the process using it; [`Cache::open`] removes the ones whose lock is not
//! held, i.e. the leftovers of a killed run.
//!
//! The cache also carries the [`Limits`] of the downloads that fill it, and the registry
//! cache ([`crate::remote`]) it falls back on before the origin.
//!
//! Files are 0600 and directories 0700 ([`verify::FILE_MODE`], [`verify::DIR_MODE`]):
//! the cache is per user, and an artifact blob may be a copy of a private host file.

use super::limits::Limits;
use super::verify::{self, open_nofollow, DIR_MODE, FILE_MODE};
use crate::io::hash::sha256_reader;
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Leftover `.new-*` directories older than this are removed: they are only ever that
/// name between `mkdir` and the `rename` that follows it.
const STALE_NEW: std::time::Duration = std::time::Duration::from_secs(3600);

/// The cache root and its layout.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    limits: Limits,
    registry: Option<std::sync::Arc<crate::remote::Remote>>,
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
    /// `~/.cache/slipway`, in that order. Removes the work directories of killed runs.
    pub fn open(root: Option<PathBuf>) -> Result<Cache> {
        let root = match root {
            Some(r) => r,
            None => default_root()?,
        };
        // `layers` belongs to the OCI writer (compressed layers by diff id); it is made
        // here so that it is private too: a layer holds the image's files, artifacts
        // included.
        for sub in ["blobs/sha256", "tmp", "apt", "decoded", "layers"] {
            mkdir_private(&root.join(sub))?;
        }
        let root = root
            .canonicalize()
            .with_context(|| format!("opening cache {}", root.display()))?;
        // Caches written by older versions have 0755 directories and 0644 blobs: closing
        // the top directories makes everything under them private at once.
        for sub in ["blobs", "tmp", "decoded", "layers"] {
            restrict(&root.join(sub), DIR_MODE)?;
        }
        let cache = Cache {
            root,
            limits: Limits::default(),
            registry: None,
        };
        cache.remove_stale_work()?;
        Ok(cache)
    }

    /// The cache with `limits` on the downloads that fill it.
    pub fn with_download_limits(mut self, limits: Limits) -> Cache {
        self.limits = limits;
        self
    }

    /// The cache backed by the registry cache `registry` (docs/cache.md): what is not
    /// here is looked for there before the origin, and what a build fetched or built is
    /// pushed there.
    pub fn with_registry(mut self, registry: Option<crate::remote::Remote>) -> Cache {
        self.registry = registry.map(std::sync::Arc::new);
        self
    }

    /// The registry cache, if one is configured.
    pub fn registry(&self) -> Option<&crate::remote::Remote> {
        self.registry.as_deref()
    }

    /// The limits of every download into this cache.
    pub fn download_limits(&self) -> &Limits {
        &self.limits
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

    /// Where older versions kept a blob's (size, mtime, inode) stamp; removed on sight.
    fn legacy_stamp_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&sha256[..2])
            .join(format!("{sha256}.ok"))
    }

    /// Checks the blob: as its stamp records it, else by hashing all of it. A blob that
    /// fails the check (or is not a regular file) is removed so that it is fetched again.
    pub fn check(&self, sha256: &str) -> Result<BlobState> {
        let path = self.blob_path(sha256);
        let file = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlobState::Missing),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return self.discard(sha256);
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut meta = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_file() {
            return self.discard(sha256);
        }
        if meta.mode() & 0o077 != 0 {
            // Before the check: the chmod changes the blob's ctime, which its stamp holds.
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
            meta = file
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
        }
        let id = crate::io::hash::stamp::Identity::of(&meta);
        if !self.holds(&path, &file, id, sha256)? {
            return self.discard(sha256);
        }
        let _ = fs::remove_file(self.legacy_stamp_path(sha256));
        Ok(BlobState::Valid)
    }

    fn discard(&self, sha256: &str) -> Result<BlobState> {
        let path = self.blob_path(sha256);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        crate::io::hash::stamp::remove(&crate::io::hash::stamp::beside(&path));
        let _ = fs::remove_file(self.legacy_stamp_path(sha256));
        Ok(BlobState::Corrupt)
    }

    /// Moves `src` (a file in one of this cache's work directories) into the cache after
    /// checking that its content has digest `sha256`; a file elsewhere is copied. The
    /// blob is 0600. Returns the blob path.
    pub fn insert(&self, src: &Path, sha256: &str) -> Result<PathBuf> {
        let file = open_nofollow(src).with_context(|| format!("opening {}", src.display()))?;
        let (digest, _) = sha256_reader(std::io::BufReader::with_capacity(1 << 20, &file))
            .with_context(|| format!("reading {}", src.display()))?;
        if digest != sha256 {
            bail!(DigestMismatch {
                what: src.display().to_string(),
                expected: sha256.into(),
                actual: digest
            });
        }
        let dest = self.blob_path(sha256);
        let parent = dest.parent().context("blob path has a parent")?;
        mkdir_private(parent)?;
        let inside = src.starts_with(self.root.join("tmp"));
        if !inside || fs::rename(src, &dest).is_err() {
            // Across file systems, or a file the caller keeps: copy through a work
            // directory of ours, verifying the copy as it is written.
            let work = self.temp_dir()?;
            let copy = work.path().join("blob");
            let mut from = File::open(src).with_context(|| format!("opening {}", src.display()))?;
            let (n, copied) = copy_hashing(&mut from, &copy)?;
            if copied != sha256 {
                bail!(DigestMismatch {
                    what: format!("{} ({n} bytes copied)", src.display()),
                    expected: sha256.into(),
                    actual: copied
                });
            }
            fs::rename(&copy, &dest)
                .with_context(|| format!("renaming into {}", dest.display()))?;
        } else {
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .with_context(|| format!("setting the mode of {}", dest.display()))?;
            file.sync_all()
                .with_context(|| format!("syncing {}", dest.display()))?;
        }
        // A new inode: a stamp of an earlier blob at this name matches it no more.
        crate::io::hash::stamp::remove(&crate::io::hash::stamp::beside(&dest));
        let _ = fs::remove_file(self.legacy_stamp_path(sha256));
        Ok(dest)
    }

    /// Copies the blob `sha256` to `dest` with `mode` (for `slipway vendor`), verifying
    /// the bytes as they are copied. The copy is written under a random
    /// `O_CREAT|O_EXCL|O_NOFOLLOW` name beside `dest`, synced and renamed onto it
    /// ([`crate::io::atomic::AtomicFile`]), so nothing planted in the directory is
    /// written through and a failed copy leaves no file. A `dest` that already has the
    /// digest is left as it is. Returns whether it copied.
    pub fn export(&self, sha256: &str, dest: &Path, mode: u32) -> Result<bool> {
        use std::io::Write;
        if fs::symlink_metadata(dest).is_ok_and(|m| m.is_file())
            && crate::io::hash::sha256_file(dest)?.0 == sha256
        {
            return Ok(false);
        }
        let blob = self.blob_path(sha256);
        let mut from =
            open_nofollow(&blob).with_context(|| format!("opening {}", blob.display()))?;
        let out = crate::io::atomic::AtomicFile::create_mode(dest, mode)?;
        let mut w =
            crate::io::hash::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
        std::io::copy(&mut from, &mut w)
            .with_context(|| format!("copying {} to {}", blob.display(), dest.display()))?;
        w.flush()
            .with_context(|| format!("writing {}", dest.display()))?;
        let (buf, digest, _) = w.finish();
        if digest != sha256 {
            bail!(DigestMismatch {
                what: blob.display().to_string(),
                expected: sha256.into(),
                actual: digest
            });
        }
        buf.into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", dest.display()))?
            .commit()?;
        Ok(true)
    }

    /// A fresh private working directory under the cache, locked for as long as the
    /// returned value lives and removed when it is dropped.
    pub fn temp_dir(&self) -> Result<WorkDir> {
        let tmp = self.root.join("tmp");
        // Made under a name the sweep ignores, locked, then given its `work-` name: the
        // sweep of another process never sees it unlocked.
        let fresh = tempfile::Builder::new()
            .prefix(".new-")
            .permissions(fs::Permissions::from_mode(DIR_MODE))
            .tempdir_in(&tmp)
            .context("creating a temporary directory in the cache")?
            .keep();
        let lock = lock_dir(&fresh)
            .and_then(|l| l.context("a new work directory is locked by another process"));
        let lock = match lock {
            Ok(l) => l,
            Err(e) => {
                let _ = fs::remove_dir_all(&fresh);
                return Err(e);
            }
        };
        let suffix = fresh
            .file_name()
            .map(|s| s.to_string_lossy().trim_start_matches(".new-").to_string())
            .unwrap_or_default();
        let path = tmp.join(format!("work-{}-{suffix}", std::process::id()));
        if let Err(e) = fs::rename(&fresh, &path) {
            let _ = fs::remove_dir_all(&fresh);
            return Err(e).with_context(|| format!("renaming {}", fresh.display()));
        }
        Ok(WorkDir { path, _lock: lock })
    }

    /// Removes the work directories whose lock nobody holds (left by a killed run).
    fn remove_stale_work(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        let entries = fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("reading {}", tmp.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() {
                let _ = fs::remove_file(&path);
                continue;
            }
            if name.starts_with("work-") {
                // Held while removing, so that a second sweep does not race this one.
                if let Ok(Some(_held)) = lock_dir(&path) {
                    let _ = fs::remove_dir_all(&path);
                }
            } else if name.starts_with(".new-")
                && meta
                    .modified()
                    .is_ok_and(|m| m.elapsed().is_ok_and(|a| a > STALE_NEW))
            {
                let _ = fs::remove_dir_all(&path);
            }
        }
        Ok(())
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

/// A locked private directory under the cache's `tmp/`, removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl WorkDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this).
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Takes the exclusive lock of the directory `dir` without waiting: `None` when another
/// process holds it.
fn lock_dir(dir: &Path) -> Result<Option<Flock<File>>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(dir)
        .with_context(|| format!("opening {}", dir.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", dir.display())),
    }
}

/// Creates `dir` and its missing parents with mode 0700.
fn mkdir_private(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating cache directory {}", dir.display()))
}

/// Sets the mode of the directory `dir` to `mode` unless it is already. Only the owner
/// may: for anyone else (a cache shared on purpose) the mode stays as its owner set it.
fn restrict(dir: &Path, mode: u32) -> Result<()> {
    let meta = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.is_dir() && meta.mode() & 0o7777 != mode {
        match fs::set_permissions(dir, fs::Permissions::from_mode(mode)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => {
                return Err(e).with_context(|| format!("setting the mode of {}", dir.display()))
            }
        }
    }
    Ok(())
}

/// Copies `from` into the new file `to` (0600, created with `O_EXCL|O_NOFOLLOW`),
/// hashing while writing, and syncs it. Returns (size, sha256).
pub fn copy_hashing(from: &mut impl std::io::Read, to: &Path) -> Result<(u64, String)> {
    use std::io::Write;
    let file = verify::create_new(to, FILE_MODE)?;
    let mut w =
        crate::io::hash::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    std::io::copy(from, &mut w).with_context(|| format!("writing {}", to.display()))?;
    w.flush()
        .with_context(|| format!("writing {}", to.display()))?;
    let (buf, digest, n) = w.finish();
    let file = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", to.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", to.display()))?;
    Ok((n, digest))
}

/// The cache's warnings not yet taken by [`take_warnings`].
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records one warning about the cache (a damaged entry, repaired). The stages that find
/// one (fetch, decode, on several threads) have no reporter: the pipeline takes the
/// warnings with [`take_warnings`] into the build report (`report.json` and the summary),
/// or prints them through its reporter for the commands that write no report, so they
/// go where the build's other warnings go and `--quiet` silences the progress line.
pub fn warn(msg: &str) {
    WARNINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(msg.to_string());
}

/// The warnings [`warn`] recorded since the last call, in order.
pub fn take_warnings() -> Vec<String> {
    std::mem::take(&mut *WARNINGS.lock().unwrap_or_else(|e| e.into_inner()))
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

/// The cache's typed error (a mismatching cached file is fetched again); it lives in
/// [`crate::exit`], which gives it exit code 4.
pub use crate::exit::DigestMismatch;

#[cfg(test)]
mod tests;
