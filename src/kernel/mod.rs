//! Kernel and modules: consumes the assembled tree and the recipe's `[kernel] modules`,
//! produces the same tree with only the requested modules and their dependency closure,
//! fresh module index files, and a [`ModuleReport`].
//!
//! Stages: [`find`] the kernel (`usr/lib/modules/KVER` + `boot/vmlinuz-KVER`) ->
//! [`index::Catalog`] of its modules (`modules.builtin`, each module's `.modinfo`) ->
//! [`closure::plan`] (features expanded, hard and soft dependencies, built-ins
//! satisfied) -> [`prune`] (other modules removed, `depmod` on a staging copy, index
//! files read back). [`closure::ModulePlan::load_order`] gives an initramfs the order to
//! load a subset in.

pub mod closure;
pub mod depmod;
pub mod features;
pub mod index;
pub mod modinfo;

use crate::io::stage_cache::{KeyBuilder, StageCache};
use crate::tree::{Kind, Tree};
use anyhow::{bail, Context as _, Result};
pub use closure::{BuiltinHit, Module, ModulePlan};
use std::collections::BTreeSet;

/// Where the modules live in a merged-/usr tree.
pub const MODULES_ROOT: &str = "usr/lib/modules";

/// One kernel found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// The kernel release (`uname -r`), e.g. `6.12.41+deb13-cloud-amd64`.
    pub version: String,
    /// Tree path of the kernel image, `boot/vmlinuz-KVER`.
    pub vmlinuz_path: String,
    /// Tree path of the modules directory, `usr/lib/modules/KVER`.
    pub modules_dir: String,
}

/// Every kernel in the tree (a modules directory with a `boot/vmlinuz-KVER` beside it),
/// sorted by release.
pub fn find_all(tree: &Tree) -> Result<Vec<KernelInfo>> {
    let mut out = Vec::new();
    let mut orphans = Vec::new();
    for (path, e) in tree.under(MODULES_ROOT) {
        let version = &path[MODULES_ROOT.len() + 1..];
        if version.contains('/') || !e.is_dir() {
            continue;
        }
        let vmlinuz = format!("boot/vmlinuz-{version}");
        let has_modules = tree.get(&format!("{path}/modules.builtin")).is_some()
            || tree.get(&format!("{path}/kernel")).is_some();
        if !has_modules {
            continue;
        }
        match tree.get(&vmlinuz).map(|e| &e.kind) {
            Some(Kind::File(_)) => out.push(KernelInfo {
                version: version.to_string(),
                vmlinuz_path: vmlinuz,
                modules_dir: path.clone(),
            }),
            _ => orphans.push(version.to_string()),
        }
    }
    if out.is_empty() && !orphans.is_empty() {
        bail!(
            "modules for kernel {} but no boot/vmlinuz-{} in the tree",
            orphans.join(", "),
            orphans[0]
        );
    }
    Ok(out)
}

