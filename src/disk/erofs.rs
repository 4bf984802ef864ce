//! The read-only root file system through the host's mksquashfs: consumes the image
//! [`Tree`] and produces a squashfs image (xz, or zstd) whose size is a multiple of 4096,
//! ready for the dm-verity hash tree. Host images' default root is written natively
//! (`crate::disk::squashfs`); this path remains for `root-fs = "squashfs-xz"` and as the
//! reference the native writer is compared with. The module keeps its old name: erofs
//! roots were retired (docs/decisions/0034-erofs.md).
//!
//! mksquashfs reads a directory, so the tree is staged with the dir writer into a
//! temporary directory beside the output, and the modes the umask touched (the root
//! directory, device nodes) are set again. Nothing of the staging or the host may reach
//! the image: `SOURCE_DATE_EPOCH` stamps every inode and the superblock with the epoch
//! (the host clock and the staged mtimes are ignored), `-no-xattrs` keeps host xattrs
//! (SELinux labels of the staging folder) out, and mksquashfs sorts directory entries by
//! name itself, so readdir order does not matter (`-reproducible` also fixes the order
//! its threads write blocks). Ownership comes from the staged files, which the dir
//! writer chowns when running as root; without root a tree with non-root owners is
//! refused rather than written with wrong owners.
//! Why squashfs: docs/decisions/0014-root-fs-and-esp.md and 0016-host-image-root.md.

use crate::tool::Tool;
use crate::tree::{Kind, Tree};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Block alignment the dm-verity hash tree needs.
pub const ALIGN: u64 = 4096;

/// The read-only file system to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFs {
    /// squashfs, xz with the x86 BCJ filter on amd64, 128 KiB blocks (mksquashfs): the
    /// smallest by measurement (docs/decisions/0014-root-fs-and-esp.md), and slow to
    /// write.
    SquashfsXz,
    /// squashfs, zstd level [`SQUASHFS_ZSTD_LEVEL`], 128 KiB blocks: host images'
    /// default, 50x faster to write than xz for 17% more bytes
    /// (docs/decisions/0016-host-image-root.md).
    SquashfsZstd,
}

/// The zstd level of [`RootFs::SquashfsZstd`].
pub const SQUASHFS_ZSTD_LEVEL: u32 = 3;

impl RootFs {
    /// Whether the root is written by a host program ([`RootFs::program`]) from a tree
    /// staged on disk with its owners (so only root can build it), rather than by
    /// slipway's own squashfs writer.
    pub fn needs_host_tool(self) -> bool {
        self != RootFs::SquashfsZstd
    }

    /// The host program that writes this root when [`RootFs::needs_host_tool`].
    pub fn program(self) -> &'static str {
        "mksquashfs"
    }
}

/// Writes `tree` as a read-only `fs_kind` image at `out` (atomically), every timestamp
/// `epoch`; `_uuid` is unused (squashfs has no UUID; kept for the callers of the retired
/// erofs path); `arch` (Debian architecture) picks squashfs's BCJ filter.
pub fn write_root(
    tree: &Tree,
    fs_kind: RootFs,
    epoch: u64,
    _uuid: &[u8; 16],
    arch: &str,
    out: &Path,
) -> Result<crate::output::Output> {
    let kind = "squashfs";
    crate::tool::require(&[fs_kind.program()])?;
    if let Some((p, _)) = tree.iter().find(|(_, e)| !e.xattrs.is_empty()) {
        bail!("writing {kind} image {}: /{p} has extended attributes, which the {kind} writer does not carry yet", out.display());
    }
    let is_root = nix::unistd::geteuid().is_root();
    let foreign_owner = tree.iter().find(|(_, e)| e.uid != 0 || e.gid != 0);
    if let (false, Some((p, e))) = (is_root, foreign_owner) {
        bail!(
            "writing {kind} image {}: /{p} is owned by {}:{}, and only root can stage files with their owners (run as root)",
            out.display(),
            e.uid,
            e.gid
        );
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".rootfs-staging-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a staging directory in {}", dir.display()))?;
    let root = staging.path().join("root");
    crate::writers::dir::write_tree(tree, &root)
        .with_context(|| format!("staging the tree for {}", out.display()))?;
    fix_modes(tree, &root)?;

    let tmp = crate::io::atomic::temp_path_for(out);
    let made = mksquashfs(&root, fs_kind, epoch, arch, &tmp, !is_root);
    let result = made.and_then(|()| finish(&tmp, out, kind));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn mksquashfs(
    src: &Path,
    fs_kind: RootFs,
    epoch: u64,
    arch: &str,
    dest: &Path,
    all_root: bool,
) -> Result<()> {
    let mut t = Tool::new(
        format!("writing squashfs image {}", dest.display()),
        "mksquashfs",
    )
    .arg(src)
    .arg(dest);
    if fs_kind == RootFs::SquashfsZstd {
        t = t.args(["-comp", "zstd", "-Xcompression-level"]);
        t = t.arg(SQUASHFS_ZSTD_LEVEL.to_string());
    } else {
        t = t.args(["-comp", "xz"]);
        // mksquashfs 4.5 knows no arm64 BCJ filter; other architectures go without.
        if arch == "amd64" {
            t = t.args(["-Xbcj", "x86"]);
        }
    }
    t = t
        .args(["-b", "131072", "-noappend", "-no-xattrs", "-reproducible"])
        .args(["-quiet", "-no-progress"]);
    if all_root {
        t = t.arg("-all-root");
    }
    // SOURCE_DATE_EPOCH sets the creation time and every file time; mksquashfs refuses
    // it together with -all-time/-mkfs-time, and the caller's value must not win.
    t.env("SOURCE_DATE_EPOCH", epoch.to_string()).run()?;
    Ok(())
}

/// Modes the staging cannot be trusted with: the root directory (created with the
/// process umask) and device nodes and fifos (mknod applies the umask).
fn fix_modes(tree: &Tree, root: &Path) -> Result<()> {
    let root_mode = tree.get("").map_or(0o755, |e| e.mode & 0o7777);
    let special = tree.iter().filter(|(_, e)| {
        matches!(
            e.kind,
            Kind::CharDevice(..) | Kind::BlockDevice(..) | Kind::Fifo
        )
    });
    for (p, mode) in std::iter::once((root.to_path_buf(), root_mode))
        .chain(special.map(|(p, e)| (root.join(p), e.mode & 0o7777)))
    {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}

/// Pads `tmp` to [`ALIGN`], hashes it, fsyncs it and renames it onto `out`.
fn finish(tmp: &Path, out: &Path, kind: &str) -> Result<crate::output::Output> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(tmp)
        .with_context(|| format!("opening {}", tmp.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading the size of {}", tmp.display()))?
        .len();
    let size = len.div_ceil(ALIGN) * ALIGN;
    let pad = usize::try_from(size - len).context("padding size")?;
    f.write_all(&vec![0u8; pad])
        .with_context(|| format!("padding {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    let (sha256, hashed) = crate::io::hash::sha256_file(tmp)?;
    if hashed != size {
        bail!(
            "{} changed while being written ({hashed} bytes, expected {size})",
            tmp.display()
        );
    }
    fs::rename(tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(crate::output::Output {
        kind: kind.into(),
        path: out.display().to_string(),
        size,
        sha256,
    })
}
