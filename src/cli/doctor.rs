//! `slipway doctor`: the host check (tools and their Debian packages, keyring, mirror,
//! cache), or with `--recipes` the end of life of every pin ([`crate::support`]).

use super::args::{DoctorArgs, Global};
use super::print_json;
use crate::exit::{self, Code, WithCode};
use crate::fetch::cache::Cache;
use crate::support::{self, Date, Table};
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Runs `slipway doctor`; exits 1 when the host lacks what slipway always needs, or when
/// a pin is supported by no one.
pub fn run(g: &Global, a: &DoctorArgs) -> Result<()> {
    match &a.recipes {
        Some(named) => recipes(g, a, named),
        None => host(g),
    }
}

/// `slipway doctor --recipes`: the recipes named (default: the first directory of the
/// bundled recipes that exists) checked against the end-of-life table.
fn recipes(g: &Global, a: &DoctorArgs, named: &[std::path::PathBuf]) -> Result<()> {
    let today = match &a.today {
        Some(s) => s
            .parse::<Date>()
            .context("--today")
            .with_code(Code::BadInput)?,
        None => Date::today(),
    };
    let table = match &a.support_table {
        Some(p) => Table::load(p).with_code(Code::BadInput)?,
        None => Table::bundled()?,
    };
    let paths = if named.is_empty() {
        let dirs = crate::recipe::find::dirs();
        let dir = dirs
            .iter()
            .find(|d| d.is_dir())
            .context("no recipe directory found (name recipes, or set SLIPWAY_RECIPES)")?;
        vec![dir.clone()]
    } else {
        named.to_vec()
    };
    let findings = support::check_files(&table, &paths, today)?;
    if g.json {
        print_json(&support::to_json(&findings, today))?;
    } else {
        print!("{}", support::render(&findings, today));
    }
    let warned = findings.iter().filter(|f| f.status.warns()).count();
    if warned > 0 {
        return Err(exit::err(
            Code::Failure,
            format!("{warned} pin(s) supported by no one on {today} (WARN above)"),
        ));
    }
    Ok(())
}

/// What the host check found.
struct Host {
    /// One row per tool: tool, package, for, path (null when missing).
    tools: Vec<Value>,
    /// Whether Debian's archive keyring is there.
    keyring: bool,
    mirror: Result<crate::recipe::mirror::Mirrors>,
    cache: Result<Cache>,
    root: bool,
}

impl Host {
    /// Looks at the host; `cache` is `--cache`.
    fn probe(cache: Option<std::path::PathBuf>) -> Host {
        let tools = crate::tool::host_tools()
            .into_iter()
            .map(|(prog, pkg, what)| {
                let found = crate::tool::which(prog);
                json!({"tool": prog, "package": pkg, "for": what, "path": found.map(|p| p.display().to_string())})
            })
            .collect();
        Host {
            tools,
            keyring: Path::new(crate::apt::KEYRING).exists(),
            mirror: crate::recipe::mirror::from_host(Path::new("/etc/apt")),
            cache: Cache::open(cache),
            root: nix::unistd::geteuid().is_root(),
        }
    }

    /// Whether slipway can work at all: apt-get, gpgv and the keyring are there.
    fn usable(&self) -> bool {
        let missing = |t: &Value| t["path"].is_null();
        self.keyring
            && !self
                .tools
                .iter()
                .any(|t| missing(t) && (t["tool"] == "apt-get" || t["tool"] == "gpgv"))
    }
}

/// The host check.
fn host(g: &Global) -> Result<()> {
    let h = Host::probe(g.cache.clone());
    if g.json {
        print_json(&json!({
            "tools": h.tools,
            "keyring": h.keyring,
            "mirror": h.mirror.as_ref().ok().map(|m| m.archive.clone()),
            "cache": h.cache.as_ref().ok().map(|c| c.root().display().to_string()),
            "root": h.root,
        }))?;
    } else {
        print_host(&h);
    }
    if h.usable() {
        Ok(())
    } else {
        Err(exit::err(
            Code::Failure,
            "the host lacks what slipway always needs (see above)",
        ))
    }
}

/// The host check as a table of tools and a line each for root, keyring, mirror, cache.
fn print_host(h: &Host) {
    println!(
        "{:<22} {:<18} {:<8} used for",
        "tool", "Debian package", "status"
    );
    for r in &h.tools {
        println!(
            "{:<22} {:<18} {:<8} {}",
            r["tool"].as_str().unwrap_or(""),
            r["package"].as_str().unwrap_or(""),
            if r["path"].is_null() { "MISSING" } else { "ok" },
            r["for"].as_str().unwrap_or("")
        );
    }
    println!(
        "root      {} (needed only for host disks with [disk] root-fs = \"squashfs-xz\", whose root \
         mksquashfs reads from a tree staged with its owners; not needed for anything else: \
         lock, fetch, base images, host disks with the default squashfs root, boot, test)",
        if h.root { "yes" } else { "no" }
    );
    println!(
        "keyring   {} ({})",
        crate::apt::KEYRING,
        if h.keyring {
            "ok"
        } else {
            "MISSING: install debian-archive-keyring"
        }
    );
    match &h.mirror {
        Ok(m) => println!("mirror    {} (security: {})", m.archive, m.security),
        Err(e) => println!("mirror    none found: {e:#}"),
    }
    match &h.cache {
        Ok(c) => println!("cache     {}", c.root().display()),
        Err(e) => println!("cache     unusable: {e:#}"),
    }
}
