//! The tree outputs: consumes the assembled tree, produces `rootfs.tar` and `rootfs/`
//! when asked for.

use super::Format;
use crate::assemble::Assembled;
use crate::output::{Collector, Output};
use anyhow::Result;
use std::path::Path;

/// Writes the tree outputs `formats` ask for into `out`.
pub(super) fn stage(
    asm: &Assembled,
    formats: &[Format],
    out: &Path,
    c: &mut Collector,
) -> Result<()> {
    let t = std::time::Instant::now();
    for f in formats {
        match f {
            Format::Tar => {
                let path = out.join("rootfs.tar");
                let o = crate::writers::tar::write_file(
                    &asm.tree,
                    crate::writers::tar::TarOptions { epoch: asm.epoch },
                    &path,
                )?;
                c.output(o);
                crate::io::faults::point("tar")?;
            }
            Format::Dir => {
                let path = out.join("rootfs");
                crate::writers::dir::write_tree(&asm.tree, &path)?;
                c.output(Output {
                    kind: "dir".into(),
                    path: path.display().to_string(),
                    size: asm.tree.content_size(),
                    sha256: String::new(),
                });
                crate::io::faults::point("dir")?;
            }
            Format::Oci
            | Format::OciArchive
            | Format::Disk
            | Format::Qcow2
            | Format::Vhd
            | Format::Vmdk
            | Format::Gce
            | Format::Iso
            | Format::Netboot
            | Format::Update => {}
        }
    }
    c.since("write", t);
    Ok(())
}
