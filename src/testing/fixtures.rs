//! The fixture cache: images built once per test run and shared by every process that
//! needs them (each cargo test process, `slipway test`). Consumes a recipe, the build
//! arguments and a [`Builder`] that can lock and build it; produces the build's output
//! directory, `DIR/NAME-KEY/` (NAME the recipe file's stem, KEY 16 hex digits).
//!
//! The key is the sha256 of everything that decides the output's bytes:
//! - the recipe file, every recipe it extends and every recipe it preloads
//!   (`[[preload]]`), each by canonical path and content, with its lock file;
//! - the overlay directories of all of them (relative paths, kinds, modes, contents);
//! - the build arguments (`--format disk`) and `SOURCE_DATE_EPOCH`;
//! - the slipway binary and the slipway-init, slipway-agent and slipway-node binaries
//!   beside it (what goes into images).
//!
//! Packages are pinned by the lock and artifacts by the sha256 in the recipe text, so both
//! are covered. A recipe without a current lock is locked first (under `DIR/.locking`):
//! otherwise the first build would write the lock and the next process would compute
//! another key and build the same image again.
//!
//! A build runs under an exclusive `flock` on `DIR/NAME-KEY.lock`, into
//! `DIR/.NAME-KEY.tmp` (one name per key, so the next build into it removes what a
//! killed one left, its staging directory included: src/io/staging.rs), renamed into
//! place when done: processes that need the same image wait for one build and never see
//! half an output. The output also holds
//! `.fixture.json` (key, recipe, arguments, seconds, builder, binaries) and `.build.log`.
//! Each build that really runs appends one line to `DIR/builds.log` ([`BUILDS_LOG`]),
//! which `.ci/run` counts.
//!
//! Tests of the build itself (reproducibility, failures) do not come here: they build on
//! purpose. Consumers must not write into a fixture: other processes read it.

use crate::lock::Lock;
use crate::pipeline::{self, Format};
use crate::recipe::Recipe;
use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The environment variable naming the cache directory; `slipway test` uses the cache
/// only when it (or `--fixtures`) is set.
pub const DIR_ENV: &str = "SLIPWAY_FIXTURES";
/// The file in the cache directory that gets one line per build that really ran.
pub const BUILDS_LOG: &str = "builds.log";
/// The formats a base image fixture is built with: every output some consumer reads (the
/// tree, its tar, the OCI layout, the archive for `docker load` and `ctr import`), so one
/// build per base recipe serves every test and `slipway test`'s `copy-image`.
pub const BASE_FORMATS: &[Format] = &[Format::Dir, Format::Tar, Format::Oci, Format::OciArchive];
/// The formats a host image fixture is built with (`disk.raw` and its pieces).
pub const HOST_FORMATS: &[Format] = &[Format::Disk];

/// `--format a,b` for `formats`: the build arguments of a fixture, as `slipway build`
/// takes them (and as they enter the key).
pub fn format_args(formats: &[Format]) -> Vec<String> {
    let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
    vec!["--format".to_string(), names.join(",")]
}

/// How long an image superseded by a newer build of the same recipe and arguments stays
/// after its last use (a test that got it may still be reading it).
pub const STALE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What locks and builds a recipe for the cache: the slipway binary (the cargo tests) or
/// the pipeline in-process (`slipway test`).
pub trait Builder {
    /// Who builds, for `builds.log` ("cargo test", "slipway test").
    fn who(&self) -> String;
    /// Writes `recipe`'s lock file (and those of the recipes it extends) when missing or
    /// stale, as `slipway lock` does.
    fn lock(&self, recipe: &Path) -> Result<()>;
    /// Builds `recipe` with `args` (as `slipway build RECIPE -o OUT ARGS...` takes them)
    /// into the fresh directory `out`; returns the build's log.
    fn build(&self, recipe: &Path, args: &[String], out: &Path) -> Result<String>;
}

/// One image in the cache.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The build's output directory.
    pub dir: PathBuf,
    /// The content key (64 hex digits).
    pub key: String,
    /// Whether this call built it (false: another process or an earlier run did).
    pub built: bool,
    /// How long its build took.
    pub seconds: f64,
}

