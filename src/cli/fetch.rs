//! `slipway fetch`: downloads and verifies every locked file into the cache.

use super::args::{Global, RecipeArgs};
use super::{context, load, mb, print_json};
use crate::pipeline;
use anyhow::Result;

/// Runs `slipway fetch` and prints what the cache now holds and how it got there.
pub fn run(g: &Global, a: &RecipeArgs) -> Result<()> {
    let r = load(&a.recipe, &a.fetch)?;
    let ctx = context(g, &a.fetch)?;
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
