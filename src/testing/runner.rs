//! `slipway test`: consumes the definitions in a directory (`qemu/` by default) and a
//! name pattern, produces a [`TestResult`] per test, a human summary with per-test
//! times, optionally JUnit XML, and the exit code's verdict.
//!
//! Every image a run needs (host disks, base images for `copy-image`) is built once
//! into `OUTPUT/artifacts/` before the first VM starts. With a fixture cache
//! (`--fixtures DIR` or `$SLIPWAY_FIXTURES`, [`super::fixtures`]) it is taken from the
//! cache, or built into it, and `OUTPUT/artifacts/NAME` is a link to it: an image a
//! cargo test built is not built again here, and the other way round. Each test gets a
//! fresh work directory `OUTPUT/<test>/` whose VM boots a copy-on-write overlay of the
//! shared image; its serial log (`console.log`, all boots) stays there, the overlay goes
//! unless `--keep`. One VM at a time unless `--jobs` says otherwise: parallel emulated
//! guests on 2 cores stall (RCU) and time out.

use super::definition::{Action, Definition, ImageSource};
use super::fixtures::{self, Builder, Cache};
use super::steps::Machine;
use crate::boot::qemu::Accel;
use crate::pipeline::{self, Context as Pipeline};
use crate::recipe::Recipe;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many console lines a failure shows.
pub const TAIL_LINES: usize = 40;

/// What `slipway test` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory of definitions.
    pub dir: PathBuf,
    /// Only tests whose name contains this.
    pub pattern: Option<String>,
    /// Where logs, artifacts and (with `keep`) overlays go.
    pub output: PathBuf,
    /// VMs at once.
    pub jobs: usize,
    /// Accelerator.
    pub accel: Accel,
    /// Keep each test's overlay, variables and drives.
    pub keep: bool,
}

/// Why a test failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The step and the reason, on one line where possible.
    pub message: String,
    /// The last console lines.
    pub tail: String,
}

/// One test's outcome.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// None: passed.
    pub failure: Option<Failure>,
    /// The full serial log.
    pub console_log: PathBuf,
    /// Seconds from each QEMU start to the test agent's first answer.
    pub boot_times: Vec<f64>,
}

/// The definitions in `dir` whose name contains `pattern`, sorted by name.
pub fn discover(dir: &Path, pattern: Option<&str>) -> Result<Vec<Definition>> {
    let mut paths = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if p.extension().is_some_and(|x| x == "toml") {
            paths.push(p);
        }
    }
    paths.sort();
    let mut defs = Vec::new();
    for p in paths {
        let d = Definition::load(&p)?;
        if pattern.is_none_or(|pat| d.name.contains(pat)) {
            defs.push(d);
        }
    }
    Ok(defs)
}

/// Builds `recipe` with `formats` into `out`.
fn build(ctx: &Pipeline, recipe: &Path, formats: &[pipeline::Format], out: &Path) -> Result<()> {
    let r = Recipe::load(recipe).with_context(|| format!("loading {}", recipe.display()))?;
    let opts = pipeline::BuildOptions::with_formats(formats.to_vec());
    pipeline::build(ctx, &r, out, &opts)
        .with_context(|| format!("building {} for the tests", recipe.display()))?;
    Ok(())
}

/// Builds for the fixture cache in this process, through the pipeline: what `slipway
/// build RECIPE --format FORMATS` does (gzip layers, the recipe's user).
struct InProcess<'a> {
    ctx: &'a Pipeline,
    formats: &'a [pipeline::Format],
}

impl Builder for InProcess<'_> {
    fn who(&self) -> String {
        "slipway test".into()
    }

    fn lock(&self, recipe: &Path) -> Result<()> {
        // With --locked nothing is written: the build then names the stale lock.
        if !self.ctx.locked {
            let r =
                Recipe::load(recipe).with_context(|| format!("loading {}", recipe.display()))?;
            pipeline::lock(self.ctx, &r, false)?;
        }
        Ok(())
    }

    fn build(&self, recipe: &Path, _args: &[String], out: &Path) -> Result<String> {
        build(self.ctx, recipe, self.formats, out)?;
        Ok(format!(
            "built in-process by slipway test (pid {}); its progress went to stderr\n",
            std::process::id()
        ))
    }
}

