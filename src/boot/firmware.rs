//! UEFI firmware for a VM: consumes a [`Firmware`] choice and an optional variable-store
//! template, produces the OVMF files and QEMU flags. `uefi` is OVMF without Secure Boot;
//! `uefi-secure` is Debian's Secure Boot build (the `secboot` code, which needs SMM and a
//! secure pflash) with the snakeoil variable store (PK, KEK and db hold the snakeoil
//! certificate `/usr/share/ovmf/PkKek-1-snakeoil.pem`; Secure Boot on). A custom store
//! (keys enrolled with virt-fw-vars) replaces the template.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// OVMF's Secure Boot code (Debian's `OVMF_CODE_4M.snakeoil.fd` links to it).
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// The snakeoil variable store: Secure Boot enabled, snakeoil keys enrolled.
pub const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";

/// Which UEFI firmware boots the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// OVMF without Secure Boot.
    #[default]
    Uefi,
    /// OVMF with Secure Boot enforced (SMM, secure pflash, snakeoil keys by default).
    UefiSecure,
}

impl Firmware {
    /// The code image (read-only pflash unit 0).
    pub fn code(self) -> &'static str {
        match self {
            Firmware::Uefi => super::qemu::OVMF_CODE,
            Firmware::UefiSecure => OVMF_CODE_SECURE,
        }
    }

    /// The variable store copied into a new work directory, unless the spec names one.
    pub fn vars_template(self) -> &'static str {
        match self {
            Firmware::Uefi => super::qemu::OVMF_VARS,
            Firmware::UefiSecure => OVMF_VARS_SNAKEOIL,
        }
    }

    /// QEMU's `-machine` value.
    pub fn machine(self) -> &'static str {
        match self {
            Firmware::Uefi => "q35",
            // The secboot build keeps its variables in SMM-only flash.
            Firmware::UefiSecure => "q35,smm=on",
        }
    }

    /// Flags besides the pflash drives.
    pub fn flags(self) -> Vec<String> {
        match self {
            Firmware::Uefi => Vec::new(),
            Firmware::UefiSecure => vec![
                "-global".into(),
                "driver=cfi.pflash01,property=secure,value=on".into(),
            ],
        }
    }

    /// The name definitions use.
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Uefi => "uefi",
            Firmware::UefiSecure => "uefi-secure",
        }
    }
}

/// The variable store a VM starts from: `custom`, or the firmware's template.
pub fn vars_template(firmware: Firmware, custom: Option<&Path>) -> PathBuf {
    custom.map_or_else(
        || PathBuf::from(firmware.vars_template()),
        Path::to_path_buf,
    )
}

/// Checks the firmware files exist (Debian: ovmf).
pub fn check(firmware: Firmware, custom_vars: Option<&Path>) -> Result<()> {
    let vars = vars_template(firmware, custom_vars);
    for f in [Path::new(firmware.code()), vars.as_path()] {
        if !f.is_file() {
            bail!(
                "{} not found ({})",
                f.display(),
                if custom_vars == Some(f) {
                    "the VM's UEFI variable store"
                } else {
                    "Debian: ovmf"
                }
            );
        }
    }
    Ok(())
}