/// The one kernel of the tree: an error when there is none or more than one.
pub fn find(tree: &Tree) -> Result<KernelInfo> {
    let mut all = find_all(tree)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => bail!(
            "no kernel in the image (no {MODULES_ROOT}/KVER with boot/vmlinuz-KVER); add a \
             kernel package such as linux-image-cloud-amd64 to [packages] include or set \
             [kernel] package"
        ),
        _ => bail!(
            "more than one kernel in the image ({}); a host image carries exactly one",
            all.iter()
                .map(|k| k.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Plans the modules of `kernel` in `tree` for `requests` (feature or module names).
pub fn plan(tree: &Tree, kernel: &KernelInfo, requests: &[String]) -> Result<ModulePlan> {
    let cat = index::Catalog::open(tree, kernel)?;
    closure::plan(&cat, requests)
}

/// The stage cache's kind for module plans, and its format version.
const PLAN_KIND: &str = "module-plan";
const PLAN_VERSION: u32 = 1;

/// [`plan`] through the stage cache `stages`, keyed by every entry of the kernel's
/// modules directory and the requests: reading each module's `.modinfo` (decompressing
/// every module the kernel ships) is most of a rebuild's module work, and its answer
/// changes only with the kernel package or the recipe's `[kernel] modules`. A damaged
/// entry is reported in `warnings` and planned again.
pub fn plan_cached(
    stages: &StageCache,
    tree: &Tree,
    kernel: &KernelInfo,
    requests: &[String],
    warnings: &mut Vec<String>,
) -> Result<ModulePlan> {
    let mut k = KeyBuilder::new(PLAN_KIND, PLAN_VERSION);
    k.text("slipway", crate::io::stage_cache::self_digest()?)
        .text("kernel", &kernel.version)
        .text(
            "modules",
            &crate::tree::digest(tree.under(&kernel.modules_dir)),
        );
    for r in requests {
        k.text("request", r);
    }
    let key = k.finish();
    if let Some(e) = stages.get(PLAN_KIND, &key, warnings) {
        match serde_json::from_value::<ModulePlan>(e.meta) {
            Ok(p) => return Ok(p),
            Err(e) => warnings.push(format!(
                "stage cache: the module plan of kernel {} is unreadable, planned again: {e}",
                kernel.version
            )),
        }
    }
    let p = plan(tree, kernel, requests)?;
    let meta = serde_json::to_value(&p).context("serializing the module plan")?;
    if let Err(e) = stages.put(PLAN_KIND, &key, &[], meta) {
        warnings.push(format!("stage cache: the module plan is not kept: {e:#}"));
    }
    Ok(p)
}

/// What pruning did, for the build report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModuleReport {
    /// The kernel release.
    pub kernel: String,
    /// The recipe's requests.
    pub requested: Vec<String>,
    /// Modules kept.
    pub kept_count: usize,
    /// Bytes of the modules kept (as shipped, compressed or not).
    pub kept_bytes: u64,
    /// Modules the kernel package ships.
    pub total_count: usize,
    /// Bytes of every module the kernel package ships.
    pub total_bytes: u64,
    /// Requested modules that are built in.
    pub builtin_hits: Vec<BuiltinHit>,
    /// Bytes of the regenerated index files.
    pub index_bytes: u64,
    /// Names of the modules kept.
    pub kept: Vec<String>,
    /// Soft dependencies that exist nowhere (skipped).
    pub notes: Vec<String>,
}

impl ModuleReport {
    /// One line: "33 of 1121 modules (3.9 of 91.5 MB), 5 built in".
    pub fn summary(&self) -> String {
        format!(
            "kernel {}: {} of {} modules ({:.1} of {:.1} MB), {} requested built in",
            self.kernel,
            self.kept_count,
            self.total_count,
            self.kept_bytes as f64 / 1e6,
            self.total_bytes as f64 / 1e6,
            self.builtin_hits.len()
        )
    }
}

/// Removes from `tree` every module of `plan`'s kernel that the plan does not keep (and
/// directories left empty), keeps `modules.order` to the kept modules, and regenerates
/// the index files with depmod. Generated files get mtime `epoch`.
pub fn prune(
    tree: &mut Tree,
    kernel: &KernelInfo,
    plan: &ModulePlan,
    epoch: u64,
    cached: Option<(&StageCache, &mut Vec<String>)>,
) -> Result<ModuleReport> {
    if plan.kernel != kernel.version {
        bail!(
            "the plan is for kernel {}, not {}",
            plan.kernel,
            kernel.version
        );
    }
    let dir = kernel.modules_dir.clone();
    let prefix = format!("{dir}/");
    let kept: BTreeSet<&str> = plan.keep.iter().map(|m| m.path.as_str()).collect();
    tree.retain_paths(|p, _| {
        p.starts_with(&prefix) && modinfo::name_of_path(p).is_some() && !kept.contains(p)
    });
    // Directories under the modules directory that pruning emptied (retain_paths keeps
    // directories that still have entries).
    tree.retain_paths(|p, e| p.starts_with(&prefix) && e.is_dir());
    let order_path = format!("{dir}/modules.order");
    if let Some(e) = tree.get(&order_path) {
        if let Kind::File(c) = &e.kind {
            let names: BTreeSet<&str> = plan.keep.iter().map(|m| m.name.as_str()).collect();
            let text = String::from_utf8_lossy(c.as_slice());
            let filtered: String = text
                .lines()
                .filter(|l| modinfo::name_of_path(l).is_some_and(|n| names.contains(n.as_str())))
                .map(|l| format!("{l}\n"))
                .collect();
            let mut new = e.clone();
            new.kind = Kind::File(crate::tree::Content::bytes(filtered.into_bytes()));
            new.mtime = new.mtime.min(epoch);
            tree.put(&order_path, new)?;
        }
    }
    let files = match cached {
        Some((stages, warnings)) => {
            depmod::index_files_cached(stages, tree, kernel, plan, warnings)?
        }
        None => depmod::index_files(tree, kernel, plan)?,
    };
    let index_bytes = files.values().map(|b| b.len() as u64).sum();
    depmod::install(tree, kernel, &files, epoch)?;
    Ok(ModuleReport {
        kernel: kernel.version.clone(),
        requested: plan.requested.clone(),
        kept_count: plan.keep.len(),
        kept_bytes: plan.kept_bytes(),
        total_count: plan.total_count,
        total_bytes: plan.total_bytes,
        builtin_hits: plan.builtin_hits.clone(),
        index_bytes,
        kept: plan.keep.iter().map(|m| m.name.clone()).collect(),
        notes: plan.notes.clone(),
    })
}