/// `ln -sfn target at`: `at` (a link, file or directory left by an earlier run) replaced
/// by a symbolic link to `target`.
fn link(target: &Path, at: &Path) -> Result<()> {
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(at) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(at),
        Ok(_) => std::fs::remove_file(at),
        Err(_) => Ok(()),
    }
    .with_context(|| format!("removing {}", at.display()))?;
    std::os::unix::fs::symlink(target, at)
        .with_context(|| format!("linking {} to {}", at.display(), target.display()))
}

/// `recipe` built with `formats` (`what` says what for): into `dir/NAME`, or from the
/// fixture cache with `dir/NAME` linked to it. Returns the build's output directory.
fn provide(
    ctx: &Pipeline,
    cache: Option<&Cache>,
    recipe: &Path,
    formats: &[pipeline::Format],
    dir: &Path,
    what: &str,
) -> Result<PathBuf> {
    let name = Recipe::load(recipe)
        .with_context(|| format!("loading {}", recipe.display()))?
        .name;
    let o = dir.join(&name);
    let Some(cache) = cache else {
        // A link an earlier run with a fixture cache left: never build into the cache.
        if o.is_symlink() {
            std::fs::remove_file(&o).with_context(|| format!("removing {}", o.display()))?;
        }
        eprintln!(
            "building {} ({what}) into {}",
            recipe.display(),
            o.display()
        );
        build(ctx, recipe, formats, &o)?;
        return Ok(o);
    };
    let args = fixtures::format_args(formats);
    eprintln!(
        "{} ({what}, {}): from the fixture cache {}",
        recipe.display(),
        args.join(" "),
        cache.dir().display()
    );
    let f = cache.get(recipe, &args, &InProcess { ctx, formats })?;
    eprintln!(
        "{} {} (built in {:.0} s)",
        if f.built { "built now:" } else { "cached:" },
        f.dir.display(),
        f.seconds
    );
    link(&f.dir, &o)?;
    Ok(f.dir)
}

/// The artifacts a set of tests needs, built once: host disks by recipe path, base
/// images (`image.tar`) by the name used in `copy-image`.
pub struct Artifacts {
    /// Recipe path -> build output directory (holding disk.raw).
    pub disks: HashMap<PathBuf, PathBuf>,
    /// copy-image recipe -> image.tar.
    pub images: HashMap<String, PathBuf>,
}

/// Builds everything `defs` need into `out/artifacts/`, or takes it from the fixture
/// `cache` (host disks with [`fixtures::HOST_FORMATS`], base images with
/// [`fixtures::BASE_FORMATS`], as the cargo tests ask for them).
pub fn build_artifacts(
    ctx: &Pipeline,
    defs: &[Definition],
    out: &Path,
    cache: Option<&Cache>,
) -> Result<Artifacts> {
    let mut a = Artifacts {
        disks: HashMap::new(),
        images: HashMap::new(),
    };
    let dir = out.join("artifacts");
    let image_formats: &[pipeline::Format] = match cache {
        Some(_) => fixtures::BASE_FORMATS,
        None => &[pipeline::Format::OciArchive],
    };
    for d in defs {
        if let Some(ImageSource::Recipe(r)) = &d.image {
            if !a.disks.contains_key(r) {
                let o = provide(ctx, cache, r, fixtures::HOST_FORMATS, &dir, "host disk")
                    .with_context(|| format!("{}: recipe", d.path.display()))?;
                a.disks.insert(r.clone(), o);
            }
        }
        for s in &d.steps {
            if let Action::CopyImage(c) = &s.action {
                if !a.images.contains_key(&c.recipe) {
                    let path = crate::recipe::find::find(&c.recipe)?;
                    let o = provide(ctx, cache, &path, image_formats, &dir, "OCI archive")?;
                    a.images.insert(c.recipe.clone(), o.join("image.tar"));
                }
            }
        }
    }
    Ok(a)
}

