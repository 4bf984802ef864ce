//! Hands the machine to the real root: moves /dev, /proc, /sys and /run under the new
//! root, frees the initramfs (deletes its files without crossing into other mounts),
//! makes the new root `/` (mount --move + chroot) and execs its init.

use crate::console::{fail, At, Res};
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
use nix::unistd::{chdir, chroot, execv};
use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const STEP: &str = "switch-root";

/// The API file systems moved into the new root.
pub const MOVED: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

/// Switches to `new_root` and execs `init` with `args`; returns only on failure.
pub fn switch_root(new_root: &str, init: &str, args: &[String]) -> Res<Infallible> {
    for m in MOVED {
        let target = format!("{new_root}{m}");
        if !Path::new(&target).is_dir() {
            return Err(fail(
                STEP,
                &target,
                "missing: the root image must have empty /dev, /proc, /sys and /run",
            ));
        }
        mount(
            Some(m),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .at(STEP, format!("moving {m} to {target}"))?;
    }
    free_initramfs(new_root)?;
    chdir(new_root).at(STEP, new_root)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .at(STEP, format!("moving {new_root} to /"))?;
    chroot(".").at(STEP, "chroot")?;
    chdir("/").at(STEP, "chdir /")?;
    let init_c = CString::new(init).at("exec-init", init)?;
    let mut argv = vec![init_c.clone()];
    for a in args {
        argv.push(CString::new(a.as_str()).at("exec-init", a)?);
    }
    match execv(&init_c, &argv) {
        Ok(never) => match never {},
        Err(e) => Err(fail("exec-init", init, e)),
    }
}

/// Deletes everything on the initramfs (a ramfs or tmpfs at /) except mounts.
fn free_initramfs(new_root: &str) -> Res<()> {
    let st = statfs("/").at(STEP, "statfs /")?;
    let t = st.filesystem_type();
    // RAMFS_MAGIC from <linux/magic.h> (nix does not name it).
    if t != FsType(0x8584_58f6) && t != TMPFS_MAGIC {
        return Err(fail(
            STEP,
            "/",
            "is not an initramfs (ramfs/tmpfs); refusing to delete it",
        ));
    }
    let dev = fs::symlink_metadata("/").at(STEP, "/")?.dev();
    remove_tree(Path::new("/"), dev, Path::new(new_root));
    Ok(())
}

/// Best effort: a file that cannot be deleted only costs memory.
fn remove_tree(dir: &Path, dev: u64, keep: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p == keep {
            continue;
        }
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            remove_tree(&p, dev, keep);
            let _ = fs::remove_dir(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
}
