//! The preload stage of host images: consumes a host recipe's `[[preload]]` entries and
//! its assembled tree, produces the tree with each base image's OCI archive in
//! `/usr/share/slipway/images/NAMESPACE/` and a oneshot unit that imports them into
//! containerd at every boot (an import of images already present changes nothing and
//! takes well under a second), enabled for multi-user.target.
//!
//! It also adds the slipway programs a recipe asks for in `[bundle]` (slipway-node).
//!
//! Each base image is built by the pipeline's OCI stage, passed in as a function (this
//! module imports nothing of the pipeline), from its own recipe and lock, so it is
//! byte-for-byte the image `slipway build RECIPE --format oci-archive` writes. The unit
//! is `rootfs/usr/lib/systemd/system/slipway-preload-images.service`, with one
//! `ExecStart=` line per image.

use crate::recipe::{Preload, Recipe};
use crate::tree::{Entry, Tree};
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

pub use crate::output::Preloaded;

/// Where the archives go in the image.
pub const IMAGES_DIR: &str = "usr/share/slipway/images";
/// The unit that imports them.
pub const UNIT: &str = "slipway-preload-images.service";

/// A base image built for preloading.
pub struct BaseImage {
    /// Its OCI archive (`image.tar`).
    pub archive: PathBuf,
    /// The image's tag.
    pub tag: String,
    /// Its build's warnings.
    pub warnings: Vec<String>,
}

/// Builds the base recipe given as an OCI archive in the directory given.
pub type BuildBase<'a> = dyn Fn(&Recipe, &Path) -> Result<BaseImage> + 'a;

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

/// Builds every image `r` preloads with `build` (in a work directory under
/// `work_root`) and adds them and the import unit to `tree`; the warnings of their
/// builds go into `warnings`, each naming its base recipe.
pub fn add(
    r: &Recipe,
    tree: &mut Tree,
    epoch: u64,
    work_root: &Path,
    build: &BuildBase,
    warnings: &mut Vec<String>,
) -> Result<Vec<Preloaded>> {
    if r.preload.is_empty() {
        return Ok(Vec::new());
    }
    let work = tempfile::Builder::new()
        .prefix("preload-")
        .tempdir_in(work_root)
        .with_context(|| format!("creating a directory in {}", work_root.display()))?;
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
        let one = build_one(r, p, build, &work.path().join(i.to_string()))?;
        warnings.extend(
            one.warnings
                .iter()
                .map(|w| format!("preload {}: {w}", p.recipe.display())),
        );
        let bytes = std::fs::read(&one.archive)
            .with_context(|| format!("reading {}", one.archive.display()))?;
        let (sha256, size) = (crate::io::hash::sha256_hex(&bytes), bytes.len() as u64);
        tree.put(&dest, Entry::file(bytes, 0o644, epoch))?;
        unit.push_str(&format!(
            "ExecStart=/usr/bin/ctr --namespace {} images import --base-name {} /{dest}\n",
            p.namespace, p.base_name
        ));
        done.push(Preloaded {
            name: format!("{}:{}", p.base_name, one.tag),
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

/// Builds `p`'s base recipe as an OCI archive under `dir` with `build`.
fn build_one(host: &Recipe, p: &Preload, build: &BuildBase, dir: &Path) -> Result<BaseImage> {
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
    build(&r, dir).with_context(what)
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
