//! The preload stage of host images: consumes a host recipe's `[[preload]]` entries and
//! its assembled tree, produces the tree with each base image's OCI archive in
//! `/usr/share/slipway/images/NAMESPACE/` and a oneshot unit that imports them into
//! containerd at every boot (an import of images already present changes nothing and
//! takes well under a second), enabled for multi-user.target.
//!
//! It also adds the slipway programs a recipe asks for in `[bundle]` (slipway-node).
//!
//! Each base image is built by the normal pipeline from its own recipe and lock, so it
//! is byte-for-byte the image `slipway build RECIPE --format oci-archive` writes.

use crate::pipeline::{BuildOptions, Context, Format};
use crate::recipe::{Preload, Recipe};
use crate::tree::{Entry, Tree};
use anyhow::{Context as _, Result};

/// Where the archives go in the image.
pub const IMAGES_DIR: &str = "usr/share/slipway/images";
/// The unit that imports them.
pub const UNIT: &str = "slipway-preload-images.service";

/// One preloaded image, as the build report lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preloaded {
    /// The image name containerd gets (base name and the image's tag).
    pub name: String,
    /// containerd namespace.
    pub namespace: String,
    /// The archive in the image.
    pub path: String,
    /// Its size and sha256.
    pub size: u64,
    pub sha256: String,
}

/// Where `[bundle] node` puts slipway-node.
pub const NODE_IN_IMAGE: &str = "usr/bin/slipway-node";

/// Adds the slipway programs `r` asks for in `[bundle]` to `tree`.
pub fn add_bundled(r: &Recipe, tree: &mut Tree, epoch: u64) -> Result<()> {
    if r.bundle_node {
        let path = crate::tool::bundled_binary("slipway-node", "SLIPWAY_NODE")
            .with_context(|| format!("{}: [bundle] node: run `make build`", r.display()))?;
        let bytes = crate::disk::initramfs::read_static(&path)?;
        tree.put(NODE_IN_IMAGE, Entry::file(bytes, 0o755, epoch))?;
    }
    Ok(())
}

/// Builds every image `r` preloads and adds them and the import unit to `tree`; the
/// warnings of their builds go into `warnings`, each naming its base recipe.
pub fn add(
    ctx: &Context,
    r: &Recipe,
    tree: &mut Tree,
    epoch: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<Preloaded>> {
    if r.preload.is_empty() {
        return Ok(Vec::new());
    }
    let work = tempfile::Builder::new()
        .prefix("preload-")
        .tempdir_in(ctx.cache.root())
        .with_context(|| format!("creating a directory in {}", ctx.cache.root().display()))?;
    let _cleanup = crate::io::signals::register(work.path());
    let mut done = Vec::new();
    let template = std::str::from_utf8(crate::disk::rootfs::PRELOAD_UNIT.bytes)
        .context("rootfs/: the preload unit is not UTF-8")?;
    let (head, install) = template
        .split_once("\n[Install]")
        .context("rootfs/: the preload unit has no [Install] section")?;
    let mut unit = head.to_string();
    for (i, p) in r.preload.iter().enumerate() {
        let dest = format!(
            "{IMAGES_DIR}/{}/{}.tar",
            p.namespace,
            file_stem(&p.base_name)
        );
        // Checked at load too; here before the image is built, not after.
        if tree.get(&dest).is_some() {
            return Err(p.at.sub("base-name").err(format!(
                "two preloaded images would be written to /{dest} (give each a base name \
                 with its own last component or namespace)"
            )));
        }
        let one = build_one(ctx, r, p, &work.path().join(i.to_string()))?;
        warnings.extend(
            one.2
                .iter()
                .map(|w| format!("preload {}: {w}", p.recipe.display())),
        );
        let bytes =
            std::fs::read(&one.0).with_context(|| format!("reading {}", one.0.display()))?;
        let (sha256, size) = (crate::io::hash::sha256_hex(&bytes), bytes.len() as u64);
        tree.put(&dest, Entry::file(bytes, 0o644, epoch))?;
        unit.push_str(&format!(
            "ExecStart=/usr/bin/ctr --namespace {} images import --base-name {} /{dest}\n",
            p.namespace, p.base_name
        ));
        done.push(Preloaded {
            name: format!("{}:{}", p.base_name, one.1),
            namespace: p.namespace.clone(),
            path: format!("/{dest}"),
            size,
            sha256,
        });
    }
    unit.push_str(&format!("\n[Install]{install}"));
    tree.put(
        &format!("usr/lib/systemd/system/{UNIT}"),
        Entry::file(unit.into_bytes(), 0o644, epoch),
    )?;
    tree.put(
        &format!("etc/systemd/system/multi-user.target.wants/{UNIT}"),
        Entry::symlink(&format!("/usr/lib/systemd/system/{UNIT}"), epoch),
    )?;
    Ok(done)
}

/// Builds `p`'s base recipe as an OCI archive under `dir`; returns the archive, the
/// image's tag and the build's warnings.
fn build_one(
    ctx: &Context,
    host: &Recipe,
    p: &Preload,
    dir: &std::path::Path,
) -> Result<(std::path::PathBuf, String, Vec<String>)> {
    let what = || format!("{}: preload {}", host.display(), p.recipe.display());
    // The base recipe is loaded as the host recipe was (`--allow-host-paths` reaches it).
    let r = Recipe::load_with(&p.recipe, host.load).with_context(what)?;
    if r.kind != crate::recipe::raw::ImageKind::Base {
        return Err(p.at.sub("recipe").err(format!(
            "{} is not a base image recipe (image.kind = \"base\")",
            p.recipe.display()
        )));
    }
    if r.debian.architecture != host.debian.architecture {
        return Err(p.at.sub("recipe").err(format!(
            "{} is for {}, the host image for {}",
            p.recipe.display(),
            r.debian.architecture,
            host.debian.architecture
        )));
    }
    let opts = BuildOptions {
        formats: vec![Format::OciArchive],
        arches: Vec::new(),
        oci: crate::writers::oci::Options {
            compression: crate::writers::oci::Compression::Gzip,
            user: crate::writers::oci::UserChoice::Recipe,
        },
    };
    let report = crate::pipeline::build(ctx, &r, dir, &opts).with_context(what)?;
    let tag = crate::writers::oci::tag(&r);
    Ok((dir.join("image.tar"), tag, report.warnings))
}

/// The archive's file name: the last component of the image name.
fn file_stem(base_name: &str) -> &str {
    base_name.rsplit('/').next().unwrap_or(base_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_come_from_the_last_component() {
        assert_eq!(file_stem("localhost/slipway/pause"), "pause");
        assert_eq!(file_stem("pause"), "pause");
    }
}
