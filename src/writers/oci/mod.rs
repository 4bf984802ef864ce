//! OCI images: from the image tree to an OCI image layout directory and one archive that
//! both `docker load` and OCI tools read (the layout plus Docker's `manifest.json`).
//!
//! Consumes the assembled tree, the recipe's `[oci]` table, the lock and (for an image
//! that extends another) the parent's image; produces layers, a configuration, a
//! manifest, an SPDX SBOM attached as an artifact that refers to the manifest, and for
//! several architectures an image index. Everything is a function of recipe + lock +
//! SOURCE_DATE_EPOCH, so the manifest digest repeats on every run and machine.

pub mod config;
pub mod layers;
pub mod spec;

use crate::recipe::Recipe;
use crate::tree::Tree;
use anyhow::{Context, Result};
use spec::{Descriptor, History, ImageConfig, Index, Manifest, Platform, RootFs};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub use config::UserChoice;
pub use layers::{Compression, Layer};

/// How to make the image.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Layer compression.
    pub compression: Compression,
    /// Which user the image runs as.
    pub user: UserChoice,
}

/// One built image (one architecture).
pub struct Image {
    /// Debian architecture.
    pub arch: String,
    /// Its platform.
    pub platform: Platform,
    /// `repository:tag` for Docker's manifest.json.
    pub repo_tag: String,
    /// The tag (index.json `ref.name`).
    pub tag: String,
    /// Layers, bottom first (the parent's first).
    pub layers: Vec<Layer>,
    /// History entries, one per layer.
    pub history: Vec<History>,
    /// Configuration bytes and descriptor.
    pub config: (Vec<u8>, Descriptor),
    /// Manifest bytes and descriptor.
    pub manifest: (Vec<u8>, Descriptor),
    /// SPDX JSON bytes.
    pub sbom: Vec<u8>,
    /// The tree (a child diffs against it).
    pub tree: Tree,
}

impl Image {
    /// Bytes of the layers inherited from the parent image.
    pub fn shared_bytes(&self) -> u64 {
        self.layers
            .iter()
            .filter(|l| l.inherited)
            .map(|l| l.desc.size)
            .sum()
    }
    /// Compressed size of all layers plus config.
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.desc.size).sum::<u64>() + self.config.1.size
    }
    /// Uncompressed size of all layers.
    pub fn tar_size(&self) -> u64 {
        self.layers.iter().map(|l| l.tar_size).sum()
    }
}

/// The repository name of `r`'s image (`oci.repository`, else `slipway/<name>`).
pub fn repository(r: &Recipe) -> String {
    r.oci
        .repository
        .clone()
        .unwrap_or_else(|| format!("slipway/{}", r.name))
}

/// The tag of `r`'s image (`oci.tag`, else `latest`).
pub fn tag(r: &Recipe) -> String {
    r.oci.tag.clone().unwrap_or_else(|| "latest".into())
}

/// The tag of the image built with `user`: the root variant is `<tag>-root`.
pub fn image_tag(r: &Recipe, user: UserChoice) -> String {
    match user {
        UserChoice::Recipe => tag(r),
        UserChoice::Root => format!("{}-root", tag(r)),
    }
}

/// What [`image`] needs besides the recipe.
pub struct Inputs<'a> {
    /// The assembled tree.
    pub tree: Tree,
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
    /// The lock (its digest is the image's revision).
    pub lock: &'a crate::lock::Lock,
    /// The SBOM bytes.
    pub sbom: Vec<u8>,
    /// The image this one extends.
    pub parent: Option<&'a Image>,
    /// Where compressed layers are cached.
    pub layer_cache: &'a Path,
}

