//! Atomic outputs: write to `.NAME.tmp-PID-RANDOM` beside the target, fsync, rename. A
//! failed write leaves the previous file untouched and removes the temporary one.
//!
//! Temporary files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` and an explicit mode
//! (set with `fchmod`, so the umask does not decide it): a symlink or file planted at a
//! temporary name is never followed or reused, and its name carries 64 random bits so it
//! cannot be guessed in advance either. While a temporary file exists it is registered
//! with [`crate::io::signals`], which removes it when SIGINT or SIGTERM ends the build.

use crate::io::signals;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The mode of every output file slipway writes (directories get [`DIR_MODE`]).
pub const FILE_MODE: u32 = 0o644;
/// The mode of every output directory.
pub const DIR_MODE: u32 = 0o755;

/// 64 bits that another process cannot predict: std's per-process random hash keys
/// (seeded from the OS) over a counter, the pid and the time.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// A temporary path in the same directory as `target`, unique to this process and call,
/// and not guessable: `.NAME.tmp-PID-RANDOM`.
pub fn temp_path_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}.tmp-{}-{:016x}", std::process::id(), random_u64());
    target.with_file_name(tmp)
}

/// Creates the new file `path` for writing with exactly `mode`: `O_EXCL|O_NOFOLLOW`, so
/// an existing file or symlink at `path` is an error and never followed.
pub fn create_new(path: &Path, mode: u32) -> Result<File> {
    let file = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (a new file, never through a symlink)",
                path.display()
            )
        })?;
    // The open's mode went through the umask; outputs get exactly `mode`.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, path.display()))?;
    Ok(file)
}

/// Creates the new directory `path` with exactly `mode` (never through a symlink: mkdir
/// fails on any existing name).
pub fn create_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, path.display()))
}

/// A file being written that appears at its final path only on [`AtomicFile::commit`].
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    _cleanup: signals::Registered,
}

impl AtomicFile {
    /// Starts writing `target` (its directory must exist), mode [`FILE_MODE`].
    pub fn create(target: &Path) -> Result<Self> {
        Self::create_mode(target, FILE_MODE)
    }

    /// Starts writing `target` with the file mode `mode`.
    pub fn create_mode(target: &Path, mode: u32) -> Result<Self> {
        Self::create_at(target, temp_path_for(target), mode)
    }

    fn create_at(target: &Path, tmp: PathBuf, mode: u32) -> Result<Self> {
        let cleanup = signals::register(&tmp);
        let file = create_new(&tmp, mode)?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            tmp,
            file: Some(file),
            _cleanup: cleanup,
        })
    }

    /// The temporary path being written.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// Flushes, fsyncs and renames the temporary file onto the target.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is present until commit");
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        drop(file);
        if let Err(e) = fs::rename(&self.tmp, &self.target) {
            let _ = fs::remove_file(&self.tmp);
            return Err(e).with_context(|| {
                format!(
                    "renaming {} to {}",
                    self.tmp.display(),
                    self.target.display()
                )
            });
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `target` atomically, mode [`FILE_MODE`].
pub fn write(target: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(target, bytes, FILE_MODE)
}

/// Writes `bytes` to `target` atomically with the file mode `mode`.
pub fn write_mode(target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = AtomicFile::create_mode(target, mode)?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", target.display()))?;
    f.commit()
}

/// Swaps the directory entries `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
/// Returns false, changing nothing, where the kernel or file system cannot exchange.
pub fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("exchanging {} and {}", a.display(), b.display())),
    }
}

/// Replaces the directory `target` with `staged` (a directory beside it): swapped in one
/// `renameat2(RENAME_EXCHANGE)`, the old one then removed. Where exchange is unsupported,
/// the old one is moved aside first and removed only after the new one is in place (a
/// crash between the two renames leaves no `target`, but the old one beside it).
pub fn replace_dir(staged: &Path, target: &Path) -> Result<()> {
    let had_old = fs::symlink_metadata(target).is_ok();
    if had_old && exchange(staged, target)? {
        // `staged` now names the old directory.
        return remove_tree(staged);
    }
    let old = temp_path_for(target);
    if had_old {
        fs::rename(target, &old).with_context(|| format!("moving aside {}", target.display()))?;
    }
    if let Err(e) = fs::rename(staged, target) {
        if had_old {
            let _ = fs::rename(&old, target);
        }
        return Err(e)
            .with_context(|| format!("renaming {} to {}", staged.display(), target.display()));
    }
    if had_old {
        remove_tree(&old)?;
    }
    Ok(())
}

/// Removes `p` and everything under it, making read-only directories writable first (a
/// tree written from an image has some); a missing `p` is not an error.
pub fn remove_tree(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Ok(m) if !m.is_dir() => {
            return fs::remove_file(p).with_context(|| format!("removing {}", p.display()))
        }
        _ => {}
    }
    if fs::remove_dir_all(p).is_ok() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(p).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
        }
    }
    fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dropped_file_leaves_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write(&p, b"good").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half").unwrap();
            // dropped without commit: a failed build
        }
        assert_eq!(fs::read(&p).unwrap(), b"good");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    /// Symlinks planted at every name the old scheme (`.NAME.tmp-PID-N`) would use, and
    /// one at the exact temporary name: none is followed.
    #[test]
    fn planted_symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = dir.path().join("out.txt");
        for n in 0..2000 {
            let name = format!(".out.txt.tmp-{}-{n}", std::process::id());
            symlink(&victim, dir.path().join(name)).unwrap();
        }
        for _ in 0..5 {
            write(&p, b"new").unwrap();
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());

        // A symlink at the very name chosen: an error naming it, the victim untouched.
        let tmp = temp_path_for(&p);
        symlink(&victim, &tmp).unwrap();
        let e = AtomicFile::create_at(&p, tmp.clone(), FILE_MODE)
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains(&tmp.display().to_string()),
            "{e:#}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A dangling symlink (the O_CREAT case that would create the victim).
        let absent = dir.path().join("absent");
        let tmp = temp_path_for(&p);
        symlink(&absent, &tmp).unwrap();
        assert!(create_new(&tmp, FILE_MODE).is_err());
        assert!(!absent.exists());
    }

    #[test]
    fn temp_names_are_not_predictable() {
        let a = temp_path_for(Path::new("/x/out"));
        let b = temp_path_for(Path::new("/x/out"));
        assert_ne!(a, b);
        let s = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            s.starts_with(&format!(".out.tmp-{}-", std::process::id())),
            "{s}"
        );
        assert_eq!(s.rsplit('-').next().unwrap().len(), 16, "{s}");
    }

    #[test]
    fn modes_are_explicit_not_umask() {
        let dir = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let p = dir.path().join("f");
        let r = write(&p, b"x");
        let d = dir.path().join("d");
        let r2 = create_dir(&d, DIR_MODE);
        nix::sys::stat::umask(old);
        r.unwrap();
        r2.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&p), 0o644);
        assert_eq!(mode(&d), 0o755);
        write_mode(&p, b"y", 0o600).unwrap();
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn replace_dir_swaps_whole_directories() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let staged = dir.path().join("s");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), b"1").unwrap();
        fs::create_dir(&staged).unwrap();
        fs::write(staged.join("new"), b"2").unwrap();
        replace_dir(&staged, &target).unwrap();
        assert!(target.join("new").exists() && !target.join("old").exists());
        assert!(!staged.exists());
        // Into a missing target.
        fs::create_dir(&staged).unwrap();
        let other = dir.path().join("u");
        replace_dir(&staged, &other).unwrap();
        assert!(other.is_dir());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