/// What `.fixture.json` records about a build.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    key: String,
    recipe: PathBuf,
    args: Vec<String>,
    seconds: f64,
    builder: String,
    /// The digest of the binaries that built it (a rebuild of the same recipe and
    /// arguments with another digest: the binaries changed).
    #[serde(default)]
    binaries: String,
}

/// A cache directory and the digest of the binaries that build into it.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    binaries: String,
}

impl Cache {
    /// The cache in `dir` (created if missing) for images built by the `slipway` binary
    /// given, whose directory also holds slipway-init, slipway-agent and slipway-node.
    pub fn open(dir: &Path, slipway: &Path) -> Result<Cache> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the fixture cache {}", dir.display()))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            binaries: binaries_digest(slipway)?,
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `recipe` built with `args`: from the cache, or built now by `builder` (under the
    /// key's lock; other processes wanting the same image wait for this build).
    pub fn get(&self, recipe: &Path, args: &[String], builder: &dyn Builder) -> Result<Fixture> {
        let path = recipe
            .canonicalize()
            .with_context(|| format!("{}: cannot read recipe", recipe.display()))?;
        self.settle_locks(&path, builder)?;
        let r = Recipe::load(&path)?;
        let key = self.key(&r, args)?;
        let id = format!("{}-{}", stem(&path), &key[..16]);
        let out = self.dir.join(&id);
        let _guard = flock(&self.dir.join(format!("{id}.lock")))?;
        if let Some(m) = read_meta(&out).filter(|m| m.key == key) {
            touch(&out.join(".fixture.json"));
            return Ok(Fixture {
                dir: out,
                key,
                built: false,
                seconds: m.seconds,
            });
        }
        // Not per process: the key's flock is held, and a name that repeats lets the next
        // build sweep a killed build's leftovers (its `..ID.tmp.staging-*` too).
        let tmp = self.dir.join(format!(".{id}.tmp"));
        remove_dir(&tmp)?;
        let t = Instant::now();
        let log = match builder.build(&path, args, &tmp) {
            Ok(log) => log,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e.context(format!("building the fixture {id}")));
            }
        };
        let seconds = t.elapsed().as_secs_f64();
        let meta = Meta {
            key: key.clone(),
            recipe: path,
            args: args.to_vec(),
            seconds,
            builder: builder.who(),
            binaries: self.binaries.clone(),
        };
        write(&tmp.join(".build.log"), log.as_bytes())?;
        let json = serde_json::to_vec_pretty(&meta).context("serializing .fixture.json")?;
        write(&tmp.join(".fixture.json"), &json)?;
        remove_dir(&out)?;
        fs::rename(&tmp, &out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        self.count(&id, &meta)?;
        self.prune(&id, &meta);
        Ok(Fixture {
            dir: out,
            key,
            built: true,
            seconds,
        })
    }

