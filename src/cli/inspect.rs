//! `slipway inspect`: where an image's bytes are, by package and by directory.

use super::args::{Global, InspectArgs};
use super::{context, load, mb, print_json};
use crate::pipeline;
use anyhow::Result;

/// Runs `slipway inspect`: assembles the tree (nothing is written) and prints its sizes.
pub fn run(g: &Global, a: &InspectArgs) -> Result<()> {
    let r = load(&a.recipe, &a.fetch)?;
    let ctx = context(g, &a.fetch)?;
    let (asm, lock) = pipeline::assembled(&ctx, &r)?;
    let s = crate::inspect::sizes(&asm.tree, a.depth);
    if g.json {
        return print_json(&serde_json::json!({
            "recipe": r.display(), "packages": lock.packages.len(), "sizes": s,
        }));
    }
    println!(
        "{}: {} packages, {} entries, {:.2} MB",
        r.display(),
        lock.packages.len(),
        s.total.entries,
        mb(s.total.bytes)
    );
    for (title, rows) in [("by package", &s.by_package), ("by directory", &s.by_dir)] {
        println!("\n{title}:");
        for (name, u) in rows.iter().take(a.top) {
            println!("  {:>9.3} MB {:>6} entries  {name}", mb(u.bytes), u.entries);
        }
        if rows.len() > a.top {
            println!("  ... {} more (--top N)", rows.len() - a.top);
        }
    }
    Ok(())
}
