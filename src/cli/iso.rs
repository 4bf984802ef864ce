//! `slipway iso`: the installer ISO's embed area (`embed-config`, `show-config`).

use super::args::{Global, IsoCommand};
use crate::exit::{self, Code};
use crate::formats::iso::embed;
use anyhow::{Context as _, Result};
use std::io::Write as _;
use std::path::Path;

/// Runs `slipway iso ...`.
pub fn run(g: &Global, c: &IsoCommand) -> Result<()> {
    match c {
        IsoCommand::EmbedConfig(a) => {
            let config = checked_config(&a.config)?;
            let at = embed::patch(&a.iso, &config)?;
            if g.json {
                return super::print_json(&serde_json::json!({
                    "iso": a.iso.display().to_string(),
                    "offset": at,
                    "config-bytes": config.len(),
                }));
            }
            if !g.quiet {
                eprintln!(
                    "{}: embedded {} ({} bytes) at byte {at}",
                    a.iso.display(),
                    a.config.display(),
                    config.len()
                );
            }
            Ok(())
        }
        IsoCommand::ShowConfig(a) => {
            let config = embed::read(&a.iso)?;
            std::io::stdout()
                .write_all(&config)
                .context("writing the config to stdout")
        }
    }
}

/// The config at `path`, read and checked as the node would: too large for the embed
/// area, or refused by the agent's validator, is bad input (exit 2).
pub(super) fn checked_config(path: &Path) -> Result<Vec<u8>> {
    let config = std::fs::read(path).map_err(|e| {
        exit::with_code(
            Code::BadInput,
            anyhow::Error::new(e).context(format!("reading {}", path.display())),
        )
    })?;
    if config.len() > embed::MAX_CONFIG {
        return Err(exit::err(
            Code::BadInput,
            format!(
                "{}: {} bytes; the ISO's embed area holds a config of at most {} bytes",
                path.display(),
                config.len(),
                embed::MAX_CONFIG
            ),
        ));
    }
    crate::boot::find_agent()?;
    crate::boot::check_config(path).map_err(|e| exit::with_code(Code::BadInput, e))?;
    Ok(config)
}
