//! The command line: parses arguments, sets up the cache and progress output, and calls
//! the pipeline. Only this layer prints results and maps errors to exit codes.

mod test;

use crate::exit::{self, Code};
use crate::fetch::cache::Cache;
use crate::io::progress::Reporter;
use crate::pipeline::{self, Context};
use crate::recipe::Recipe;
use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (a build step or host tool failed)
  2  bad input: command line, recipe, unknown or unsatisfiable packages
  3  the lock is out of date, or pins versions the archive no longer serves
  4  a file could not be fetched or failed verification (offline, wrong sha256)

Environment:
  SLIPWAY_CACHE    cache directory (default: $XDG_CACHE_HOME/slipway or ~/.cache/slipway)
  SLIPWAY_MIRROR   Debian mirror URI (default: read from the host's apt sources)
  SLIPWAY_RECIPES  directory of bundled recipes (default: ./recipes)";

/// slipway builds slim, immutable container-host OS images and minimal OCI base images
/// from Debian packages, locked by sha256 and reproducible.
#[derive(Parser, Debug)]
#[command(name = "slipway", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// Cache directory (overrides SLIPWAY_CACHE).
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Use only the cache, vendor and artifact directories: no network.
    #[arg(long, global = true)]
    offline: bool,
}

/// Where builds take packages and artifacts from (shared by the building commands).
#[derive(Args, Debug, Default)]
pub struct FetchArgs {
    /// Fail if the lock is missing or does not match the recipe (never write a lock).
    #[arg(long)]
    locked: bool,
    /// Take artifacts from this directory, matched by sha256 (air-gapped builds).
    #[arg(long, value_name = "DIR")]
    artifact_dir: Vec<PathBuf>,
    /// Take packages and artifacts from a directory written by `slipway vendor`.
    #[arg(long, value_name = "DIR")]
    vendor: Option<PathBuf>,
    /// Let the recipe's overlays and file:// artifacts name paths outside the directory
    /// of the recipe file that declares them (by default they must stay inside, so a
    /// recipe cannot copy host files such as /etc/shadow into an image).
    #[arg(long)]
    allow_host_paths: bool,
    /// Size cap of an artifact download the lock has no size for: bytes, or KiB, MiB, GiB [default: 1GiB; env SLIPWAY_DOWNLOAD_MAX_SIZE].
    #[arg(long, value_name = "SIZE", value_parser = crate::fetch::limits::parse_size)]
    download_max_size: Option<u64>,
    /// Overall deadline of each artifact download: seconds, or 90s, 10m, 1h [default: 30m; env SLIPWAY_DOWNLOAD_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = crate::push::deadline::parse_duration)]
    download_timeout: Option<std::time::Duration>,
    /// Longest wait for any byte of an artifact download [default: 60s; env SLIPWAY_DOWNLOAD_READ_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = crate::push::deadline::parse_duration)]
    download_read_timeout: Option<std::time::Duration>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Resolve RECIPE to exact packages and write RECIPE.lock.
    ///
    /// Leaves a current lock as it is; re-resolves when the recipe changed, from package
    /// lists at most an hour old (downloaded again when older). With --update, downloads the
    /// lists and resolves again (use it when Debian dropped a locked version).
    Lock {
        /// Recipe file, or a bundled recipe name such as base/static.
        recipe: String,
        /// Resolve again even if the lock is current.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Download every locked package and artifact into the cache, verified by sha256.
    Fetch {
        /// Recipe file, or a bundled recipe name.
        recipe: String,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Build the image: lock (if needed), fetch, assemble and write the outputs.
    ///
    /// Outputs go into DIR: rootfs.tar (tar), rootfs/ (dir), oci/ (an OCI image layout with
    /// the SBOM attached; oci), image.tar (the same plus Docker's manifest.json, for
    /// `docker load`; oci-archive), sbom.spdx.json and report.json. Host images: disk.raw
    /// (disk), disk.qcow2 (qcow2), disk.vhd (vhd, Azure), disk.vmdk (vmdk, AWS/VMware),
    /// disk.tar.gz (gce), each with a JSON sidecar for the cloud, plus uki.efi and
    /// manifest.json. Base images default to oci,oci-archive; host images to disk,qcow2;
    /// other kinds to tar.
    Build {
        /// Recipe file, or a bundled recipe name.
        recipe: String,
        /// Output directory.
        #[arg(short, long, value_name = "DIR", default_value = "out")]
        output: PathBuf,
        /// Outputs to write (comma-separated; default by image kind, see above).
        #[arg(long, value_delimiter = ',')]
        format: Vec<pipeline::Format>,
        /// Debian architectures (comma-separated, e.g. amd64,arm64). Several make a
        /// multi-arch OCI image index; each architecture has its own lock
        /// (RECIPE.ARCH.lock unless it is the recipe's own).
        #[arg(long, value_delimiter = ',', value_name = "ARCH")]
        arch: Vec<String>,
        /// OCI: run as root (uid 0) instead of the recipe's user (nonroot by default).
        #[arg(long)]
        root: bool,
        /// OCI layer compression.
        #[arg(long, value_enum, default_value = "gzip")]
        compression: crate::writers::oci::Compression,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Copy every locked file out of the cache into DIR, for offline builds years later.
    Vendor {
        /// Recipe file, or a bundled recipe name.
        recipe: String,
        /// Destination directory.
        dir: PathBuf,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Push an OCI image layout to a registry (OCI distribution API).
    Push(crate::push::PushArgs),
    /// Show where an image's bytes are: by package and by directory.
    ///
    /// Assembles the tree from the lock (locking and fetching if needed; nothing is written).
    Inspect {
        /// Recipe file, or a bundled recipe name.
        recipe: String,
        /// Directory depth for the by-directory table.
        #[arg(long, default_value_t = 3)]
        depth: usize,
        /// Rows per table.
        #[arg(long, default_value_t = 15)]
        top: usize,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Show what differs between two images: packages and versions, then files.
    Diff {
        /// The first recipe (file or bundled name).
        a: String,
        /// The second recipe.
        b: String,
        /// List every file that differs (default: a summary and the 20 largest).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Boot a host image in QEMU (UEFI/OVMF, q35) with the serial console on the terminal.
    ///
    /// IMAGE is a build output directory (holding disk.raw) or a host recipe, which is
    /// built first into out/NAME. The image itself is never modified: the VM writes to a
    /// copy-on-write overlay in --state (a fresh temporary directory unless given; give
    /// the same one again to boot the same machine again). Networking is QEMU user mode
    /// with restrict=on: the guest reaches nothing but the --forward ports. Quit with
    /// Ctrl-A X. Needs no root.
    Boot(BootArgs),
    /// Run the boot tests in qemu/*.toml (see docs/testing.md).
    ///
    /// Builds every image the tests need once, boots each test's VM from a copy-on-write
    /// overlay under QEMU (TCG unless --accel kvm), runs its steps through the test agent
    /// and fails a test at once on console badness (panic, oops, failed unit, ...).
    /// Prints per-test times; exits 1 when a test failed.
    Test(test::CliArgs),
    /// List the bundled recipes.
    Recipes,
    /// Check the host: tools slipway runs, the Debian package for each, and the cache.
    ///
    /// With --recipes: every pin of the recipes with its upstream end of life instead.
    Doctor(crate::support::DoctorArgs),
}

/// `slipway boot`'s arguments.
#[derive(Args, Debug)]
pub struct BootArgs {
    /// Output directory with disk.raw, or a host recipe.
    image: String,
    /// Provisioning config (TOML, see docs/provisioning.md), passed through fw_cfg;
    /// checked before QEMU starts.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Accelerator: tcg (default, works everywhere) or kvm (only when asked).
    #[arg(long, value_enum, default_value = "tcg")]
    accel: crate::boot::qemu::Accel,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Grow the disk the guest sees to this size (e.g. 4GiB); /var fills it.
    #[arg(long, value_name = "SIZE")]
    disk_size: Option<String>,
    /// Work directory for the overlay, UEFI variables, sockets and console log.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Forward 127.0.0.1:HOST to the guest's port GUEST (repeatable), e.g. 8080:80.
    #[arg(long = "forward", value_name = "HOST:GUEST")]
    forwards: Vec<String>,
    /// Attach the test agent's virtio-serial port (agent.sock in --state).
    #[arg(long)]
    agent: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Code::BadInput as i32
            } else {
                0
            };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code_of(&e)
        }
    }
}

/// Finds a recipe: a path, or a bundled name (`base/static` -> recipes/base/static.toml).
pub use crate::recipe::find::find as find_recipe;

fn load(arg: &str, f: &FetchArgs) -> Result<Recipe> {
    let path = find_recipe(arg)?;
    let opts = crate::recipe::LoadOptions {
        allow_host_paths: f.allow_host_paths,
    };
    Recipe::load_with(&path, opts)
}

fn context(g: &Global, f: &FetchArgs) -> Result<Context> {
    Ok(Context {
        cache: Cache::open(g.cache.clone())?.with_download_limits(
            crate::fetch::limits::Limits::resolve(
                f.download_max_size,
                f.download_timeout,
                f.download_read_timeout,
            )?,
        ),
        rep: Reporter::new(g.quiet || g.json),
        offline: g.offline,
        locked: f.locked,
        artifact_dirs: f.artifact_dir.clone(),
        vendor: f.vendor.clone(),
    })
}

/// The disk image `slipway boot` starts: `DIR/disk.raw`, or a recipe's, built first.
fn boot_image(g: &Global, fetch: &FetchArgs, image: &str) -> Result<PathBuf> {
    let p = Path::new(image);
    if p.is_dir() {
        let d = crate::disk::image::disk_in(p);
        if !d.is_file() {
            return Err(exit::err(
                Code::BadInput,
                format!("{image}: no disk.raw here (build a host recipe with --format disk)"),
            ));
        }
        return Ok(d);
    }
    let r = load(image, fetch)?;
    let ctx = context(g, fetch)?;
    let out = PathBuf::from("out").join(&r.name);
    let opts = pipeline::BuildOptions {
        formats: vec![pipeline::Format::Disk],
        arches: Vec::new(),
        oci: crate::writers::oci::Options {
            compression: crate::writers::oci::Compression::Gzip,
            user: crate::writers::oci::UserChoice::Recipe,
        },
    };
    pipeline::build(&ctx, &r, &out, &opts)?;
    Ok(crate::disk::image::disk_in(&out))
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).context("writing JSON")?
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Lock {
            recipe,
            update,
            fetch,
        } => {
            let r = load(recipe, fetch)?;
            let ctx = context(g, fetch)?;
            if fetch.locked {
                let l = pipeline::ensure_lock(&ctx, &r)?;
                return report_lock(g, &r, &l, &pipeline::LockAction::UpToDate);
            }
            let (l, action) = pipeline::lock(&ctx, &r, *update)?;
            report_lock(g, &r, &l, &action)
        }
        Command::Fetch { recipe, fetch } => {
            let r = load(recipe, fetch)?;
            let ctx = context(g, fetch)?;
            let f = pipeline::fetch(&ctx, &r)?;
            if g.json {
                print_json(&serde_json::json!({
                    "recipe": r.display(),
                    "packages": f.lock.packages.len(),
                    "bytes": f.lock.total_size(),
                    "summary": f.summary,
                }))
            } else {
                println!(
                    "{}: {} packages ({:.1} MB) verified in the cache: {} cached, {} downloaded, {} vendored, {} repaired",
                    r.display(),
                    f.lock.packages.len(),
                    f.lock.total_size() as f64 / 1e6,
                    f.summary.cached,
                    f.summary.downloaded,
                    f.summary.vendored,
                    f.summary.repaired
                );
                Ok(())
            }
        }
        Command::Build {
            recipe,
            output,
            format,
            arch,
            root,
            compression,
            fetch,
        } => {
            let r = load(recipe, fetch)?;
            let ctx = context(g, fetch)?;
            let opts = pipeline::BuildOptions {
                formats: if format.is_empty() {
                    pipeline::Format::defaults(&r)
                } else {
                    format.clone()
                },
                arches: arch.clone(),
                oci: crate::writers::oci::Options {
                    compression: *compression,
                    user: if *root {
                        crate::writers::oci::UserChoice::Root
                    } else {
                        crate::writers::oci::UserChoice::Recipe
                    },
                },
            };
            let report = pipeline::build(&ctx, &r, output, &opts)?;
            if g.json {
                print_json(&serde_json::to_value(&report).context("serializing the build report")?)
            } else {
                println!("{}", report.summary_text());
                Ok(())
            }
        }
        Command::Vendor { recipe, dir, fetch } => {
            let r = load(recipe, fetch)?;
            let ctx = context(g, fetch)?;
            let bytes = pipeline::vendor(&ctx, &r, dir)?;
            println!(
                "{}: vendored into {} ({:.1} MB copied)",
                r.display(),
                dir.display(),
                bytes as f64 / 1e6
            );
            Ok(())
        }
        Command::Push(a) => crate::push::run(a, g.json, g.quiet, g.offline),
        Command::Inspect {
            recipe,
            depth,
            top,
            fetch,
        } => inspect(g, recipe, *depth, *top, fetch),
        Command::Diff { a, b, all, fetch } => diff(g, a, b, *all, fetch),
        Command::Boot(a) => boot(g, a),
        Command::Test(a) => {
            let ctx = context(g, &a.fetch)?;
            test::cli(&ctx, a)
        }
        Command::Recipes => list_recipes(g.json),
        Command::Doctor(a) if a.recipes.is_some() => {
            crate::support::run_doctor(a, g.json, &crate::recipe::find::dirs())
        }
        Command::Doctor(_) => doctor(g),
    }
}

/// `slipway inspect`.
fn inspect(g: &Global, recipe: &str, depth: usize, top: usize, fetch: &FetchArgs) -> Result<()> {
    let r = load(recipe, fetch)?;
    let ctx = context(g, fetch)?;
    let (asm, lock) = pipeline::assembled(&ctx, &r)?;
    let s = crate::inspect::sizes(&asm.tree, depth);
    if g.json {
        return print_json(&serde_json::json!({
            "recipe": r.display(), "packages": lock.packages.len(), "sizes": s,
        }));
    }
    println!(
        "{}: {} packages, {} entries, {:.2} MB",
        r.display(),
        lock.packages.len(),
        s.total.entries,
        s.total.bytes as f64 / 1e6
    );
    for (title, rows) in [("by package", &s.by_package), ("by directory", &s.by_dir)] {
        println!("\n{title}:");
        for (name, u) in rows.iter().take(top) {
            println!(
                "  {:>9.3} MB {:>6} entries  {name}",
                u.bytes as f64 / 1e6,
                u.entries
            );
        }
        if rows.len() > top {
            println!("  ... {} more (--top N)", rows.len() - top);
        }
    }
    Ok(())
}

/// `slipway diff`.
fn diff(g: &Global, a: &str, b: &str, all: bool, fetch: &FetchArgs) -> Result<()> {
    let (ra, rb) = (load(a, fetch)?, load(b, fetch)?);
    let ctx = context(g, fetch)?;
    let (xa, la) = pipeline::assembled(&ctx, &ra)?;
    let (xb, lb) = pipeline::assembled(&ctx, &rb)?;
    let d = crate::inspect::diff(&xa.tree, &la.packages, &xb.tree, &lb.packages);
    if g.json {
        return print_json(&serde_json::to_value(&d).context("serializing the diff")?);
    }
    println!(
        "{} -> {}: {:.2} MB -> {:.2} MB",
        ra.display(),
        rb.display(),
        d.bytes.0 as f64 / 1e6,
        d.bytes.1 as f64 / 1e6
    );
    println!("packages ({} differ):", d.packages.len());
    for p in &d.packages {
        match (&p.from, &p.to) {
            (None, Some(v)) => println!("  + {} {v}", p.name),
            (Some(v), None) => println!("  - {} {v}", p.name),
            (Some(x), Some(y)) => println!("  ~ {} {x} -> {y}", p.name),
            (None, None) => {}
        }
    }
    let mut files = d.files.clone();
    let count = |c: &str| files.iter().filter(|f| f.change == c).count();
    println!(
        "files: {} added, {} removed, {} changed content, {} changed metadata or type",
        count("added"),
        count("removed"),
        count("content"),
        count("metadata") + count("type")
    );
    if !all {
        files.sort_by_key(|f| std::cmp::Reverse(f.from_bytes.abs_diff(f.to_bytes)));
        files.truncate(20);
    }
    for f in &files {
        println!(
            "  {:<8} {:>10} -> {:<10} {}",
            f.change, f.from_bytes, f.to_bytes, f.path
        );
    }
    Ok(())
}

/// `slipway boot`.
fn boot(g: &Global, a: &BootArgs) -> Result<()> {
    let disk = boot_image(g, &a.fetch, &a.image)?;
    let mut spec = crate::boot::qemu::VmSpec::new(&disk);
    spec.accel = a.accel;
    spec.memory_mib = a.memory;
    spec.cpus = a.cpus;
    spec.agent = a.agent;
    spec.no_reboot = false;
    if let Some(s) = &a.disk_size {
        let size = crate::recipe::raw::Size::try_from(s.clone())
            .map_err(|e| exit::err(Code::BadInput, format!("--disk-size: {e}")))?;
        spec.disk_size = Some(size.0);
    }
    for f in &a.forwards {
        let (h, gp) = f
            .split_once(':')
            .and_then(|(h, gp)| Some((h.parse().ok()?, gp.parse().ok()?)))
            .ok_or_else(|| {
                exit::err(
                    Code::BadInput,
                    format!("--forward {f}: expected HOST:GUEST ports, e.g. 8080:80"),
                )
            })?;
        spec.host_forwards.push(crate::boot::qemu::HostForward {
            host_port: h,
            guest_port: gp,
        });
    }
    if let Some(c) = &a.config {
        crate::boot::check_config(c).map_err(|e| exit::err(Code::BadInput, format!("{e:#}")))?;
        spec.fw_cfg_config = Some(c.clone());
    }
    crate::boot::qemu::check_host().map_err(|e| exit::err(Code::BadInput, format!("{e:#}")))?;
    let tmp;
    let dir = match &a.state {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("slipway-boot-")
                .tempdir()
                .context("creating a state directory")?;
            tmp.path().to_path_buf()
        }
    };
    eprintln!(
        "booting {} (state in {}; quit with Ctrl-A X)",
        disk.display(),
        dir.display()
    );
    let st = crate::boot::qemu::run_interactive(&spec, &dir)?;
    if !st.success() {
        anyhow::bail!("qemu-system-x86_64 exited with {st}");
    }
    Ok(())
}