    /// Locks every recipe `recipe` builds from (itself and what it preloads) whose lock
    /// file is missing or stale, one process at a time.
    fn settle_locks(&self, recipe: &Path, builder: &dyn Builder) -> Result<()> {
        let mut roots = Vec::new();
        lock_roots(&Recipe::load(recipe)?, &mut roots, 0)?;
        let mut stale = Vec::new();
        for p in roots {
            if !is_current(&Recipe::load(&p)?)? {
                stale.push(p);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        let _guard = flock(&self.dir.join(".locking"))?;
        for p in stale {
            // Another process may have locked it while this one waited.
            if !is_current(&Recipe::load(&p)?)? {
                builder
                    .lock(&p)
                    .with_context(|| format!("locking {} for the fixture cache", p.display()))?;
            }
        }
        Ok(())
    }

    /// The content key of `r` built with `args` (see the module documentation).
    pub fn key(&self, r: &Recipe, args: &[String]) -> Result<String> {
        let mut h = Sha256::new();
        field(&mut h, b"slipway-fixture-v2");
        field(&mut h, canonical(&r.path).as_os_str().as_encoded_bytes());
        for a in args {
            field(&mut h, a.as_bytes());
        }
        field(&mut h, self.binaries.as_bytes());
        let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default();
        field(&mut h, epoch.as_bytes());
        let arches = arches(args);
        let mut recipes = Vec::new();
        closure(r, &mut recipes, 0)?;
        let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
        for x in &recipes {
            files.insert(canonical(&x.path));
            files.insert(x.lock_path());
            for a in &arches {
                files.insert(x.for_arch(a)?.lock_path());
            }
            dirs.extend(x.overlays.iter().map(|d| canonical(d)));
        }
        for f in files {
            field(&mut h, f.as_os_str().as_encoded_bytes());
            match fs::read(&f) {
                Ok(b) => {
                    field(&mut h, b"file");
                    field(&mut h, &b);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => field(&mut h, b"absent"),
                Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
            }
        }
        for d in dirs {
            field(&mut h, d.as_os_str().as_encoded_bytes());
            hash_tree(&mut h, &d)?;
        }
        Ok(crate::io::hash::hex(&h.finalize()))
    }

    /// Removes the images this build superseded: same recipe file name, same arguments,
    /// another key (the recipe, its lock or a binary changed), unused for [`STALE`]. A
    /// local cache would otherwise keep a disk image per slipway rebuild. An image in use
    /// (its key locked) is left alone.
    fn prune(&self, id: &str, m: &Meta) {
        let prefix = format!("{}-", stem(&m.recipe));
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_entry = name.len() == prefix.len() + 16
                && name.starts_with(&prefix)
                && name[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit());
            if !is_entry || name == id {
                continue;
            }
            let meta_file = e.path().join(".fixture.json");
            let idle = fs::metadata(&meta_file)
                .and_then(|x| x.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            let old = read_meta(&e.path()).is_some_and(|o| o.args == m.args);
            if !old || idle.is_none_or(|i| i < STALE) {
                continue;
            }
            let Ok(lock) = File::open(self.dir.join(format!("{name}.lock"))) else {
                continue;
            };
            if let Ok(_held) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// Appends the build to `builds.log`: one `write` in append mode, so lines of
    /// processes building at once do not interleave.
    fn count(&self, id: &str, m: &Meta) -> Result<()> {
        let log = self.dir.join(BUILDS_LOG);
        let line = format!(
            "{id} {:.1}s {} ({})\n",
            m.seconds,
            m.args.join(" "),
            m.builder
        );
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .with_context(|| format!("appending to {}", log.display()))
    }
}

/// `recipe` and, recursively, the recipes it preloads: the recipes whose lock files a
/// build reads or writes (a lock covers the recipes its recipe extends).
fn lock_roots(r: &Recipe, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    anyhow::ensure!(
        depth < 8,
        "{}: preloads nest more than 8 deep",
        r.path.display()
    );
    let p = canonical(&r.path);
    if out.contains(&p) {
        return Ok(());
    }
    out.push(p);
    for pre in &r.preload {
        lock_roots(&Recipe::load(&pre.recipe)?, out, depth + 1)?;
    }
    Ok(())
}

/// `r`, every recipe it extends and everything they preload, recursively.
fn closure(r: &Recipe, out: &mut Vec<Recipe>, depth: usize) -> Result<()> {
    anyhow::ensure!(
        depth < 8,
        "{}: preloads nest more than 8 deep",
        r.path.display()
    );
    let mut cur = Some(r);
    while let Some(x) = cur {
        out.push(x.clone());
        for pre in &x.preload {
            closure(&Recipe::load(&pre.recipe)?, out, depth + 1)?;
        }
        cur = x.parent.as_deref();
    }
    Ok(())
}

/// Whether `r` has a lock file that matches it (and its parents).
fn is_current(r: &Recipe) -> Result<bool> {
    Ok(match Lock::read(&r.lock_path())? {
        Some(l) => pipeline::staleness(r, &l)?.is_none(),
        None => false,
    })
}

/// The architectures `--arch a,b` names in `args`.
fn arches(args: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let list = match a.strip_prefix("--arch") {
            Some("") => it.next().map(String::as_str).unwrap_or(""),
            Some(rest) => rest.strip_prefix('=').unwrap_or(""),
            None => continue,
        };
        v.extend(
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    v
}

/// A length-prefixed field, so that no two different inputs hash alike.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// Every entry under `dir` by sorted relative path: kind, permission bits, and the
/// content or link target.
fn hash_tree(h: &mut Sha256, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        entries.push(e);
    }
    for e in entries {
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
        field(h, rel.as_os_str().as_encoded_bytes());
        let meta = e
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", e.path().display()))?;
        field(h, &meta.permissions().mode().to_le_bytes());
        let ft = meta.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            field(h, t.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            let b =
                fs::read(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
            field(h, &b);
        }
    }
    Ok(())
}

/// The sha256 of the slipway binary and the in-image binaries beside it; a missing one
/// counts as absent (the build then fails on it, or does not need it).
fn binaries_digest(slipway: &Path) -> Result<String> {
    let dir = slipway.parent().unwrap_or(Path::new("."));
    let mut h = Sha256::new();
    let name = slipway
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (b, env) in [
        (name.as_str(), ""),
        ("slipway-init", "SLIPWAY_INIT"),
        ("slipway-agent", "SLIPWAY_AGENT"),
        ("slipway-node", "SLIPWAY_NODE"),
    ] {
        let mut p = dir.join(b);
        // An in-image binary not beside slipway is the one slipway finds elsewhere (its
        // variable, or the static build's target directory): key on that one, so a
        // fixture never keeps an older init, agent or node.
        if !env.is_empty() && !p.is_file() {
            if let Ok(found) = crate::tool::bundled_binary(b, env) {
                p = found;
            }
        }
        field(&mut h, b.as_bytes());
        match File::open(&p) {
            Ok(f) => {
                let (hex, _) = crate::io::hash::sha256_reader(f)
                    .with_context(|| format!("reading {}", p.display()))?;
                field(&mut h, hex.as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => field(&mut h, b"absent"),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
    Ok(crate::io::hash::hex(&h.finalize()))
}

/// Opens `path` (created if missing) and waits for an exclusive flock on it.
fn flock(path: &Path) -> Result<Flock<File>> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

/// Marks a use: the file's modification time is the image's last use.
fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn read_meta(dir: &Path) -> Option<Meta> {
    serde_json::from_slice(&fs::read(dir.join(".fixture.json")).ok()?).ok()
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn remove_dir(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Writes a marker file instead of building, and remembers what it was asked.
    #[derive(Default)]
    struct Fake {
        builds: RefCell<Vec<PathBuf>>,
        locks: RefCell<Vec<PathBuf>>,
    }

    impl Builder for Fake {
        fn who(&self) -> String {
            "fake".into()
        }
        fn lock(&self, recipe: &Path) -> Result<()> {
            self.locks.borrow_mut().push(recipe.to_path_buf());
            let r = Recipe::load(recipe)?;
            // A lock whose input digest matches: current for `staleness`.
            let l = Lock {
                lock_version: crate::lock::LOCK_VERSION,
                input_digest: crate::lock::input_digest(&r),
                release: r.debian.release.clone(),
                architecture: r.debian.architecture.clone(),
                parent: None,
                packages: Vec::new(),
                artifacts: Vec::new(),
                cuts: Vec::new(),
            };
            l.write(&r.lock_path())
        }
        fn build(&self, recipe: &Path, args: &[String], out: &Path) -> Result<String> {
            self.builds.borrow_mut().push(recipe.to_path_buf());
            fs::create_dir_all(out)?;
            fs::write(out.join("image"), args.join(" "))?;
            Ok("built".into())
        }
    }

    fn recipe(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("img.toml");
        fs::write(
            &p,
            format!(
                "schema-version = 1\n[image]\nname = \"img\"\n[packages]\ninclude = [\"busybox-static\"]\n{body}"
            ),
        )
        .unwrap();
        p
    }

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn builds_once_per_key_and_counts_each_build() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("slipway"), "v1").unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("overlay/etc")).unwrap();
        fs::write(src.join("overlay/etc/motd"), "hi").unwrap();
        let r = recipe(&src, "[paths]\noverlays = [\"overlay\"]\n");
        let cache = Cache::open(&d.path().join("cache"), &bin.join("slipway")).unwrap();
        let b = Fake::default();

        let first = cache.get(&r, &args("--format tar"), &b).unwrap();
        assert!(first.built);
        assert_eq!(b.locks.borrow().len(), 1, "a missing lock is written first");
        assert_eq!(
            fs::read_to_string(first.dir.join("image")).unwrap(),
            "--format tar"
        );
        assert!(first
            .dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("img-"));
        let again = cache.get(&r, &args("--format tar"), &b).unwrap();
        assert!(!again.built);
        assert_eq!(
            (again.dir.clone(), again.key.clone()),
            (first.dir.clone(), first.key.clone())
        );
        assert_eq!(b.builds.borrow().len(), 1);
        assert_eq!(b.locks.borrow().len(), 1, "a current lock is left alone");

        // Other arguments, an overlay file, the recipe, a binary: each is a new key.
        let tar_dir = cache.get(&r, &args("--format dir"), &b).unwrap();
        assert_ne!(tar_dir.key, first.key);
        fs::write(src.join("overlay/etc/motd"), "ho").unwrap();
        let overlay = cache.get(&r, &args("--format tar"), &b).unwrap();
        assert!(overlay.built && overlay.key != first.key);
        let cache2 = {
            fs::write(bin.join("slipway"), "v2").unwrap();
            Cache::open(cache.dir(), &bin.join("slipway")).unwrap()
        };
        let binary = cache2.get(&r, &args("--format tar"), &b).unwrap();
        assert!(binary.built && binary.key != overlay.key);
        assert_eq!(b.builds.borrow().len(), 4);
        let log = fs::read_to_string(cache.dir().join(BUILDS_LOG)).unwrap();
        assert_eq!(log.lines().count(), 4, "{log}");
        assert!(
            log.lines()
                .all(|l| l.starts_with("img-") && l.ends_with("(fake)")),
            "{log}"
        );
        let meta = read_meta(&first.dir).unwrap();
        assert_eq!(meta.args, args("--format tar"));
        assert!(!cache.dir().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp")));
    }

    #[test]
    fn a_failed_build_leaves_nothing_and_is_not_counted() {
        struct Failing;
        impl Builder for Failing {
            fn who(&self) -> String {
                "failing".into()
            }
            fn lock(&self, recipe: &Path) -> Result<()> {
                Fake::default().lock(recipe)
            }
            fn build(&self, _: &Path, _: &[String], out: &Path) -> Result<String> {
                fs::create_dir_all(out)?;
                fs::write(out.join("half"), "x")?;
                anyhow::bail!("mksquashfs failed")
            }
        }
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("slipway"), "v1").unwrap();
        let r = recipe(d.path(), "");
        let cache = Cache::open(&d.path().join("cache"), &d.path().join("slipway")).unwrap();
        let e = cache.get(&r, &args("--format tar"), &Failing).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("building the fixture img-") && msg.contains("mksquashfs failed"),
            "{msg}"
        );
        let left: Vec<String> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock") && n != ".locking")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn the_parent_and_the_lock_are_in_the_key() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("slipway"), "v1").unwrap();
        let parent = recipe(d.path(), "");
        let child = d.path().join("child.toml");
        fs::write(
            &child,
            "schema-version = 1\nextends = \"img.toml\"\n[image]\nname = \"child\"\n",
        )
        .unwrap();
        let cache = Cache::open(&d.path().join("cache"), &d.path().join("slipway")).unwrap();
        let b = Fake::default();
        let a = cache.get(&child, &args("--format tar"), &b).unwrap();
        assert!(a
            .dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("child-"));
        let text = fs::read_to_string(&parent).unwrap();
        fs::write(
            &parent,
            text.replace("busybox-static", "busybox-static\", \"netbase"),
        )
        .unwrap();
        let p = cache.get(&child, &args("--format tar"), &b).unwrap();
        assert!(p.built && p.key != a.key, "the parent changed");
        assert_eq!(
            b.locks.borrow().len(),
            2,
            "the stale lock was written again"
        );
        let lock = Recipe::load(&child).unwrap().lock_path();
        fs::write(&lock, fs::read_to_string(&lock).unwrap() + "\n").unwrap();
        let l = cache.get(&child, &args("--format tar"), &b).unwrap();
        assert!(l.built && l.key != p.key, "the lock changed");
    }

    #[test]
    fn processes_wanting_one_image_wait_for_one_build() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Slow(AtomicUsize);
        impl Builder for Slow {
            fn who(&self) -> String {
                "slow".into()
            }
            fn lock(&self, recipe: &Path) -> Result<()> {
                Fake::default().lock(recipe)
            }
            fn build(&self, _: &Path, _: &[String], out: &Path) -> Result<String> {
                self.0.fetch_add(1, Ordering::SeqCst);
                fs::create_dir_all(out)?;
                std::thread::sleep(std::time::Duration::from_millis(300));
                fs::write(out.join("image"), "done")?;
                Ok(String::new())
            }
        }
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("slipway"), "v1").unwrap();
        let r = recipe(d.path(), "");
        let cache = Cache::open(&d.path().join("cache"), &d.path().join("slipway")).unwrap();
        let b = Slow(AtomicUsize::new(0));
        let got: Vec<Fixture> = std::thread::scope(|s| {
            let h: Vec<_> = (0..3)
                .map(|_| s.spawn(|| cache.get(&r, &args("--format tar"), &b).unwrap()))
                .collect();
            h.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert_eq!(got.iter().filter(|f| f.built).count(), 1);
        for f in &got {
            assert_eq!(fs::read_to_string(f.dir.join("image")).unwrap(), "done");
        }
    }

    #[test]
    fn a_new_build_removes_the_image_it_superseded_once_idle() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("slipway"), "v1").unwrap();
        let r = recipe(d.path(), "");
        let cache = Cache::open(&d.path().join("cache"), &d.path().join("slipway")).unwrap();
        let b = Fake::default();
        let old = cache.get(&r, &args("--format tar"), &b).unwrap();
        let other_args = cache.get(&r, &args("--format dir"), &b).unwrap();
        let idle = std::time::SystemTime::now() - STALE - std::time::Duration::from_secs(60);
        for f in [&old, &other_args] {
            let m = File::options()
                .append(true)
                .open(f.dir.join(".fixture.json"))
                .unwrap();
            m.set_modified(idle).unwrap();
        }
        fs::write(&r, fs::read_to_string(&r).unwrap() + "# changed\n").unwrap();
        let new = cache.get(&r, &args("--format tar"), &b).unwrap();
        assert!(new.built && new.dir != old.dir);
        assert!(!old.dir.exists(), "superseded and idle: removed");
        assert!(other_args.dir.exists(), "other arguments: kept");
        // A recent one is kept.
        fs::write(&r, fs::read_to_string(&r).unwrap() + "# again\n").unwrap();
        let newer = cache.get(&r, &args("--format tar"), &b).unwrap();
        assert!(newer.built && new.dir.exists(), "used a moment ago: kept");
    }

    #[test]
    fn format_args_and_arches() {
        assert_eq!(
            format_args(BASE_FORMATS),
            args("--format dir,tar,oci,oci-archive")
        );
        assert_eq!(format_args(HOST_FORMATS), args("--format disk"));
        assert_eq!(
            arches(&args("--arch amd64,arm64 --format oci")),
            ["amd64", "arm64"]
        );
        assert_eq!(arches(&args("--arch=arm64")), ["arm64"]);
        assert!(arches(&args("--format oci")).is_empty());
    }
}