/// Builds the image of `r` for one architecture.
pub fn image(r: &Recipe, inp: Inputs<'_>, opts: Options) -> Result<Image> {
    let created = spec::rfc3339(inp.epoch);
    let run = config::run_config(r, &inp.tree, opts.user)?;
    let sources: std::collections::HashMap<String, String> = inp
        .lock
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.source.clone()))
        .collect();
    let plans = layers::plan(
        &inp.tree,
        inp.parent.map(|p| &p.tree),
        &sources,
        r.oci.layers.unwrap_or(1),
        &r.name,
    )?;
    let mut own = layers::write(plans, inp.epoch, opts.compression, inp.layer_cache)?;
    let (mut all, mut history) = match inp.parent {
        Some(p) => (
            p.layers
                .iter()
                .cloned()
                .map(|mut l| {
                    l.inherited = true;
                    l
                })
                .collect::<Vec<_>>(),
            p.history.clone(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    for l in &own {
        history.push(History {
            created: created.clone(),
            created_by: l.created_by.clone(),
            comment: (!l.comment.is_empty()).then(|| l.comment.clone()),
        });
    }
    all.append(&mut own);
    let platform = Platform::of_debian(&r.debian.architecture);
    let cfg = ImageConfig {
        created: created.clone(),
        architecture: platform.architecture.clone(),
        variant: platform.variant.clone(),
        os: "linux".into(),
        config: run,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: all.iter().map(|l| l.diff_id.clone()).collect(),
        },
        history: history.clone(),
    };
    let cfg_bytes = spec::to_json(&cfg)?;
    let cfg_desc = Descriptor::of(spec::CONFIG, &cfg_bytes);
    let mut ann = BTreeMap::new();
    ann.insert("org.opencontainers.image.created".into(), created.clone());
    ann.insert("org.opencontainers.image.title".into(), r.name.clone());
    if !r.description.is_empty() {
        ann.insert(
            "org.opencontainers.image.description".into(),
            r.description.clone(),
        );
    }
    if !r.version.is_empty() {
        ann.insert("org.opencontainers.image.version".into(), r.version.clone());
    }
    ann.insert(
        "org.opencontainers.image.source".into(),
        r.oci
            .source
            .clone()
            .unwrap_or_else(|| format!("slipway recipe {}", r.name)),
    );
    // The revision is the digest of the lock: the exact inputs of this image.
    ann.insert(
        "org.opencontainers.image.revision".into(),
        format!(
            "sha256:{}",
            crate::io::hash::sha256_hex(inp.lock.to_text()?.as_bytes())
        ),
    );
    if let (Some(p), Some(pr)) = (inp.parent, &r.parent) {
        ann.insert(
            "org.opencontainers.image.base.name".into(),
            format!("{}:{}", repository(pr), tag(pr)),
        );
        ann.insert(
            "org.opencontainers.image.base.digest".into(),
            p.manifest.1.digest.clone(),
        );
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: spec::MANIFEST.into(),
        artifact_type: None,
        config: cfg_desc.clone(),
        layers: all.iter().map(|l| l.desc.clone()).collect(),
        subject: None,
        annotations: ann,
    };
    let m_bytes = spec::to_json(&manifest)?;
    let m_desc = Descriptor::of(spec::MANIFEST, &m_bytes);
    Ok(Image {
        arch: r.debian.architecture.clone(),
        platform,
        repo_tag: format!("{}:{}", repository(r), image_tag(r, opts.user)),
        tag: image_tag(r, opts.user),
        layers: all,
        history,
        config: (cfg_bytes, cfg_desc),
        manifest: (m_bytes, m_desc),
        sbom: inp.sbom,
        tree: inp.tree,
    })
}

/// Every blob of a layout: digest hex -> bytes (sorted, so writing is deterministic).
struct Blobs(BTreeMap<String, std::sync::Arc<Vec<u8>>>);

impl Blobs {
    fn add(&mut self, d: &Descriptor, bytes: std::sync::Arc<Vec<u8>>) {
        self.0.entry(d.hex().to_string()).or_insert(bytes);
    }
    fn add_json(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let d = Descriptor::of(media_type, &bytes);
        self.add(&d, std::sync::Arc::new(bytes));
        d
    }
}

/// The files of a layout for `images` (several: a multi-arch index), as (path, bytes).
fn layout_files(images: &[Image]) -> Result<(Blobs, Vec<u8>)> {
    let mut blobs = Blobs(BTreeMap::new());
    let mut entries = Vec::new();
    let mut platform_manifests = Vec::new();
    for img in images {
        blobs.add(&img.config.1, std::sync::Arc::new(img.config.0.clone()));
        for l in &img.layers {
            blobs.add(&l.desc, l.blob.clone());
        }
        blobs.add(&img.manifest.1, std::sync::Arc::new(img.manifest.0.clone()));
        let mut d = img.manifest.1.clone();
        d.platform = Some(img.platform.clone());
        platform_manifests.push(d);
    }
    let tag = images.first().map(|i| i.tag.clone()).unwrap_or_default();
    let top = if images.len() == 1 {
        let mut d = images[0].manifest.1.clone();
        d.annotations.insert(spec::REF_NAME.into(), tag.clone());
        d
    } else {
        let idx = Index {
            schema_version: 2,
            media_type: spec::INDEX.into(),
            manifests: platform_manifests,
            annotations: BTreeMap::new(),
        };
        let mut d = blobs.add_json(spec::INDEX, spec::to_json(&idx)?);
        d.annotations.insert(spec::REF_NAME.into(), tag.clone());
        d
    };
    entries.push(top);
    // The SBOMs, as artifacts whose subject is their image's manifest.
    let empty = blobs.add_json(spec::EMPTY, b"{}".to_vec());
    for img in images {
        let mut sbom = blobs.add_json(spec::SPDX, img.sbom.clone());
        sbom.annotations.insert(
            "org.opencontainers.image.title".into(),
            format!("sbom-{}.spdx.json", img.arch),
        );
        let created = img
            .history
            .last()
            .map(|h| h.created.clone())
            .unwrap_or_default();
        let m = Manifest {
            schema_version: 2,
            media_type: spec::MANIFEST.into(),
            artifact_type: Some(spec::SPDX.into()),
            config: empty.clone(),
            layers: vec![sbom],
            subject: Some(img.manifest.1.clone()),
            annotations: BTreeMap::from([("org.opencontainers.image.created".into(), created)]),
        };
        let mut d = blobs.add_json(spec::MANIFEST, spec::to_json(&m)?);
        d.artifact_type = Some(spec::SPDX.into());
        entries.push(d);
    }
    let index = Index {
        schema_version: 2,
        media_type: spec::INDEX.into(),
        manifests: entries,
        annotations: BTreeMap::new(),
    };
    Ok((blobs, spec::to_json(&index)?))
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes the OCI image layout directory `dir` (replacing an old one only once the new one
/// is complete). Returns the digest of the top descriptor (manifest or index).
pub fn write_layout(images: &[Image], dir: &Path) -> Result<crate::output::Output> {
    let (blobs, index) = layout_files(images)?;
    use crate::io::atomic::{create_dir, create_new, DIR_MODE, FILE_MODE};
    use std::io::Write as _;
    // A fresh directory (mkdir fails on any existing name), files created O_EXCL, modes
    // explicit.
    let staged = crate::io::atomic::temp_path_for(dir);
    let _cleanup = crate::io::signals::register(&staged);
    let write_new = |p: &Path, bytes: &[u8]| -> Result<()> {
        create_new(p, FILE_MODE)?
            .write_all(bytes)
            .with_context(|| format!("writing {}", p.display()))
    };
    let res = (|| -> Result<u64> {
        create_dir(&staged, DIR_MODE)?;
        create_dir(&staged.join("blobs"), DIR_MODE)?;
        let bdir = staged.join("blobs/sha256");
        create_dir(&bdir, DIR_MODE)?;
        let mut total = 0;
        for (hex, bytes) in &blobs.0 {
            write_new(&bdir.join(hex), &bytes[..])?;
            total += bytes.len() as u64;
        }
        write_new(&staged.join("oci-layout"), OCI_LAYOUT)?;
        write_new(&staged.join("index.json"), &index)?;
        Ok(total)
    })();
    let total = match res {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
    };
    crate::io::atomic::replace_dir(&staged, dir)?;
    Ok(crate::output::Output {
        kind: "oci-layout".into(),
        path: dir.display().to_string(),
        size: total,
        sha256: crate::io::hash::sha256_hex(&index),
    })
}

/// Writes one archive holding the OCI layout and Docker's `manifest.json` (for the image
/// of the first architecture), readable by `docker load`, `skopeo` (`oci-archive:`) and
/// podman.
pub fn write_archive(images: &[Image], path: &Path, epoch: u64) -> Result<crate::output::Output> {
    let (blobs, index) = layout_files(images)?;
    let first = images
        .first()
        .context("no image to write into the archive")?;
    let docker = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", first.config.1.hex()),
        "RepoTags": [first.repo_tag],
        "Layers": first.layers.iter().map(|l| format!("blobs/sha256/{}", l.desc.hex())).collect::<Vec<_>>(),
    }]);
    let docker = serde_json::to_vec(&docker).context("serializing manifest.json")?;
    let mut f = crate::io::atomic::AtomicFile::create(path)?;
    let w =
        crate::io::hash::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f.file()));
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Deterministic);
    let add = |b: &mut tar::Builder<_>, name: &str, bytes: Option<&[u8]>| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        match bytes {
            Some(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
            }
        }
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(epoch);
        b.append_data(&mut h, name, bytes.unwrap_or_default())
            .with_context(|| format!("writing {name} into {}", path.display()))
    };
    add(&mut b, "blobs/", None)?;
    add(&mut b, "blobs/sha256/", None)?;
    for (hex, bytes) in &blobs.0 {
        add(&mut b, &format!("blobs/sha256/{hex}"), Some(bytes))?;
    }
    add(&mut b, "index.json", Some(&index))?;
    add(&mut b, "manifest.json", Some(&docker))?;
    add(&mut b, "oci-layout", Some(OCI_LAYOUT))?;
    let w = b.into_inner().context("finishing the image archive")?;
    let (mut buf, sha256, size) = w.finish();
    buf.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    drop(buf);
    f.commit()?;
    Ok(crate::output::Output {
        kind: "oci-archive".into(),
        path: path.display().to_string(),
        size,
        sha256,
    })
}
