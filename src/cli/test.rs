//! `slipway test`: discover the definitions, build the images they need, boot them one
//! at a time, and report (text, and JUnit when asked).

use crate::boot::qemu::Accel;
use crate::pipeline::Context as Pipeline;
use crate::testing::fixtures::{self, Cache};
use crate::testing::runner::{build_artifacts, discover, run_all, summary, Options};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// `slipway test`'s arguments.
#[derive(clap::Args, Debug)]
pub struct CliArgs {
    /// Run only the tests whose name contains PATTERN.
    pub pattern: Option<String>,
    /// The directory of test definitions.
    #[arg(long, value_name = "DIR", default_value = "qemu")]
    pub dir: PathBuf,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// VMs at once. Keep 1 on 2 cores and in CI: parallel emulated guests stall.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Accelerator: tcg (default) or kvm (only when asked; never probed).
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: Accel,
    /// Where serial logs, built artifacts and copied-out files go.
    #[arg(long, value_name = "DIR", default_value = "out/test")]
    pub output: PathBuf,
    /// Keep each test's overlay, UEFI variables and drives in the output directory.
    #[arg(long)]
    pub keep: bool,
    /// Take the images from this fixture cache, or build them into it: the cache the
    /// cargo tests share (default `$SLIPWAY_FIXTURES`; without either, images are built
    /// into OUTPUT/artifacts/ for this run only).
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Build options for the images the tests need.
    #[command(flatten)]
    pub fetch: super::FetchArgs,
}

/// Runs `slipway test`: discover, build, run, report. A failed test is an error (exit 1)
/// after the summary and the JUnit file are written.
pub fn cli(ctx: &Pipeline, a: &CliArgs) -> Result<()> {
    let opts = Options {
        dir: a.dir.clone(),
        pattern: a.pattern.clone(),
        output: a.output.clone(),
        jobs: a.jobs.max(1),
        accel: a.accel,
        keep: a.keep,
    };
    let defs = discover(&opts.dir, opts.pattern.as_deref())
        .map_err(|e| crate::exit::err(crate::exit::Code::BadInput, format!("{e:#}")))?;
    if defs.is_empty() {
        return Err(crate::exit::err(
            crate::exit::Code::BadInput,
            format!(
                "no test in {} matches {:?}",
                opts.dir.display(),
                opts.pattern.as_deref().unwrap_or("")
            ),
        ));
    }
    crate::boot::qemu::check_host()
        .map_err(|e| crate::exit::err(crate::exit::Code::BadInput, format!("{e:#}")))?;
    let dir = a
        .fixtures
        .clone()
        .or_else(|| std::env::var_os(fixtures::DIR_ENV).map(PathBuf::from));
    let cache = match dir {
        Some(d) => {
            let exe = std::env::current_exe().context("finding the slipway binary")?;
            Some(Cache::open(&d, &exe)?)
        }
        None => None,
    };
    let art = build_artifacts(ctx, &defs, &opts.output, cache.as_ref())?;
    let results = run_all(&defs, &art, &opts);
    print!("{}", summary(&results));
    if let Some(j) = &a.junit {
        crate::testing::junit::write(j, &results)?;
        println!("JUnit report: {}", j.display());
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    if failed > 0 {
        bail!("{failed} of {} tests failed", results.len());
    }
    Ok(())
}
