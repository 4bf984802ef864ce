//! The top of the pipeline, read top-down: recipe -> lock (resolve) -> fetch -> (later
//! stages: assemble, write). The CLI calls these; tests call them too.

use crate::apt::AptState;
use crate::exit::{err, Code};
use crate::fetch::{artifact, cache::Cache, packages};
use crate::io::progress::Reporter;
use crate::lock::{self, Lock, LockedArtifact, LockedCut, LockedPackage, ParentRef};
use crate::recipe::Recipe;
use crate::resolve;
use anyhow::{Context as _, Result};
use std::path::PathBuf;

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

/// What `lock` did.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockAction {
    /// The lock was missing or stale and was written.
    Written,
    /// The lock matched the recipe and was left as it was.
    UpToDate,
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

/// Why `lock` for `r` is not current, or None when it is.
pub fn staleness(r: &Recipe, lock: &Lock) -> Result<Option<String>> {
    if lock.input_digest != lock::input_digest(r) {
        return Ok(Some(
            "the recipe's packages, source or artifacts changed since it was locked".into(),
        ));
    }
    if let Some(p) = &r.parent {
        let parent_lock = Lock::read(&p.lock_path())?;
        if parent_lock.is_none() && lock.parent.is_none() {
            // Locked without a parent lock file (the parent's artifacts are replaced
            // here and cannot be locked on their own): this lock pins everything.
            return Ok(None);
        }
        let want = parent_lock.as_ref().map(|l| l.input_digest.clone());
        if lock.parent.as_ref().map(|x| Some(x.input_digest.clone())) != Some(want) {
            return Ok(Some(format!(
                "its parent {} was locked again or changed",
                p.display()
            )));
        }
        if let Some(pl) = parent_lock {
            if let Some(why) = staleness(p, &pl)? {
                return Ok(Some(format!("its parent {} is stale: {why}", p.display())));
            }
        }
    }
    Ok(None)
}

/// `slipway lock`: writes `RECIPE.lock` when it is missing, stale, or `update` is set.
pub fn lock(ctx: &Context, r: &Recipe, update: bool) -> Result<(Lock, LockAction)> {
    let res = lock_for(ctx, r, update, &[]);
    say_cache_warnings(ctx);
    res
}

/// Prints the cache's warnings (damaged entries it repaired) through the reporter, for
/// the commands that write no build report; a build records them in its report instead
/// ([`build`]).
fn say_cache_warnings(ctx: &Context) {
    for w in crate::fetch::cache::take_warnings() {
        ctx.rep.say(format!("warning: {w}"));
    }
}

/// [`lock`], leaving out the artifacts installed at `replaced` (destinations a child
/// recipe installs its own artifacts at). A lock that leaves any out is incomplete for
/// `r` itself, so it is used for the child's package pins and not written.
fn lock_for(
    ctx: &Context,
    r: &Recipe,
    update: bool,
    replaced: &[String],
) -> Result<(Lock, LockAction)> {
    if !update {
        if let Some(existing) = Lock::read(&r.lock_path())? {
            if staleness(r, &existing)?.is_none() {
                return Ok((existing, LockAction::UpToDate));
            }
        }
    }
    let parent = match &r.parent {
        Some(p) => {
            // What this recipe installs in place of a different parent artifact.
            let mine: Vec<String> = r
                .artifacts
                .iter()
                .filter(|a| p.artifacts.iter().any(|pa| pa.dest == a.dest && pa != *a))
                .map(|a| a.dest.clone())
                .chain(replaced.iter().cloned())
                .collect();
            Some(lock_for(ctx, p, update, &mine)?.0)
        }
        None => None,
    };
    let mut new = resolve_lock(ctx, r, parent.as_ref(), update, replaced)?;
    if let Some(p) = &r.parent {
        // A parent whose own artifacts were left out has no lock file to refer to.
        if Lock::read(&p.lock_path())?.is_none() {
            new.parent = None;
        }
    }
    let complete = !r.artifacts.iter().any(|a| replaced.contains(&a.dest));
    if !complete {
        return Ok((new, LockAction::Written));
    }
    new.write(&r.lock_path())?;
    Ok((new, LockAction::Written))
}

