//! The fetch stage: consumes a recipe and its lock, produces every locked package and
//! artifact in the cache, verified (`slipway fetch`, `slipway vendor`, and the second
//! step of every build).

use super::Context;
use crate::fetch::{artifact, packages};
use crate::lock::Lock;
use crate::output::Collector;
use crate::recipe::Recipe;
use crate::report::BuildReport;
use anyhow::Result;

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
    fetch_packages(ctx, r, lock)
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
