//! `slipway diff`: what differs between two images, packages first, then files.

use super::args::{DiffArgs, Global};
use super::{context, load, mb, print_json};
use crate::inspect::Diff;
use crate::pipeline;
use anyhow::{Context as _, Result};

/// Runs `slipway diff`: assembles both trees (nothing is written) and prints the changes.
pub fn run(g: &Global, a: &DiffArgs) -> Result<()> {
    let (ra, rb) = (load(&a.a, &a.fetch)?, load(&a.b, &a.fetch)?);
    let ctx = context(g, &a.fetch)?;
    let (xa, la) = pipeline::assembled(&ctx, &ra)?;
    let (xb, lb) = pipeline::assembled(&ctx, &rb)?;
    let d = crate::inspect::diff(&xa.tree, &la.packages, &xb.tree, &lb.packages);
    if g.json {
        return print_json(&serde_json::to_value(&d).context("serializing the diff")?);
    }
    println!(
        "{} -> {}: {:.2} MB -> {:.2} MB",
        ra.display(),
        rb.display(),
        mb(d.bytes.0),
        mb(d.bytes.1)
    );
    print_packages(&d);
    print_files(&d, a.all);
    Ok(())
}

/// The packages added (+), removed (-) and changed (~).
fn print_packages(d: &Diff) {
    println!("packages ({} differ):", d.packages.len());
    for p in &d.packages {
        match (&p.from, &p.to) {
            (None, Some(v)) => println!("  + {} {v}", p.name),
            (Some(v), None) => println!("  - {} {v}", p.name),
            (Some(x), Some(y)) => println!("  ~ {} {x} -> {y}", p.name),
            (None, None) => {}
        }
    }
}

/// The counts of changed files, then every one (`all`) or the 20 that changed most.
fn print_files(d: &Diff, all: bool) {
    let mut files = d.files.clone();
    let count = |c: &str| files.iter().filter(|f| f.change == c).count();
    println!(
        "files: {} added, {} removed, {} changed content, {} changed metadata or type",
        count("added"),
        count("removed"),
        count("content"),
        count("metadata") + count("type")
    );
    if !all {
        files.sort_by_key(|f| std::cmp::Reverse(f.from_bytes.abs_diff(f.to_bytes)));
        files.truncate(20);
    }
    for f in &files {
        println!(
            "  {:<8} {:>10} -> {:<10} {}",
            f.change, f.from_bytes, f.to_bytes, f.path
        );
    }
}
