//! qcow2 (OpenStack, libvirt, local QEMU): `qemu-img convert` with zlib compression
//! (`-c`). qcow2 headers carry no time stamps or random ids, and single-threaded
//! conversion writes clusters in order, so the same raw disk gives the same bytes.

use crate::tool::Tool;
use anyhow::{Context, Result};
use std::path::Path;

/// Compressed qcow2 (version 3).
pub struct Qcow2;

impl super::DiskFormat for Qcow2 {
    fn name(&self) -> &'static str {
        "qcow2"
    }
    fn file_name(&self) -> &'static str {
        "disk.qcow2"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["qemu-img"]
    }
    fn drivers(&self) -> &'static [super::Drivers] {
        // OpenStack and local QEMU/KVM: virtio disks and NICs.
        &[super::Drivers {
            platform: "openstack",
            modules: &["virtio_blk", "virtio_net"],
        }]
    }
    fn write(&self, src: &super::Source, dest: &Path) -> Result<()> {
        let raw = src.raw;
        let tmp = crate::io::atomic::temp_path_for(dest);
        let _cleanup = crate::io::signals::register(&tmp);
        // Created here (O_EXCL, never through a symlink, mode 0644) and written in place
        // by qemu-img, which opens an existing file without replacing it.
        drop(crate::io::atomic::create_new(
            &tmp,
            crate::io::atomic::FILE_MODE,
        )?);
        let res = Tool::new(format!("converting {} to qcow2", raw.display()), "qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2", "-c"])
            .args(["-o", "compat=1.1,compression_type=zlib", "-m", "1"])
            .arg(raw)
            .arg(&tmp)
            .run();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    }
}
