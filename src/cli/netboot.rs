//! `slipway netboot`: per-machine config archives for network-booted nodes.

use super::args::{Global, NetbootCommand};
use anyhow::Result;

/// Runs `slipway netboot ...`.
pub fn run(g: &Global, c: &NetbootCommand) -> Result<()> {
    match c {
        NetbootCommand::ConfigCpio(a) => {
            let config = super::iso::checked_config(&a.config)?;
            // Reproducible: SOURCE_DATE_EPOCH when set, else 0 (never the clock).
            let epoch = std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let o = crate::formats::netboot::config_cpio(&config, epoch, &a.output)?;
            if g.json {
                return super::print_json(&o);
            }
            if !g.quiet {
                eprintln!("wrote {} ({} bytes, sha256 {})", o.path, o.size, o.sha256);
            }
            Ok(())
        }
    }
}
