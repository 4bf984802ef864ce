//! `--format iso`: consumes a built host disk (`disk.raw`, its partition table, its UKI)
//! and the parts of that UKI (EFI stub, kernel, initramfs), produces `install.iso`, a
//! UEFI hybrid iso9660 medium that installs the image (docs/bare-metal.md, decision
//! 0038):
//!
//! - `/efiboot.img`, the El Torito EFI boot image (also the one partition of the hybrid
//!   GPT, so a USB stick boots too): a small FAT holding `EFI/BOOT/BOOTX64.EFI`, the
//!   *installer UKI*: the image's own kernel and initramfs, command line
//!   `slipway.install=1 slipway.media=ID` (slipway-init's installer mode);
//! - `/slipway/`: `install.json` (the plan, [`install`]), the partitions' contents
//!   (`root.img`, `verity.img`, `var.img`, `esp-512.img` and `esp-4096.img`, the latter
//!   a FAT made for 4096-byte sectors) and `config.area`, the embed area ([`embed`]);
//! - the Volume Set Identifier `SLIPWAY-ID`: ID (32 hex digits derived from the root
//!   hash) is how the installer, booted from a CD where no partition UUID names its
//!   medium, finds the medium it came from.
//!
//! The payload stays outside the boot image, whose El Torito sector count is 16 bits.

pub mod embed;
pub mod install;
pub mod iso9660;

use crate::output::{HostDisk, Output, PartitionInfo};
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// The file written into the output directory.
pub const FILE_NAME: &str = "install.iso";
/// The payload directory on the medium.
pub const PAYLOAD_DIR: &str = "slipway";
/// The iso9660 volume identifier.
pub const VOLUME_ID: &str = "SLIPWAY_INSTALL";

/// The parts of a UKI other than its command line (from the image's tree and the disk
/// stage's outputs).
pub struct BootParts<'a> {
    /// systemd's EFI stub.
    pub stub: &'a [u8],
    /// The kernel.
    pub kernel: &'a [u8],
    /// The image's initramfs (slipway-init).
    pub initrd: &'a [u8],
    /// os-release.
    pub os_release: &'a [u8],
    /// `uname -r`.
    pub uname: &'a str,
}

/// What the ISO is made of.
pub struct Inputs<'a> {
    /// The image's name and version (install.json).
    pub image: &'a str,
    /// The image's version.
    pub version: &'a str,
    /// The host disk as built.
    pub disk: &'a HostDisk,
    /// `disk.raw`.
    pub raw: &'a Path,
    /// The image ESP's files (the UKI, or systemd-boot, its configuration and the UKI;
    /// enrollment files), for the ESP made for 4096-byte sectors.
    pub esp_files: &'a [(String, Vec<u8>)],
    /// The installer UKI's parts.
    pub boot: BootParts<'a>,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// Signs the installer UKI when the image is signed (`[secure-boot]` or
    /// `--sign-key`), so that the medium boots where the image does.
    pub signer: Option<&'a crate::disk::sign::Signer>,
}

/// The medium's id: 32 lowercase hex digits derived from the root hash `root_hash`.
pub fn media_id(root_hash: &str) -> Result<String> {
    let h = crate::io::hash::unhex(root_hash).context("the root hash")?;
    let d = crate::disk::image::derive(&[b"slipway-media", &h]);
    Ok(crate::io::hash::hex(&d[..16]))
}

/// The Volume Set Identifier of the medium with id `id`.
pub fn volume_set(id: &str) -> String {
    format!("SLIPWAY-{id}")
}

/// The installer UKI's command line.
pub fn installer_cmdline(id: &str) -> String {
    let mut a = vec![
        "slipway.install=1".to_string(),
        format!("slipway.media={id}"),
    ];
    a.extend(
        crate::disk::image::BASE_CMDLINE
            .iter()
            .map(|s| s.to_string()),
    );
    a.join(" ")
}

