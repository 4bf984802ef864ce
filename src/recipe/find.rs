//! Where a recipe named on the command line is: a file, or a bundled recipe by name.

use crate::exit::{self, Code};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The recipe file for `arg`: a path to a file, or the name of a bundled recipe
/// (`base/static`), looked up in `$SLIPWAY_RECIPES`, `./recipes` and the checkout the
/// binary was built in.
pub fn find(arg: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let name = arg.trim_end_matches(".toml");
    for dir in dirs() {
        let c = dir.join(format!("{name}.toml"));
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(exit::err(
        Code::BadInput,
        format!("{arg}: no such recipe file or bundled recipe (see `slipway recipes`)"),
    ))
}

pub fn dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("SLIPWAY_RECIPES") {
        v.push(PathBuf::from(d));
    }
    v.push(PathBuf::from("recipes"));
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/slipway inside a checkout.
        if let Some(root) = exe
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.parent())
        {
            v.push(root.join("recipes"));
        }
    }
    v
}
