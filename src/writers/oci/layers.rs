//! Layers: split an image tree into OCI layers, write each as a reproducible tar and
//! compress it with one pinned compressor and level.
//!
//! Consumes the image tree (and, for an image that extends another, the parent's tree and
//! layers) and produces layer blobs with their descriptors and diff ids. A child image
//! reuses its parent's layers byte-for-byte; its own layers hold only what it adds or
//! changes, plus whiteouts for what it removes (OCI image-spec `layer.md`).
//!
//! Grouping: one layer, or one layer per Debian source package under a budget: the
//! largest sources get their own layers, the rest share the last layer with the files
//! slipway generates (accounts, dpkg status, CA bundle).
//!
//! Compressed layers are cached by diff id, so a warm build writes the tar, hashes it and
//! finds the compressed bytes in the cache.

use super::spec::{self, Descriptor};
use crate::io::hash::sha256_hex;
use crate::tree::{Entry, Kind, Tree};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, level 9 (flate2 with miniz_oxide, pinned by Cargo.lock), zeroed header.
    Gzip,
    /// zstd, level 19, single-threaded, no checksum.
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;

    /// A [`Compression::name`] (`--compression`).
    fn from_str(s: &str) -> Result<Self> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!("{s:?} is not a layer compression (expected gzip or zstd)")
            })
    }
}

impl Compression {
    /// Every compression, in the order `--help` lists them.
    pub const ALL: [Compression; 2] = [Compression::Gzip, Compression::Zstd];

    /// Its name on the command line (`--compression`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => spec::LAYER_GZIP,
            Compression::Zstd => spec::LAYER_ZSTD,
        }
    }
    fn cache_suffix(self) -> &'static str {
        match self {
            Compression::Gzip => "gz9",
            Compression::Zstd => "zst19",
        }
    }
    fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        use std::io::Write;
        match self {
            Compression::Gzip => {
                // mtime 0, no file name, OS "unknown": nothing of the build machine.
                let mut e = flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(
                        Vec::with_capacity(data.len() / 3),
                        flate2::Compression::best(),
                    );
                e.write_all(data).context("gzip-compressing a layer")?;
                e.finish().context("gzip-compressing a layer")
            }
            Compression::Zstd => zstd::bulk::compress(data, 19).context("zstd-compressing a layer"),
        }
    }
}

/// What goes into one layer, before it is written.
pub struct LayerPlan {
    /// The entries of the layer.
    pub tree: Tree,
    /// What made it (history `created_by`).
    pub created_by: String,
    /// The source packages in it (history comment).
    pub sources: Vec<String>,
}

/// A written layer.
#[derive(Clone)]
pub struct Layer {
    /// The compressed blob's descriptor.
    pub desc: Descriptor,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Uncompressed size.
    pub tar_size: u64,
    /// The compressed bytes.
    pub blob: Arc<Vec<u8>>,
    /// History `created_by`.
    pub created_by: String,
    /// History comment.
    pub comment: String,
    /// True when it is the parent image's layer, reused as it is.
    pub inherited: bool,
}

/// True when two entries would be written identically.
pub fn same_entry(a: &Entry, b: &Entry) -> bool {
    if a.mode != b.mode || a.uid != b.uid || a.gid != b.gid || a.mtime != b.mtime {
        return false;
    }
    if a.xattrs != b.xattrs {
        return false;
    }
    match (&a.kind, &b.kind) {
        (Kind::File(x), Kind::File(y)) => x.as_slice() == y.as_slice(),
        (Kind::Dir, Kind::Dir) | (Kind::Fifo, Kind::Fifo) => true,
        (Kind::Symlink(x), Kind::Symlink(y)) | (Kind::Hardlink(x), Kind::Hardlink(y)) => x == y,
        (Kind::CharDevice(a1, b1), Kind::CharDevice(a2, b2))
        | (Kind::BlockDevice(a1, b1), Kind::BlockDevice(a2, b2)) => a1 == a2 && b1 == b2,
        _ => false,
    }
}

fn parent_of(path: &str) -> &str {
    path.rfind('/').map(|i| &path[..i]).unwrap_or("")
}

