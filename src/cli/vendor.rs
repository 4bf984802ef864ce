//! `slipway vendor`: copies every locked file into a directory for offline builds.

use super::args::{Global, VendorArgs};
use super::{context, load, mb};
use crate::pipeline;
use anyhow::Result;

/// Runs `slipway vendor` and prints how much it copied.
pub fn run(g: &Global, a: &VendorArgs) -> Result<()> {
    let r = load(&a.recipe, &a.fetch)?;
    let ctx = context(g, &a.fetch)?;
    let bytes = pipeline::vendor(&ctx, &r, &a.dir)?;
    println!(
        "{}: vendored into {} ({:.1} MB copied)",
        r.display(),
        a.dir.display(),
        mb(bytes)
    );
    Ok(())
}
