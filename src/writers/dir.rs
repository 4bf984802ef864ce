//! Writes the tree into a directory, from the tree alone: files are created fresh
//! (never through a symlink), ownership is applied only when running as root, and the
//! whole directory appears at its final path only when complete.

use crate::tree::{Kind, Tree};
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// Writes `tree` to `dest` (replacing it atomically). Returns the number of entries.
pub fn write_tree(tree: &Tree, dest: &Path) -> Result<usize> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = crate::io::atomic::temp_path_for(dest);
    // The top directory's mode is explicit (0755), not the umask's; the tree's own
    // directories get their modes from the tree below.
    crate::io::atomic::create_dir(&staging, crate::io::atomic::DIR_MODE)?;
    let result = fill(tree, &staging);
    if let Err(e) = result {
        let _ = make_writable_and_remove(&staging);
        return Err(e);
    }
    crate::io::atomic::replace_dir(&staging, dest)?;
    Ok(tree.len())
}

fn make_writable_and_remove(p: &Path) -> std::io::Result<()> {
    for e in walkdir::WalkDir::new(p).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(p)
}

fn fill(tree: &Tree, root: &Path) -> Result<()> {
    let is_root = nix::unistd::geteuid().is_root();
    let mut dirs = Vec::new();
    for (path, e) in tree.iter() {
        let p = root.join(path);
        match &e.kind {
            Kind::Dir => {
                fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
                dirs.push((p.clone(), e.mode));
            }
            Kind::File(c) => {
                fs::write(&p, c.as_slice()).with_context(|| format!("writing {}", p.display()))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o7777))
                    .with_context(|| format!("chmod {}", p.display()))?;
            }
            Kind::Symlink(t) => {
                symlink(t, &p).with_context(|| format!("symlink {}", p.display()))?
            }
            Kind::Hardlink(t) => fs::hard_link(root.join(t), &p)
                .with_context(|| format!("hard link {}", p.display()))?,
            Kind::CharDevice(..) | Kind::BlockDevice(..) | Kind::Fifo => {
                // Device nodes need root; an ordinary user gets an empty placeholder
                // (the tar and image writers carry the real node).
                if is_root {
                    let (kind, dev) = match e.kind {
                        Kind::CharDevice(a, b) => (
                            nix::sys::stat::SFlag::S_IFCHR,
                            nix::sys::stat::makedev(a as u64, b as u64),
                        ),
                        Kind::BlockDevice(a, b) => (
                            nix::sys::stat::SFlag::S_IFBLK,
                            nix::sys::stat::makedev(a as u64, b as u64),
                        ),
                        _ => (nix::sys::stat::SFlag::S_IFIFO, 0),
                    };
                    nix::sys::stat::mknod(
                        &p,
                        kind,
                        nix::sys::stat::Mode::from_bits_truncate(e.mode),
                        dev,
                    )
                    .with_context(|| format!("mknod {}", p.display()))?;
                } else {
                    fs::write(&p, b"").with_context(|| format!("writing {}", p.display()))?;
                }
            }
        }
        if is_root {
            nix::unistd::fchownat(
                None,
                &p,
                Some(nix::unistd::Uid::from_raw(e.uid)),
                Some(nix::unistd::Gid::from_raw(e.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("chown {}", p.display()))?;
            if let Kind::File(_) = e.kind {
                // chown clears setuid bits: set the mode again.
                fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o7777))
                    .with_context(|| format!("chmod {}", p.display()))?;
            }
        }
    }
    // Directory modes last, deepest first, so read-only directories can be filled.
    for (p, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}