/// Splits `tree` into layer plans. With `parent`, only what differs from it is planned,
/// plus whiteouts for what `tree` no longer has. `sources` maps package names to their
/// source package; `budget` is the most layers to plan (at least 1).
pub fn plan(
    tree: &Tree,
    parent: Option<&Tree>,
    sources: &HashMap<String, String>,
    budget: usize,
    image: &str,
) -> Result<Vec<LayerPlan>> {
    // What this image adds or changes.
    let changed: BTreeSet<&str> = tree
        .iter()
        .filter(|(p, e)| match parent.and_then(|pt| pt.get(p)) {
            Some(pe) => !same_entry(pe, e),
            None => true,
        })
        .map(|(p, _)| p.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    // What it removes: the topmost paths of the parent that are gone.
    let mut whiteouts = Vec::new();
    if let Some(pt) = parent {
        for (p, _) in pt.iter() {
            if !p.is_empty() && tree.get(p).is_none() && tree.get(parent_of(p)).is_some() {
                whiteouts.push(p.clone());
            }
        }
    }
    if changed.is_empty() && whiteouts.is_empty() {
        return Ok(Vec::new());
    }
    // Group by source package; hard links go with their target.
    let group_of = |p: &str| -> String {
        let e = tree.get(p);
        let e = match e.map(|e| &e.kind) {
            Some(Kind::Hardlink(t)) => tree.get(t).or(e),
            _ => e,
        };
        match e.and_then(|e| e.package.as_deref()) {
            Some(pkg) => sources.get(pkg).cloned().unwrap_or_else(|| pkg.to_string()),
            None => String::new(),
        }
    };
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for p in &changed {
        groups.entry(group_of(p)).or_default().push(p);
    }
    let size_of = |paths: &Vec<&str>| -> u64 {
        paths
            .iter()
            .filter_map(|p| tree.get(p))
            .map(Entry::size)
            .sum()
    };
    // The biggest sources get their own layers; the rest share the last one.
    let budget = budget.max(1);
    let mut by_size: Vec<(&String, u64)> = groups
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k, size_of(v)))
        .collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let own: BTreeSet<String> = by_size
        .iter()
        .take(budget - 1)
        .map(|(k, _)| (*k).clone())
        .collect();
    let mut plans_paths: BTreeMap<(u8, String), Vec<&str>> = BTreeMap::new();
    let mut rest_sources = Vec::new();
    for (k, v) in &groups {
        if own.contains(k) {
            plans_paths.insert((0, k.clone()), v.clone());
        } else {
            if !k.is_empty() {
                rest_sources.push(k.clone());
            }
            plans_paths
                .entry((1, String::new()))
                .or_default()
                .extend(v.iter().copied());
        }
    }
    if !whiteouts.is_empty() {
        plans_paths.entry((1, String::new())).or_default();
    }
    let mut plans = Vec::new();
    for ((rest, key), paths) in plans_paths {
        let mut t = Tree::new();
        for p in &paths {
            add_with_ancestors(&mut t, tree, p);
            if let Some(Entry {
                kind: Kind::Hardlink(target),
                ..
            }) = tree.get(p)
            {
                add_with_ancestors(&mut t, tree, target);
            }
        }
        let (created_by, srcs) = if rest == 0 {
            (format!("slipway: {image}: source package {key}"), vec![key])
        } else if rest_sources.is_empty() {
            (format!("slipway: {image}: generated files"), vec![])
        } else {
            (
                format!(
                    "slipway: {image}: {} source packages and generated files",
                    rest_sources.len()
                ),
                rest_sources.clone(),
            )
        };
        if rest == 1 {
            for w in &whiteouts {
                let dir = parent_of(w);
                let name = w[dir.len()..].trim_start_matches('/');
                let wh = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                add_with_ancestors(&mut t, tree, dir);
                let mtime = tree.get(dir).map(|e| e.mtime).unwrap_or(0);
                t.insert_unchecked(&wh, Entry::file(Vec::new(), 0o644, mtime));
            }
        }
        plans.push(LayerPlan {
            tree: t,
            created_by,
            sources: srcs,
        });
    }
    Ok(plans)
}

fn add_with_ancestors(dst: &mut Tree, src: &Tree, path: &str) {
    let mut end = 0;
    while let Some(i) = path[end..].find('/') {
        let anc = &path[..end + i];
        if dst.get(anc).is_none() {
            if let Some(e) = src.get(anc) {
                dst.insert_unchecked(anc, e.clone());
            }
        }
        end += i + 1;
    }
    if let Some(e) = src.get(path) {
        if !path.is_empty() {
            dst.insert_unchecked(path, e.clone());
        }
    }
}

