//! The /var partition as built: an empty ext4 file system of a given size, made by
//! `mkfs.ext4` into a file. slipway-init grows it to fill the disk at first boot and
//! systemd-tmpfiles fills it (the tree's own /var is copied from
//! `/usr/share/factory/var`, see [`crate::disk::image`]).
//!
//! Reproducible: the UUID and the directory hash seed are given (`-U`,
//! `-E hash_seed=`), `E2FSPROGS_FAKE_TIME` replaces the clock for every time stamp
//! mke2fs writes, and the host's `/etc/mke2fs.conf` is replaced by a fixed profile
//! (`MKE2FS_CONFIG`) so its defaults do not leak in.

use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The mke2fs profile used instead of the host's: 4 KiB blocks, the ext4 features
/// Debian 12 and 13 kernels support, 256-byte inodes.
const PROFILE: &str = "[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\tdefault_mntopts = acl,user_xattr\n\tenable_periodic_fsck = 0\n\tblocksize = 4096\n\tinode_size = 256\n\tinode_ratio = 16384\n\n[fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize\n\t}\n";

/// Writes an empty ext4 file system labelled `label` of `size` bytes (a multiple of
/// 4096) to `out`, with UUID `uuid` (text) and every time stamp `epoch`.
pub fn write_empty(out: &Path, size: u64, label: &str, uuid: &str, epoch: u64) -> Result<()> {
    crate::tool::require(&["mkfs.ext4"])?;
    if size % 4096 != 0 || size < (8 << 20) {
        bail!("ext4 size {size} is not a multiple of 4096 of at least 8 MiB");
    }
    let dir = out.parent().unwrap_or(Path::new("."));
    let profile = tempfile::Builder::new()
        .prefix(".mke2fs-")
        .suffix(".conf")
        .tempfile_in(dir)
        .with_context(|| format!("creating a mke2fs profile in {}", dir.display()))?;
    std::fs::write(profile.path(), PROFILE)
        .with_context(|| format!("writing {}", profile.path().display()))?;
    let _ = std::fs::remove_file(out);
    let f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", out.display()))?;
    drop(f);
    Tool::new(
        format!("making the ext4 file system {}", out.display()),
        "mkfs.ext4",
    )
    .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid])
    .arg("-E")
    .arg(format!(
        "hash_seed={uuid},lazy_itable_init=0,lazy_journal_init=0,nodiscard,root_owner=0:0"
    ))
    .env("MKE2FS_CONFIG", profile.path())
    .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
    .env("MKE2FS_DEVICE_SECTSIZE", "512")
    .arg(out)
    .run()?;
    Ok(())
}
