//! Locked packages into the cache: whatever is not there already (or fails its check)
//! comes from a vendor directory or from the archive through `apt-get download`, and is
//! verified against the lock's sha256 before it enters the cache.

use super::cache::{copy_hashing, warn, BlobState, Cache};
use crate::apt::AptState;
use crate::exit::{err, Code};
use crate::io::hash::sha256_file;
use crate::io::progress::Reporter;
use crate::lock::LockedPackage;
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Options for fetching.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Use only the cache (and vendor directory).
    pub offline: bool,
    /// A directory written by `slipway vendor`.
    pub vendor: Option<PathBuf>,
}

/// What a fetch did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Packages already in the cache.
    pub cached: usize,
    /// Packages downloaded now.
    pub downloaded: usize,
    /// Packages taken from the vendor directory.
    pub vendored: usize,
    /// Packages taken from the registry cache (`--cache-from`).
    #[serde(default)]
    pub from_registry: usize,
    /// Corrupt cache entries found and replaced.
    pub repaired: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// The file name `slipway vendor` gives a package.
pub fn vendor_name(p: &LockedPackage) -> String {
    format!(
        "{}_{}_{}.deb",
        p.name,
        p.version.replace(':', "%3a"),
        p.architecture
    )
}

/// Makes sure every package is in the cache. `apt` is opened lazily, only when something
/// must be downloaded.
pub fn fetch(
    cache: &Cache,
    pkgs: &[LockedPackage],
    opts: &Options,
    apt: &mut dyn FnMut() -> Result<AptState>,
    rep: &Reporter,
) -> Result<Summary> {
    let mut sum = Summary::default();
    let mut missing = Vec::new();
    for (p, state) in pkgs.iter().zip(check_all(cache, pkgs)?) {
        match state {
            BlobState::Valid => sum.cached += 1,
            BlobState::Corrupt => {
                warn(&format!(
                    "cache: {} {}: the cached .deb did not match its sha256 {}; fetching it again",
                    p.name, p.version, p.sha256
                ));
                sum.repaired += 1;
                missing.push(p);
            }
            BlobState::Missing => missing.push(p),
        }
    }
    if let Some(dir) = &opts.vendor {
        missing = from_vendor(cache, dir, missing, &mut sum)?;
    }
    if !opts.offline {
        missing = from_registry(cache, missing, &mut sum)?;
    }
    if missing.is_empty() {
        return Ok(sum);
    }
    if opts.offline {
        let list: Vec<String> = missing
            .iter()
            .map(|p| format!("{} {} (sha256 {})", p.name, p.version, p.sha256))
            .collect();
        return Err(err(
            Code::Fetch,
            format!(
                "--offline: {} package(s) are not in the cache {}:\n  {}\nrun `slipway fetch` with network access, or pass --vendor DIR (from `slipway vendor`)",
                missing.len(),
                cache.root().display(),
                list.join("\n  ")
            ),
        ));
    }
    let apt = apt()?;
    if !apt.has_lists() {
        apt.update(rep)?;
    }
    let mut gone = unserved(&apt, &missing)?;
    if !gone.is_empty() {
        // The lists may be older than the lock: refresh once before giving up.
        apt.update(rep)?;
        gone = unserved(&apt, &missing)?;
    }
    if !gone.is_empty() {
        let list: Vec<String> = gone
            .iter()
            .map(|p| format!("{} {} ({})", p.name, p.version, p.suite))
            .collect();
        return Err(err(
            Code::LockOutdated,
            format!(
                "the archive no longer serves {} locked version(s):\n  {}\nDebian drops superseded versions (security updates do it weekly): run `slipway lock --update RECIPE`, or build from a vendor directory (--vendor DIR)",
                gone.len(),
                list.join("\n  ")
            ),
        ));
    }
    let stage = rep.stage(&format!("downloading {} packages", missing.len()));
    let tmp = cache.temp_dir()?;
    let specs: Vec<String> = missing
        .iter()
        .map(|p| format!("{}:{}", p.name, p.architecture))
        .zip(missing.iter())
        .map(|(n, p)| format!("{n}={}", p.version))
        .collect();
    let mut counter = rep.counter("downloaded", missing.len() as u64);
    apt.download(&specs, tmp.path(), |line| {
        counter.inc(line.split_whitespace().nth(3).unwrap_or(""))
    })?;
    drop(counter);
    let mut by_digest: HashMap<String, PathBuf> = HashMap::new();
    for e in std::fs::read_dir(tmp.path()).context("reading the download directory")? {
        let path = e.context("reading the download directory")?.path();
        let (h, _) = sha256_file(&path)?;
        by_digest.insert(h, path);
    }
    for p in &missing {
        let Some(path) = by_digest.get(&p.sha256) else {
            return Err(err(
                Code::Fetch,
                format!(
                    "{} {}: apt downloaded no file with the locked sha256 {} (the archive's file differs from the lock; run `slipway lock --update`)",
                    p.name, p.version, p.sha256
                ),
            ));
        };
        sum.bytes += p.size;
        cache.insert(path, &p.sha256)?;
        sum.downloaded += 1;
    }
    if let Some(reg) = cache.registry() {
        reg.note_built(sum.downloaded);
    }
    stage.done(format!(
        "{} packages, {:.1} MB",
        sum.downloaded,
        sum.bytes as f64 / 1e6
    ));
    Ok(sum)
}

