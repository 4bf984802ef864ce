//! The whole-build cache of host images: consumes the inputs of a build, known before
//! the tree is assembled (the lock, the recipe files, the overlay files' digests, the
//! artifacts (by their locked digests), the slipway binaries, the host tools, the epoch
//! and the options), produces the outputs of an earlier build with the same inputs from
//! the stage cache ([`crate::io::stage_cache`]). A rebuild with nothing changed checks
//! that key and the verified entry, and does nothing else.
//!
//! Only builds whose outputs are all files (the disk and its formats) are kept: tree
//! and OCI outputs are written every time.

use super::plan::Plan;
use super::{BuildOptions, Context, Format};
use crate::io::stage_cache::{Entry, KeyBuilder, StageCache, StoredFile};
use crate::lock::Lock;
use crate::output::Collector;
use crate::recipe::Recipe;
use crate::remote::Pulled;
use crate::report::BuildReport;
use anyhow::{Context as _, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bumped when what a build writes changes without slipway's binary changing.
const VERSION: u32 = 1;
/// The stage cache's kind for whole builds.
const KIND: &str = "build";

/// The key of this build, or None when its outputs are not kept (not a host image, or
/// tree or OCI outputs asked for).
pub(super) fn key(
    ctx: &Context,
    r: &Recipe,
    plan: &Plan,
    opts: &BuildOptions,
    lock: &Lock,
) -> Result<Option<String>> {
    let files_only = opts.formats.iter().all(|f| {
        matches!(
            f,
            Format::Disk | Format::Qcow2 | Format::Vhd | Format::Vmdk | Format::Gce
        )
    });
    let Some(bundled) = &plan.init else {
        return Ok(None);
    };
    if !files_only || opts.formats.is_empty() {
        return Ok(None);
    }
    let stages = StageCache::open(ctx.cache.root())?;
    let mut k = KeyBuilder::new(KIND, VERSION);
    // The signing certificate's digest, never the private key: outputs signed with
    // another key are never reused.
    k.text("secure-boot", &crate::disk::sign::cache_text(r)?)
        .text("slipway", crate::io::stage_cache::self_digest_in(&stages)?)
        .text("init", &crate::io::hash::sha256_hex(&bundled.init))
        .text("agent", &crate::io::hash::sha256_hex(&bundled.agent))
        .text("lock", &lock.to_text()?)
        .text("formats", &format!("{:?}", opts.formats))
        .text("arches", &format!("{:?}", opts.arches))
        .text("oci", &format!("{:?}", opts.oci))
        .text(
            "epoch",
            &std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default(),
        );
    if r.bundle_node {
        let node = crate::tool::bundled_binary("slipway-node", "SLIPWAY_NODE")?;
        k.file("node", &node)?;
    }
    recipe_into(&mut k, r)?;
    for p in &r.preload {
        let base = Recipe::load_with(&p.recipe, r.load)
            .with_context(|| format!("{}: preload {}", r.display(), p.recipe.display()))?;
        recipe_into(&mut k, &base)?;
        match std::fs::read(base.lock_path()) {
            Ok(b) => k.bytes("preload-lock", &b),
            Err(_) => k.text("preload-lock", "none"),
        };
    }
    for t in &plan.tools {
        crate::io::stage_cache::tool_into(&mut k, t)?;
    }
    Ok(Some(k.finish()))
}

/// Adds `r`'s files (its own and its parents'), how it was loaded, and its overlays.
fn recipe_into(k: &mut KeyBuilder, r: &Recipe) -> Result<()> {
    k.text("load", &format!("{:?}", r.load));
    let mut at = Some(r);
    while let Some(one) = at {
        k.text("recipe", &one.path.display().to_string());
        let text =
            std::fs::read(&one.path).with_context(|| format!("reading {}", one.path.display()))?;
        k.bytes("recipe-text", &text);
        for o in &one.overlays {
            overlay_into(k, o)?;
        }
        at = one.parent.as_deref();
    }
    Ok(())
}

/// Adds every entry of the overlay directory `dir`: its path, type, mode, owner, and
/// content digest or link target.
fn overlay_into(k: &mut KeyBuilder, dir: &Path) -> Result<()> {
    k.text("overlay", &dir.display().to_string());
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.with_context(|| format!("reading overlay {}", dir.display()))?;
        let m = e
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", e.path().display()))?;
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
        k.text("path", &rel.display().to_string())
            .bytes("mode", &m.mode().to_le_bytes())
            .bytes(
                "owner",
                &[m.uid().to_le_bytes(), m.gid().to_le_bytes()].concat(),
            );
        if m.file_type().is_symlink() {
            let t = std::fs::read_link(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            k.text("target", &t.display().to_string());
        } else if m.is_file() {
            k.file("content", e.path())?;
        }
    }
    Ok(())
}

/// Fills the staging directory `dir` and `report` from the entry of `key`, if there is
/// one and it verifies: in the local stage cache, else in the registry cache (signed by
/// a trusted key for this very key). Returns whether it did. With `--cache-to`, the
/// entry and the inputs of `r` and `lock` are pushed.
pub(super) fn reuse(
    ctx: &Context,
    (r, lock): (&Recipe, &Lock),
    key: Option<&str>,
    dir: &Path,
    report: &mut BuildReport,
    c: &mut Collector,
) -> Result<bool> {
    let Some(key) = key else {
        return Ok(false);
    };
    let t = std::time::Instant::now();
    let stages = StageCache::open(ctx.cache.root())?;
    let entry = match stages.get(KIND, key, &mut c.warnings) {
        Some(e) => Some(e),
        None => from_registry(ctx, &stages, key, c)?,
    };
    let Some(entry) = entry else {
        return Ok(false);
    };
    let mut cached: BuildReport =
        serde_json::from_value(entry.meta.clone()).context("reading a cached build report")?;
    for f in &entry.files {
        if let Err(e) = entry.place(&f.name, &dir.join(&f.name)) {
            // Removed meanwhile by a build that found it damaged: build it again.
            for g in &entry.files {
                let _ = std::fs::remove_file(dir.join(&g.name));
            }
            c.warnings.push(format!(
                "stage cache: an entry went away while in use: {e:#}"
            ));
            return Ok(false);
        }
    }
    for mut o in std::mem::take(&mut cached.outputs) {
        o.path = dir.join(&o.path).display().to_string();
        c.output(o);
    }
    ctx.rep.say(format!(
        "==> {}: its inputs are those of a build kept in the stage cache: outputs reused",
        report.recipe
    ));
    cached.recipe = std::mem::take(&mut report.recipe);
    cached.lock = std::mem::take(&mut report.lock);
    cached.stages.clear();
    *report = cached;
    c.since("stage cache", t);
    push_entry(ctx, &entry, key)?;
    super::fetch::share_inputs(ctx, r, lock)?;
    Ok(true)
}

/// The entry of `key` from the registry cache into the local stage cache, if the
/// registry has one signed by a trusted key for this key; a refused one is a warning.
fn from_registry(
    ctx: &Context,
    stages: &StageCache,
    key: &str,
    c: &mut Collector,
) -> Result<Option<Entry>> {
    let Some(reg) = ctx.cache.registry().filter(|g| g.reads()) else {
        return Ok(None);
    };
    let work = ctx.cache.temp_dir()?;
    let (pulled, got) = reg.pull_stage(KIND, key, work.path());
    if let Pulled::Refused(w) = pulled {
        ctx.rep.say(format!("warning: {w}"));
        c.warnings.push(w);
    }
    let Some(got) = got else {
        return Ok(None);
    };
    let files: Vec<StoredFile> = got
        .files
        .iter()
        .map(|(rec, path)| StoredFile {
            name: rec.name.clone(),
            path: path.clone(),
            sha256: Some(rec.sha256.clone()),
        })
        .collect();
    stages.put(KIND, key, &files, got.meta)?;
    ctx.rep.say(format!(
        "==> stage entry {} taken from the registry cache (signed by a trusted key)",
        &key[..16]
    ));
    Ok(stages.get(KIND, key, &mut c.warnings))
}

/// With `--cache-to` and a signing key: pushes `entry` (kept under `key`) to the
/// registry cache under a signed manifest.
fn push_entry(ctx: &Context, entry: &Entry, key: &str) -> Result<()> {
    let Some(reg) = ctx.cache.registry().filter(|g| g.writes()) else {
        return Ok(());
    };
    let files: Vec<_> = entry
        .files
        .iter()
        .map(|f| (f.clone(), entry.path(&f.name)))
        .collect();
    let stage = ctx
        .rep
        .stage("pushing the stage entry to the registry cache");
    let pushed = reg
        .push_stage(KIND, key, &files, &entry.meta)
        .map_err(|e| crate::exit::with_code(crate::exit::Code::Fetch, e))
        .context("pushing to the registry cache (--cache-to)")?;
    if pushed {
        stage.done(format!("{} files, signed", files.len()));
    } else {
        stage.done("not pushed: no signing key (--cache-signing-key); readers would ignore it");
    }
    Ok(())
}

/// Keeps the outputs the build wrote into `dir` (all files, named in `report`) under
/// `key`, with the report.
pub(super) fn store(
    ctx: &Context,
    key: Option<&str>,
    dir: &Path,
    report: &BuildReport,
) -> Result<()> {
    let Some(key) = key else {
        return Ok(());
    };
    let mut files: Vec<StoredFile> = Vec::new();
    let mut kept = report.clone();
    for o in &mut kept.outputs {
        let p = PathBuf::from(&o.path);
        let name = match p.strip_prefix(dir) {
            Ok(rel) if rel.components().count() == 1 && p.is_file() => rel.display().to_string(),
            // Not a plain file of the output directory: not kept.
            _ => return Ok(()),
        };
        // Hashed as it was written.
        files.push(StoredFile {
            name: name.clone(),
            path: p,
            sha256: Some(o.sha256.clone()).filter(|s| !s.is_empty()),
        });
        o.path = name;
    }
    kept.stages.clear();
    let meta = serde_json::to_value(&kept).context("serializing the build report")?;
    StageCache::open(ctx.cache.root())?.put(KIND, key, &files, meta)?;
    if let Some(reg) = ctx.cache.registry() {
        reg.note_built(1);
    }
    Ok(())
}

/// With `--cache-to`: pushes the entry this build kept under `key` (if it was kept).
pub(super) fn share(ctx: &Context, key: Option<&str>) -> Result<()> {
    let (Some(key), true) = (key, ctx.cache.registry().is_some_and(|g| g.writes())) else {
        return Ok(());
    };
    let stages = StageCache::open(ctx.cache.root())?;
    match stages.get(KIND, key, &mut Vec::new()) {
        Some(entry) => push_entry(ctx, &entry, key),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn digest(dir: &Path) -> String {
        let mut k = KeyBuilder::new("t", 1);
        overlay_into(&mut k, dir).unwrap();
        k.finish()
    }

    #[test]
    fn the_key_sees_every_overlay_change_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let o = d.path().join("rootfs");
        std::fs::create_dir_all(o.join("etc")).unwrap();
        std::fs::write(o.join("etc/a.conf"), "a=1\n").unwrap();
        std::os::unix::fs::symlink("a.conf", o.join("etc/b.conf")).unwrap();
        let base = digest(&o);
        assert_eq!(digest(&o), base, "the same overlay, another key");
        // A touch (same bytes, new mtime) is not a change.
        let f = std::fs::File::options()
            .append(true)
            .open(o.join("etc/a.conf"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(digest(&o), base, "a new mtime changed the key");
        std::fs::write(o.join("etc/a.conf"), "a=2\n").unwrap();
        let content = digest(&o);
        assert_ne!(content, base, "a changed file kept the key");
        std::fs::set_permissions(o.join("etc/a.conf"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert_ne!(digest(&o), content, "a changed mode kept the key");
        std::fs::remove_file(o.join("etc/b.conf")).unwrap();
        std::os::unix::fs::symlink("c.conf", o.join("etc/b.conf")).unwrap();
        let relinked = digest(&o);
        std::fs::write(o.join("etc/new"), "").unwrap();
        assert_ne!(digest(&o), relinked, "a new file kept the key");
    }
}
