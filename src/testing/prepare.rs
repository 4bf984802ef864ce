//! Preparing a test's machine before its first boot: consumes a checked
//! [`Definition`] and the test's directory, produces the [`VmSpec`] (firmware and its
//! variable store, TPM, network, network boot), the provisioning config, the extra drives
//! with the digests they start with, the forwards' servers, and a corrupted byte when
//! asked. Nothing here boots.

use super::definition::{Corrupt, Definition, DriveSource, ForwardTarget, Vars, Via};
use super::serve::Server;
use crate::boot::qemu::{Accel, Disk, GuestForward, Netboot, ProxyForward, VmSpec};
use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The owner GUID of the keys `vars = { enroll-cert = ... }` enrolls (any GUID will
/// do; the firmware records it beside each certificate).
const KEY_OWNER: &str = "5d4f1c3a-8b2e-4f7a-9c61-2e0b7d9a4c15";

/// An extra drive as made for a test, with the digest it started with.
#[derive(Debug, Clone)]
pub struct MadeDrive {
    /// Its name in the definition.
    pub name: String,
    /// The image file the VM uses.
    pub file: PathBuf,
    /// sha256 of the file before the first boot.
    pub sha256: String,
    /// How it is attached.
    pub disk: Disk,
}

/// The hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", h.finalize()))
}

/// The VM for `def` booting `image_dir`'s disk (or no image), with its provisioning
/// config written into `dir`.
pub fn spec(
    def: &Definition,
    accel: Accel,
    image_dir: Option<&Path>,
    dir: &Path,
) -> Result<VmSpec> {
    let disk = match image_dir {
        Some(d) => {
            let disk = crate::disk::image::disk_in(d);
            if !disk.is_file() {
                bail!(
                    "{}: no disk.raw (build a host recipe with --format disk)",
                    d.display()
                );
            }
            disk
        }
        None => PathBuf::new(),
    };
    let mut spec = VmSpec::new(&disk);
    spec.memory_mib = def.memory_mib;
    spec.cpus = def.cpus;
    spec.accel = accel;
    spec.disk_size = def.disk_size;
    spec.agent = image_dir.is_some();
    spec.no_reboot = def.expect_reboots.is_none();
    spec.firmware = def.firmware;
    spec.tpm = def.tpm;
    spec.network = def.network;
    spec.netboot = def.netboot.as_ref().map(|n| Netboot {
        tftp: n.tftp.clone(),
        bootfile: n.bootfile.clone(),
    });
    spec.vars = match &def.vars {
        None => None,
        Some(Vars::File(p)) => Some(p.clone()),
        Some(Vars::Enroll(cert)) => Some(enroll(cert, dir)?),
    };
    if let Some(cfg) = &def.provisioning {
        provision(def, cfg, dir, &mut spec)?;
    }
    Ok(spec)
}

/// OVMF's empty variable store with `cert` enrolled as PK, KEK and db and Secure Boot
/// on (`virt-fw-vars`, PyPI's virt-firmware), written into `dir`.
fn enroll(cert: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("enrolled-vars.fd");
    Tool::new(
        format!("enrolling {} into a UEFI variable store", cert.display()),
        "virt-fw-vars",
    )
    .arg("--input")
    .arg(crate::boot::qemu::OVMF_VARS)
    .arg("--output")
    .arg(&out)
    .args(["--set-pk", KEY_OWNER])
    .arg(cert)
    .args(["--add-kek", KEY_OWNER])
    .arg(cert)
    .args(["--add-db", KEY_OWNER])
    .arg(cert)
    .arg("--secure-boot")
    .run()?;
    Ok(out)
}

/// Writes the provisioning config, checks it, and hands it to the guest by fw_cfg or a
/// config drive.
fn provision(def: &Definition, cfg: &str, dir: &Path, spec: &mut VmSpec) -> Result<()> {
    let path = dir.join("provisioning.toml");
    std::fs::write(&path, cfg).with_context(|| format!("writing {}", path.display()))?;
    if def.check_config {
        crate::boot::check_config(&path)
            .with_context(|| format!("{}: provisioning", def.path.display()))?;
    }
    match def.via {
        Via::FwCfg => spec.fw_cfg_config = Some(path),
        Via::Drive => {
            let src = dir.join("config-drive");
            std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
            std::fs::copy(&path, src.join("slipway.toml"))
                .with_context(|| format!("copying {} to {}", path.display(), src.display()))?;
            let img = dir.join("config-drive.img");
            vfat_from_dir(&src, "SLIPWAY", &img)?;
            spec.drives.push(img);
        }
    }
    Ok(())
}

/// Makes the definition's drives in `dir`, records their digests, and attaches them.
pub fn drives(def: &Definition, dir: &Path, spec: &mut VmSpec) -> Result<Vec<MadeDrive>> {
    let mut made = Vec::new();
    for (i, d) in def.drives.iter().enumerate() {
        let img = dir.join(format!("drive-{i}.img"));
        let file = match &d.source {
            DriveSource::Blank(size) => {
                let f = std::fs::File::create(&img)
                    .with_context(|| format!("creating {}", img.display()))?;
                f.set_len(*size)
                    .with_context(|| format!("sizing {}", img.display()))?;
                img
            }
            DriveSource::FromDir { dir: src, label } => {
                vfat_from_dir(src, label, &img)?;
                img
            }
            DriveSource::Image(f) | DriveSource::Output(f) if d.read_only => f.clone(),
            DriveSource::Image(f) | DriveSource::Output(f) => {
                std::fs::copy(f, &img)
                    .with_context(|| format!("copying {} to {}", f.display(), img.display()))?;
                img
            }
        };
        let disk = Disk {
            file: file.clone(),
            interface: d.interface,
            serial: d.serial.clone(),
            logical_block_size: d.logical_block_size,
            physical_block_size: d.physical_block_size,
            read_only: d.read_only,
        };
        let sha256 = sha256_file(&file)?;
        spec.disks.push(disk.clone());
        made.push(MadeDrive {
            name: d.name.clone(),
            file,
            sha256,
            disk,
        });
    }
    Ok(made)
}

