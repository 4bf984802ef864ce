//! The assemble stage: consumes a recipe and its fetched lock, produces the image tree
//! ([`crate::assemble`]) with the preloaded base images and bundled programs added
//! ([`crate::preload`]).

use super::plan::Plan;
use super::Context;
use crate::assemble::Assembled;
use crate::lock::Lock;
use crate::output::Collector;
use crate::recipe::Recipe;
use crate::report::BuildReport;
use anyhow::Result;

/// The build's assemble stage: the tree of `r` (with preloaded images), recorded in
/// `report` and `c`.
pub(super) fn stage(
    ctx: &Context,
    r: &Recipe,
    plan: &Plan,
    lock: &Lock,
    report: &mut BuildReport,
    c: &mut Collector,
) -> Result<Assembled> {
    let stage = ctx.rep.stage("assembling the tree");
    let mut asm = crate::assemble::assemble(&ctx.cache, r, lock)?;
    stage.done(format!(
        "{} entries, {:.1} MB ({:.1} MB dropped by path globs)",
        asm.tree.len(),
        asm.tree.content_size() as f64 / 1e6,
        asm.dropped_bytes as f64 / 1e6
    ));
    for (name, secs) in &asm.stages {
        c.time(name, *secs);
    }
    // Taken before the preloaded images' builds, which take their own.
    c.warn(crate::fetch::cache::take_warnings());
    c.warn(asm.warnings.iter().cloned());
    let t = std::time::Instant::now();
    report.preloaded = add_preloads(ctx, r, &mut asm, &mut c.warnings)?;
    if !report.preloaded.is_empty() {
        c.since("preload", t);
    }
    report.scripts = asm.scripts.clone();
    report.tree_entries = asm.tree.len();
    report.tree_bytes = asm.tree.content_size();
    report.source_date_epoch = asm.epoch;
    report.kernel_modules = asm.modules.as_ref().map(|m| m.summary());
    c.warn(driver_warnings(r, &asm, &plan.disk_formats));
    if plan.init.is_some() {
        crate::disk::image::check_esp_fits(r, &asm.tree)?;
    }
    Ok(asm)
}

/// Adds the base images `r` preloads (each built as an OCI archive by
/// [`super::oci::archive`]) and the programs it bundles to `asm`'s tree.
fn add_preloads(
    ctx: &Context,
    r: &Recipe,
    asm: &mut Assembled,
    warnings: &mut Vec<String>,
) -> Result<Vec<crate::output::Preloaded>> {
    let build = |base: &Recipe, dir: &std::path::Path| super::oci::archive(ctx, base, dir);
    let done = crate::preload::add(
        r,
        &mut asm.tree,
        asm.epoch,
        ctx.cache.root(),
        &build,
        warnings,
    )?;
    crate::preload::add_bundled(r, &mut asm.tree, asm.epoch)?;
    Ok(done)
}

/// One warning for each requested disk format whose platform's drivers the image's
/// kernel lacks (neither kept as a module nor built in), naming the format and modules.
fn driver_warnings(
    r: &Recipe,
    asm: &Assembled,
    formats: &[&dyn crate::formats::DiskFormat],
) -> Vec<String> {
    let Some(plan) = &asm.module_plan else {
        return Vec::new();
    };
    if formats.is_empty() {
        return Vec::new();
    }
    // The pruned tree: what is left of the modules directory is what the image has.
    let cat = match crate::kernel::find(&asm.tree)
        .and_then(|k| crate::kernel::index::Catalog::open(&asm.tree, &k))
    {
        Ok(c) => c,
        Err(e) => {
            return vec![format!(
                "{}: cannot check the cloud drivers of kernel {}: {e:#}",
                r.display(),
                plan.kernel
            )]
        }
    };
    let has = |m: &str| {
        let n = crate::kernel::modinfo::normalize(m);
        cat.modules.contains_key(&n) || cat.builtin.contains(&n)
    };
    let mut out = Vec::new();
    for f in formats {
        for (platform, missing) in crate::formats::missing_drivers(*f, has) {
            out.push(format!(
                "{}: --format {} is for {platform}, but kernel {} has no {} (add them to [kernel] modules, e.g. the \"network\" and \"storage\" features)",
                r.display(),
                f.name(),
                plan.kernel,
                missing.join(", ")
            ));
        }
    }
    out
}

/// `r`'s tree, assembled from its lock (locking and fetching as needed), with the lock.
pub fn assembled(ctx: &Context, r: &Recipe) -> Result<(Assembled, Lock)> {
    let mut warnings = Vec::new();
    let res = assembled_into(ctx, r, &mut warnings);
    super::fetch::say_cache_warnings(ctx);
    for w in warnings {
        ctx.rep.say(format!("warning: {w}"));
    }
    res
}

/// [`assembled`], leaving the cache's warnings to the caller and adding the preloaded
/// images' warnings to `warnings`.
pub(super) fn assembled_into(
    ctx: &Context,
    r: &Recipe,
    warnings: &mut Vec<String>,
) -> Result<(Assembled, Lock)> {
    let f = super::fetch::fetch_verified(ctx, r)?;
    let mut asm = crate::assemble::assemble(&ctx.cache, r, &f.lock)?;
    add_preloads(ctx, r, &mut asm, warnings)?;
    Ok((asm, f.lock))
}