fn report_lock(
    g: &Global,
    r: &Recipe,
    l: &crate::lock::Lock,
    action: &pipeline::LockAction,
) -> Result<()> {
    if g.json {
        return print_json(&serde_json::json!({
            "recipe": r.display(),
            "lock": r.lock_path().display().to_string(),
            "action": action,
            "packages": l.packages.len(),
            "bytes": l.total_size(),
            "cut": l.cuts.iter().map(|c| format!("{} -> {} ({})", c.from, c.to, c.relation)).collect::<Vec<_>>(),
        }));
    }
    let verb = match action {
        pipeline::LockAction::Written => "wrote",
        pipeline::LockAction::UpToDate => "up to date:",
    };
    println!(
        "{verb} {} ({} packages, {:.1} MB)",
        r.lock_path().display(),
        l.packages.len(),
        l.total_size() as f64 / 1e6
    );
    for c in &l.cuts {
        println!("  cut: {} -> {} ({})", c.from, c.to, c.relation);
    }
    Ok(())
}

fn list_recipes(json: bool) -> Result<()> {
    let mut rows = Vec::new();
    for dir in crate::recipe::find::dirs() {
        if !dir.is_dir() {
            continue;
        }
        for e in walkdir::WalkDir::new(&dir).sort_by_file_name() {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            if e.path().extension().is_some_and(|x| x == "toml") {
                let name = e
                    .path()
                    .strip_prefix(&dir)
                    .unwrap_or(e.path())
                    .with_extension("");
                let (kind, desc) = match Recipe::load(e.path()) {
                    Ok(r) => (format!("{:?}", r.kind).to_lowercase(), r.description),
                    Err(err) => ("invalid".into(), format!("{err:#}")),
                };
                rows.push((
                    name.display().to_string(),
                    kind,
                    desc,
                    e.path().display().to_string(),
                ));
            }
        }
        break;
    }
    if json {
        return print_json(&serde_json::json!(rows
            .iter()
            .map(|(n, k, d, p)| serde_json::json!({"name": n, "kind": k, "description": d, "path": p}))
            .collect::<Vec<_>>()));
    }
    for (n, k, d, _) in rows {
        println!("{n:<24} {k:<6} {d}");
    }
    Ok(())
}

