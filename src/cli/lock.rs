//! `slipway lock`: resolves a recipe and writes (or checks) its lock.

use super::args::{Global, LockArgs};
use super::{context, load, mb, print_json};
use crate::lock::Lock;
use crate::pipeline::{self, LockAction};
use crate::recipe::Recipe;
use anyhow::Result;

/// Runs `slipway lock`: with `--locked` only checks that the lock is current.
pub fn run(g: &Global, a: &LockArgs) -> Result<()> {
    let r = load(&a.recipe, &a.fetch)?;
    let ctx = context(g, &a.fetch)?;
    let (l, action) = if a.fetch.locked {
        (pipeline::ensure_lock(&ctx, &r)?, LockAction::UpToDate)
    } else {
        pipeline::lock(&ctx, &r, a.update)?
    };
    pipeline::share_lock(&ctx, &r, &l)?;
    print(g, &r, &l, &action)
}

/// What happened to the lock, as JSON or a line (plus the cuts).
fn print(g: &Global, r: &Recipe, l: &Lock, action: &LockAction) -> Result<()> {
    let cuts = l
        .cuts
        .iter()
        .map(|c| format!("{} -> {} ({})", c.from, c.to, c.relation));
    if g.json {
        return print_json(&serde_json::json!({
            "recipe": r.display(),
            "lock": r.lock_path().display().to_string(),
            "action": action,
            "packages": l.packages.len(),
            "bytes": l.total_size(),
            "cut": cuts.collect::<Vec<_>>(),
        }));
    }
    let verb = match action {
        LockAction::Written => "wrote",
        LockAction::UpToDate => "up to date:",
    };
    println!(
        "{verb} {} ({} packages, {:.1} MB)",
        r.lock_path().display(),
        l.packages.len(),
        mb(l.total_size())
    );
    for c in cuts {
        println!("  cut: {c}");
    }
    Ok(())
}
