//! Booting images and talking to them: QEMU ([`qemu`]: a disk under OVMF, or a kernel
//! and initramfs booted directly; every boot counted in `$SLIPWAY_BOOT_LOG` and
//! serialised across processes by `$SLIPWAY_VM_LOCK`), what goes around it (the UEFI
//! [`firmware`], extra [`drives`], a software [`tpm`]), its monitor ([`qmp`]) and the
//! guest's own reboots ([`events`]), and [`agent`], the host side of the in-image test
//! agent (agent/ crate, `slipway-agent test-agent`).

pub mod agent;
pub mod drives;
pub mod events;
pub mod firmware;
pub mod qemu;
pub mod qmp;
pub mod tpm;

use anyhow::Result;
use std::path::Path;

/// The provisioning agent binary (`agent/`), found like slipway-init.
pub fn find_agent() -> Result<std::path::PathBuf> {
    crate::tool::bundled_binary("slipway-agent", "SLIPWAY_AGENT")
}

/// Checks a provisioning config with the agent's own validator (`slipway-agent check`),
/// so a config that the node would reject fails before QEMU starts.
pub fn check_config(path: &Path) -> Result<()> {
    let agent = find_agent()?;
    crate::tool::Tool::new(
        format!("checking {} with the agent's validator", path.display()),
        agent,
    )
    .arg("check")
    .arg(path)
    .run()?;
    Ok(())
}
