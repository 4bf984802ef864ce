//! The machine keys of a definition beside the image: consumes `[[drive]]`,
//! `[[forward]]`, `vars` and `netboot` as written, produces checked [`Drive`]s,
//! [`Forward`]s, a [`Vars`] and a [`Netboot`], with host paths made relative to the
//! definition's directory. Every error names the key (`drive[1].serial: ...`).

use crate::boot::qemu::Interface;
use crate::recipe::raw::Size;
use anyhow::{bail, Result};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDrive {
    name: Option<String>,
    size: Option<Size>,
    from_dir: Option<PathBuf>,
    label: Option<String>,
    image: Option<PathBuf>,
    output: Option<PathBuf>,
    interface: Option<Interface>,
    serial: Option<String>,
    logical_block_size: Option<u32>,
    physical_block_size: Option<u32>,
    read_only: Option<bool>,
}

/// What an extra drive holds when the test starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveSource {
    /// An empty raw disk of this many bytes.
    Blank(u64),
    /// A vfat file system holding a directory's files, with a label.
    FromDir {
        /// The directory (relative paths are relative to the definition).
        dir: PathBuf,
        /// The vfat label (default SLIPWAY, which provisioning looks for).
        label: String,
    },
    /// A copy of a raw image file (used in place when the drive is read-only).
    Image(PathBuf),
    /// A build output directory's `disk.raw` (copied, or in place when read-only).
    Output(PathBuf),
}

/// An extra drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// What steps call it (`remove-drive`, `boot-from`, `drive-digest`); default
    /// `drive-N`.
    pub name: String,
    /// Its content.
    pub source: DriveSource,
    /// Its bus.
    pub interface: Interface,
    /// The serial the guest reads.
    pub serial: Option<String>,
    /// Logical sector size (512 or 4096).
    pub logical_block_size: Option<u32>,
    /// Physical sector size (512 or 4096, at least the logical one).
    pub physical_block_size: Option<u32>,
    /// Attached read-only.
    pub read_only: bool,
}

fn block_size(n: Option<u32>, key: &str) -> Result<Option<u32>> {
    match n {
        None | Some(512) | Some(4096) => Ok(n),
        Some(n) => bail!("{key}: {n} is not a sector size QEMU offers here (512 or 4096)"),
    }
}

impl RawDrive {
    fn source(&mut self, key: &str, base: &Path) -> Result<DriveSource> {
        let exists = |p: PathBuf, what: &str, dir: bool| -> Result<PathBuf> {
            let p = base.join(p);
            if (dir && !p.is_dir()) || (!dir && !p.is_file()) {
                bail!(
                    "{key}.{what}: {} is not a {}",
                    p.display(),
                    if dir { "directory" } else { "file" }
                );
            }
            Ok(p)
        };
        Ok(match (self.size.take(), self.from_dir.take(), self.image.take(), self.output.take()) {
            (Some(s), None, None, None) if self.label.is_none() => DriveSource::Blank(s.0),
            (None, Some(dir), None, None) => DriveSource::FromDir {
                dir: exists(dir, "from-dir", true)?,
                label: self.label.take().unwrap_or_else(|| "SLIPWAY".into()),
            },
            (None, None, Some(f), None) if self.label.is_none() => {
                DriveSource::Image(exists(f, "image", false)?)
            }
            (None, None, None, Some(d)) if self.label.is_none() => {
                let d = exists(d, "output", true)?;
                let disk = crate::disk::image::disk_in(&d);
                if !disk.is_file() {
                    bail!("{key}.output: {} holds no disk.raw (build a host recipe with --format disk)", d.display());
                }
                DriveSource::Output(disk)
            }
            _ => bail!("{key}: give one of size (a blank disk), from-dir (a vfat drive, with an optional label), image (a raw image file) and output (a build output holding disk.raw)"),
        })
    }

    fn check(mut self, i: usize, base: &Path) -> Result<Drive> {
        let key = format!("drive[{i}]");
        let source = self.source(&key, base)?;
        let name = self.name.take().unwrap_or_else(|| format!("drive-{i}"));
        if name.is_empty()
            || name == "network"
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!("{key}.name: {name:?} is not a drive name (letters, digits, -, _ and .; not \"network\")");
        }
        if let Some(s) = &self.serial {
            if s.is_empty()
                || s.len() > 20
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                bail!("{key}.serial: {s:?} is not a serial (1 to 20 letters, digits, -, _ or .)");
            }
        }
        let lbs = block_size(
            self.logical_block_size,
            &format!("{key}.logical-block-size"),
        )?;
        let pbs = block_size(
            self.physical_block_size,
            &format!("{key}.physical-block-size"),
        )?;
        if let (Some(l), Some(p)) = (lbs, pbs) {
            if p < l {
                bail!("{key}.physical-block-size: {p} is smaller than the logical-block-size {l}");
            }
        }
        let interface = self.interface.unwrap_or_default();
        if interface == Interface::Cdrom && self.read_only == Some(false) {
            bail!("{key}.read-only: a cdrom is always read-only");
        }
        Ok(Drive {
            name,
            source,
            interface,
            serial: self.serial,
            logical_block_size: lbs,
            physical_block_size: pbs,
            read_only: self.read_only.unwrap_or(interface == Interface::Cdrom),
        })
    }
}