/// The lock to build from: the existing one if current; otherwise (unless `--locked`) a
/// new one.
pub fn ensure_lock(ctx: &Context, r: &Recipe) -> Result<Lock> {
    let existing = Lock::read(&r.lock_path())?;
    match existing {
        Some(l) => match staleness(r, &l)? {
            None => Ok(l),
            Some(why) if ctx.locked => Err(err(
                Code::LockOutdated,
                format!(
                    "{} is out of date: {why}; run `slipway lock {}`",
                    r.lock_path().display(),
                    r.display()
                ),
            )),
            Some(why) => {
                ctx.rep.say(format!(
                    "{} is out of date ({why}): locking again",
                    r.lock_path().display()
                ));
                Ok(lock_for(ctx, r, false, &[])?.0)
            }
        },
        None if ctx.locked => Err(err(
            Code::LockOutdated,
            format!(
                "--locked: {} does not exist; run `slipway lock {}`",
                r.lock_path().display(),
                r.display()
            ),
        )),
        None => Ok(lock_for(ctx, r, false, &[])?.0),
    }
}

/// Package lists younger than this are reused when a recipe is locked (unless `lock
/// --update`), so locking several recipes in a row downloads the lists once.
pub const LISTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

fn resolve_lock(
    ctx: &Context,
    r: &Recipe,
    parent: Option<&Lock>,
    update: bool,
    replaced: &[String],
) -> Result<Lock> {
    let mut sources = ctx.artifact_sources();
    let mut artifacts = Vec::new();
    for a in r.artifacts.iter().filter(|a| !replaced.contains(&a.dest)) {
        let blob = artifact::fetch(&ctx.cache, a, &mut sources)?;
        let size = std::fs::metadata(&blob)
            .with_context(|| format!("reading {}", blob.display()))?
            .len();
        artifacts.push(LockedArtifact {
            url: a.url.clone(),
            sha256: a.sha256.clone(),
            size,
            dest: a.dest.clone(),
        });
    }
    artifacts.sort_by(|a, b| a.dest.cmp(&b.dest));

    let apt = ctx.apt(r)?;
    if ctx.offline {
        if !apt.has_lists() {
            return Err(err(Code::Fetch, "--offline: no package lists in the cache yet; run `slipway lock` once with network access"));
        }
    } else if update || !apt.lists_younger_than(LISTS_MAX_AGE) {
        apt.update(&ctx.rep)?;
    }
    let stage = ctx.rep.stage("resolving");
    let _read = apt.read_lock()?;
    let files: Vec<resolve::IndexFile> = apt
        .index_files()?
        .into_iter()
        .map(|f| resolve::IndexFile {
            path: f.path,
            suite: f.suite,
            component: f.component,
        })
        .collect();
    let universe = resolve::Universe::load(&files, &r.debian.architecture)?;
    let req = resolve::Request {
        install: r.include.clone(),
        exclude: r.exclude.clone(),
        recommends: r.recommends,
        pins: parent
            .map(|p| {
                p.packages
                    .iter()
                    .map(|x| (x.name.clone(), x.version.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        merged_usr: true,
    };
    let res = resolve::resolve(&universe, &req)
        .map_err(|e| err(Code::BadInput, format!("{}: {e:#}", r.display())))?;
    for n in &res.notes {
        ctx.rep.say(format!("    note: {n}"));
    }
    let packages: Vec<LockedPackage> = res
        .packages
        .iter()
        .map(|s| LockedPackage {
            name: s.name.clone(),
            version: s.version.clone(),
            architecture: s.architecture.clone(),
            size: s.size,
            sha256: s.sha256.clone(),
            source: s.source.clone(),
            source_version: s.source_version.clone(),
            suite: s.suite.clone(),
        })
        .collect();
    if let Some(p) = parent {
        // Includes of the parent that this recipe's exclude takes back (docs/recipes.md,
        // "Extending"): the parent's packages only they pulled in leave the closure.
        let taken_back: Vec<&str> = r.parent.as_ref().map_or(Vec::new(), |pr| {
            r.exclude
                .iter()
                .filter(|x| {
                    pr.include
                        .iter()
                        .any(|i| i.split('=').next() == Some(x.as_str()))
                })
                .map(String::as_str)
                .collect()
        });
        let mut dropped = Vec::new();
        for pp in &p.packages {
            match packages.iter().find(|x| x.name == pp.name) {
                Some(x) if x.version == pp.version => {}
                Some(x) => {
                    return Err(err(
                        Code::BadInput,
                        format!(
                            "{}: version clash: {} is {} in the parent lock but {} here",
                            r.display(),
                            pp.name,
                            pp.version,
                            x.version
                        ),
                    ))
                }
                None if !taken_back.is_empty() => dropped.push(pp.name.as_str()),
                None => {
                    return Err(err(
                        Code::BadInput,
                        format!(
                            "{}: the parent lock's package {} is missing from the child's closure",
                            r.display(),
                            pp.name
                        ),
                    ))
                }
            }
        }
        if !dropped.is_empty() {
            ctx.rep.say(format!(
                "    note: excluding the parent's {} leaves out its packages {}",
                taken_back.join(", "),
                dropped.join(", ")
            ));
        }
    }
    let cuts = res
        .cut_edges
        .iter()
        .map(|c| LockedCut {
            from: c.from.clone(),
            to: c.to.clone(),
            relation: c.relation.clone(),
        })
        .collect();
    let total: u64 = packages.iter().map(|p| p.size).sum();
    stage.done(format!(
        "{} packages, {:.1} MB of .deb files",
        packages.len(),
        total as f64 / 1e6
    ));
    Ok(Lock {
        lock_version: lock::LOCK_VERSION,
        input_digest: lock::input_digest(r),
        release: r.debian.release.clone(),
        architecture: r.debian.architecture.clone(),
        parent: r.parent.as_ref().zip(parent).map(|(pr, pl)| ParentRef {
            recipe: pr
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            input_digest: pl.input_digest.clone(),
        }),
        packages,
        artifacts,
        cuts,
    })
}

/// What `fetch` produced: the lock and every blob in the cache, verified.
pub struct Fetched {
    /// The lock fetched.
    pub lock: Lock,
    /// What the package fetch did.
    pub summary: packages::Summary,
}

/// `slipway fetch`: the lock's packages and artifacts into the cache, verified.
/// Artifacts come first: a missing or wrong one fails before any other work.
pub fn fetch(ctx: &Context, r: &Recipe) -> Result<Fetched> {
    let res = fetch_verified(ctx, r);
    say_cache_warnings(ctx);
    res
}

/// [`fetch`], leaving the cache's warnings to the caller.
fn fetch_verified(ctx: &Context, r: &Recipe) -> Result<Fetched> {
    let mut sources = ctx.artifact_sources();
    // The lock's sizes cap the downloads (a lock that cannot be read is ensure_lock's
    // to report, below).
    if let Ok(Some(l)) = Lock::read(&r.lock_path()) {
        sources.locked_sizes(&l.artifacts);
    }
    for a in &r.artifacts {
        artifact::fetch(&ctx.cache, a, &mut sources)?;
    }
    let lock = ensure_lock(ctx, r)?;
    let opts = packages::Options {
        offline: ctx.offline,
        vendor: ctx.vendor.clone(),
    };
    let summary = packages::fetch(
        &ctx.cache,
        &lock.packages,
        &opts,
        &mut || ctx.apt(r),
        &ctx.rep,
    )?;
    Ok(Fetched { lock, summary })
}

/// `slipway vendor`: copies every locked file into `dir` for offline builds.
pub fn vendor(ctx: &Context, r: &Recipe, dir: &std::path::Path) -> Result<u64> {
    let f = fetch(ctx, r)?;
    let mut total = packages::vendor(&ctx.cache, &f.lock.packages, dir)?;
    total += artifact::vendor(&ctx.cache, &f.lock.artifacts, &dir.join("artifacts"))?;
    crate::io::atomic::write(&dir.join("lock.toml"), f.lock.to_text()?.as_bytes())?;
    Ok(total)
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
}

impl Format {
    /// Every format, in the order `slipway build --help` lists them.
    pub const ALL: [Format; 9] = [
        Format::Tar,
        Format::Dir,
        Format::Oci,
        Format::OciArchive,
        Format::Disk,
        Format::Qcow2,
        Format::Vhd,
        Format::Vmdk,
        Format::Gce,
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
    /// The formats built when none are asked for: OCI for base images, the disk and its
    /// qcow2 for host images.
    pub fn defaults(r: &Recipe) -> Vec<Format> {
        match r.kind {
            crate::recipe::raw::ImageKind::Base => vec![Format::Oci, Format::OciArchive],
            crate::recipe::raw::ImageKind::Host => vec![Format::Disk, Format::Qcow2],
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

/// `slipway build`: lock, fetch, assemble, and write the outputs into `out` as one
/// transaction: every output is written into a private staging directory beside `out`,
/// swapped in whole at the end ([`crate::io::staging`]). A build that fails or is
/// interrupted leaves the previous output as it was.
pub fn build(
    ctx: &Context,
    r: &Recipe,
    out: &std::path::Path,
    opts: &BuildOptions,
) -> Result<crate::report::BuildReport> {
    let mut report = crate::report::BuildReport {
        recipe: r.display(),
        image: r.name.clone(),
        ..Default::default()
    };
    match build_into(ctx, r, out, opts, &mut report) {
        Ok(()) => Ok(report),
        Err(e) => {
            // The report is lost with the build: its warnings (a repaired cache entry
            // among them) are printed instead.
            report.warnings.extend(crate::fetch::cache::take_warnings());
            for w in &report.warnings {
                ctx.rep.say(format!("warning: {w}"));
            }
            Err(e)
        }
    }
}

/// [`build`], recording into `report`; the warnings of every stage, and those of the
/// cache, go into it (and so into `report.json` and the summary).
fn build_into(
    ctx: &Context,
    r: &Recipe,
    out: &std::path::Path,
    opts: &BuildOptions,
    report: &mut crate::report::BuildReport,
) -> Result<()> {
    let recipes = arch_recipes(r, opts)?;
    let r = &recipes[0];
    let plan = plan(r, &opts.formats)?;
    let staged = crate::io::staging::Staged::begin(out)?;
    if let Some(first) = staged.removed().first() {
        ctx.rep.say(format!(
            "removed {} and {} more left by interrupted builds",
            first.display(),
            staged.removed().len() - 1
        ));
    }
    crate::io::faults::point("staged")?;
    let dir = staged.path().to_path_buf();
    report.lock = r.lock_path().display().to_string();
    let fetched = fetch_into(ctx, r, report)?;
    let asm = assemble_into(ctx, r, &plan, &fetched.lock, report)?;
    write_trees(&asm, &opts.formats, &dir, report)?;
    if let Some(init) = &plan.init {
        write_disk(
            ctx,
            r,
            &asm,
            init,
            &plan.disk_formats,
            &fetched.lock,
            &dir,
            report,
        )?;
    }
    if opts
        .formats
        .iter()
        .any(|f| matches!(f, Format::Oci | Format::OciArchive))
    {
        write_oci(ctx, &recipes, opts, (asm, fetched.lock), &dir, report)?;
        // Parent images assembled on the way.
        report.warnings.extend(crate::fetch::cache::take_warnings());
    }
    // The report names the files where they will be once the output is swapped in.
    for o in &mut report.outputs {
        o.path = staged
            .final_path(std::path::Path::new(&o.path))
            .display()
            .to_string();
    }
    let json = serde_json::to_vec_pretty(&*report).context("serializing the build report")?;
    crate::io::atomic::write(&dir.join("report.json"), &json)?;
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
                .map_err(|e| err(Code::BadInput, format!("--arch: {e:#}")))
        })
        .collect()
}

/// What a build will do, checked before any work starts.
struct Plan {
    /// The disk formats derived from `disk.raw`.
    disk_formats: Vec<&'static dyn crate::formats::DiskFormat>,
    /// The programs that go into a host image, when a disk is built.
    init: Option<crate::disk::image::Bundled>,
}

/// Checks that `formats` fit `r` and that every host tool the build runs is there.
fn plan(r: &Recipe, formats: &[Format]) -> Result<Plan> {
    let mut tools = Vec::new();
    if r.kernel.is_some() {
        tools.push("depmod");
    }
    let disk_formats: Vec<&dyn crate::formats::DiskFormat> = formats
        .iter()
        .filter_map(|f| match f {
            Format::Qcow2 => crate::formats::by_name("qcow2"),
            Format::Vhd => crate::formats::by_name("vhd"),
            Format::Vmdk => crate::formats::by_name("vmdk"),
            Format::Gce => crate::formats::by_name("gce"),
            _ => None,
        })
        .collect();
    let wants_disk = formats.contains(&Format::Disk) || !disk_formats.is_empty();
    let mut init = None;
    if wants_disk {
        if r.kind != crate::recipe::raw::ImageKind::Host {
            return Err(err(
                Code::BadInput,
                format!(
                    "{}: --format disk, qcow2, vhd, vmdk and gce need a host recipe (image.kind = \"host\")",
                    r.display()
                ),
            ));
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(err(
                Code::BadInput,
                format!(
                    "{}: building a host disk image needs root: the root file system is staged \
                     on disk with its files' owners for mksquashfs/mkfs.erofs (run as root, or \
                     build --format tar,dir as any user); see `slipway doctor`",
                    r.display()
                ),
            ));
        }
        tools.extend(crate::disk::image::tools(r));
        for f in &disk_formats {
            tools.extend(f.tools());
        }
        let b = crate::disk::image::Bundled::find()
            .map_err(|e| err(Code::BadInput, format!("{e:#}")))?;
        init = Some(b);
    }
    crate::tool::require(&tools).map_err(|e| err(Code::BadInput, format!("{e:#}")))?;
    Ok(Plan { disk_formats, init })
}

/// Locks and fetches `r`, recording what was fetched in `report`.
fn fetch_into(
    ctx: &Context,
    r: &Recipe,
    report: &mut crate::report::BuildReport,
) -> Result<Fetched> {
    let t = std::time::Instant::now();
    let fetched = fetch_verified(ctx, r)?;
    report.warnings.extend(crate::fetch::cache::take_warnings());
    report.time("lock+fetch", t.elapsed().as_secs_f64());
    report.packages = fetched.lock.packages.len();
    report.deb_bytes = fetched.lock.total_size();
    report.cut_edges = fetched
        .lock
        .cuts
        .iter()
        .map(|c| format!("{} -> {} ({})", c.from, c.to, c.relation))
        .collect();
    report.fetch = Some(fetched.summary.clone());
    Ok(fetched)
}

/// Assembles the tree of `r` (with preloaded images), recording it in `report`.
fn assemble_into(
    ctx: &Context,
    r: &Recipe,
    plan: &Plan,
    lock: &Lock,
    report: &mut crate::report::BuildReport,
) -> Result<crate::assemble::Assembled> {
    let stage = ctx.rep.stage("assembling the tree");
    let mut asm = crate::assemble::assemble(&ctx.cache, r, lock)?;
    stage.done(format!(
        "{} entries, {:.1} MB ({:.1} MB dropped by path globs)",
        asm.tree.len(),
        asm.tree.content_size() as f64 / 1e6,
        asm.dropped_bytes as f64 / 1e6
    ));
    for (name, secs) in &asm.stages {
        report.time(name, *secs);
    }
    // Taken before the preloaded images' builds, which take their own.
    report.warnings.extend(crate::fetch::cache::take_warnings());
    report.warnings.extend(asm.warnings.iter().cloned());
    let t = std::time::Instant::now();
    report.preloaded = crate::preload::add(ctx, r, &mut asm.tree, asm.epoch, &mut report.warnings)?;
    crate::preload::add_bundled(r, &mut asm.tree, asm.epoch)?;
    if !report.preloaded.is_empty() {
        report.time("preload", t.elapsed().as_secs_f64());
    }
    report.scripts = asm.scripts.clone();
    report.tree_entries = asm.tree.len();
    report.tree_bytes = asm.tree.content_size();
    report.source_date_epoch = asm.epoch;
    report.kernel_modules = asm.modules.as_ref().map(|m| m.summary());
    report
        .warnings
        .extend(driver_warnings(r, &asm, &plan.disk_formats));
    if plan.init.is_some() {
        crate::disk::image::check_esp_fits(r, &asm.tree)?;
    }
    Ok(asm)
}

/// `rootfs.tar` and `rootfs/`, when asked for.
fn write_trees(
    asm: &crate::assemble::Assembled,
    formats: &[Format],
    out: &std::path::Path,
    report: &mut crate::report::BuildReport,
) -> Result<()> {
    let t = std::time::Instant::now();
    for f in formats {
        match f {
            Format::Tar => {
                let path = out.join("rootfs.tar");
                let o = crate::writers::tar::write_file(
                    &asm.tree,
                    crate::writers::tar::TarOptions { epoch: asm.epoch },
                    &path,
                )?;
                report.outputs.push(o);
                crate::io::faults::point("tar")?;
            }
            Format::Dir => {
                let path = out.join("rootfs");
                crate::writers::dir::write_tree(&asm.tree, &path)?;
                report.outputs.push(crate::output::Output {
                    kind: "dir".into(),
                    path: path.display().to_string(),
                    size: asm.tree.content_size(),
                    sha256: String::new(),
                });
                crate::io::faults::point("dir")?;
            }
            Format::Oci
            | Format::OciArchive
            | Format::Disk
            | Format::Qcow2
            | Format::Vhd
            | Format::Vmdk
            | Format::Gce => {}
        }
    }
    report.time("write", t.elapsed().as_secs_f64());
    Ok(())
}

/// The host disk (`disk.raw`, UKI, kernel, initrd), the disk formats derived from it,
/// their sidecars and `manifest.json`.
#[allow(clippy::too_many_arguments)]
fn write_disk(
    ctx: &Context,
    r: &Recipe,
    asm: &crate::assemble::Assembled,
    init: &crate::disk::image::Bundled,
    disk_formats: &[&dyn crate::formats::DiskFormat],
    lock: &Lock,
    out: &std::path::Path,
    report: &mut crate::report::BuildReport,
) -> Result<()> {
    let w = crate::disk::image::build(r, asm, init, ctx.cache.root(), out, &ctx.rep)?;
    for (name, secs) in &w.disk.stages {
        report.time(name, *secs);
    }
    let raw = crate::disk::image::disk_in(out);
    let raw_out = w
        .outputs
        .iter()
        .find(|o| o.kind == "disk-raw")
        .context("the disk stage wrote no disk.raw")?
        .clone();
    report.outputs.extend(w.outputs.iter().cloned());
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&crate::io::hash::unhex(&raw_out.sha256)?);
    let src = crate::formats::Source {
        raw: &raw,
        digest,
        epoch: asm.epoch,
    };
    let mut sidecars = vec![raw_out];
    for f in disk_formats {
        let t = std::time::Instant::now();
        let stage = ctx.rep.stage(&format!("writing {}", f.file_name()));
        let o = crate::formats::write(*f, &src, out)?;
        stage.done(format!("{:.1} MB", o.size as f64 / 1e6));
        sidecars.push(o.clone());
        report.outputs.push(o);
        report.time(f.name(), t.elapsed().as_secs_f64());
    }
    crate::io::faults::point("formats")?;
    for o in &sidecars {
        if let Some(p) = crate::formats::sidecar::write(r, &w.disk, asm.epoch, o)? {
            let (sha256, size) = crate::io::hash::sha256_file(&p)?;
            report.outputs.push(crate::output::Output {
                kind: "sidecar".into(),
                path: p.display().to_string(),
                size,
                sha256,
            });
        }
    }
    let m = crate::disk::manifest::write(r, lock, &w.disk, asm.epoch, &report.outputs, out)?;
    let (sha256, size) = crate::io::hash::sha256_file(&m)?;
    report.outputs.push(crate::output::Output {
        kind: "manifest".into(),
        path: m.display().to_string(),
        size,
        sha256,
    });
    report.disk = Some(w.disk);
    Ok(())
}

/// The OCI image of every architecture, then `oci/`, `image.tar` and the SBOMs.
fn write_oci(
    ctx: &Context,
    recipes: &[Recipe],
    opts: &BuildOptions,
    first: (crate::assemble::Assembled, Lock),
    out: &std::path::Path,
    report: &mut crate::report::BuildReport,
) -> Result<()> {
    let t = std::time::Instant::now();
    let mut images = Vec::new();
    let mut first = Some(first);
    for ra in recipes {
        let stage = ctx.rep.stage(&format!(
            "writing the OCI image {} ({})",
            crate::writers::oci::repository(ra),
            ra.debian.architecture
        ));
        let img = oci_image(ctx, ra, opts.oci, first.take())?;
        stage.done(format!(
            "{} layers ({} shared with its base), {:.2} MB compressed, {:.2} MB uncompressed",
            img.layers.len(),
            img.layers.iter().filter(|l| l.inherited).count(),
            img.compressed_size() as f64 / 1e6,
            img.tar_size() as f64 / 1e6
        ));
        images.push(img);
    }
    report.time("oci", t.elapsed().as_secs_f64());
    write_oci_outputs(&images, &opts.formats, out, report)?;
    crate::io::faults::point("oci")
}

/// One warning for each requested disk format whose platform's drivers the image's
/// kernel lacks (neither kept as a module nor built in), naming the format and modules.
fn driver_warnings(
    r: &Recipe,
    asm: &crate::assemble::Assembled,
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
pub fn assembled(ctx: &Context, r: &Recipe) -> Result<(crate::assemble::Assembled, Lock)> {
    let mut warnings = Vec::new();
    let res = assembled_into(ctx, r, &mut warnings);
    say_cache_warnings(ctx);
    for w in warnings {
        ctx.rep.say(format!("warning: {w}"));
    }
    res
}

/// [`assembled`], leaving the cache's warnings to the caller and adding the preloaded
/// images' warnings to `warnings`.
fn assembled_into(
    ctx: &Context,
    r: &Recipe,
    warnings: &mut Vec<String>,
) -> Result<(crate::assemble::Assembled, Lock)> {
    let f = fetch_verified(ctx, r)?;
    let mut asm = crate::assemble::assemble(&ctx.cache, r, &f.lock)?;
    crate::preload::add(ctx, r, &mut asm.tree, asm.epoch, warnings)?;
    crate::preload::add_bundled(r, &mut asm.tree, asm.epoch)?;
    Ok((asm, f.lock))
}

/// The OCI image of `r`, on top of its parent's image (built the same way, so its layers
/// are byte-for-byte the parent's own). `given` is `r`'s tree and lock when the caller
/// has assembled them already.
fn oci_image(
    ctx: &Context,
    r: &Recipe,
    opts: crate::writers::oci::Options,
    given: Option<(crate::assemble::Assembled, Lock)>,
) -> Result<crate::writers::oci::Image> {
    let parent = match &r.parent {
        Some(p) => Some(
            oci_image(
                ctx,
                p,
                crate::writers::oci::Options {
                    user: crate::writers::oci::UserChoice::Recipe,
                    ..opts
                },
                None,
            )
            .with_context(|| format!("building the base image {}", p.display()))?,
        ),
        None => None,
    };
    let (asm, lock) = match given {
        Some(g) => g,
        None => assembled_into(ctx, r, &mut Vec::new())?,
    };
    let sbom = crate::sbom::spdx(
        &crate::sbom::Subject {
            image: &crate::writers::oci::repository(r),
            architecture: &r.debian.architecture,
            release: &r.debian.release,
            epoch: asm.epoch,
        },
        &lock,
        &asm.packages,
    )?;
    let layer_cache = ctx.cache.root().join("layers");
    crate::writers::oci::image(
        r,
        crate::writers::oci::Inputs {
            tree: asm.tree,
            epoch: asm.epoch,
            lock: &lock,
            sbom,
            parent: parent.as_ref(),
            layer_cache: &layer_cache,
        },
        opts,
    )
}

fn write_oci_outputs(
    images: &[crate::writers::oci::Image],
    formats: &[Format],
    out: &std::path::Path,
    report: &mut crate::report::BuildReport,
) -> Result<()> {
    let epoch = report.source_date_epoch;
    for img in images {
        let name = if images.len() == 1 {
            "sbom.spdx.json".to_string()
        } else {
            format!("sbom-{}.spdx.json", img.arch)
        };
        let path = out.join(name);
        crate::io::atomic::write(&path, &img.sbom)?;
        report.outputs.push(crate::output::Output {
            kind: "sbom".into(),
            path: path.display().to_string(),
            size: img.sbom.len() as u64,
            sha256: crate::io::hash::sha256_hex(&img.sbom),
        });
        report.images.push(crate::report::ImageReport::of(img));
    }
    for f in formats {
        match f {
            Format::Oci => {
                let o = crate::writers::oci::write_layout(images, &out.join("oci"))?;
                report.outputs.push(o);
            }
            Format::OciArchive => {
                let o = crate::writers::oci::write_archive(images, &out.join("image.tar"), epoch)?;
                report.outputs.push(o);
            }
            _ => {}
        }
    }
    Ok(())
}
