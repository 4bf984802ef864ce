//! The fetch stage: consumes a recipe and its lock, produces every locked package and
//! artifact in the cache, verified (`slipway fetch`, `slipway vendor`, and the second
//! step of every build).

use super::Context;
use crate::fetch::{artifact, packages};
use crate::lock::Lock;
use crate::output::Collector;
use crate::recipe::Recipe;
use crate::report::BuildReport;
use anyhow::{Context as _, Result};

/// Prints the cache's warnings (damaged entries it repaired) through the reporter, for
/// the commands that write no build report; a build records them in its report instead
/// ([`super::build`]).
pub(super) fn say_cache_warnings(ctx: &Context) {
    for w in crate::fetch::cache::take_warnings() {
        ctx.rep.say(format!("warning: {w}"));
    }
}

/// What `fetch` produced: the lock and every blob in the cache, verified.
pub struct Fetched {
    /// The lock fetched.
    pub lock: Lock,
    /// What the package fetch did.
    pub summary: packages::Summary,
}

/// `slipway fetch`: the lock's packages and artifacts into the cache, verified.
/// Artifacts come first: a missing or wrong one fails before any other work.
pub fn fetch(ctx: &Context, r: &Recipe) -> Result<Fetched> {
    let res = fetch_verified(ctx, r);
    say_cache_warnings(ctx);
    res
}

/// [`fetch`], leaving the cache's warnings to the caller.
pub(super) fn fetch_verified(ctx: &Context, r: &Recipe) -> Result<Fetched> {
    let lock = artifacts_and_lock(ctx, r)?;
    let fetched = fetch_packages(ctx, r, lock)?;
    share_inputs(ctx, r, &fetched.lock)?;
    say_registry_counts(ctx);
    Ok(fetched)
}

/// Prints what the registry cache did, for the commands that write no build report.
pub(super) fn say_registry_counts(ctx: &Context) {
    if let Some(reg) = ctx.cache.registry() {
        ctx.rep.say(reg.counts().line());
    }
}

/// `slipway lock --cache-to`: pushes the lock's artifacts (which locking fetched) under
/// an inputs manifest of their own; packages are pushed by the commands that fetch them.
pub fn share_lock(ctx: &Context, r: &Recipe, lock: &Lock) -> Result<()> {
    let artifacts_only = Lock {
        packages: Vec::new(),
        ..lock.clone()
    };
    share_inputs(ctx, r, &artifacts_only)?;
    say_registry_counts(ctx);
    say_cache_warnings(ctx);
    Ok(())
}

/// With `--cache-to`: pushes the lock's packages and artifacts (from the cache) and the
/// inputs manifest of `r` and `lock`. Packages not in the local cache (a build taken
/// whole from a stage cache) are fetched first.
pub(super) fn share_inputs(ctx: &Context, r: &Recipe, lock: &Lock) -> Result<()> {
    let Some(reg) = ctx.cache.registry().filter(|g| g.writes()) else {
        return Ok(());
    };
    let absent = lock
        .packages
        .iter()
        .any(|p| !ctx.cache.blob_path(&p.sha256).is_file());
    if absent {
        fetch_packages(ctx, r, lock.clone())?;
    }
    let stage = ctx
        .rep
        .stage("pushing packages and artifacts to the registry cache");
    let mut items: Vec<crate::remote::Item> = Vec::new();
    let (mut pkgs, mut arts) = (Vec::new(), Vec::new());
    for p in &lock.packages {
        items.push(crate::remote::Item {
            sha256: p.sha256.clone(),
            size: p.size,
            path: ctx.cache.blob_path(&p.sha256),
            media_type: crate::remote::manifest::DEB_TYPE.into(),
            title: packages::vendor_name(p),
        });
        pkgs.push(serde_json::json!({"name": p.name, "version": p.version,
            "architecture": p.architecture, "sha256": p.sha256, "size": p.size}));
    }
    for a in &lock.artifacts {
        items.push(crate::remote::Item {
            sha256: a.sha256.clone(),
            size: a.size,
            path: ctx.cache.blob_path(&a.sha256),
            media_type: crate::remote::manifest::FILE_TYPE.into(),
            title: a.dest.rsplit('/').next().unwrap_or("artifact").to_string(),
        });
        arts.push(
            serde_json::json!({"url": a.url, "dest": a.dest, "sha256": a.sha256,
            "size": a.size}),
        );
    }
    let config = serde_json::json!({
        "recipe": r.name,
        "architecture": lock.architecture,
        "release": lock.release,
        "packages": pkgs,
        "artifacts": arts,
    });
    reg.push_inputs(
        &r.name,
        &lock.architecture,
        &lock.to_text()?,
        &config,
        &items,
    )
    .map_err(|e| crate::exit::with_code(crate::exit::Code::Fetch, e))
    .context("pushing to the registry cache (--cache-to)")?;
    stage.done(format!("{} entries", items.len()));
    Ok(())
}

