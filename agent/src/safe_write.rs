//! Symlink-safe writes: every file provisioning writes, and every directory it creates
//! or chowns, is reached from a directory fd, one path component at a time, with
//! `openat(O_NOFOLLOW)`.
//!
//! Consumes a root directory (`/` on a booted image, a temporary directory in tests) and
//! a path in the image; produces files written atomically (a temp name that nobody can
//! guess, created with `O_CREAT | O_EXCL | O_NOFOLLOW`, `fchown` and `fchmod` on the
//! open file, fsync, `renameat` over the target, which replaces a symlink there rather
//! than writing through it) and directories opened or created (`mkdirat`) the same way.
//!
//! Provisioning runs as root and writes into places other users can write (a home
//! directory, its `.ssh`): a symlink planted there must not send a root-owned write or
//! a `chown` elsewhere. A symlink on the way is followed only when it is the image's or
//! the administrator's: owned by root, in a directory owned by root that nobody else can
//! write (so `/root -> /var/roothome` and `/var/run -> /run` work). Any other symlink is
//! refused, with an error naming it. Absolute targets resolve under the root, `..`
//! never climbs above it.

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode};
use nix::unistd::{fchown, fsync, unlinkat, Gid, Uid, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one walk, as the kernel's own limit (`MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;
/// Temp names tried before giving up (a name taken means someone planted it).
const TEMP_TRIES: u32 = 16;

/// An open directory and its path in the image (for messages).
pub struct Dir {
    fd: OwnedFd,
    /// The path in the image, as asked for (`/var/home/alice/.ssh`).
    pub path: PathBuf,
}

/// `openat(dir, name, flags)` as an owned fd.
#[allow(unsafe_code)]
fn open_owned(dir: RawFd, name: &OsStr, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let fd = openat(Some(dir), name, flags | OFlag::O_CLOEXEC, mode)?;
    // SAFETY: `fd` was just returned by a successful openat(2) and nothing else holds
    // it; the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_at(dir: RawFd, name: &OsStr) -> nix::Result<OwnedFd> {
    open_owned(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

/// Whether the symlink `name` in `dir` is the image's or root's own: owned by root, in
/// a directory owned by root that neither group nor others may write.
fn trusted_link(dir: RawFd, name: &OsStr) -> bool {
    let Ok(d) = fstat(dir) else { return false };
    let Ok(l) = fstatat(Some(dir), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) else {
        return false;
    };
    d.st_uid == 0 && d.st_mode & 0o022 == 0 && l.st_uid == 0
}

/// The directory `path` (in the image) under `root`, each component opened with
/// `O_NOFOLLOW` from its parent's fd; missing ones are created with `create` (a mode)
/// when given. See the module docs for the symlinks that are followed.
pub fn open_dir(root: &Path, path: &Path, create: Option<u32>) -> Result<Dir, String> {
    let shown = Path::new("/").join(path.strip_prefix("/").unwrap_or(path));
    let fail = |what: String| format!("{}: {what}", shown.display());
    let root_fd = File::open(root)
        .map(OwnedFd::from)
        .map_err(|e| format!("opening {}: {e}", root.display()))?;
    // Components still to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path);
    // The directories walked so far (for `..`), the current one last.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    let mut walked = PathBuf::from("/");
    while let Some(name) = todo.pop() {
        if name == ".." {
            stack.pop();
            walked.pop();
            continue;
        }
        let cur = stack.last().unwrap_or(&root_fd).as_raw_fd();
        match open_dir_at(cur, &name) {
            Ok(fd) => {
                stack.push(fd);
                walked.push(&name);
                continue;
            }
            Err(Errno::ENOENT) if create.is_some() => {
                let mode = Mode::from_bits_truncate(create.unwrap_or(0o755));
                match mkdirat(Some(cur), name.as_os_str(), mode) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(fail(format!(
                            "creating {}: {e}",
                            walked.join(&name).display()
                        )))
                    }
                }
                let fd = open_dir_at(cur, &name)
                    .map_err(|e| fail(format!("opening {}: {e}", walked.join(&name).display())))?;
                stack.push(fd);
                walked.push(&name);
                continue;
            }
            // ELOOP: a symlink (O_NOFOLLOW); ENOTDIR: a symlink or a file.
            Err(Errno::ELOOP | Errno::ENOTDIR) => {}
            Err(e) => {
                return Err(fail(format!(
                    "opening {}: {e}",
                    walked.join(&name).display()
                )))
            }
        }
        let here = walked.join(&name);
        let target = match readlinkat(Some(cur), name.as_os_str()) {
            Ok(t) => t,
            Err(_) => return Err(fail(format!("{} is not a directory", here.display()))),
        };
        if !trusted_link(cur, &name) {
            return Err(fail(format!(
                "refusing to follow the symlink {} (not root's own, in a directory only root may write)",
                here.display()
            )));
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(fail(format!("more than {MAX_LINKS} symlinks")));
        }
        let target = Path::new(&target);
        if target.is_absolute() {
            stack.clear();
            walked = PathBuf::from("/");
        }
        push_components(&mut todo, target);
    }
    let fd = stack.pop().unwrap_or(root_fd);
    Ok(Dir { fd, path: shown })
}

/// Pushes `p`'s components onto `todo` so that the first is popped first; `.` and the
/// root are dropped (an absolute target is handled by the caller).
fn push_components(todo: &mut Vec<OsString>, p: &Path) {
    for c in p.components().rev() {
        match c {
            Component::Normal(n) => todo.push(n.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

impl Dir {
    /// Sets the directory's owner and mode, through its fd.
    pub fn set_owner_mode(&self, owner: (u32, u32), mode: u32) -> Result<(), String> {
        let raw = self.fd.as_raw_fd();
        fchown(
            raw,
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
        )
        .and_then(|()| fchmod(raw, Mode::from_bits_truncate(mode)))
        .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Writes `data` as the file `name` in this directory, atomically: a fresh temp
    /// file (see [`Dir::create_temp`]), owner, mode, fsync, `renameat` over `name`.
    pub fn write_file(
        &self,
        name: &OsStr,
        data: &[u8],
        mode: u32,
        owner: (u32, u32),
    ) -> Result<(), String> {
        let path = self.path.join(name);
        let err = |e: String| format!("writing {}: {e}", path.display());
        let (tmp, mut f) = self.create_temp(name, random_names()).map_err(err)?;
        let raw = self.fd.as_raw_fd();
        let result = (|| {
            f.write_all(data)?;
            std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1))?;
            // After chown, which clears set-id bits.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            f.sync_all()?;
            renameat(Some(raw), tmp.as_os_str(), Some(raw), name).map_err(std::io::Error::from)?;
            // The rename itself, on disk.
            fsync(raw).map_err(std::io::Error::from)
        })();
        result.map_err(|e| {
            let _ = unlinkat(Some(raw), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            err(e.to_string())
        })
    }

    /// Creates `.NAME.tmp-XXXX` with the first of `names` (suffixes) that is free:
    /// `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, so a file or symlink planted at the
    /// name is never opened; a taken name is passed over.
    fn create_temp(
        &self,
        name: &OsStr,
        names: impl Iterator<Item = String>,
    ) -> Result<(OsString, File), String> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        for suffix in names.take(TEMP_TRIES as usize) {
            let mut tmp = OsString::from(".");
            tmp.push(name);
            tmp.push(format!(".tmp-{suffix}"));
            match open_owned(
                self.fd.as_raw_fd(),
                &tmp,
                flags,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => return Ok((tmp, File::from(fd))),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(format!("creating a temp file: {e}")),
            }
        }
        Err(format!(
            "{TEMP_TRIES} temp names in {} were taken",
            self.path.display()
        ))
    }
}

/// Endless unpredictable suffixes: 16 hex digits from /dev/urandom (the pid and the
/// clock when it cannot be read: `O_EXCL` keeps a guessed name harmless anyway).
fn random_names() -> impl Iterator<Item = String> {
    let mut n = 0u64;
    std::iter::from_fn(move || {
        n += 1;
        let mut b = [0u8; 8];
        let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        let v = match random {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                t ^ (u64::from(std::process::id()) << 32) ^ n
            }
        };
        Some(format!("{v:016x}"))
    })
}

/// Writes `data` to `path` (in the image under `root`) atomically, creating missing
/// parent directories 0755 (root's), never through a symlink that is not root's own.
pub fn write(
    root: &Path,
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: (u32, u32),
) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: no file name", path.display()))?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = open_dir(root, parent, Some(0o755))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    dir.write_file(name, data, mode, owner)
}

/// Whether `name` in `dir` is a symlink (tests).
#[cfg(test)]
fn is_link(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(name))
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::tests::tempfile_lite::Dir as TempDir;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn writes_atomically_and_creates_parents() {
        let d = TempDir::new();
        write(&d.0, Path::new("/etc/a/b.conf"), b"x\n", 0o640, (0, 0)).unwrap();
        assert_eq!(fs::read(d.0.join("etc/a/b.conf")).unwrap(), b"x\n");
        let m = fs::metadata(d.0.join("etc/a/b.conf")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(
            fs::metadata(d.0.join("etc/a")).unwrap().mode() & 0o777,
            0o755
        );
        let names: Vec<_> = fs::read_dir(d.0.join("etc/a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b.conf"]);
    }

    #[test]
    fn a_planted_temp_name_is_passed_over_not_followed() {
        let d = TempDir::new();
        let outside = TempDir::new();
        fs::create_dir_all(d.0.join("etc")).unwrap();
        fs::write(outside.0.join("victim"), "keep").unwrap();
        symlink(
            outside.0.join("victim"),
            d.0.join("etc/.hostname.tmp-planted"),
        )
        .unwrap();
        let dir = open_dir(&d.0, Path::new("/etc"), None).unwrap();
        let names = ["planted".to_string(), "free".to_string()].into_iter();
        let (tmp, _f) = dir.create_temp(OsStr::new("hostname"), names).unwrap();
        assert_eq!(tmp, ".hostname.tmp-free");
        assert_eq!(
            fs::read_to_string(outside.0.join("victim")).unwrap(),
            "keep"
        );
        assert!(is_link(&d.0.join("etc"), ".hostname.tmp-planted"));
        // Every name taken: an error, nothing opened.
        let names = std::iter::repeat("planted".to_string());
        let e = dir.create_temp(OsStr::new("hostname"), names).unwrap_err();
        assert!(e.contains("16 temp names in /etc were taken"), "{e}");
    }

    /// A symlink owned by someone else, or in a directory someone else may write, is
    /// refused; root's own, in a root-only directory, is followed (with an absolute
    /// target resolved under the root).
    #[test]
    fn only_roots_own_symlinks_are_followed() {
        let d = TempDir::new();
        fs::create_dir_all(d.0.join("var/roothome")).unwrap();
        fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        symlink("/var/roothome", d.0.join("root")).unwrap();
        let root_owned = fs::symlink_metadata(d.0.join("root")).unwrap().uid() == 0;
        let r = write(&d.0, Path::new("/root/.profile"), b"p", 0o644, (0, 0));
        if root_owned {
            r.unwrap();
            assert_eq!(fs::read(d.0.join("var/roothome/.profile")).unwrap(), b"p");
        } else {
            assert!(r
                .unwrap_err()
                .contains("refusing to follow the symlink /root"));
        }
        // The same link in a directory others may write: refused.
        fs::create_dir_all(d.0.join("tmp")).unwrap();
        fs::set_permissions(
            d.0.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        symlink("/var/roothome", d.0.join("tmp/x")).unwrap();
        let e = write(&d.0, Path::new("/tmp/x/f"), b"p", 0o644, (0, 0)).unwrap_err();
        assert_eq!(
            e,
            "writing /tmp/x/f: /tmp/x: refusing to follow the symlink /tmp/x (not root's own, in a directory only root may write)"
        );
        assert!(!d.0.join("var/roothome/f").exists());
        // `..` in a target stays under the root.
        if root_owned {
            symlink("../../../../../var/roothome", d.0.join("var/up")).unwrap();
            write(&d.0, Path::new("/var/up/g"), b"g", 0o644, (0, 0)).unwrap();
            assert!(d.0.join("var/roothome/g").exists());
        }
    }
}