/// Copies the content of partition `p` of `raw` into the new file `dest` (sparse: an
/// empty /var is mostly zeros).
pub fn extract(raw: &Path, p: &PartitionInfo, dest: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let out =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    out.set_len(p.content)
        .with_context(|| format!("sizing {}", dest.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < p.content {
        let n = ((p.content - done) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], p.offset + done)
            .with_context(|| format!("reading partition {} of {}", p.name, raw.display()))?;
        crate::io::sparse::write_at(&out, &buf[..n], done, &dest.display().to_string())?;
        done += n as u64;
    }
    Ok(())
}

fn file_ref(dir: &Path, name: &str) -> Result<install::FileRef> {
    install::file_ref(&dir.join(name), name)
}

/// Writes the payload directory's files into `dir`; returns their names in the
/// order they go on the medium.
fn payload(inp: &Inputs, id_seed: &[u8], dir: &Path) -> Result<Vec<String>> {
    let parts = &inp.disk.partitions;
    install::check_roles(parts)?;
    for p in parts {
        let name = match install::role_of(p) {
            "esp" => "esp-512.img",
            "root" => "root.img",
            "verity" => "verity.img",
            "var" => "var.img",
            _ => continue,
        };
        extract(inp.raw, p, &dir.join(name))?;
    }
    let vol = crate::disk::image::derive(&[b"slipway-esp-4096", id_seed]);
    crate::disk::esp::build_esp_file_sectors(
        inp.esp_files,
        parts[0].size,
        u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]),
        inp.epoch,
        &dir.join("esp-4096.img"),
        4096,
    )
    .context("the 4096-byte-sector ESP")?;
    let plan = install::plan(
        inp.image,
        inp.version,
        &inp.disk.root_hash,
        parts,
        [
            file_ref(dir, "esp-512.img")?,
            file_ref(dir, "esp-4096.img")?,
        ],
        [
            file_ref(dir, "root.img")?,
            file_ref(dir, "verity.img")?,
            file_ref(dir, "var.img")?,
        ],
    )?;
    let mut json = serde_json::to_vec_pretty(&plan).context("serializing install.json")?;
    json.push(b'\n');
    std::fs::write(dir.join("install.json"), json).context("writing install.json")?;
    std::fs::write(dir.join("config.area"), embed::area(b"")?).context("writing config.area")?;
    Ok([
        "install.json",
        "config.area",
        "esp-512.img",
        "esp-4096.img",
        "root.img",
        "verity.img",
        "var.img",
    ]
    .map(String::from)
    .to_vec())
}

/// The El Torito boot image: a FAT just big enough for the installer UKI.
fn efiboot(inp: &Inputs, id: &str, seed: &[u8], dest: &Path) -> Result<()> {
    let uki = crate::disk::uki::build_uki(&crate::disk::uki::Parts {
        stub: inp.boot.stub,
        kernel: inp.boot.kernel,
        initrd: inp.boot.initrd,
        cmdline: &installer_cmdline(id),
        os_release: inp.boot.os_release,
        uname: Some(inp.boot.uname),
    })
    .context("the installer UKI")?;
    let uki = match inp.signer {
        Some(s) => s.sign_pe("the installer UKI", &uki)?,
        None => uki,
    };
    let size = ((uki.len() as u64 + (1 << 19)).div_ceil(1 << 20) << 20).max(2 << 20);
    if size >= 32 << 20 {
        anyhow::bail!(
            "the installer UKI is {:.1} MiB; the El Torito boot image holding it must stay \
             below 32 MiB (its sector count is 16 bits): trim the kernel's modules",
            uki.len() as f64 / (1u64 << 20) as f64
        );
    }
    let vol = crate::disk::image::derive(&[b"slipway-efiboot", seed]);
    crate::disk::esp::build_esp_file(
        &[("EFI/BOOT/BOOTX64.EFI".to_string(), uki)],
        size,
        u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]),
        inp.epoch,
        dest,
    )
    .context("the El Torito boot image")
}

/// Writes `install.iso` into `out`; returns its record.
pub fn write(inp: &Inputs, out: &Path) -> Result<Output> {
    let id = media_id(&inp.disk.root_hash)?;
    let seed = crate::disk::image::derive(&[b"slipway-iso", id.as_bytes()]);
    let work = tempfile::Builder::new()
        .prefix(".slipway-iso-")
        .tempdir_in(out)
        .with_context(|| format!("creating a staging directory in {}", out.display()))?;
    let boot_img = work.path().join("efiboot.img");
    efiboot(inp, &id, &seed, &boot_img)?;
    let dir = work.path().join(PAYLOAD_DIR);
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = payload(inp, &seed, &dir)?;
    let mut sources: Vec<(iso9660::FileSpec, PathBuf)> = vec![(
        iso9660::FileSpec {
            name: "efiboot.img".into(),
            in_sub: false,
            size: std::fs::metadata(&boot_img)?.len(),
        },
        boot_img,
    )];
    for n in names {
        let p = dir.join(&n);
        let size = std::fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        sources.push((
            iso9660::FileSpec {
                name: n,
                in_sub: true,
                size,
            },
            p,
        ));
    }
    let set = volume_set(&id);
    let v = iso9660::Volume {
        volume_id: VOLUME_ID,
        volume_set: &set,
        sub: PAYLOAD_DIR,
        files: sources.iter().map(|(f, _)| f.clone()).collect(),
        boot: 0,
        epoch: inp.epoch,
        seed,
    };
    let l = iso9660::layout(&v)?;
    let dest = out.join(FILE_NAME);
    let mut af = crate::io::atomic::AtomicFile::create(&dest)?;
    af.file()
        .set_len(l.size)
        .with_context(|| format!("sizing {}", dest.display()))?;
    for (off, bytes) in &l.meta {
        crate::io::sparse::write_at(af.file(), bytes, *off, "the ISO's metadata")?;
    }
    for ((f, src), extent) in sources.iter().zip(&l.extents) {
        crate::io::sparse::copy_at(af.file(), src, extent * iso9660::BLOCK, &f.name)?;
    }
    af.commit()?;
    Output::of_file("iso", &dest)
}