fn doctor(g: &Global) -> Result<()> {
    let mut ok = true;
    let mut rows = Vec::new();
    for (prog, pkg, what) in crate::tool::host_tools() {
        let found = crate::tool::which(prog);
        if found.is_none() && (prog == "apt-get" || prog == "gpgv") {
            ok = false;
        }
        rows.push(serde_json::json!({"tool": prog, "package": pkg, "for": what, "path": found.map(|p| p.display().to_string())}));
    }
    let keyring = Path::new(crate::apt::KEYRING).exists();
    ok &= keyring;
    let mirror = crate::recipe::mirror::from_host(Path::new("/etc/apt"));
    let cache = Cache::open(g.cache.clone());
    let root = nix::unistd::geteuid().is_root();
    if g.json {
        print_json(&serde_json::json!({
            "tools": rows,
            "keyring": keyring,
            "mirror": mirror.as_ref().ok().map(|m| m.archive.clone()),
            "cache": cache.as_ref().ok().map(|c| c.root().display().to_string()),
            "root": root,
        }))?;
    } else {
        println!(
            "{:<22} {:<18} {:<8} used for",
            "tool", "Debian package", "status"
        );
        for r in &rows {
            println!(
                "{:<22} {:<18} {:<8} {}",
                r["tool"].as_str().unwrap_or(""),
                r["package"].as_str().unwrap_or(""),
                if r["path"].is_null() { "MISSING" } else { "ok" },
                r["for"].as_str().unwrap_or("")
            );
        }
        println!(
            "root      {} (needed for: building host disk images (--format disk, qcow2, vhd, vmdk, gce), whose \
             root file system is staged with its owners; not needed for: lock, fetch, base \
             images, tar/dir outputs, boot, test)",
            if root { "yes" } else { "no" }
        );
        println!(
            "keyring   {} ({})",
            crate::apt::KEYRING,
            if keyring {
                "ok"
            } else {
                "MISSING: install debian-archive-keyring"
            }
        );
        match &mirror {
            Ok(m) => println!("mirror    {} (security: {})", m.archive, m.security),
            Err(e) => println!("mirror    none found: {e:#}"),
        }
        match &cache {
            Ok(c) => println!("cache     {}", c.root().display()),
            Err(e) => println!("cache     unusable: {e:#}"),
        }
    }
    if ok {
        Ok(())
    } else {
        Err(exit::err(
            Code::Failure,
            "the host lacks what slipway always needs (see above)",
        ))
    }
}