pub use super::prepare::vfat_from_dir;

/// Runs one test to the end; never panics the run.
pub fn run_one(def: &Definition, art: &Artifacts, opts: &Options) -> TestResult {
    let start = Instant::now();
    let dir = opts.output.join(&def.name);
    let console_log = dir.join("vm").join("console.log");
    let mut boot_times = Vec::new();
    let outcome = prepare_and_run(def, art, opts, &dir, &mut boot_times);
    if !opts.keep {
        for f in [
            "overlay.qcow2",
            "OVMF_VARS.fd",
            "qmp.sock",
            "agent.sock",
            "events.sock",
            "tpm.sock",
        ] {
            let _ = std::fs::remove_file(dir.join("vm").join(f));
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".img") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    TestResult {
        name: def.name.clone(),
        seconds: start.elapsed().as_secs_f64(),
        failure: outcome.err(),
        console_log,
        boot_times,
    }
}

fn setup_failure(e: anyhow::Error) -> Failure {
    Failure {
        message: format!("setting up: {e:#}"),
        tail: String::new(),
    }
}

fn prepare_and_run(
    def: &Definition,
    art: &Artifacts,
    opts: &Options,
    dir: &Path,
    boot_times: &mut Vec<f64>,
) -> std::result::Result<(), Failure> {
    // A fresh machine every run: the overlay of a previous run must not be reused.
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing {}", dir.display()))
            .map_err(setup_failure)?;
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(setup_failure)?;
    let image_dir = match &def.image {
        None => None,
        Some(ImageSource::Dir(d)) => Some(d.clone()),
        Some(ImageSource::Recipe(r)) => Some(
            art.disks
                .get(r)
                .cloned()
                .ok_or_else(|| setup_failure(anyhow::anyhow!("{} was not built", r.display())))?,
        ),
    };
    let work = dir.join("vm");
    let mut servers = Vec::new();
    let (spec, drives) = (|| {
        let mut spec = super::prepare::spec(def, opts.accel, image_dir.as_deref(), dir)?;
        let drives = super::prepare::drives(def, dir, &mut spec)?;
        servers = super::prepare::forwards(def, &mut spec)?;
        if let (Some(c), Some(image_dir)) = (&def.corrupt, &image_dir) {
            let what = super::prepare::corrupt(&spec, &work, image_dir, c)?;
            std::fs::write(dir.join("corrupted.txt"), format!("{what}\n"))?;
        }
        Ok::<_, anyhow::Error>((spec, drives))
    })()
    .map_err(setup_failure)?;
    let mut m = Machine::new(
        spec,
        &work,
        dir,
        def.agent,
        &def.expect_failure,
        def.timeout,
        art.images.clone(),
    );
    m.set_drives(drives);
    let result = (|| {
        m.start().map_err(|e| ("starting the VM".to_string(), e))?;
        let mut times = StepTimes::create(dir);
        for (i, s) in def.steps.iter().enumerate() {
            let t0 = Instant::now();
            let r = m.run(s);
            times.record(i, &s.name, t0.elapsed().as_secs_f64(), r.is_ok());
            r.map_err(|e| (s.name.clone(), e))?;
        }
        if let Some(n) = def.expect_reboots {
            m.check_reboots(n)
                .map_err(|e| ("expect-reboots".to_string(), e))?;
        }
        Ok::<(), (String, anyhow::Error)>(())
    })();
    m.stop();
    *boot_times = m.boot_times.clone();
    drop(servers);
    result.map_err(|(step, e)| Failure {
        message: format!("{step}: {e:#}"),
        tail: m.tail(TAIL_LINES),
    })
}

/// `OUTPUT/<test>/steps.tsv`: each step's index, wall seconds, result and name, written as
/// each step ends, so a slow or hung test shows where its time went. Best effort: a
/// file that cannot be written costs the timings, never the test.
struct StepTimes(Option<std::fs::File>);

impl StepTimes {
    fn create(dir: &Path) -> Self {
        let f = std::fs::File::create(dir.join("steps.tsv")).ok();
        let mut t = StepTimes(f);
        t.write("step\tseconds\tresult\tname\n");
        t
    }

    fn record(&mut self, index: usize, name: &str, secs: f64, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.write(&format!("{index}\t{secs:.1}\t{result}\t{name}\n"));
    }

    fn write(&mut self, line: &str) {
        use std::io::Write;
        if let Some(f) = &mut self.0 {
            if f.write_all(line.as_bytes()).is_err() {
                self.0 = None;
            }
        }
    }
}

/// Runs `defs` (at most `opts.jobs` at once), printing a line as each ends.
pub fn run_all(defs: &[Definition], art: &Artifacts, opts: &Options) -> Vec<TestResult> {
    let queue = Arc::new(Mutex::new((0..defs.len()).collect::<Vec<_>>()));
    let results = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            let (queue, results) = (Arc::clone(&queue), Arc::clone(&results));
            s.spawn(move || loop {
                let next = queue.lock().ok().and_then(|mut q| {
                    if q.is_empty() {
                        None
                    } else {
                        Some(q.remove(0))
                    }
                });
                let Some(i) = next else { break };
                eprintln!("{}: running ({})", defs[i].name, defs[i].description);
                let mut r = run_one(&defs[i], art, opts);
                if is_emulator_fault(&r) {
                    print_result(&r);
                    eprintln!(
                        "{}: running again once: the guest kernel hit `Oops: int3`, QEMU TCG's \
                         multi-threaded text-patching race, not a fault of the image \
                         (docs/decisions/0035-tcg-int3-retry.md)",
                        defs[i].name
                    );
                    r = run_one(&defs[i], art, opts);
                }
                print_result(&r);
                if let Ok(mut v) = results.lock() {
                    v.push((i, r));
                }
            });
        }
    });
    let mut v = results
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// True when `r` failed only because the guest kernel oopsed on an `int3`: under
/// multi-threaded TCG, QEMU 7.2 can run a stale translation of kernel code that
/// text_poke is patching on the other vCPU (seen in `sched_clock_cpu` 1.7 to 1.9 s into
/// the kernel, before /init, in about one CI run of two). No image slipway builds
/// executes int3 on purpose.
pub fn is_emulator_fault(r: &TestResult) -> bool {
    r.failure
        .as_ref()
        .is_some_and(|f| f.message.contains("Oops: int3"))
}

