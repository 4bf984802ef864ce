//! `--format netboot`: consumes a built host disk (`disk.raw` and its partition table)
//! and the parts of its UKI, produces `netboot/` for UEFI PXE and HTTP boot, by the
//! firmware itself or through iPXE (docs/bare-metal.md): a diskless live node whose root
//! and verity tree travel in the initrd and are trusted only through the `roothash=` on
//! the UKI's command line. `uki.efi` is the boot file: a firmware's PXE client fetches
//! it over TFTP and starts it (tested under OVMF's own PXE client over QEMU's user
//! network).
//!
//! - `root.cpio`: a newc cpio holding `slipway/root.img` and `slipway/verity.img`;
//! - `uki.efi`: the image's kernel and initramfs with `roothash=... slipway.root=initrd
//!   slipway.var=tmpfs`; its `.initrd` is `root.cpio` followed by the initramfs (the
//!   kernel unpacks concatenated archives), because a second initrd cannot reach the
//!   kernel through Debian 12's iPXE (2019, older than Linux's LoadFile2 initrd
//!   protocol) and systemd-stub 252, which hands the kernel its own `.initrd` only
//!   (decision 0038);
//! - `boot.ipxe`: the iPXE script that chains `uki.efi`.
//!
//! Per-machine config goes in a cpio holding `slipway/config.toml`
//! ([`config_cpio`], `slipway netboot config-cpio`).

use crate::output::{HostDisk, Output};
use crate::tree::{Entry, Tree};
use crate::writers::cpio::{self, Compression, CpioOptions};
use anyhow::{Context as _, Result};
use std::path::Path;

/// The output directory's name.
pub const DIR: &str = "netboot";
/// The per-machine config's path inside its cpio.
pub const CONFIG_PATH: &str = "slipway/config.toml";

/// What the netboot artifacts are made of.
pub struct Inputs<'a> {
    /// The host disk as built.
    pub disk: &'a HostDisk,
    /// `disk.raw`.
    pub raw: &'a Path,
    /// The UKI's parts.
    pub boot: crate::formats::iso::BootParts<'a>,
    /// The recipe's extra kernel arguments.
    pub cmdline: &'a [String],
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// Signs the netboot UKI when the image is signed, so that it boots where the
    /// image does.
    pub signer: Option<&'a crate::disk::sign::Signer>,
}

/// The netboot UKI's command line.
pub fn cmdline(root_hash: &str, extra: &[String]) -> String {
    let mut a = vec![
        format!("roothash={root_hash}"),
        "slipway.root=initrd".to_string(),
        "slipway.var=tmpfs".to_string(),
    ];
    a.extend(
        crate::disk::image::BASE_CMDLINE
            .iter()
            .map(|s| s.to_string()),
    );
    a.extend(extra.iter().cloned());
    a.join(" ")
}

/// The iPXE script: the per-machine config (by MAC address) when the server has one,
/// then the UKI.
pub const BOOT_IPXE: &str = "#!ipxe\n\
# slipway netboot (docs/bare-metal.md). uki.efi carries the root image, its verity\n\
# tree and the roothash= that checks them.\n\
chain uki.efi\n";

/// A cpio of `files` ((path, bytes, mode) under `slipway/`) with every parent, mtimes at
/// `epoch`.
fn cpio_of(files: Vec<(&str, Vec<u8>, u32)>, epoch: u64, dest: &Path) -> Result<Output> {
    let mut t = Tree::new();
    for (p, bytes, mode) in files {
        t.ensure_parents(p, epoch)?;
        t.put(p, Entry::file(bytes, mode, epoch))?;
    }
    cpio::write_compressed(&t, CpioOptions { epoch }, Compression::None, dest)
}

/// Writes `netboot/` into `out`; returns the records of its files.
pub fn write(inp: &Inputs, out: &Path) -> Result<Vec<Output>> {
    let dir = out.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".slipway-netboot-")
        .tempdir_in(out)
        .with_context(|| format!("creating a staging directory in {}", out.display()))?;
    let parts = &inp.disk.partitions;
    crate::formats::iso::install::check_roles(parts)?;
    // Root and verity of the booted slot (A), partitions 2 and 3 of either layout.
    let mut payload = Vec::new();
    for (p, name) in [(&parts[1], "root.img"), (&parts[2], "verity.img")] {
        let f = work.path().join(name);
        crate::formats::iso::extract(inp.raw, p, &f)?;
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        payload.push((bytes, name));
    }
    let root_cpio = dir.join("root.cpio");
    let files = payload
        .into_iter()
        .map(|(b, n)| {
            (
                if n == "root.img" {
                    "slipway/root.img"
                } else {
                    "slipway/verity.img"
                },
                b,
                0o400,
            )
        })
        .collect();
    let mut outputs = vec![cpio_of(files, inp.epoch, &root_cpio)?];
    outputs[0].kind = "netboot-root".into();
    let mut initrd =
        std::fs::read(&root_cpio).with_context(|| format!("reading {}", root_cpio.display()))?;
    initrd.extend_from_slice(inp.boot.initrd);
    let uki = crate::disk::uki::build_uki(&crate::disk::uki::Parts {
        stub: inp.boot.stub,
        kernel: inp.boot.kernel,
        initrd: &initrd,
        cmdline: &cmdline(&inp.disk.root_hash, inp.cmdline),
        os_release: inp.boot.os_release,
        uname: Some(inp.boot.uname),
    })
    .context("the netboot UKI")?;
    drop(initrd);
    let uki = match inp.signer {
        Some(s) => s.sign_pe("the netboot UKI", &uki)?,
        None => uki,
    };
    for (name, kind, bytes) in [
        ("uki.efi", "netboot-uki", &uki[..]),
        ("boot.ipxe", "netboot-script", BOOT_IPXE.as_bytes()),
    ] {
        let p = dir.join(name);
        crate::io::atomic::write(&p, bytes)?;
        outputs.push(Output {
            kind: kind.into(),
            path: p.display().to_string(),
            size: bytes.len() as u64,
            sha256: crate::io::hash::sha256_hex(bytes),
        });
    }
    Ok(outputs)
}

/// Writes the per-machine config cpio `dest` holding `config` (already validated) at
/// [`CONFIG_PATH`], mode 0600, mtimes at `epoch`.
pub fn config_cpio(config: &[u8], epoch: u64, dest: &Path) -> Result<Output> {
    cpio_of(vec![(CONFIG_PATH, config.to_vec(), 0o600)], epoch, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_cpio_holds_the_config_and_is_reproducible() {
        let d = tempfile::tempdir().unwrap();
        let a = config_cpio(b"[install]\n", 7, &d.path().join("a.cpio")).unwrap();
        let b = config_cpio(b"[install]\n", 7, &d.path().join("b.cpio")).unwrap();
        assert_eq!(a.sha256, b.sha256);
        let bytes = std::fs::read(d.path().join("a.cpio")).unwrap();
        let entries = cpio::parse(&bytes).unwrap();
        let f = entries.iter().find(|e| e.name == CONFIG_PATH).unwrap();
        assert_eq!(f.data, b"[install]\n");
        assert_eq!(f.mode & 0o777, 0o600);
        assert!(entries.iter().any(|e| e.name == "slipway" && e.is_dir()));
    }

    #[test]
    fn the_command_line_scopes_root_and_var() {
        let c = cmdline("ab", &["quiet".into()]);
        assert!(c.starts_with("roothash=ab slipway.root=initrd slipway.var=tmpfs console=ttyS0"));
        assert!(c.ends_with(" quiet"));
    }
}
