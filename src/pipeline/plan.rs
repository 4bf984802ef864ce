//! The plan: consumes a recipe and the formats asked for, produces what the build will
//! do (the disk formats, the programs that go into a host image, the host tools it
//! runs), checked before any work starts.

use super::Format;
use crate::exit::{err, Code};
use crate::recipe::Recipe;
use anyhow::Result;

/// What a build will do, checked before any work starts.
pub(super) struct Plan {
    /// The disk formats derived from `disk.raw`.
    pub disk_formats: Vec<&'static dyn crate::formats::DiskFormat>,
    /// The programs that go into a host image, when a disk is built.
    pub init: Option<crate::disk::image::Bundled>,
    /// The host programs the build runs.
    pub tools: Vec<&'static str>,
    /// Bare-metal media: `install.iso`, `netboot/`.
    pub media: crate::pipeline::disk::Media,
}

/// Checks that `formats` fit `r` and that every host tool the build runs is there.
pub(super) fn plan(r: &Recipe, formats: &[Format]) -> Result<Plan> {
    let mut tools = Vec::new();
    if r.kernel.is_some() {
        tools.push("depmod");
    }
    let disk_formats: Vec<&dyn crate::formats::DiskFormat> = formats
        .iter()
        .filter_map(|f| match f {
            Format::Qcow2 => crate::formats::by_name("qcow2"),
            Format::Vhd => crate::formats::by_name("vhd"),
            Format::Vmdk => crate::formats::by_name("vmdk"),
            Format::Gce => crate::formats::by_name("gce"),
            _ => None,
        })
        .collect();
    let media = crate::pipeline::disk::Media {
        iso: formats.contains(&Format::Iso),
        netboot: formats.contains(&Format::Netboot),
        update: formats.contains(&Format::Update),
    };
    let wants_disk = formats.contains(&Format::Disk)
        || !disk_formats.is_empty()
        || media.iso
        || media.netboot
        || media.update;
    let mut init = None;
    if wants_disk {
        if r.kind != crate::recipe::raw::ImageKind::Host {
            return Err(err(
                Code::BadInput,
                format!(
                    "{}: --format disk, qcow2, vhd, vmdk, gce, iso, netboot and update need a host recipe (image.kind = \"host\")",
                    r.display()
                ),
            ));
        }
        let kind = crate::disk::root::kind_of(r);
        if kind.needs_host_tool() && !nix::unistd::geteuid().is_root() {
            return Err(err(
                Code::BadInput,
                format!(
                    "{}: [disk] root-fs = {:?} needs root: {} reads a tree staged on disk with \
                     its files' owners (run as root, or use the default root-fs, squashfs, \
                     which slipway writes itself as any user); see `slipway doctor`",
                    r.display(),
                    crate::disk::image::fs_name(kind),
                    kind.program()
                ),
            ));
        }
        tools.extend(crate::disk::image::tools(r));
        for f in &disk_formats {
            tools.extend(f.tools());
        }
        let b = crate::disk::image::Bundled::find()
            .map_err(|e| crate::exit::with_code(Code::BadInput, e))?;
        init = Some(b);
    }
    crate::tool::require(&tools).map_err(|e| crate::exit::with_code(Code::BadInput, e))?;
    Ok(Plan {
        disk_formats,
        init,
        tools,
        media,
    })
}
