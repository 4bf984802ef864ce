//! The command line: parses arguments (args.rs), sets up the cache and progress output,
//! and calls the library, one file per command. Only this layer prints results and maps
//! errors to exit codes; the library returns data.

mod args;
mod boot;
mod build;
mod diff;
mod doctor;
mod fetch;
mod inspect;
mod iso;
mod lock;
mod netboot;
mod push;
mod recipes;
mod test;
mod vendor;

pub use args::Cli;

use crate::exit::{self, Code};
use crate::fetch::cache::Cache;
use crate::io::progress::Reporter;
use crate::pipeline::Context;
use crate::recipe::Recipe;
use anyhow::{Context as _, Result};
use args::{Command, FetchArgs, Global};
use clap::Parser;

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

/// Runs one command.
fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Lock(a) => lock::run(g, a),
        Command::Fetch(a) => fetch::run(g, a),
        Command::Build(a) => build::run(g, a),
        Command::Vendor(a) => vendor::run(g, a),
        Command::Push(a) => push::run(g, a),
        Command::Inspect(a) => inspect::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Boot(a) => boot::run(g, a),
        Command::Test(a) => test::run(g, a),
        Command::Iso(a) => iso::run(g, a),
        Command::Netboot(a) => netboot::run(g, a),
        Command::Recipes => recipes::run(g),
        Command::Doctor(a) => doctor::run(g, a),
    }
}

/// Loads the recipe `arg` names: a path, or a bundled name (`base/static`).
fn load(arg: &str, f: &FetchArgs) -> Result<Recipe> {
    let path = crate::recipe::find::find(arg)?;
    let opts = crate::recipe::LoadOptions {
        allow_host_paths: f.allow_host_paths,
    };
    Recipe::load_with(&path, opts)
}

/// The pipeline's context for the global options and `f`.
fn context(g: &Global, f: &FetchArgs) -> Result<Context> {
    let cache =
        Cache::open(g.cache.clone())?.with_download_limits(crate::fetch::limits::Limits::resolve(
            f.download_max_size,
            f.download_timeout,
            f.download_read_timeout,
        )?);
    // The registry cache its flags, environment or config file name; none with
    // `--offline` (a registry is network).
    let cache = if g.offline {
        cache
    } else {
        let flags = crate::remote::config::Flags {
            from: f.cache_from.clone(),
            to: f.cache_to.clone(),
            signing_key: f.cache_signing_key.clone(),
            trusted_keys: f.cache_trusted_key.clone(),
        };
        let remote = crate::remote::Remote::new(crate::remote::config::resolve(&flags)?);
        cache.with_registry(remote)
    };
    Ok(Context {
        cache,
        rep: Reporter::new(g.quiet || g.json),
        offline: g.offline,
        locked: f.locked,
        artifact_dirs: f.artifact_dir.clone(),
        vendor: f.vendor.clone(),
    })
}

/// Prints `v` as pretty JSON on stdout (`--json`).
fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).context("writing JSON")?
    );
    Ok(())
}

/// Prints a bytes count in megabytes, as every summary line does.
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
