//! The host image's manifest (`manifest.json` beside the disk): every artifact with its
//! size and sha256, the partitions, the root hash and command line, and the package
//! list from the lock. Consumes the disk stage's [`HostDisk`] and the outputs written;
//! produces the JSON an upload script or an auditor reads without opening the image.
//!
//! `measured_boot` holds the PCR 11 values (SHA-256 bank) the UKI gives, by phase
//! ([`crate::disk::pcr`]), computed from the `uki.efi` written; `secure_boot` names the
//! signing certificate by digest (the key never appears).

use crate::disk::image::{HostDisk, PartitionInfo};
use crate::lock::Lock;
use crate::recipe::Recipe;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// The manifest format's version.
pub const VERSION: u32 = 1;

/// One file of the output directory.
#[derive(Debug, Serialize)]
pub struct Artifact {
    /// File name in the output directory.
    pub name: String,
    /// What it is (`disk-raw`, `qcow2`, `uki`, ...).
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 (hex).
    pub sha256: String,
}

/// One package of the image.
#[derive(Debug, Serialize)]
pub struct Package {
    /// Binary package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// Source package.
    pub source: String,
    /// sha256 of the .deb.
    pub sha256: String,
}

/// The whole manifest.
#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    /// [`VERSION`].
    pub manifest_version: u32,
    /// Image name.
    pub image: &'a str,
    /// Image version.
    pub version: &'a str,
    /// Description.
    pub description: &'a str,
    /// Debian release.
    pub release: &'a str,
    /// Debian architecture.
    pub architecture: &'a str,
    /// Boot mode clouds must register the image with.
    pub boot_mode: &'static str,
    /// Kernel release.
    pub kernel: &'a str,
    /// dm-verity root hash.
    pub root_hash: &'a str,
    /// Kernel command line (inside the UKI).
    pub cmdline: &'a str,
    /// Root file system kind.
    pub root_fs: &'a str,
    /// SOURCE_DATE_EPOCH of the build.
    pub source_date_epoch: u64,
    /// Disk size in bytes.
    pub disk_size: u64,
    /// Partitions.
    pub partitions: &'a [PartitionInfo],
    /// The modules the initramfs loads.
    pub initramfs_modules: &'a [String],
    /// Output files.
    pub artifacts: Vec<Artifact>,
    /// Secure Boot: whether the EFI binaries are signed, and by which certificate.
    pub secure_boot: SecureBoot,
    /// PCR 11 by boot phase.
    pub measured_boot: MeasuredBoot,
    /// Packages, from the lock.
    pub packages: Vec<Package>,
}

/// The manifest's `secure_boot`.
#[derive(Debug, Serialize)]
pub struct SecureBoot {
    /// The EFI binaries carry an Authenticode signature.
    pub signed: bool,
    /// sha256 of the signing certificate (DER), when signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

/// The manifest's `measured_boot`.
#[derive(Debug, Serialize)]
pub struct MeasuredBoot {
    /// The PCR (11).
    pub pcr: u32,
    /// The PCR bank (`sha256`).
    pub bank: &'static str,
    /// The EFI stub that measures (its `.sdmagic`, e.g. `systemd-stub 257.13-1~deb13u1`):
    /// the values follow systemd 257's stub.
    pub stub: Option<String>,
    /// Its value after systemd-stub (`""`) and after each pcrphase word, in boot order.
    pub phases: Vec<crate::disk::pcr::Phase>,
}

/// The stub's own name from its `.sdmagic` section (`#### LoaderInfo: NAME ####`).
fn stub_name(pe: &[u8]) -> Option<String> {
    let info = crate::disk::uki::pe_info(pe).ok()?;
    let magic = String::from_utf8_lossy(info.section_data(pe, ".sdmagic")?).into_owned();
    let name = magic
        .split("LoaderInfo:")
        .nth(1)?
        .split("####")
        .next()?
        .trim();
    Some(name.trim_end_matches('\0').to_string())
}

/// `measured_boot` and `secure_boot` of the UKI among `outputs`.
fn boot_chain(r: &Recipe, outputs: &[crate::output::Output]) -> Result<(SecureBoot, MeasuredBoot)> {
    let uki = outputs
        .iter()
        .find(|o| o.kind == "uki")
        .context("the disk stage wrote no uki.efi")?;
    let pe = std::fs::read(&uki.path).with_context(|| format!("reading {}", uki.path))?;
    let value = crate::disk::pcr::uki_value_of_pe(&pe)?;
    let sb = SecureBoot {
        signed: r.secure_boot.is_some(),
        certificate_sha256: match &r.secure_boot {
            Some(sb) => Some(crate::disk::sign::cert_digest(sb)?),
            None => None,
        },
    };
    Ok((
        sb,
        MeasuredBoot {
            pcr: crate::disk::pcr::PCR,
            bank: "sha256",
            stub: stub_name(&pe),
            phases: crate::disk::pcr::phase_list(&value),
        },
    ))
}

/// Writes `manifest.json` into `out` (atomically) and returns its path.
pub fn write(
    r: &Recipe,
    lock: &Lock,
    disk: &HostDisk,
    epoch: u64,
    outputs: &[crate::output::Output],
    out: &Path,
) -> Result<std::path::PathBuf> {
    let artifacts = outputs
        .iter()
        .filter(|o| !o.sha256.is_empty())
        .map(|o| Artifact {
            name: Path::new(&o.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: o.kind.clone(),
            size: o.size,
            sha256: o.sha256.clone(),
        })
        .collect();
    let packages = lock
        .packages
        .iter()
        .map(|p| Package {
            name: p.name.clone(),
            version: p.version.clone(),
            architecture: p.architecture.clone(),
            source: p.source.clone(),
            sha256: p.sha256.clone(),
        })
        .collect();
    let (secure_boot, measured_boot) = boot_chain(r, outputs)?;
    let m = Manifest {
        manifest_version: VERSION,
        image: &r.name,
        version: &r.version,
        description: &r.description,
        release: &r.debian.release,
        architecture: &r.debian.architecture,
        boot_mode: "uefi",
        kernel: &disk.kernel,
        root_hash: &disk.root_hash,
        cmdline: &disk.cmdline,
        root_fs: &disk.root_fs,
        source_date_epoch: epoch,
        disk_size: disk.disk_size,
        partitions: &disk.partitions,
        initramfs_modules: &disk.initramfs_modules,
        artifacts,
        secure_boot,
        measured_boot,
        packages,
    };
    let path = out.join("manifest.json");
    let json = serde_json::to_vec_pretty(&m).context("serializing the manifest")?;
    crate::io::atomic::write(&path, &json)?;
    Ok(path)
}
