//! The pipeline, read top-down: consumes a recipe, produces its outputs and the build
//! report. [`build`] is the table of contents: plan -> lock -> (stage cache) -> fetch ->
//! assemble (with preloaded images) -> tree outputs -> disk and its formats -> OCI ->
//! report. Each stage is a module of its own with typed input and output, recording
//! what it wrote into a [`Collector`]. The CLI calls these; tests call them too.

mod assemble;
mod cache;
mod disk;
mod fetch;
mod locking;
mod oci;
mod plan;
mod trees;

pub use assemble::assembled;
pub use fetch::{fetch, share_lock, vendor, Fetched};
pub use locking::{ensure_lock, lock, staleness, LockAction, LISTS_MAX_AGE};

use crate::apt::AptState;
use crate::exit::Code;
use crate::fetch::{artifact, cache::Cache};
use crate::io::progress::Reporter;
use crate::output::Collector;
use crate::recipe::Recipe;
use crate::report::BuildReport;
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// Settings shared by every command.
pub struct Context {
    /// The package and artifact cache.
    pub cache: Cache,
    /// Progress output.
    pub rep: Reporter,
    /// No network: cache, vendor and artifact directories only.
    pub offline: bool,
    /// Fail instead of changing a lock.
    pub locked: bool,
    /// Directories searched for artifacts by sha256.
    pub artifact_dirs: Vec<PathBuf>,
    /// A directory written by `slipway vendor`.
    pub vendor: Option<PathBuf>,
}

impl Context {
    fn apt(&self, r: &Recipe) -> Result<AptState> {
        AptState::open(&self.cache.root().join("apt"), &r.debian)
    }

    fn artifact_sources(&self) -> artifact::Sources {
        let mut dirs = self.artifact_dirs.clone();
        if let Some(v) = &self.vendor {
            dirs.push(v.join("artifacts"));
        }
        artifact::Sources::new(
            dirs.into_iter().filter(|d| d.is_dir()).collect(),
            self.offline,
        )
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `rootfs.tar`: a reproducible tar of the tree.
    Tar,
    /// `rootfs/`: the tree as a directory.
    Dir,
    /// `oci/`: an OCI image layout directory (with the SBOM attached).
    Oci,
    /// `image.tar`: the OCI layout plus Docker's manifest.json, for `docker load`.
    OciArchive,
    /// Host images: `disk.raw` (GPT: ESP with the UKI, verified root, /var), `uki.efi`,
    /// `vmlinuz`, `initrd` and `manifest.json`. Also named `raw`.
    Disk,
    /// Host images: `disk.qcow2`, compressed (OpenStack, local QEMU; implies `disk`).
    Qcow2,
    /// Host images: `disk.vhd`, a fixed VHD for Azure (implies `disk`).
    Vhd,
    /// Host images: `disk.vmdk`, a stream-optimized VMDK for AWS and VMware (implies
    /// `disk`).
    Vmdk,
    /// Host images: `disk.tar.gz`, the GCE image tarball holding `disk.raw` (implies
    /// `disk`).
    Gce,
    /// Host images: `install.iso`, a UEFI hybrid installer ISO for CD, virtual media and
    /// USB sticks (implies `disk`).
    Iso,
    /// Host images: `netboot/` (`uki.efi`, `root.cpio`, `boot.ipxe`), a diskless node
    /// booted by iPXE over PXE or HTTP (implies `disk`).
    Netboot,
    /// Host images: `update/`, an OCI image layout holding the update payload (root,
    /// verity tree, UKI) a node's agent installs (implies `disk`; docs/updates.md).
    Update,
}

impl Format {
    /// Every format, in the order `slipway build --help` lists them.
    pub const ALL: [Format; 12] = [
        Format::Tar,
        Format::Dir,
        Format::Oci,
        Format::OciArchive,
        Format::Disk,
        Format::Qcow2,
        Format::Vhd,
        Format::Vmdk,
        Format::Gce,
        Format::Iso,
        Format::Netboot,
        Format::Update,
    ];

    /// Its name on the command line (`--format`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Dir => "dir",
            Format::Oci => "oci",
            Format::OciArchive => "oci-archive",
            Format::Disk => "disk",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Vmdk => "vmdk",
            Format::Gce => "gce",
            Format::Iso => "iso",
            Format::Netboot => "netboot",
            Format::Update => "update",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;

