//! `slipway test`: discover the definitions, build the images they need, boot them one
//! at a time, and report (text, and JUnit when asked).

use super::args::{Global, TestArgs};
use super::context;
use crate::exit::{self, Code, WithCode};
use crate::testing::fixtures::{self, Cache};
use crate::testing::runner::{build_artifacts, discover, run_all, summary, Options};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Runs `slipway test`: discover, build, run, report. A failed test is an error (exit 1)
/// after the summary and the JUnit file are written.
pub fn run(g: &Global, a: &TestArgs) -> Result<()> {
    let ctx = context(g, &a.fetch)?;
    let opts = Options {
        dir: a.dir.clone(),
        pattern: a.pattern.clone(),
        output: a.output.clone(),
        jobs: a.jobs.max(1),
        accel: a.accel,
        keep: a.keep,
    };
    let defs = discover(&opts.dir, opts.pattern.as_deref()).with_code(Code::BadInput)?;
    if defs.is_empty() {
        return Err(exit::err(
            Code::BadInput,
            format!(
                "no test in {} matches {:?}",
                opts.dir.display(),
                opts.pattern.as_deref().unwrap_or("")
            ),
        ));
    }
    crate::boot::qemu::check_host().with_code(Code::BadInput)?;
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
    let art = build_artifacts(&ctx, &defs, &opts.output, cache.as_ref())?;
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
