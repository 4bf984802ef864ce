//! The lock stage: consumes a recipe (and its parents' locks), produces its lock:
//! the one on disk when it is current, else a new one resolved from the package lists
//! (`slipway lock`, and the first step of every build).

use super::Context;
use crate::exit::{err, Code};
use crate::fetch::artifact;
use crate::lock::{self, Lock, LockedArtifact, LockedCut, LockedPackage, ParentRef};
use crate::recipe::Recipe;
use crate::resolve;
use anyhow::{Context as _, Result};

/// What `lock` did.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockAction {
    /// The lock was missing or stale and was written.
    Written,
    /// The lock matched the recipe and was left as it was.
    UpToDate,
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
    super::fetch::say_cache_warnings(ctx);
    res
}

/// [`lock`], leaving out the artifacts installed at `replaced` (destinations a child
/// recipe installs its own artifacts at). A lock that leaves any out is incomplete for
/// `r` itself, so it is used for the child's package pins and not written.
pub(super) fn lock_for(
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
    let artifacts = locked_artifacts(ctx, r, replaced)?;
    let apt = ctx.apt(r)?;
    if ctx.offline {
        if !apt.has_lists() {
            return Err(err(Code::Fetch, "--offline: no package lists in the cache yet; run `slipway lock` once with network access"));
        }
    } else if update || !apt.lists_younger_than(LISTS_MAX_AGE) {
        apt.update(&ctx.rep)?;
    }
    let stage = ctx.rep.stage("resolving");
    let res = resolve_packages(ctx, r, &apt, parent)?;
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
        check_parent_pins(ctx, r, p, &packages)?;
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

/// The artifacts of `r` but those installed at `replaced`, fetched and verified, by
/// destination.
fn locked_artifacts(ctx: &Context, r: &Recipe, replaced: &[String]) -> Result<Vec<LockedArtifact>> {
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
    Ok(artifacts)
}

/// Resolves `r`'s packages from the lists of `apt`, pinned to the `parent` lock's.
fn resolve_packages(
    ctx: &Context,
    r: &Recipe,
    apt: &crate::apt::AptState,
    parent: Option<&Lock>,
) -> Result<resolve::Resolution> {
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
        .map_err(|e| crate::exit::with_code(Code::BadInput, e.context(r.display())))?;
    for n in &res.notes {
        ctx.rep.say(format!("    note: {n}"));
    }
    Ok(res)
}

/// Checks that the child's closure `packages` keeps the parent lock `p`'s versions, and
/// says which of the parent's packages the child's exclude takes back (docs/recipes.md,
/// "Extending").
fn check_parent_pins(
    ctx: &Context,
    r: &Recipe,
    p: &Lock,
    packages: &[LockedPackage],
) -> Result<()> {
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
    Ok(())
}