    /// A [`Format::name`], or `raw` (the old name of `disk`).
    fn from_str(s: &str) -> Result<Self> {
        if s == "raw" {
            return Ok(Format::Disk);
        }
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                anyhow::anyhow!(
                    "{s:?} is not an output format (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

impl Format {
    /// The formats built when none are asked for: OCI for base images, the disk alone
    /// for host images (qcow2 and the cloud formats when asked for).
    pub fn defaults(r: &Recipe) -> Vec<Format> {
        match r.kind {
            crate::recipe::raw::ImageKind::Base => vec![Format::Oci, Format::OciArchive],
            crate::recipe::raw::ImageKind::Host => vec![Format::Disk],
        }
    }
}

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Outputs.
    pub formats: Vec<Format>,
    /// Debian architectures (empty: the recipe's). OCI outputs for several become a
    /// multi-arch image index; tree outputs are written for the first.
    pub arches: Vec<String>,
    /// OCI image settings.
    pub oci: crate::writers::oci::Options,
}

impl Default for BuildOptions {
    /// The recipe's architecture, gzip layers, the recipe's user; no formats yet.
    fn default() -> Self {
        BuildOptions {
            formats: Vec::new(),
            arches: Vec::new(),
            oci: crate::writers::oci::Options {
                compression: crate::writers::oci::Compression::Gzip,
                user: crate::writers::oci::UserChoice::Recipe,
            },
        }
    }
}

impl BuildOptions {
    /// The default options writing `formats`.
    pub fn with_formats(formats: Vec<Format>) -> Self {
        BuildOptions {
            formats,
            ..Default::default()
        }
    }
}

/// `slipway build`: lock, fetch, assemble, and write the outputs into `out` as one
/// transaction: every output is written into a private staging directory beside `out`,
/// swapped in whole at the end ([`crate::io::staging`]). A build that fails or is
/// interrupted leaves the previous output as it was. A host image whose inputs match an
/// earlier build's is taken from the stage cache whole ([`cache`]).
pub fn build(ctx: &Context, r: &Recipe, out: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    let mut report = BuildReport {
        recipe: r.display(),
        image: r.name.clone(),
        ..Default::default()
    };
    let mut c = Collector::default();
    match build_into(ctx, r, out, opts, &mut report, &mut c) {
        Ok(()) => Ok(report),
        Err(e) => {
            // The report is lost with the build: its warnings (a repaired cache entry
            // among them) are printed instead.
            c.warn(crate::fetch::cache::take_warnings());
            for w in &c.warnings {
                ctx.rep.say(format!("warning: {w}"));
            }
            Err(e)
        }
    }
}

/// [`build`]'s stages, in order; each records what it wrote, its time and its warnings
/// in `c`, and the report takes them at the end.
fn build_into(
    ctx: &Context,
    r: &Recipe,
    out: &Path,
    opts: &BuildOptions,
    report: &mut BuildReport,
    c: &mut Collector,
) -> Result<()> {
    let recipes = arch_recipes(r, opts)?;
    let r = &recipes[0];
    let plan = plan::plan(r, &opts.formats)?;
    let staged = begin(ctx, out)?;
    let dir = staged.path().to_path_buf();
    report.lock = r.lock_path().display().to_string();
    let locked = fetch::lock_stage(ctx, r, c)?;
    let key = cache::key(ctx, r, &plan, opts, &locked)?;
    if cache::reuse(ctx, (r, &locked), key.as_deref(), &dir, report, c)? {
        return finish(ctx, out, staged, report, c);
    }
    let fetched = fetch::stage(ctx, r, locked, report, c)?;
    let asm = assemble::stage(ctx, r, &plan, &fetched.lock, report, c)?;
    trees::stage(&asm, &opts.formats, &dir, c)?;
    if let Some(init) = &plan.init {
        let d = disk::Inputs {
            r,
            asm: &asm,
            init,
            formats: &plan.disk_formats,
            media: plan.media,
            lock: &fetched.lock,
        };
        report.disk = Some(disk::stage(ctx, &d, &dir, c)?);
    }
    if opts
        .formats
        .iter()
        .any(|f| matches!(f, Format::Oci | Format::OciArchive))
    {
        report.images = oci::stage(ctx, &recipes, opts, (asm, fetched.lock), &dir, c)?;
    }
    report.absorb(std::mem::take(c));
    if let Err(e) = cache::store(ctx, key.as_deref(), &dir, report) {
        // Not kept: the next build runs every stage again.
        report
            .warnings
            .push(format!("stage cache: this build is not kept: {e:#}"));
    }
    cache::share(ctx, key.as_deref())?;
    finish(ctx, out, staged, report, c)
}

/// Locks the output and creates its staging directory.
fn begin(ctx: &Context, out: &Path) -> Result<crate::io::staging::Staged> {
    let staged = crate::io::staging::Staged::begin(out)?;
    if let Some(first) = staged.removed().first() {
        ctx.rep.say(format!(
            "removed {} and {} more left by interrupted builds",
            first.display(),
            staged.removed().len() - 1
        ));
    }
    crate::io::faults::point("staged")?;
    Ok(staged)
}

/// Writes `report.json` (naming the files where they will be once swapped in) and
/// swaps the staged output in.
fn finish(
    ctx: &Context,
    out: &Path,
    staged: crate::io::staging::Staged,
    report: &mut BuildReport,
    c: &mut Collector,
) -> Result<()> {
    report.absorb(std::mem::take(c));
    report.registry_cache = ctx.cache.registry().map(|g| g.counts());
    fetch::say_registry_counts(ctx);
    for o in &mut report.outputs {
        o.path = staged.final_path(Path::new(&o.path)).display().to_string();
    }
    let json = serde_json::to_vec_pretty(&*report).context("serializing the build report")?;
    crate::io::atomic::write(&staged.path().join("report.json"), &json)?;
    crate::io::faults::point("report")?;
    if !staged.commit()? {
        ctx.rep.say(format!(
            "note: {} was not swapped in one step (it is a mount point, or its file system \
             lacks renameat2 RENAME_EXCHANGE): see docs/decisions/0023-output-transaction.md",
            out.display()
        ));
    }
    Ok(())
}

/// The recipe once per `--arch` (the recipe's own architecture when none is given).
fn arch_recipes(r: &Recipe, opts: &BuildOptions) -> Result<Vec<Recipe>> {
    if opts.arches.is_empty() {
        return Ok(vec![r.clone()]);
    }
    opts.arches
        .iter()
        .map(|a| {
            r.for_arch(a)
                .map_err(|e| crate::exit::with_code(Code::BadInput, e.context("--arch")))
        })
        .collect()
}