/// Checks the `[[drive]]` tables: each valid, names unique.
pub(super) fn drives(raw: Vec<RawDrive>, base: &Path) -> Result<Vec<Drive>> {
    let drives = raw
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.check(i, base))
        .collect::<Result<Vec<_>>>()?;
    for (i, d) in drives.iter().enumerate() {
        if drives[..i].iter().any(|e| e.name == d.name) {
            bail!("drive[{i}].name: another drive is called {:?}", d.name);
        }
    }
    Ok(drives)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawForward {
    guest: String,
    serve: Option<PathBuf>,
    proxy: Option<String>,
}

/// What a forward reaches on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTarget {
    /// A static HTTP/1.0 file server the harness runs for this directory.
    Serve(PathBuf),
    /// A service on the host's loopback, one host connection per guest connection.
    Proxy(SocketAddrV4),
}

/// A guest address forwarded to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The guest-side address (in 10.0.2.0/24).
    pub guest: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// What it reaches.
    pub target: ForwardTarget,
}

impl RawForward {
    fn check(self, i: usize, base: &Path) -> Result<Forward> {
        let (guest, port) = self
            .guest
            .split_once(':')
            .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u16>().ok()?)))
            .filter(|(a, _)| a.octets()[..3] == [10, 0, 2])
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "forward[{i}].guest: {:?} is not ADDRESS:PORT in 10.0.2.0/24, e.g. \"10.0.2.100:80\"",
                    self.guest
                )
            })?;
        let target = match (self.serve, self.proxy) {
            (Some(dir), None) => {
                let dir = base.join(dir);
                if !dir.is_dir() {
                    bail!("forward[{i}].serve: {} is not a directory", dir.display());
                }
                ForwardTarget::Serve(dir)
            }
            (None, Some(p)) => ForwardTarget::Proxy(
                p.parse::<SocketAddrV4>()
                    .ok()
                    .filter(|a| a.ip().is_loopback() && a.port() != 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "forward[{i}].proxy: {p:?} is not a loopback ADDRESS:PORT, e.g. \"127.0.0.1:5000\""
                        )
                    })?,
            ),
            _ => bail!("forward[{i}]: give serve (a directory for the harness's file server) or proxy (a host service, \"127.0.0.1:PORT\")"),
        };
        Ok(Forward {
            guest,
            port,
            target,
        })
    }
}

/// Checks the `[[forward]]` tables.
pub(super) fn forwards(raw: Vec<RawForward>, base: &Path) -> Result<Vec<Forward>> {
    raw.into_iter()
        .enumerate()
        .map(|(i, f)| f.check(i, base))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawVars {
    File(PathBuf),
    Enroll {
        #[serde(rename = "enroll-cert")]
        enroll_cert: PathBuf,
    },
}

/// The UEFI variable store a test starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vars {
    /// This file (copied; the VM writes its copy).
    File(PathBuf),
    /// OVMF's empty store with this certificate (PEM or DER) enrolled as PK, KEK and
    /// db and Secure Boot on, made by `virt-fw-vars` before the first boot.
    Enroll(PathBuf),
}

impl RawVars {
    pub(super) fn check(self, base: &Path) -> Result<Vars> {
        let (p, key) = match self {
            RawVars::File(p) => (base.join(p), "vars"),
            RawVars::Enroll { enroll_cert } => (base.join(enroll_cert), "vars.enroll-cert"),
        };
        if !p.is_file() {
            bail!("{key}: {} is not a file", p.display());
        }
        Ok(if key == "vars" {
            Vars::File(p)
        } else {
            Vars::Enroll(p)
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawNetboot {
    tftp: PathBuf,
    bootfile: String,
}

/// Network boot: slirp's TFTP serves `tftp`; DHCP offers `bootfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netboot {
    /// The directory served.
    pub tftp: PathBuf,
    /// The file DHCP names (relative to `tftp`).
    pub bootfile: String,
}

impl RawNetboot {
    pub(super) fn check(self, base: &Path) -> Result<Netboot> {
        let tftp = base.join(&self.tftp);
        if !tftp.is_dir() {
            bail!("netboot.tftp: {} is not a directory", tftp.display());
        }
        if self.bootfile.contains(',') || tftp.display().to_string().contains(',') {
            bail!("netboot: the directory and bootfile may not contain a comma (QEMU's option syntax)");
        }
        if !tftp.join(&self.bootfile).is_file() {
            bail!(
                "netboot.bootfile: {} is not a file",
                tftp.join(&self.bootfile).display()
            );
        }
        Ok(Netboot {
            tftp,
            bootfile: self.bootfile,
        })
    }
}
