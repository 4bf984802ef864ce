//! Booting images and talking to them: QEMU ([`qemu`]: a disk under OVMF, or a kernel
//! and initramfs booted directly; every boot counted in `$SLIPWAY_BOOT_LOG` and
//! serialised across processes by `$SLIPWAY_VM_LOCK`), its monitor ([`qmp`]), and
//! [`agent`], the host side of the in-image test agent (agent/ crate,
//! `slipway-agent test-agent`).

pub mod agent;
pub mod qemu;
pub mod qmp;

use anyhow::{bail, Context, Result};
use std::path::Path;

/// The provisioning agent binary (`agent/`), found like slipway-init.
pub fn find_agent() -> Result<std::path::PathBuf> {
    crate::tool::bundled_binary("slipway-agent", "SLIPWAY_AGENT")
}

/// Checks a provisioning config with the agent's own validator (`slipway-agent check`),
/// so a config that the node would reject fails before QEMU starts.
pub fn check_config(path: &Path) -> Result<()> {
    let agent = find_agent()?;
    let out = std::process::Command::new(&agent)
        .arg("check")
        .arg(path)
        .output()
        .with_context(|| format!("running {} check", agent.display()))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
