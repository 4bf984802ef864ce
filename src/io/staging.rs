//! The output directory as one transaction: consumes the `-o` path of a build and
//! produces a private staging directory that every writer fills, swapped in whole at
//! the end. Either the old output set or the new one is there, never a mix.
//!
//! - **Lock.** `PARENT/.NAME.lock` (`O_NOFOLLOW`, mode 0600), `flock`ed for the whole
//!   build: a second build into the same output fails at once with an error naming the
//!   holder's pid (it does not wait: a build takes seconds to minutes, and a script that
//!   wants to queue can retry). Unlinked when the build ends.
//! - **Staging.** `PARENT/.NAME.staging-RANDOM`, mode 0700 while it is filled (an
//!   interrupted host build's setuid copies are out of reach), itself `flock`ed. Swapped
//!   with the output by `renameat2(RENAME_EXCHANGE)`; the old set, now at the staging
//!   name, is then removed. Where the file system cannot exchange, the old set is moved
//!   to a staging name first and the new one renamed in (a crash between the two renames
//!   leaves no output, and the old set at a staging name).
//! - **Stale.** A staging directory whose `flock` is free belongs to a build that died
//!   (SIGKILL, power loss): the next build into the same output removes it, and the
//!   `.*.tmp-*` files and `.slipway-disk-*` directories older slipway versions left in the
//!   output directory itself.
//! - **Signals.** The staging directory and the lock file are registered with
//!   [`crate::io::signals`]: SIGINT or SIGTERM removes both and exits 130 or 143.
//! - **What is replaced.** The whole directory. An existing output is replaced only if
//!   it is a slipway output (it has `report.json`, or holds only names slipway writes),
//!   so `-o ~` cannot swap a home directory away.
//!
//! See docs/decisions/0023-output-transaction.md.

