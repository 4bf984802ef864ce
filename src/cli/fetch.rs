//! `slipway fetch`: downloads and verifies every locked file into the cache.

use super::args::{FetchArgs, Global, RecipeArgs};
use super::{context, load, mb, print_json};
use crate::pipeline::{self, Context};
use crate::remote::{config, Remote};
use anyhow::Result;

/// The command's context with the registry cache its flags, environment or config file
/// name (none with `--offline`: a registry is network).
pub(super) fn context_with_registry(g: &Global, f: &FetchArgs) -> Result<Context> {
    let mut ctx = context(g, f)?;
    if g.offline {
        return Ok(ctx);
    }
    let flags = config::Flags {
        from: f.cache_from.clone(),
        to: f.cache_to.clone(),
        signing_key: f.cache_signing_key.clone(),
        trusted_keys: f.cache_trusted_key.clone(),
    };
    let remote = Remote::new(config::resolve(&flags)?);
    ctx.cache = ctx.cache.with_registry(remote);
    Ok(ctx)
}

/// Runs `slipway fetch` and prints what the cache now holds and how it got there.
pub fn run(g: &Global, a: &RecipeArgs) -> Result<()> {
    let r = load(&a.recipe, &a.fetch)?;
    let ctx = context_with_registry(g, &a.fetch)?;
    let f = pipeline::fetch(&ctx, &r)?;
    if g.json {
        return print_json(&serde_json::json!({
            "recipe": r.display(),
            "packages": f.lock.packages.len(),
            "bytes": f.lock.total_size(),
            "summary": f.summary,
            "registry_cache": ctx.cache.registry().map(|g| g.counts()),
        }));
    }
    println!(
        "{}: {} packages ({:.1} MB) verified in the cache: {} cached, {} downloaded, {} vendored, {} repaired, {} from the registry cache",
        r.display(),
        f.lock.packages.len(),
        mb(f.lock.total_size()),
        f.summary.cached,
        f.summary.downloaded,
        f.summary.vendored,
        f.summary.repaired,
        f.summary.from_registry
    );
    Ok(())
}