/// Starts a file server for each `serve` forward and adds every forward to `spec`; the
/// servers stop when dropped.
pub fn forwards(def: &Definition, spec: &mut VmSpec) -> Result<Vec<Server>> {
    let mut servers = Vec::new();
    for f in &def.forwards {
        match &f.target {
            ForwardTarget::Serve(dir) => {
                let s = Server::start(dir)?;
                spec.guest_forwards.push(GuestForward {
                    guest: f.guest,
                    guest_port: f.port,
                    host_port: s.port,
                });
                servers.push(s);
            }
            ForwardTarget::Proxy(host) => spec.proxy_forwards.push(ProxyForward {
                guest: f.guest,
                guest_port: f.port,
                host: *host,
            }),
        }
    }
    Ok(servers)
}

/// Makes a vfat image at `img` holding the files of `dir` (top level and below), with
/// `label`, without mounting anything (mkfs.vfat + mcopy).
pub fn vfat_from_dir(dir: &Path, label: &str, img: &Path) -> Result<()> {
    let mut bytes = 0u64;
    for e in walkdir::WalkDir::new(dir) {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        bytes += e.metadata().map(|m| m.len()).unwrap_or(0) + 4096;
    }
    let kib = (bytes * 2 / 1024).max(2048);
    let _ = std::fs::remove_file(img);
    Tool::new("making a config drive", "mkfs.vfat")
        .args(["-C", "-n", label])
        .arg(img)
        .arg(kib.to_string())
        .run()?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    if !entries.is_empty() {
        Tool::new("copying files onto a config drive", "mcopy")
            .arg("-s")
            .arg("-i")
            .arg(img)
            .args(entries)
            .arg("::/")
            .run()?;
    }
    Ok(())
}

/// Flips one byte of the disk the VM will see, in its overlay (`qemu-io`), so the built
/// image stays untouched.
pub fn corrupt(spec: &VmSpec, work: &Path, image_dir: &Path, c: &Corrupt) -> Result<String> {
    let manifest = image_dir.join("manifest.json");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest.display()))?;
    let parts = m["partitions"].as_array().cloned().unwrap_or_default();
    let name_of = |p: &serde_json::Value| p["name"].as_str().unwrap_or("").to_string();
    let part = parts
        .iter()
        .find(|p| {
            let n = name_of(p);
            n == c.partition
                || (c.partition == "root" && n.starts_with("root-") && !n.ends_with("-verity"))
                || (c.partition == "root-verity"
                    && n.starts_with("root-")
                    && n.ends_with("-verity"))
        })
        .with_context(|| {
            format!(
                "corrupt.partition: {:?} is not a partition of {} (it has {})",
                c.partition,
                manifest.display(),
                parts.iter().map(name_of).collect::<Vec<_>>().join(", ")
            )
        })?;
    let (off, size) = (
        part["offset"].as_u64().unwrap_or(0),
        part["size"].as_u64().unwrap_or(0),
    );
    if c.offset >= size {
        bail!(
            "corrupt.offset: {} is beyond the partition's {size} bytes",
            c.offset
        );
    }
    let at = off + c.offset;
    let mut byte = [0u8; 1];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&spec.disk)
            .with_context(|| format!("opening {}", spec.disk.display()))?;
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut byte)
            .with_context(|| format!("reading byte {at} of {}", spec.disk.display()))?;
    }
    let w = crate::boot::qemu::prepare(spec, work)?;
    let flipped = byte[0] ^ 0xff;
    Tool::new("corrupting one byte of the overlay", "qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -P {flipped:#04x} {at} 1"))
        .arg(w.overlay())
        .run()?;
    Ok(format!(
        "byte {at} ({} + {}) {:#04x} -> {flipped:#04x}",
        name_of(part),
        c.offset,
        byte[0]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vars = { enroll-cert }`: virt-fw-vars writes a store holding the certificate as
    /// PK, KEK and db, with Secure Boot on (Debian's snakeoil certificate as the input).
    #[test]
    fn a_certificate_is_enrolled_with_virt_fw_vars() {
        let d = tempfile::tempdir().unwrap();
        let cert = Path::new("/usr/share/ovmf/PkKek-1-snakeoil.pem");
        let out = enroll(cert, d.path()).unwrap();
        let printed = Tool::new("reading the store back", "virt-fw-vars")
            .arg("--input")
            .arg(&out)
            .arg("--print")
            .run()
            .unwrap();
        let text = format!("{}{}", printed.stdout, printed.stderr);
        let size = std::fs::read(cert).unwrap().len();
        for var in ["PK", "KEK", "db"] {
            let has = text
                .lines()
                .any(|l| l.split(':').next().map(str::trim) == Some(var) && l.contains("blob"));
            assert!(has, "{var} missing:\n{text}");
        }
        assert!(
            text.contains("SecureBootEnable") && text.contains("ON"),
            "{text}"
        );
        assert!(size > 0);
        let e = enroll(Path::new("/nonexistent.pem"), d.path()).unwrap_err();
        assert!(
            format!("{e:#}").contains("enrolling /nonexistent.pem"),
            "{e:#}"
        );
    }
}
