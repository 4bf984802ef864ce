//! Assembly: from fetched packages to the image tree, without running any maintainer
//! script and without root. Stages, in order:
//! packages (merged /usr, conflicts, diversions) -> overlays from `rootfs/` -> the
//! recipe's entries -> fix-ups that do declaratively what maintainer scripts would have
//! done -> kernel modules pruned (`[kernel]`, see [`crate::kernel`]) -> path globs
//! dropped -> applet links of a multi-call binary (`[applets]`) -> merged-/usr links ->
//! mtimes clamped.

pub mod applets;
pub mod artifacts;
pub mod dpkg;
pub mod fixups;
pub mod overlay;
pub mod packages;

use crate::fetch::cache::Cache;
use crate::lock::Lock;
use crate::recipe::Recipe;
use crate::tree::{self, Tree};
use anyhow::{Context, Result};

/// The assembled tree and what assembly reports.
pub struct Assembled {
    /// The image tree.
    pub tree: Tree,
    /// SOURCE_DATE_EPOCH used for clamping.
    pub epoch: u64,
    /// Maintainer scripts skipped and what slipway did instead.
    pub scripts: Vec<String>,
    /// Scripts or lines slipway could not account for.
    pub warnings: Vec<String>,
    /// Bytes removed by the recipe's path globs.
    pub dropped_bytes: u64,
    /// Per-stage seconds.
    pub stages: Vec<(String, f64)>,
    /// The packages, decoded (for reports).
    pub packages: Vec<packages::Unpacked>,
    /// Kernel modules kept and dropped (recipes with a `[kernel]` table).
    pub modules: Option<crate::kernel::ModuleReport>,
    /// The module plan behind it, for load orders (an initramfs's module list).
    pub module_plan: Option<crate::kernel::ModulePlan>,
}

/// SOURCE_DATE_EPOCH: the environment's, else the newest file mtime among the locked
/// packages (a function of the lock alone).
pub fn source_date_epoch(pkgs: &[packages::Unpacked]) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds")),
        _ => Ok(pkgs.iter().map(|p| p.newest_mtime()).max().unwrap_or(0)),
    }
}

/// Builds the tree for `r` from its fetched `lock`.
pub fn assemble(cache: &Cache, r: &Recipe, lock: &Lock) -> Result<Assembled> {
    let mut stages = Vec::new();
    let mut t = std::time::Instant::now();
    let mut lap = |name: &str, stages: &mut Vec<(String, f64)>| {
        stages.push((name.to_string(), t.elapsed().as_secs_f64()));
        t = std::time::Instant::now();
    };
    let pkgs = packages::unpack_all(&cache.clone(), &lock.packages)?;
    lap("decode", &mut stages);
    let epoch = source_date_epoch(&pkgs)?;
    let mut tree = Tree::new();
    tree.put("", tree::Entry::dir(0o755, epoch)).ok();
    packages::insert(&mut tree, &pkgs)?;
    artifacts::install(&mut tree, r, cache, epoch)?;
    lap("unpack", &mut stages);
    for (i, o) in r.overlays.iter().enumerate() {
        let at = r
            .overlay_at
            .get(i)
            .cloned()
            .unwrap_or_else(|| r.at("paths.overlays"));
        overlay::apply(&mut tree, o, &at, &r.allow_setuid, epoch)?;
    }
    overlay::apply_entries(&mut tree, r, epoch)?;
    let mut fx = fixups::Fixups::new(r, epoch);
    fx.run(&mut tree, &pkgs)?;
    dpkg::write_metadata(&mut tree, r, &pkgs, epoch)?;
    lap("fixups", &mut stages);
    let mut warnings = fx.warnings;
    let (modules, module_plan) = match &r.kernel {
        Some(k) => {
            let (report, plan) = modules(cache, r, k, &mut tree, epoch, &mut warnings)?;
            lap("kernel modules", &mut stages);
            (Some(report), Some(plan))
        }
        None => (None, None),
    };
    let dropped_bytes = overlay::drop_globs(&mut tree, r)?;
    let mut scripts = fx.scripts;
    // After the globs: the links are what the recipe asked for, not package content.
    if let Some(linked) = applets::add_links(&mut tree, r, epoch)? {
        scripts.push(linked.summary());
    }
    tree.add_merged_usr_links(epoch)?;
    fixups::prune_dangling_cert_links(&mut tree);
    tree.clamp_mtimes(epoch);
    lap("finish", &mut stages);
    Ok(Assembled {
        tree,
        epoch,
        scripts,
        warnings,
        dropped_bytes,
        stages,
        packages: pkgs,
        modules,
        module_plan,
    })
}

/// Prunes the kernel's modules to what `k` asks for and regenerates their index, the
/// plan and the index taken from the stage cache when their inputs are unchanged (a
/// rebuild after an overlay change); returns the report and the plan.
fn modules(
    cache: &Cache,
    r: &Recipe,
    k: &crate::recipe::KernelSpec,
    tree: &mut Tree,
    epoch: u64,
    warnings: &mut Vec<String>,
) -> Result<(crate::kernel::ModuleReport, crate::kernel::ModulePlan)> {
    // A kernel or module the recipe names that is not there is bad input (exit 2); a
    // depmod failure is not.
    let at = r.kernel_at.clone().unwrap_or_else(|| r.at("kernel"));
    let bad = |e: anyhow::Error| at.sub("modules").wrap(e);
    let kernel = crate::kernel::find(tree).map_err(bad)?;
    // Without a usable stage cache, every build plans and runs depmod itself.
    let stages = crate::io::stage_cache::StageCache::open(cache.root()).ok();
    let planned = match &stages {
        Some(s) => crate::kernel::plan_cached(s, tree, &kernel, &k.modules, warnings),
        None => crate::kernel::plan(tree, &kernel, &k.modules),
    };
    let plan = planned.map_err(|e| {
        // The file that named the module that fails on its own.
        let one = |m: &String| crate::kernel::plan(tree, &kernel, std::slice::from_ref(m)).is_err();
        match k
            .modules
            .iter()
            .position(one)
            .and_then(|i| k.module_at.get(i))
        {
            Some(at) => at.wrap(e),
            None => bad(e),
        }
    })?;
    let report = crate::kernel::prune(
        tree,
        &kernel,
        &plan,
        epoch,
        stages.as_ref().map(|s| (s, warnings)),
    )
    .with_context(|| format!("pruning the modules of kernel {}", kernel.version))?;
    Ok((report, plan))
}
