//! The OCI stage: consumes the assembled tree of each architecture, produces the OCI
//! images (on top of their parents' images), `oci/`, `image.tar` and the SBOMs; and the
//! OCI archive of a base image a host image preloads.

use super::{BuildOptions, Context, Format};
use crate::assemble::Assembled;
use crate::lock::Lock;
use crate::output::{Collector, Output};
use crate::recipe::Recipe;
use crate::report::{ImageReport, LayerReport};
use anyhow::{Context as _, Result};
use std::path::Path;

/// The build's OCI stage: the OCI image of every architecture (the first from `first`,
/// the tree and lock assembled already), then `oci/`, `image.tar` and the SBOMs in
/// `out`. Returns the images' reports.
pub(super) fn stage(
    ctx: &Context,
    recipes: &[Recipe],
    opts: &BuildOptions,
    first: (Assembled, Lock),
    out: &Path,
    c: &mut Collector,
) -> Result<Vec<ImageReport>> {
    let epoch = first.0.epoch;
    let t = std::time::Instant::now();
    let mut images = Vec::new();
    let mut first = Some(first);
    for ra in recipes {
        let stage = ctx.rep.stage(&format!(
            "writing the OCI image {} ({})",
            crate::writers::oci::repository(ra),
            ra.debian.architecture
        ));
        let img = oci_image(ctx, ra, opts.oci, first.take())?;
        stage.done(format!(
            "{} layers ({} shared with its base), {:.2} MB compressed, {:.2} MB uncompressed",
            img.layers.len(),
            img.layers.iter().filter(|l| l.inherited).count(),
            img.compressed_size() as f64 / 1e6,
            img.tar_size() as f64 / 1e6
        ));
        images.push(img);
    }
    c.since("oci", t);
    let reports = write_oci_outputs(&images, &opts.formats, out, epoch, c)?;
    crate::io::faults::point("oci")?;
    // Parent images assembled on the way.
    c.warn(crate::fetch::cache::take_warnings());
    Ok(reports)
}

/// The OCI archive (`dir/image.tar`, gzip layers, the recipe's user) of the base
/// recipe `r`, for a host image that preloads it: the bytes `slipway build r --format
/// oci-archive` writes.
pub(super) fn archive(ctx: &Context, r: &Recipe, dir: &Path) -> Result<crate::preload::BaseImage> {
    let mut c = Collector::default();
    let fetched = super::fetch::fetch_verified(ctx, r)?;
    c.warn(crate::fetch::cache::take_warnings());
    let mut asm = crate::assemble::assemble(&ctx.cache, r, &fetched.lock)?;
    c.warn(crate::fetch::cache::take_warnings());
    c.warn(asm.warnings.iter().cloned());
    crate::preload::add_bundled(r, &mut asm.tree, asm.epoch)?;
    let epoch = asm.epoch;
    let opts = BuildOptions::default().oci;
    let img = oci_image(ctx, r, opts, Some((asm, fetched.lock)))?;
    c.warn(crate::fetch::cache::take_warnings());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("image.tar");
    crate::writers::oci::write_archive(&[img], &path, epoch)?;
    Ok(crate::preload::BaseImage {
        archive: path,
        tag: crate::writers::oci::tag(r),
        warnings: c.warnings,
    })
}

/// The OCI image of `r`, on top of its parent's image (built the same way, so its layers
/// are byte-for-byte the parent's own). `given` is `r`'s tree and lock when the caller
/// has assembled them already.
fn oci_image(
    ctx: &Context,
    r: &Recipe,
    opts: crate::writers::oci::Options,
    given: Option<(Assembled, Lock)>,
) -> Result<crate::writers::oci::Image> {
    let parent = match &r.parent {
        Some(p) => Some(
            oci_image(
                ctx,
                p,
                crate::writers::oci::Options {
                    user: crate::writers::oci::UserChoice::Recipe,
                    ..opts
                },
                None,
            )
            .with_context(|| format!("building the base image {}", p.display()))?,
        ),
        None => None,
    };
    let (asm, lock) = match given {
        Some(g) => g,
        None => super::assemble::assembled_into(ctx, r, &mut Vec::new())?,
    };
    let sbom = crate::sbom::spdx(
        &crate::sbom::Subject {
            image: &crate::writers::oci::repository(r),
            architecture: &r.debian.architecture,
            release: &r.debian.release,
            epoch: asm.epoch,
        },
        &lock,
        &asm.packages,
    )?;
    let layer_cache = ctx.cache.root().join("layers");
    crate::writers::oci::image(
        r,
        crate::writers::oci::Inputs {
            tree: asm.tree,
            epoch: asm.epoch,
            lock: &lock,
            sbom,
            parent: parent.as_ref(),
            layer_cache: &layer_cache,
        },
        opts,
    )
}

/// Writes the SBOM of each image and the OCI outputs `formats` ask for into `out`;
/// returns the images' reports.
fn write_oci_outputs(
    images: &[crate::writers::oci::Image],
    formats: &[Format],
    out: &Path,
    epoch: u64,
    c: &mut Collector,
) -> Result<Vec<ImageReport>> {
    let mut reports = Vec::new();
    for img in images {
        let name = if images.len() == 1 {
            "sbom.spdx.json".to_string()
        } else {
            format!("sbom-{}.spdx.json", img.arch)
        };
        let path = out.join(name);
        crate::io::atomic::write(&path, &img.sbom)?;
        c.output(Output {
            kind: "sbom".into(),
            path: path.display().to_string(),
            size: img.sbom.len() as u64,
            sha256: crate::io::hash::sha256_hex(&img.sbom),
        });
        reports.push(image_report(img));
    }
    for f in formats {
        match f {
            Format::Oci => {
                c.output(crate::writers::oci::write_layout(images, &out.join("oci"))?);
            }
            Format::OciArchive => {
                let path = out.join("image.tar");
                c.output(crate::writers::oci::write_archive(images, &path, epoch)?);
            }
            _ => {}
        }
    }
    Ok(reports)
}

/// The report of `img`.
fn image_report(img: &crate::writers::oci::Image) -> ImageReport {
    ImageReport {
        architecture: img.arch.clone(),
        reference: img.repo_tag.clone(),
        manifest: img.manifest.1.digest.clone(),
        config: img.config.1.digest.clone(),
        layers: img
            .layers
            .iter()
            .map(|l| LayerReport {
                digest: l.desc.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.desc.size,
                tar_size: l.tar_size,
                inherited: l.inherited,
                created_by: l.created_by.clone(),
            })
            .collect(),
        compressed_bytes: img.compressed_size(),
        uncompressed_bytes: img.tar_size(),
        shared_bytes: img.shared_bytes(),
    }
}
