//! The JSON beside each cloud disk file (`disk.vhd.json`, ...): consumes the recipe,
//! the disk stage's facts and one written output; produces everything an upload
//! script needs to register the image on the target platform without opening the
//! disk or the manifest: boot mode, architecture in the platform's spelling, a name
//! that every platform accepts, the description, the root hash, size and sha256; for a
//! signed image, the Secure Boot certificate to enroll as the platform's custom keys.
//! `docs/clouds.md` shows the upload and register commands that read it.

use crate::disk::image::HostDisk;
use crate::recipe::Recipe;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The sidecar format's version.
pub const VERSION: u32 = 1;

/// The platform-specific values, spelled as each platform's CLI takes them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "platform")]
pub enum Register {
    /// AWS: `ec2 import-snapshot` then `ec2 register-image`.
    Aws {
        /// `--disk-container Format=` (`RAW` or `VMDK`).
        disk_container_format: &'static str,
        /// `--architecture` (`x86_64`, `arm64`).
        architecture: &'static str,
        /// `--boot-mode`.
        boot_mode: &'static str,
        /// `--ena-support`.
        ena_support: bool,
        /// `--root-device-name`.
        root_device_name: &'static str,
    },
    /// GCE: `gcloud compute images create`.
    Gce {
        /// `--architecture` (`X86_64`, `ARM64`).
        architecture: &'static str,
        /// `--guest-os-features`.
        guest_os_features: &'static [&'static str],
    },
    /// Azure: page-blob upload, then `az image create` or a gallery image version.
    Azure {
        /// `--hyper-v-generation` (V2 boots UEFI).
        hyper_v_generation: &'static str,
        /// `--os-type`.
        os_type: &'static str,
        /// The gallery image definition's `--architecture` (`x64`, `Arm64`).
        architecture: &'static str,
        /// Blob type the VHD must be uploaded as.
        blob_type: &'static str,
    },
    /// OpenStack / local QEMU: `openstack image create`.
    Openstack {
        /// `--property hw_firmware_type=`.
        hw_firmware_type: &'static str,
        /// `--property architecture=`.
        architecture: &'static str,
        /// `--disk-format`.
        disk_format: &'static str,
    },
}

/// The whole sidecar.
#[derive(Debug, Serialize)]
pub struct Sidecar<'a> {
    /// [`VERSION`].
    pub sidecar_version: u32,
    /// The disk file, beside this one.
    pub file: String,
    /// The `--format` that wrote it.
    pub format: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256 (hex).
    pub sha256: &'a str,
    /// Size of the disk it holds, in bytes (what the VM sees).
    pub virtual_size: u64,
    /// Boot mode to register the image with.
    pub boot_mode: &'static str,
    /// `x86_64` or `arm64`.
    pub architecture: &'static str,
    /// A name valid on AWS, GCE and Azure: image, version and the root hash's start.
    pub name: String,
    /// The recipe's description.
    pub description: &'a str,
    /// The recipe's image name and version.
    pub image: &'a str,
    /// Image version.
    pub version: &'a str,
    /// The kernel release.
    pub kernel: &'a str,
    /// The dm-verity root hash.
    pub root_hash: &'a str,
    /// SOURCE_DATE_EPOCH of the build.
    pub source_date_epoch: u64,
    /// Platform-specific values.
    pub register: Register,
    /// The Secure Boot key the EFI binaries are signed with, for the platform's
    /// custom-key flags (docs/clouds.md); absent for an unsigned image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBoot>,
}

/// A signed image's certificate, as the clouds' custom UEFI key options take it.
#[derive(Debug, Serialize)]
pub struct SecureBoot {
    /// The certificate (DER), base64: PK, KEK and db.
    pub certificate_der: String,
    /// Its sha256 (hex).
    pub certificate_sha256: String,
    /// db should also hold Microsoft's UEFI CAs (`microsoft-uefi-ca`).
    pub microsoft_uefi_ca: bool,
}

/// The sidecar's `secure_boot` for recipe `r`.
fn secure_boot(r: &Recipe) -> Result<Option<SecureBoot>> {
    let Some(sb) = &r.secure_boot else {
        return Ok(None);
    };
    let der = crate::disk::sign::cert_der(sb)?;
    Ok(Some(SecureBoot {
        certificate_der: slipway_common::base64::encode(&der),
        certificate_sha256: crate::io::hash::sha256_hex(&der),
        microsoft_uefi_ca: sb.microsoft_uefi_ca,
    }))
}