/// Writes and compresses the planned layers (in parallel), using `cache_dir` to skip
/// compression of a layer seen before.
pub fn write(
    plans: Vec<LayerPlan>,
    epoch: u64,
    compression: Compression,
    cache_dir: &Path,
) -> Result<Vec<Layer>> {
    let results: Vec<Result<Layer>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .into_iter()
            .map(|p| s.spawn(move || write_one(p, epoch, compression, cache_dir)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("layer writer panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

fn write_one(
    p: LayerPlan,
    epoch: u64,
    compression: Compression,
    cache_dir: &Path,
) -> Result<Layer> {
    let tar = crate::writers::tar::write_tree(
        &p.tree,
        crate::writers::tar::TarOptions { epoch },
        Vec::new(),
    )
    .with_context(|| format!("writing the layer tar ({})", p.created_by))?;
    let diff_hex = sha256_hex(&tar);
    let cached = cache_dir.join(format!("{diff_hex}.{}", compression.cache_suffix()));
    let blob = match std::fs::read(&cached) {
        Ok(b) if check_cached(&b, &tar, compression) => b,
        _ => {
            let b = compression.compress(&tar)?;
            std::fs::create_dir_all(cache_dir)
                .with_context(|| format!("creating {}", cache_dir.display()))?;
            crate::io::atomic::write(&cached, &b)?;
            b
        }
    };
    let desc = Descriptor::of(compression.media_type(), &blob);
    Ok(Layer {
        desc,
        diff_id: format!("sha256:{diff_hex}"),
        tar_size: tar.len() as u64,
        blob: Arc::new(blob),
        created_by: p.created_by,
        comment: p.sources.join(" "),
        inherited: false,
    })
}

/// A cached compressed layer is used only if it decompresses to exactly this layer's tar:
/// the cache can be damaged or tampered with, and decompressing costs little next to
/// compressing again at the highest level.
fn check_cached(blob: &[u8], tar: &[u8], compression: Compression) -> bool {
    use std::io::Read;
    let mut out = Vec::with_capacity(tar.len());
    let ok = match compression {
        Compression::Gzip => flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .is_ok(),
        Compression::Zstd => zstd::stream::read::Decoder::new(blob)
            .and_then(|mut d| d.read_to_end(&mut out))
            .is_ok(),
    };
    ok && out == tar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg_file(bytes: &[u8], pkg: &str) -> Entry {
        let mut e = Entry::file(bytes.to_vec(), 0o644, 10);
        e.package = Some(pkg.into());
        e
    }

    fn base() -> Tree {
        let mut t = Tree::new();
        t.put("", Entry::dir(0o755, 10)).ok();
        t.put("etc/passwd", Entry::file(b"root".to_vec(), 0o644, 10))
            .unwrap();
        t.put("usr/bin/a", pkg_file(b"aaaa", "a")).unwrap();
        t.put("usr/share/doc/gone", pkg_file(b"x", "a")).unwrap();
        t
    }

    #[test]
    fn child_layers_hold_only_changes_and_whiteouts() {
        let parent = base();
        let mut child = base();
        child
            .put(
                "etc/passwd",
                Entry::file(b"root\nnonroot".to_vec(), 0o644, 10),
            )
            .unwrap();
        child.put("usr/lib/b.so", pkg_file(b"bbbb", "b")).unwrap();
        child.remove("usr/share/doc/gone");
        let srcs = HashMap::from([("b".to_string(), "bsrc".to_string())]);
        let plans = plan(&child, Some(&parent), &srcs, 4, "t").unwrap();
        assert_eq!(plans.len(), 2);
        let own = &plans[0];
        assert!(own.tree.get("usr/lib/b.so").is_some());
        assert!(own.tree.get("usr/bin/a").is_none());
        let rest = &plans[1];
        assert!(rest.tree.get("etc/passwd").is_some());
        assert!(rest.tree.get("usr/share/doc/.wh.gone").is_some());
        assert!(rest.tree.get("usr/bin/a").is_none());
    }

    #[test]
    fn budget_one_is_a_single_layer_and_bytes_repeat() {
        let t = base();
        let plans = plan(&t, None, &HashMap::new(), 1, "t").unwrap();
        assert_eq!(plans.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let a = write(plans, 10, Compression::Gzip, dir.path()).unwrap();
        let plans = plan(&t, None, &HashMap::new(), 1, "t").unwrap();
        let b = write(plans, 10, Compression::Gzip, &dir.path().join("other")).unwrap();
        assert_eq!(a[0].desc, b[0].desc, "cached and fresh blobs are identical");
        assert_eq!(&a[0].blob[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    }

    #[test]
    fn tampered_cache_is_not_used() {
        let t = base();
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            plan(&t, None, &HashMap::new(), 1, "t").unwrap(),
            10,
            Compression::Zstd,
            dir.path(),
        )
        .unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::write(f.unwrap().path(), b"junk").unwrap();
        }
        let b = write(
            plan(&t, None, &HashMap::new(), 1, "t").unwrap(),
            10,
            Compression::Zstd,
            dir.path(),
        )
        .unwrap();
        assert_eq!(a[0].desc, b[0].desc);
    }
}