/// The recipe's artifacts into the cache, then its lock ([`super::ensure_lock`]).
fn artifacts_and_lock(ctx: &Context, r: &Recipe) -> Result<Lock> {
    let mut sources = ctx.artifact_sources();
    // The lock's sizes cap the downloads (a lock that cannot be read is ensure_lock's
    // to report, below).
    if let Ok(Some(l)) = Lock::read(&r.lock_path()) {
        sources.locked_sizes(&l.artifacts);
    }
    for a in &r.artifacts {
        artifact::fetch(&ctx.cache, a, &mut sources)?;
    }
    super::ensure_lock(ctx, r)
}

/// The packages of `lock` into the cache, verified.
fn fetch_packages(ctx: &Context, r: &Recipe, lock: Lock) -> Result<Fetched> {
    let opts = packages::Options {
        offline: ctx.offline,
        vendor: ctx.vendor.clone(),
    };
    let summary = packages::fetch(
        &ctx.cache,
        &lock.packages,
        &opts,
        &mut || ctx.apt(r),
        &ctx.rep,
    )?;
    Ok(Fetched { lock, summary })
}

/// `slipway vendor`: copies every locked file into `dir` for offline builds.
pub fn vendor(ctx: &Context, r: &Recipe, dir: &std::path::Path) -> Result<u64> {
    let f = fetch(ctx, r)?;
    let mut total = packages::vendor(&ctx.cache, &f.lock.packages, dir)?;
    total += artifact::vendor(&ctx.cache, &f.lock.artifacts, &dir.join("artifacts"))?;
    crate::io::atomic::write(&dir.join("lock.toml"), f.lock.to_text()?.as_bytes())?;
    Ok(total)
}

/// The build's lock stage: artifacts fetched, the lock current.
pub(super) fn lock_stage(ctx: &Context, r: &Recipe, c: &mut Collector) -> Result<Lock> {
    let t = std::time::Instant::now();
    let lock = artifacts_and_lock(ctx, r)?;
    c.warn(crate::fetch::cache::take_warnings());
    c.since("lock", t);
    Ok(lock)
}

/// The build's fetch stage: the packages of `lock`, recorded in `report`.
pub(super) fn stage(
    ctx: &Context,
    r: &Recipe,
    lock: Lock,
    report: &mut BuildReport,
    c: &mut Collector,
) -> Result<Fetched> {
    let t = std::time::Instant::now();
    let fetched = fetch_packages(ctx, r, lock)?;
    share_inputs(ctx, r, &fetched.lock)?;
    c.warn(crate::fetch::cache::take_warnings());
    c.since("fetch", t);
    report.packages = fetched.lock.packages.len();
    report.deb_bytes = fetched.lock.total_size();
    report.cut_edges = fetched
        .lock
        .cuts
        .iter()
        .map(|c| format!("{} -> {} ({})", c.from, c.to, c.relation))
        .collect();
    report.fetch = Some(fetched.summary.clone());
    Ok(fetched)
}