/// The platform values for `format` on `arch` (Debian's name), if it is a cloud format.
pub fn register(format: &str, arch: &str) -> Option<Register> {
    let arm = arch == "arm64";
    Some(match format {
        "disk-raw" | "vmdk" => Register::Aws {
            disk_container_format: if format == "vmdk" { "VMDK" } else { "RAW" },
            architecture: if arm { "arm64" } else { "x86_64" },
            boot_mode: "uefi",
            ena_support: true,
            root_device_name: "/dev/xvda",
        },
        "gce" => Register::Gce {
            architecture: if arm { "ARM64" } else { "X86_64" },
            guest_os_features: &["UEFI_COMPATIBLE", "GVNIC", "VIRTIO_SCSI_MULTIQUEUE"],
        },
        "vhd" => Register::Azure {
            hyper_v_generation: "V2",
            os_type: "Linux",
            architecture: if arm { "Arm64" } else { "x64" },
            blob_type: "page",
        },
        "qcow2" => Register::Openstack {
            hw_firmware_type: "uefi",
            architecture: if arm { "aarch64" } else { "x86_64" },
            disk_format: "qcow2",
        },
        _ => return None,
    })
}

/// A name every platform accepts (GCE's rule is the strictest: lowercase letters,
/// digits and hyphens, starting with a letter, at most 63 characters).
pub fn image_name(image: &str, version: &str, root_hash: &str) -> String {
    let mut s: String = format!("{image}-{version}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "img-");
    }
    let hash: String = root_hash.chars().take(12).collect();
    s.truncate(63 - 1 - hash.len());
    let s = s.trim_end_matches('-');
    format!("{s}-{hash}")
}

/// Writes `<output>.json` beside the cloud disk file `o` (when its kind is a cloud
/// format) and returns its path.
pub fn write(
    r: &Recipe,
    disk: &HostDisk,
    epoch: u64,
    o: &crate::output::Output,
) -> Result<Option<PathBuf>> {
    let Some(register) = register(&o.kind, &r.debian.architecture) else {
        return Ok(None);
    };
    let path = Path::new(&o.path);
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let s = Sidecar {
        sidecar_version: VERSION,
        file: file.clone(),
        format: &o.kind,
        size: o.size,
        sha256: &o.sha256,
        virtual_size: match o.kind.as_str() {
            "vhd" => crate::formats::vhd::padded_size(disk.disk_size),
            "vmdk" => disk.disk_size.div_ceil(64 << 10) * (64 << 10),
            _ => disk.disk_size,
        },
        boot_mode: "uefi",
        architecture: if r.debian.architecture == "arm64" {
            "arm64"
        } else {
            "x86_64"
        },
        name: image_name(&r.name, &r.version, &disk.root_hash),
        description: &r.description,
        image: &r.name,
        version: &r.version,
        kernel: &disk.kernel,
        root_hash: &disk.root_hash,
        source_date_epoch: epoch,
        register,
        secure_boot: secure_boot(r)?,
    };
    let dest = path.with_file_name(format!("{file}.json"));
    let mut json = serde_json::to_vec_pretty(&s).context("serializing a sidecar")?;
    json.push(b'\n');
    crate::io::atomic::write(&dest, &json)?;
    Ok(Some(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_every_platform() {
        let h = "0123456789abcdef";
        assert_eq!(
            image_name("containerd-host", "1", h),
            "containerd-host-1-0123456789ab"
        );
        assert_eq!(image_name("My_Host", "2.0", h), "my-host-2-0-0123456789ab");
        assert_eq!(image_name("9lives", "1", h), "img-9lives-1-0123456789ab");
        let long = image_name(&"x".repeat(100), "1", h);
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("-0123456789ab"));
    }

    #[test]
    fn every_cloud_format_has_platform_values() {
        for f in ["disk-raw", "vmdk", "gce", "vhd", "qcow2"] {
            assert!(register(f, "amd64").is_some(), "{f}");
        }
        assert!(register("uki", "amd64").is_none());
        let j = serde_json::to_value(register("vhd", "arm64")).unwrap();
        assert_eq!(j["platform"], "azure");
        assert_eq!(j["architecture"], "Arm64");
    }
}
