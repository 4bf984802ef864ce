//! The root image stage: consumes the root file system's tree (see
//! [`crate::disk::image::root_tree`]), produces the read-only root image (squashfs) and its dm-verity hash tree, kept in the stage cache under the digest of the
//! tree and everything else that decides their bytes.
//!
//! [`write_image`] is the one place the file system is written. The default root,
//! squashfs with zstd, comes from slipway's own writer ([`crate::disk::squashfs`]): no
//! staged tree, no root, and bytes that depend on the tree alone. `root-fs =
//! "squashfs-xz"` still runs the host's mksquashfs (docs/host-images.md says why).

use crate::disk::erofs::RootFs;
use crate::io::stage_cache::{KeyBuilder, StageCache, StoredFile};
use crate::recipe::raw::RootFsName;
use crate::recipe::Recipe;
use crate::tree::Tree;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Bumped when the root image or verity format changes, so old entries are not reused.
const VERSION: u32 = 2;

/// What the stage made.
pub struct RootImage {
    /// Its file system kind.
    pub kind: RootFs,
    /// The image (in the build's staging directory or the stage cache).
    pub bytes: Vec<u8>,
    /// The dm-verity hash tree.
    pub verity: Vec<u8>,
    /// The dm-verity root hash, hex.
    pub root_hash: String,
    /// Entries in the tree.
    pub entries: usize,
}

/// The root file system kind `r` asks for.
pub fn kind_of(r: &Recipe) -> RootFs {
    match r.disk.root_fs {
        Some(RootFsName::SquashfsXz) => RootFs::SquashfsXz,
        Some(RootFsName::Squashfs) | None => RootFs::SquashfsZstd,
    }
}

/// The root image and verity tree of `root` (the root file system's tree) for `r`:
/// from the stage cache `cache` when an entry has the same inputs, else written in
/// `staging` and stored. Damaged entries are reported in `warnings`.
pub fn build(
    r: &Recipe,
    root: &Tree,
    epoch: u64,
    staging: &Path,
    cache: &StageCache,
    warnings: &mut Vec<String>,
) -> Result<RootImage> {
    let kind = kind_of(r);
    let fs_uuid = fs_uuid(r, epoch);
    let key = key(r, root, kind, epoch, &fs_uuid)?;
    if let Some(e) = cache.get("root", &key, warnings) {
        let read = |n: &str| {
            std::fs::read(e.path(n)).with_context(|| format!("reading {}", e.path(n).display()))
        };
        return Ok(RootImage {
            kind,
            bytes: read("root.img")?,
            verity: read("verity.img")?,
            root_hash: e.meta["root_hash"]
                .as_str()
                .context("stage cache: a root entry without its root hash")?
                .to_string(),
            entries: root.len(),
        });
    }
    let memo = cache.root().join("squashfs-blocks");
    let (path, sha256) = write_image(r, root, kind, epoch, &fs_uuid, staging, Some(&memo))?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let verity = verity_of(&bytes, &crate::io::hash::unhex(&sha256)?)?;
    let verity_path = staging.join("verity.img");
    crate::io::atomic::write(&verity_path, &verity.hash_image)?;
    // A cache that cannot keep the entry (a full disk) costs the next build time only.
    if let Err(e) = cache.put(
        "root",
        &key,
        &[
            StoredFile {
                name: "root.img".into(),
                path,
                sha256: Some(sha256),
            },
            StoredFile {
                name: "verity.img".into(),
                path: verity_path,
                sha256: Some(crate::io::hash::sha256_hex(&verity.hash_image)),
            },
        ],
        serde_json::json!({ "root_hash": verity.root_hash }),
    ) {
        warnings.push(format!("stage cache: the root image is not kept: {e:#}"));
    }
    Ok(RootImage {
        kind,
        bytes,
        verity: verity.hash_image,
        root_hash: verity.root_hash,
        entries: root.len(),
    })
}

/// Writes the root file system of `root` into `staging/root.img`; returns the file and
/// its sha256. `memo` is the squashfs block memo to use, if any.
pub fn write_image(
    r: &Recipe,
    root: &Tree,
    kind: RootFs,
    epoch: u64,
    fs_uuid: &[u8; 16],
    staging: &Path,
    memo: Option<&Path>,
) -> Result<(PathBuf, String)> {
    let path = staging.join("root.img");
    let o = match kind {
        RootFs::SquashfsZstd => {
            let opts = crate::disk::squashfs::Options {
                memo: memo.map(Path::to_path_buf),
                ..crate::disk::squashfs::Options::root(epoch)
            };
            crate::disk::squashfs::write_file(root, &path, &opts)?.0
        }
        _ => crate::disk::erofs::write_root(
            root,
            kind,
            epoch,
            fs_uuid,
            &r.debian.architecture,
            &path,
        )?,
    };
    Ok((path, o.sha256))
}

/// The file system UUID: from the image name and the epoch.
fn fs_uuid(r: &Recipe, epoch: u64) -> [u8; 16] {
    let seed =
        crate::disk::image::derive(&[b"slipway-root", r.name.as_bytes(), &epoch.to_le_bytes()]);
    let mut fs_uuid = [0u8; 16];
    fs_uuid.copy_from_slice(&seed[..16]);
    fs_uuid
}

/// The dm-verity hash tree of `root`, its salt and UUID derived from its content's
/// sha256 `content` (the writer's, not hashed again).
fn verity_of(root: &[u8], content: &[u8]) -> Result<crate::disk::verity::Verity> {
    use crate::disk::image::derive;
    let salt = derive(&[b"slipway-verity-salt", content]);
    let vuuid = derive(&[b"slipway-verity-uuid", content]);
    let mut vuuid16 = [0u8; 16];
    vuuid16.copy_from_slice(&vuuid[..16]);
    crate::disk::verity::format(root, &salt, &vuuid16)
}

/// The stage's key: the tree, the file system kind and its parameters, the program
/// that writes it, and slipway itself.
fn key(r: &Recipe, root: &Tree, kind: RootFs, epoch: u64, uuid: &[u8; 16]) -> Result<String> {
    let mut k = KeyBuilder::new("root", VERSION);
    k.text("slipway", crate::io::stage_cache::self_digest()?)
        .text("fs", &format!("{kind:?}"))
        .bytes("uuid", uuid)
        .bytes("epoch", &epoch.to_le_bytes())
        .text("arch", &r.debian.architecture)
        .text("tree", &tree_digest(root));
    if kind.needs_host_tool() {
        crate::io::stage_cache::tool_into(&mut k, kind.program())?;
    }
    Ok(k.finish())
}

/// The digest of every entry of `t` ([`crate::tree::digest`]).
pub fn tree_digest(t: &Tree) -> String {
    crate::tree::digest(t.iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;

    #[test]
    fn the_tree_digest_sees_content_mode_and_owner() {
        let mut t = Tree::new();
        t.put("a", Entry::file(b"x".to_vec(), 0o644, 1)).unwrap();
        let base = tree_digest(&t);
        let mut c = t.clone();
        c.get_mut("a").unwrap().mode = 0o755;
        assert_ne!(tree_digest(&c), base);
        let mut c = t.clone();
        c.get_mut("a").unwrap().uid = 1;
        assert_ne!(tree_digest(&c), base);
        let mut c = t.clone();
        c.remove("a");
        c.put("a", Entry::file(b"y".to_vec(), 0o644, 1)).unwrap();
        assert_ne!(tree_digest(&c), base);
        assert_eq!(tree_digest(&t.clone()), base);
    }
}
