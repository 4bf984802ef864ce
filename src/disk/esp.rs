//! The EFI system partition: consumes a list of (path, bytes) files (the UKI at
//! `EFI/BOOT/BOOTX64.EFI`, loader entries, ...) and produces the bytes of a FAT file
//! system of a given size, without mounting (the host kernel may have no vfat).
//!
//! mkfs.vfat (dosfstools) formats with `--invariant` and a fixed volume id, so the boot
//! sector, FSInfo and FATs hold no random or time-based values. mtools then writes the
//! directories and files one at a time in byte order of their paths (so the directory
//! slots do not follow the staging folder's readdir order). mtools stamps new files and
//! directories with its idea of "now", which `SOURCE_DATE_EPOCH` fixes (no `mcopy -m`:
//! the staged file's mtime would bring the host's view of it, e.g. under faketime). `TZ=UTC` makes FAT's local-time stamps the same everywhere.
//! FAT32 from 64 MiB (UEFI 2.10 section 13.3.1.1 asks for FAT32 on system partitions);
//! below, mkfs.vfat picks FAT12 or FAT16 by size (firmware reads them too; FAT32 needs
//! at least 65525 clusters).

use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The volume label.
pub const LABEL: &str = "ESP";
/// Sizes from here on are FAT32.
pub const FAT32_FROM: u64 = 64 << 20;

/// Checks a path inside the ESP: relative, `/`-separated, no empty, `.` or `..`
/// components, characters FAT long names allow.
fn check_path(p: &str) -> Result<()> {
    let bad = p.is_empty()
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || p.chars()
            .any(|c| c.is_control() || "\\:*?\"<>|".contains(c));
    if bad {
        bail!("ESP path {p:?} is not a relative FAT path (like EFI/BOOT/BOOTX64.EFI)");
    }
    Ok(())
}

/// Builds an ESP of `size` bytes (a multiple of 1 MiB, at least 2 MiB) holding `files`,
/// with volume id `volume_id`; every timestamp is `epoch`. Returns the image bytes.
pub fn build_esp(
    files: &[(String, Vec<u8>)],
    size: u64,
    volume_id: u32,
    epoch: u64,
) -> Result<Vec<u8>> {
    let work = tempfile::Builder::new()
        .prefix("slipway-esp-")
        .tempdir()
        .context("creating a staging directory for the ESP")?;
    let img = work.path().join("esp.img");
    build_esp_file(files, size, volume_id, epoch, &img)?;
    fs::read(&img).with_context(|| format!("reading {}", img.display()))
}

/// As [`build_esp`], into the (sparse) file `img`, which is left there: a large ESP is
/// never held in memory.
pub fn build_esp_file(
    files: &[(String, Vec<u8>)],
    size: u64,
    volume_id: u32,
    epoch: u64,
    img: &Path,
) -> Result<()> {
    build_esp_file_sectors(files, size, volume_id, epoch, img, 512)
}

/// As [`build_esp_file`], for a disk of `sector` bytes per logical sector (512 or 4096:
/// a FAT's sector must be the disk's, or firmware reads it as blank). FAT32 needs 65525
/// clusters, so with 4096-byte sectors it starts at [`FAT32_FROM`] times 8.
pub fn build_esp_file_sectors(
    files: &[(String, Vec<u8>)],
    size: u64,
    volume_id: u32,
    epoch: u64,
    img: &Path,
    sector: u64,
) -> Result<()> {
    crate::tool::require(&["mkfs.vfat", "mmd", "mcopy"])?;
    if sector != 512 && sector != 4096 {
        bail!("ESP sector size {sector} (expected 512 or 4096)");
    }
    if size < (2 << 20) || size % (1 << 20) != 0 {
        bail!("ESP size {size} is not a whole number of MiB of at least 2 MiB");
    }
    let mut dirs = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (p, _) in files {
        check_path(p)?;
        if !seen.insert(p.to_ascii_uppercase()) {
            bail!("ESP path {p:?} is given twice (FAT names ignore case)");
        }
        let mut end = 0;
        while let Some(i) = p[end..].find('/') {
            dirs.insert(p[..end + i].to_string());
            end += i + 1;
        }
    }
    let needed: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    if needed > size {
        bail!("the ESP files need {needed} bytes but the ESP is {size} bytes");
    }

    let work = tempfile::Builder::new()
        .prefix("slipway-esp-")
        .tempdir()
        .context("creating a staging directory for the ESP")?;
    let f = fs::File::create(img).with_context(|| format!("creating {}", img.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", img.display()))?;
    drop(f);
    let mut mkfs = Tool::new("formatting the EFI system partition", "mkfs.vfat");
    if size >= FAT32_FROM * (sector / 512) {
        mkfs = mkfs.args(["-F", "32"]);
    }
    if sector != 512 {
        mkfs = mkfs.args(["-S", &sector.to_string()]);
    }
    mkfs.args(["--invariant", "-i"])
        .arg(format!("{volume_id:08X}"))
        .args(["-n", LABEL])
        .arg(img)
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()?;

    let mtools = |what: String, prog: &str| {
        Tool::new(what, prog)
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("MTOOLS_NO_VFAT", "0")
            .arg("-i")
            .arg(img)
    };
    // Parents sort before their children, so one mmd creates them in order.
    if !dirs.is_empty() {
        mtools("creating ESP directories".into(), "mmd")
            .args(dirs.iter().map(|d| format!("::/{d}")))
            .run()?;
    }
    let staged = work.path().join("file");
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, bytes) in sorted {
        fs::write(&staged, bytes).with_context(|| format!("staging {}", staged.display()))?;
        mtools(format!("copying {p} into the ESP"), "mcopy")
            .arg("-o")
            .arg(&staged)
            .arg(format!("::/{p}"))
            .run()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(check_path("EFI/BOOT/BOOTX64.EFI").is_ok());
        for bad in ["", "/EFI", "EFI//x", "EFI/../x", "a:b", "a\\b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