/// Takes what it can of `missing` from the vendor directory `dir`; returns the rest.
fn from_vendor<'a>(
    cache: &Cache,
    dir: &Path,
    missing: Vec<&'a LockedPackage>,
    sum: &mut Summary,
) -> Result<Vec<&'a LockedPackage>> {
    let mut still = Vec::new();
    for p in missing {
        let f = dir.join("debs").join(vendor_name(p));
        if f.is_file() {
            let tmp = cache.temp_dir()?;
            let copy = tmp.path().join("pkg.deb");
            let mut from =
                std::fs::File::open(&f).with_context(|| format!("opening {}", f.display()))?;
            copy_hashing(&mut from, &copy)?;
            cache
                .insert(&copy, &p.sha256)
                .with_context(|| format!("vendored {}", f.display()))?;
            sum.vendored += 1;
        } else {
            still.push(p);
        }
    }
    Ok(still)
}

/// Takes what it can of `missing` from the registry cache, each blob checked against
/// the lock's sha256 (and again by [`Cache::insert`]); returns what is still missing.
/// A blob with other bytes is a warning, and the package comes from the origin.
fn from_registry<'a>(
    cache: &Cache,
    missing: Vec<&'a LockedPackage>,
    sum: &mut Summary,
) -> Result<Vec<&'a LockedPackage>> {
    let Some(reg) = cache.registry().filter(|r| r.reads()) else {
        return Ok(missing);
    };
    let mut still = Vec::new();
    let tmp = cache.temp_dir()?;
    for p in missing {
        let file = tmp.path().join(format!("{}.deb", p.sha256));
        let what = format!("package {} {}", p.name, p.version);
        match reg.pull_blob(&p.sha256, p.size, true, &file, &what) {
            crate::remote::Pulled::Got => {
                cache.insert(&file, &p.sha256)?;
                sum.from_registry += 1;
            }
            crate::remote::Pulled::Missing => still.push(p),
            crate::remote::Pulled::Refused(w) => {
                warn(&w);
                still.push(p);
            }
        }
    }
    Ok(still)
}

/// [`Cache::check`] of every package, on all cores (each check hashes a whole .deb).
fn check_all(cache: &Cache, pkgs: &[LockedPackage]) -> Result<Vec<BlobState>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(pkgs.len().max(1));
    let per = pkgs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = pkgs
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| cache.check(&p.sha256))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(pkgs.len());
        for w in workers {
            let part = w
                .join()
                .map_err(|_| anyhow::anyhow!("a cache checking thread panicked"))??;
            out.extend(part);
        }
        Ok(out)
    })
}

/// The packages of `want` that no index file of `apt` lists with that exact version.
fn unserved<'a>(apt: &AptState, want: &[&'a LockedPackage]) -> Result<Vec<&'a LockedPackage>> {
    let mut served: HashSet<(String, String)> = HashSet::new();
    let names: HashSet<&str> = want.iter().map(|p| p.name.as_str()).collect();
    for f in apt.index_files()? {
        let file = std::fs::File::open(&f.path)
            .with_context(|| format!("reading {}", f.path.display()))?;
        let mut name: Option<String> = None;
        for line in std::io::BufReader::with_capacity(1 << 20, file).lines() {
            let line = line.with_context(|| format!("reading {}", f.path.display()))?;
            if let Some(n) = line.strip_prefix("Package: ") {
                name = names.contains(n.trim()).then(|| n.trim().to_string());
            } else if let (Some(v), Some(n)) = (line.strip_prefix("Version: "), name.as_ref()) {
                served.insert((n.clone(), v.trim().to_string()));
            }
        }
    }
    Ok(want
        .iter()
        .copied()
        .filter(|p| !served.contains(&(p.name.clone(), p.version.clone())))
        .collect())
}

/// Copies every locked package out of the cache into `dir/debs` (for `slipway vendor`),
/// verifying each copy as it is written. Copies are 0644: a vendor directory is meant to
/// be shared and carries only public packages.
pub fn vendor(cache: &Cache, pkgs: &[LockedPackage], dir: &Path) -> Result<u64> {
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let mut total = 0;
    for p in pkgs {
        if cache.export(&p.sha256, &debs.join(vendor_name(p)), 0o644)? {
            total += p.size;
        }
    }
    Ok(total)
}
