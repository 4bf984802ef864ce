//! The disk stage: consumes a host recipe's assembled tree, produces `disk.raw` and the
//! boot files ([`crate::disk::image`]), the disk formats asked for, their sidecars and
//! `manifest.json`.

use super::Context;
use crate::assemble::Assembled;
use crate::lock::Lock;
use crate::output::{Collector, HostDisk, Output};
use crate::recipe::Recipe;
use anyhow::{Context as _, Result};
use std::path::Path;

/// What the disk stage reads.
pub(super) struct Inputs<'a> {
    /// The host recipe.
    pub r: &'a Recipe,
    /// Its tree.
    pub asm: &'a Assembled,
    /// The programs that go into the image.
    pub init: &'a crate::disk::image::Bundled,
    /// The formats derived from `disk.raw`.
    pub formats: &'a [&'static dyn crate::formats::DiskFormat],
    /// Bare-metal media asked for.
    pub media: Media,
    /// Its lock (for the manifest's package list).
    pub lock: &'a Lock,
}

/// The bare-metal media a build writes beside the disk.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Media {
    /// `install.iso` ([`crate::formats::iso`]).
    pub iso: bool,
    /// `netboot/` ([`crate::formats::netboot`]).
    pub netboot: bool,
    /// `update/` ([`crate::formats::update`]).
    pub update: bool,
}

/// Writes the disk, its formats, their sidecars and the manifest into `out`.
pub(super) fn stage(ctx: &Context, d: &Inputs, out: &Path, c: &mut Collector) -> Result<HostDisk> {
    let epoch = d.asm.epoch;
    let w = crate::disk::image::build(d.r, d.asm, d.init, ctx.cache.root(), out, &ctx.rep, c)?;
    let raw_out = w
        .outputs
        .iter()
        .find(|o| o.kind == "disk-raw")
        .context("the disk stage wrote no disk.raw")?
        .clone();
    for o in &w.outputs {
        c.output(o.clone());
    }
    let mut sidecars = vec![raw_out.clone()];
    sidecars.extend(formats(ctx, d.formats, &raw_out, epoch, out, c)?);
    media(ctx, d, (&w.disk, &w.esp_files), out, c)?;
    if d.media.update {
        update(ctx, d, &w.disk, out, c)?;
    }
    crate::io::faults::point("formats")?;
    for o in &sidecars {
        if let Some(p) = crate::formats::sidecar::write(d.r, &w.disk, epoch, o)? {
            c.output(Output::of_file("sidecar", &p)?);
        }
    }
    let m = crate::disk::manifest::write(d.r, d.lock, &w.disk, epoch, &c.outputs, out)?;
    c.output(Output::of_file("manifest", &m)?);
    Ok(w.disk)
}

/// Each of `formats`, converted from `raw` (the record of `disk.raw`) into `out`.
fn formats(
    ctx: &Context,
    formats: &[&'static dyn crate::formats::DiskFormat],
    raw: &Output,
    epoch: u64,
    out: &Path,
    c: &mut Collector,
) -> Result<Vec<Output>> {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&crate::io::hash::unhex(&raw.sha256)?);
    let raw_path = crate::disk::image::disk_in(out);
    let src = crate::formats::Source {
        raw: &raw_path,
        digest,
        epoch,
    };
    let mut written = Vec::new();
    for f in formats {
        let t = std::time::Instant::now();
        let stage = ctx.rep.stage(&format!("writing {}", f.file_name()));
        let o = crate::formats::write(*f, &src, out)?;
        stage.done(format!("{:.1} MB", o.size as f64 / 1e6));
        written.push(o.clone());
        c.output(o);
        c.since(f.name(), t);
    }
    Ok(written)
}

/// `update/`, the update payload, from the disk and the UKI just written into `out`.
fn update(ctx: &Context, d: &Inputs, disk: &HostDisk, out: &Path, c: &mut Collector) -> Result<()> {
    let t = std::time::Instant::now();
    let stage = ctx
        .rep
        .stage(&format!("writing {}/", crate::formats::update::DIR));
    let written = crate::formats::update::write(
        &crate::formats::update::Inputs {
            image: &d.r.name,
            version: &d.r.version,
            architecture: &d.r.debian.architecture,
            tries: d.r.disk.boot_tries(),
            disk,
            raw: &crate::disk::image::disk_in(out),
            uki: &out.join("uki.efi"),
            epoch: d.asm.epoch,
        },
        out,
    )?;
    let total: u64 = written.iter().skip(1).map(|o| o.size).sum();
    stage.done(format!(
        "version {}, {:.1} MB in {} blobs",
        d.r.version,
        total as f64 / 1e6,
        written.len() - 1
    ));
    for o in written {
        c.output(o);
    }
    c.since("update", t);
    Ok(())
}

/// `install.iso` and `netboot/`, as asked for, from the disk just written into `out`
/// and the UKI's parts (the stub and os-release from the tree, the kernel and initramfs
/// the disk stage wrote).
fn media(
    ctx: &Context,
    d: &Inputs,
    (disk, esp_files): (&HostDisk, &[(String, Vec<u8>)]),
    out: &Path,
    c: &mut Collector,
) -> Result<()> {
    if !d.media.iso && !d.media.netboot {
        return Ok(());
    }
    let tree = &d.asm.tree;
    let stub = crate::disk::image::file_bytes(tree, crate::disk::image::STUB, "systemd EFI stub")?;
    let os_release = crate::disk::image::file_bytes(tree, "usr/lib/os-release", "os-release")?;
    let read = |name: &str| {
        let p = out.join(name);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    let (kernel, initrd) = (read("vmlinuz")?, read("initrd")?);
    let raw = crate::disk::image::disk_in(out);
    // The media's own UKIs are signed with the image's key, if it has one.
    let signer = match &d.r.secure_boot {
        Some(sb) => Some(
            crate::disk::sign::Signer::open(sb, d.asm.epoch)
                .with_context(|| format!("{}: the Secure Boot signing key", d.r.display()))?,
        ),
        None => None,
    };
    let parts = || crate::formats::iso::BootParts {
        stub,
        kernel: &kernel,
        initrd: &initrd,
        os_release,
        uname: &disk.kernel,
    };
    if d.media.iso {
        let t = std::time::Instant::now();
        let stage = ctx
            .rep
            .stage(&format!("writing {}", crate::formats::iso::FILE_NAME));
        let o = crate::formats::iso::write(
            &crate::formats::iso::Inputs {
                image: &d.r.name,
                version: &d.r.version,
                disk,
                raw: &raw,
                esp_files,
                boot: parts(),
                epoch: d.asm.epoch,
                signer: signer.as_ref(),
            },
            out,
        )?;
        stage.done(format!("{:.1} MB", o.size as f64 / 1e6));
        c.output(o);
        c.since("iso", t);
    }
    if d.media.netboot {
        let t = std::time::Instant::now();
        let stage = ctx
            .rep
            .stage(&format!("writing {}/", crate::formats::netboot::DIR));
        let written = crate::formats::netboot::write(
            &crate::formats::netboot::Inputs {
                disk,
                raw: &raw,
                boot: parts(),
                cmdline: &d.r.disk.cmdline,
                epoch: d.asm.epoch,
                signer: signer.as_ref(),
            },
            out,
        )?;
        let total: u64 = written.iter().map(|o| o.size).sum();
        stage.done(format!(
            "{} files, {:.1} MB",
            written.len(),
            total as f64 / 1e6
        ));
        for o in written {
            c.output(o);
        }
        c.since("netboot", t);
    }
    Ok(())
}