fn boots(r: &TestResult) -> String {
    if r.boot_times.is_empty() {
        return String::new();
    }
    let b: Vec<String> = r.boot_times.iter().map(|t| format!("{t:.1}")).collect();
    format!("; boot to agent: {} s", b.join(", "))
}

fn print_result(r: &TestResult) {
    match &r.failure {
        None => println!("PASS {} ({:.1} s{})", r.name, r.seconds, boots(r)),
        Some(f) => {
            println!("FAIL {} ({:.1} s{})", r.name, r.seconds, boots(r));
            println!("  {}", f.message.replace('\n', "\n  "));
            if !f.tail.is_empty() {
                println!("  last {TAIL_LINES} console lines:");
                for l in f.tail.lines() {
                    println!("  | {l}");
                }
            }
            println!("  serial log: {}", r.console_log.display());
        }
    }
}

/// The closing summary: one line per test with its time, then the totals.
pub fn summary(results: &[TestResult]) -> String {
    let mut s = String::from("\nsummary:\n");
    for r in results {
        s.push_str(&format!(
            "  {} {:<24} {:>7.1} s{}\n",
            if r.failure.is_some() { "FAIL" } else { "ok  " },
            r.name,
            r.seconds,
            boots(r)
        ));
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    let total: f64 = results.iter().map(|r| r.seconds).sum();
    s.push_str(&format!(
        "{} passed, {failed} failed, {} tests in {total:.1} s\n",
        results.len() - failed,
        results.len()
    ));
    s
}