use crate::io::atomic;
use crate::io::signals::{self, Registered};
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The names a build writes into an output directory (besides `sbom*.spdx.json`,
/// `disk.*` and hidden leftovers).
const KNOWN: &[&str] = &[
    "report.json",
    "rootfs.tar",
    "rootfs",
    "oci",
    "image.tar",
    "manifest.json",
    "uki.efi",
    "vmlinuz",
    "initrd",
];

/// An output being built: holds the output's lock and the staging directory.
pub struct Staged {
    /// The output path as the user gave it (reports name files under it).
    given: PathBuf,
    /// The output path, its symlinks resolved.
    target: PathBuf,
    staging: PathBuf,
    /// The output is a mount point: staged inside it, swapped entry by entry.
    mount_point: bool,
    committed: bool,
    /// Stale staging directories and leftovers removed when the build started.
    removed: Vec<PathBuf>,
    _staging_lock: Flock<File>,
    _staging_reg: Registered,
    _lock: OutputLock,
}

impl Staged {
    /// Locks `out`, removes stale staging and leftovers, and creates the staging directory.
    pub fn begin(out: &Path) -> Result<Staged> {
        let target = resolve(out)?;
        let (parent, name) = split(&target)?;
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let lock = OutputLock::acquire(&parent.join(format!(".{name}.lock")), out)?;
        check_replaceable(&target, out)?;
        let mut removed = remove_stale(&parent, &name)?;
        removed.extend(remove_leftovers(&target)?);
        let mount_point = is_mount_point(&target, &parent);
        let staging = if mount_point {
            // A mount point cannot be renamed: stage inside it, swap entry by entry.
            target.join(format!(".slipway-staging-{:016x}", atomic::random_u64()))
        } else {
            parent.join(format!(".{name}.staging-{:016x}", atomic::random_u64()))
        };
        let reg = signals::register(&staging);
        atomic::create_dir(&staging, 0o700)?;
        let dir = File::open(&staging).with_context(|| format!("opening {}", staging.display()))?;
        let staging_lock = Flock::lock(dir, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", staging.display()))?;
        Ok(Staged {
            given: out.to_path_buf(),
            target,
            staging,
            mount_point,
            committed: false,
            removed,
            _staging_lock: staging_lock,
            _staging_reg: reg,
            _lock: lock,
        })
    }

    /// The directory the writers fill.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Stale staging directories and leftovers removed at the start.
    pub fn removed(&self) -> &[PathBuf] {
        &self.removed
    }

    /// `p` (under the staging directory) as it will be named once committed.
    pub fn final_path(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(&self.staging) {
            Ok(rest) if rest.as_os_str().is_empty() => self.given.clone(),
            Ok(rest) => self.given.join(rest),
            Err(_) => p.to_path_buf(),
        }
    }

    /// Swaps the staging directory in as the output (mode 0755) and removes the old set.
    /// Returns false when the file system could not exchange and renames were used.
    pub fn commit(mut self) -> Result<bool> {
        fs::set_permissions(&self.staging, fs::Permissions::from_mode(atomic::DIR_MODE))
            .with_context(|| format!("chmod 755 {}", self.staging.display()))?;
        sync_dir(&self.staging)?;
        crate::io::faults::point("commit")?;
        let exchanged = signals::critical(|| self.swap())?;
        self.committed = true;
        crate::io::faults::point("swapped")?;
        // `staging` names the old set now (or nothing, for a first build).
        atomic::remove_tree(&self.staging)?;
        sync_dir(&split(&self.target)?.0)?;
        Ok(exchanged)
    }

    fn swap(&self) -> Result<bool> {
        if self.mount_point {
            self.swap_entries()?;
            return Ok(false);
        }
        if fs::symlink_metadata(&self.target).is_err() {
            fs::rename(&self.staging, &self.target).with_context(|| {
                format!(
                    "renaming {} to {}",
                    self.staging.display(),
                    self.target.display()
                )
            })?;
            return Ok(true);
        }
        if atomic::exchange(&self.staging, &self.target)? {
            return Ok(true);
        }
        // No RENAME_EXCHANGE here: old set aside (to a staging name, so that a crash
        // between the renames leaves it for the next build to clean), new set in.
        let (parent, name) = split(&self.target)?;
        let aside = parent.join(format!(".{name}.staging-{:016x}", atomic::random_u64()));
        fs::rename(&self.target, &aside)
            .with_context(|| format!("moving aside {}", self.target.display()))?;
        if let Err(e) = fs::rename(&self.staging, &self.target) {
            let _ = fs::rename(&aside, &self.target);
            return Err(e)
                .with_context(|| format!("renaming {} into place", self.staging.display()));
        }
        fs::rename(&aside, &self.staging)
            .with_context(|| format!("renaming {}", aside.display()))?;
        Ok(false)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = atomic::remove_tree(&self.staging);
        }
    }
}

impl Staged {
    /// The output is a mount point (a volume): each new entry is exchanged with the old
    /// one of its name (`report.json` last), then old entries the new set lacks go. Each
    /// entry is swapped atomically, the set is not.
    fn swap_entries(&self) -> Result<()> {
        let read = |d: &Path| -> Result<Vec<std::ffi::OsString>> {
            let mut v: Vec<_> = fs::read_dir(d)
                .with_context(|| format!("reading {}", d.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", d.display()))?;
            v.sort_by_key(|n| n == "report.json");
            Ok(v)
        };
        let new = read(&self.staging)?;
        for n in &new {
            let (from, to) = (self.staging.join(n), self.target.join(n));
            if fs::symlink_metadata(&to).is_ok() && !atomic::exchange(&from, &to)? {
                atomic::remove_tree(&to)?;
            }
            if fs::symlink_metadata(&from).is_ok() && fs::symlink_metadata(&to).is_err() {
                fs::rename(&from, &to)
                    .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
            }
        }
        let own = self.staging.file_name();
        for n in read(&self.target)? {
            if !new.contains(&n) && Some(n.as_os_str()) != own {
                atomic::remove_tree(&self.target.join(&n))?;
            }
        }
        Ok(())
    }
}

/// Whether `target` (an existing directory) is mounted on a file system other than
/// `parent`'s.
fn is_mount_point(target: &Path, parent: &Path) -> bool {
    match (fs::symlink_metadata(target), fs::metadata(parent)) {
        (Ok(t), Ok(p)) => t.is_dir() && t.dev() != p.dev(),
        _ => false,
    }
}

/// `out` with symlinks resolved: an existing symlink to a directory means its target.
fn resolve(out: &Path) -> Result<PathBuf> {
    match fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(out)
            .with_context(|| format!("{}: resolving the symlink", out.display())),
        _ => Ok(out.to_path_buf()),
    }
}

/// The parent directory and the file name of `target`.
fn split(target: &Path) -> Result<(PathBuf, String)> {
    let abs = std::path::absolute(target)
        .with_context(|| format!("{}: resolving the path", target.display()))?;
    let name = match abs.file_name() {
        Some(n)
            if !matches!(
                abs.components().next_back(),
                Some(std::path::Component::ParentDir)
            ) =>
        {
            n.to_string_lossy().into_owned()
        }
        _ => bail!(
            "{}: name the output directory by its own name (not / or ..)",
            target.display()
        ),
    };
    let parent = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok((parent, name))
}

/// Refuses to replace an existing directory that is not a slipway output, or a file.
fn check_replaceable(target: &Path, given: &Path) -> Result<()> {
    let m = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if !m.is_dir() {
        return Err(crate::exit::err(
            crate::exit::Code::BadInput,
            format!("{}: exists and is not a directory", given.display()),
        ));
    }
    let entries = fs::read_dir(target).with_context(|| format!("reading {}", target.display()))?;
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.iter().any(|n| n == "report.json") {
        return Ok(());
    }
    let foreign = names.iter().find(|n| {
        !(n.starts_with('.')
            || KNOWN.contains(&n.as_str())
            || n.starts_with("disk.")
            || (n.starts_with("sbom") && n.ends_with(".spdx.json")))
    });
    match foreign {
        Some(n) => Err(crate::exit::err(
            crate::exit::Code::BadInput,
            format!(
                "{}: not a slipway output directory (it holds {n:?} and no report.json); a build \
                 replaces the whole directory, so choose a new or empty one",
                given.display()
            ),
        )),
        None => Ok(()),
    }
}

/// Removes `PARENT/.NAME.staging-*` whose lock no build holds.
fn remove_stale(parent: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!(".{name}.staging-");
    let mut removed = Vec::new();
    let entries = fs::read_dir(parent).with_context(|| format!("reading {}", parent.display()))?;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let p = e.path();
        let Ok(f) = File::options()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&p)
        else {
            // A symlink or something unreadable: remove the name itself.
            atomic::remove_tree(&p)?;
            removed.push(p);
            continue;
        };
        if let Ok(_held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            atomic::remove_tree(&p)?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Removes what an interrupted build of an older slipway left inside the output itself:
/// `.*.tmp-*` files and directories, `.slipway-disk-*` staging directories.
fn remove_leftovers(target: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(target) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        // `.slipway-staging-*`: staging inside an output that is a mount point; its
        // build is over, as this one holds the output's lock.
        if (n.starts_with('.') && n.contains(".tmp-"))
            || n.starts_with(".slipway-disk-")
            || n.starts_with(".slipway-staging-")
        {
            atomic::remove_tree(&e.path())?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

fn sync_dir(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", p.display()))
}

/// The lock on one output: an `flock`ed file beside it, unlinked when released.
struct OutputLock {
    path: PathBuf,
    _reg: Registered,
    _flock: Flock<File>,
}

impl OutputLock {
    fn acquire(path: &Path, out: &Path) -> Result<OutputLock> {
        for _ in 0..20 {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(path)
                .with_context(|| {
                    format!(
                        "{}: opening its lock file {} (a regular file, never through a symlink)",
                        out.display(),
                        path.display()
                    )
                })?;
            let meta = f
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            if !meta.is_file() {
                bail!(
                    "{}: the lock file {} is not a regular file",
                    out.display(),
                    path.display()
                );
            }
            let mut flock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut pid = String::new();
                    let _ = f.read_to_string(&mut pid);
                    let who = match pid.trim() {
                        "" => String::new(),
                        p => format!(" (pid {p})"),
                    };
                    bail!(
                        "{}: another slipway build{who} is writing this output; wait for it to \
                         finish or build into another directory (lock: {})",
                        out.display(),
                        path.display()
                    );
                }
                Err((_, e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            };
            // The holder before us may have unlinked the file after we opened it: the
            // lock counts only on the file the name still points to.
            match fs::symlink_metadata(path) {
                Ok(now) if now.ino() == meta.ino() && now.dev() == meta.dev() => {}
                _ => continue,
            }
            flock
                .set_len(0)
                .with_context(|| format!("writing {}", path.display()))?;
            flock
                .write_all(std::process::id().to_string().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(OutputLock {
                path: path.to_path_buf(),
                _reg: signals::register(path),
                _flock: flock,
            });
        }
        bail!(
            "{}: could not take the lock {}",
            out.display(),
            path.display()
        )
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Unlinked while still held: a process waiting on the old file sees the name
        // moved on and retries with a fresh one.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_swaps_and_drop_discards() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("report.json"), b"old").unwrap();
        {
            let s = Staged::begin(&out).unwrap();
            fs::write(s.path().join("report.json"), b"half").unwrap();
            // A second build while this one holds the lock.
            let e = Staged::begin(&out).err().unwrap();
            assert!(format!("{e:#}").contains("another slipway build"), "{e:#}");
        }
        assert_eq!(fs::read(out.join("report.json")).unwrap(), b"old");
        assert_eq!(names(d.path()), ["out"]);
        let s = Staged::begin(&out).unwrap();
        let mode = fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::write(s.path().join("report.json"), b"new").unwrap();
        assert_eq!(s.final_path(&s.path().join("a/b")), out.join("a/b"));
        assert!(s.commit().unwrap());
        assert_eq!(fs::read(out.join("report.json")).unwrap(), b"new");
        assert_eq!(names(&out), ["report.json"]);
        assert_eq!(names(d.path()), ["out"]);
        let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn stale_staging_and_leftovers_are_removed_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("report.json"), b"old").unwrap();
        fs::write(out.join(".disk.raw.tmp-123-4"), b"x").unwrap();
        fs::create_dir(out.join(".slipway-disk-abc")).unwrap();
        let stale = d.path().join(".out.staging-dead");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("f"), b"x").unwrap();
        // A staging directory another process holds is left alone.
        let live = d.path().join(".out.staging-live");
        fs::create_dir(&live).unwrap();
        let held =
            Flock::lock(File::open(&live).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
        let s = Staged::begin(&out).unwrap();
        assert_eq!(s.removed().len(), 3, "{:?}", s.removed());
        assert!(!stale.exists() && live.exists());
        assert_eq!(names(&out), ["report.json"]);
        drop(s);
        drop(held);
    }

    /// An output that is a mount point (a volume) cannot be renamed: staged inside it and
    /// swapped entry by entry. Needs root for the tmpfs; skipped (saying so) without.
    #[test]
    fn a_mount_point_output_is_swapped_entry_by_entry() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&out)
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs (not root?)");
            return;
        }
        let result = std::panic::catch_unwind(|| {
            fs::write(out.join("report.json"), b"old").unwrap();
            fs::write(out.join("gone.tar"), b"old").unwrap();
            let s = Staged::begin(&out).unwrap();
            assert!(s.path().starts_with(&out));
            fs::write(s.path().join("report.json"), b"new").unwrap();
            fs::create_dir(s.path().join("oci")).unwrap();
            assert!(!s.commit().unwrap());
            assert_eq!(names(&out), ["oci", "report.json"]);
            assert_eq!(fs::read(out.join("report.json")).unwrap(), b"new");
            assert_eq!(names(d.path()), ["out"]);
        });
        let _ = std::process::Command::new("umount").arg(&out).status();
        result.unwrap();
    }

    #[test]
    fn refuses_foreign_directories_and_planted_lock_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        fs::create_dir(&home).unwrap();
        fs::write(home.join("notes.txt"), b"mine").unwrap();
        let e = Staged::begin(&home).err().unwrap();
        assert!(format!("{e:#}").contains("not a slipway output"), "{e:#}");
        assert_eq!(names(&home), ["notes.txt"]);

        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(".out.lock")).unwrap();
        let e = Staged::begin(&d.path().join("out")).err().unwrap();
        assert!(format!("{e:#}").contains(".out.lock"), "{e:#}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }
}
