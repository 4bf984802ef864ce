//! The ISO's embed area: consumes a provisioning config (TOML bytes), produces the
//! 65536-byte area `/slipway/config.area` that the installer reads, and patches it in
//! place in a finished ISO (`slipway iso embed-config`), as coreos-installer patches
//! its live ISO.
//!
//! Layout (docs/decisions/0038-iso-layout.md): the area starts at a 2048-byte sector of
//! the ISO; bytes 0..17 are [`MAGIC`], bytes 17..21 the config's length (u32 little
//! endian), the config follows at byte 21 and the rest is zeros. An empty area has length
//! 0. The area is found by scanning the ISO's 2048-byte sectors for the magic: exactly
//! one sector may start with it.

use crate::exit::{err, Code};
use anyhow::{Context as _, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The area's first bytes.
pub const MAGIC: &[u8; 17] = b"SLIPWAY-EMBED-V1\n";
/// The area's size in bytes.
pub const SIZE: usize = 65536;
/// Where the config starts in the area.
pub const HEADER: usize = MAGIC.len() + 4;
/// The largest config the area holds.
pub const MAX_CONFIG: usize = SIZE - HEADER;
/// The iso9660 sector size, the area's alignment.
pub const SECTOR: u64 = 2048;

/// The area holding `config` (empty: no config).
pub fn area(config: &[u8]) -> Result<Vec<u8>> {
    if config.len() > MAX_CONFIG {
        return Err(err(
            Code::BadInput,
            format!(
                "the config is {} bytes; the ISO's embed area holds at most {MAX_CONFIG}",
                config.len()
            ),
        ));
    }
    let mut a = vec![0u8; SIZE];
    a[..MAGIC.len()].copy_from_slice(MAGIC);
    a[MAGIC.len()..HEADER].copy_from_slice(&(config.len() as u32).to_le_bytes());
    a[HEADER..HEADER + config.len()].copy_from_slice(config);
    Ok(a)
}

/// The config held by `area` (the area's bytes as read from the ISO).
pub fn config_of(area: &[u8]) -> Result<&[u8]> {
    if area.len() < HEADER || &area[..MAGIC.len()] != MAGIC {
        anyhow::bail!(
            "not a slipway embed area (no {:?} header)",
            "SLIPWAY-EMBED-V1"
        );
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&area[MAGIC.len()..HEADER]);
    let n = u32::from_le_bytes(n) as usize;
    if n > MAX_CONFIG || HEADER + n > area.len() {
        anyhow::bail!("the embed area's length field says {n} bytes, more than it holds");
    }
    Ok(&area[HEADER..HEADER + n])
}

/// The byte offset of the embed area in the ISO `f`: the one 2048-byte sector that
/// starts with [`MAGIC`]. None, or several, is an error naming the ISO.
pub fn find(f: &mut File, iso: &Path) -> Result<u64> {
    f.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading {}", iso.display()))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut sector = vec![0u8; SECTOR as usize];
    let mut found = Vec::new();
    let mut at = 0u64;
    loop {
        match read_full(&mut r, &mut sector)
            .with_context(|| format!("reading {}", iso.display()))?
        {
            0 => break,
            n if n >= MAGIC.len() && sector.starts_with(MAGIC) => found.push(at),
            _ => {}
        }
        at += SECTOR;
    }
    match found[..] {
        [one] => Ok(one),
        [] => Err(err(
            Code::BadInput,
            format!(
                "{}: no slipway embed area (not an ISO written by `slipway build --format iso`)",
                iso.display()
            ),
        )),
        _ => Err(err(
            Code::BadInput,
            format!(
                "{}: {} sectors start with the embed area's header (at bytes {:?}); expected exactly one",
                iso.display(),
                found.len(),
                found
            ),
        )),
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The config embedded in the ISO at `iso`.
pub fn read(iso: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(iso).with_context(|| format!("opening {}", iso.display()))?;
    let at = find(&mut f, iso)?;
    let mut a = vec![0u8; SIZE];
    f.read_exact_at(&mut a, at)
        .with_context(|| format!("reading the embed area of {}", iso.display()))?;
    Ok(config_of(&a)
        .with_context(|| format!("{}: the embed area at byte {at}", iso.display()))?
        .to_vec())
}

/// Replaces the config embedded in the ISO at `iso` with `config` (already validated),
/// changing no other byte. Atomic: the ISO is copied beside itself (copy_file_range,
/// which shares the blocks where the file system can), the copy patched, synced and
/// renamed over the original, so a crash leaves the old ISO or the new one, never an
/// area half written (a pwrite of 64 KiB in place could tear). Returns the area's offset.
pub fn patch(iso: &Path, config: &[u8]) -> Result<u64> {
    let new_area = area(config)?;
    let mut f = File::open(iso).with_context(|| format!("opening {}", iso.display()))?;
    let at = find(&mut f, iso)?;
    let mode = f
        .metadata()
        .with_context(|| format!("reading {}", iso.display()))?
        .permissions();
    drop(f);
    let tmp = crate::io::atomic::temp_path_for(iso);
    let _cleanup = crate::io::signals::register(&tmp);
    let result = (|| -> Result<()> {
        std::fs::copy(iso, &tmp)
            .with_context(|| format!("copying {} to {}", iso.display(), tmp.display()))?;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .with_context(|| format!("opening {}", tmp.display()))?;
        out.write_all_at(&new_area, at)
            .with_context(|| format!("writing the embed area into {}", tmp.display()))?;
        out.set_permissions(mode)
            .with_context(|| format!("chmod {}", tmp.display()))?;
        out.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, iso)
            .with_context(|| format!("renaming {} to {}", tmp.display(), iso.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_round_trips_and_bounds_the_config() {
        let a = area(b"[install]\nwipe = true\n").unwrap();
        assert_eq!(a.len(), SIZE);
        assert_eq!(&a[..17], MAGIC);
        assert_eq!(&a[17..21], &22u32.to_le_bytes());
        assert_eq!(config_of(&a).unwrap(), b"[install]\nwipe = true\n");
        assert!(a[HEADER + 22..].iter().all(|b| *b == 0));
        assert_eq!(config_of(&area(b"").unwrap()).unwrap(), b"");
        assert!(area(&vec![b'#'; MAX_CONFIG]).is_ok());
        let e = area(&vec![b'#'; MAX_CONFIG + 1]).unwrap_err();
        assert_eq!(crate::exit::code_of(&e), 2);
        let mut bad = area(b"x").unwrap();
        bad[17..21].copy_from_slice(&(SIZE as u32).to_le_bytes());
        assert!(config_of(&bad).is_err());
        assert!(config_of(&[0u8; 64]).is_err());
    }

    #[test]
    fn patch_changes_the_area_only_and_needs_exactly_one() {
        let d = tempfile::tempdir().unwrap();
        let iso = d.path().join("x.iso");
        let mut bytes: Vec<u8> = (0..10 * SECTOR as usize).map(|i| (i % 251) as u8).collect();
        bytes.extend(area(b"").unwrap());
        bytes.extend(vec![7u8; 3000]);
        std::fs::write(&iso, &bytes).unwrap();
        assert_eq!(read(&iso).unwrap(), b"");
        let at = patch(&iso, b"a = 1\n").unwrap();
        assert_eq!(at, 10 * SECTOR);
        let after = std::fs::read(&iso).unwrap();
        assert_eq!(after.len(), bytes.len());
        let differ: Vec<usize> = (0..after.len())
            .filter(|i| after[*i] != bytes[*i])
            .collect();
        assert!(differ
            .iter()
            .all(|i| (at as usize..at as usize + SIZE).contains(i)));
        assert!(!differ.is_empty());
        assert_eq!(read(&iso).unwrap(), b"a = 1\n");
        // A second area makes the ISO ambiguous; none is not an ISO of ours.
        let mut two = after.clone();
        two[..17].copy_from_slice(MAGIC);
        std::fs::write(&iso, &two).unwrap();
        let e = patch(&iso, b"").unwrap_err();
        assert_eq!(crate::exit::code_of(&e), 2);
        assert!(format!("{e:#}").contains("expected exactly one"), "{e:#}");
        std::fs::write(&iso, vec![0u8; 8192]).unwrap();
        assert!(format!("{:#}", read(&iso).unwrap_err()).contains("no slipway embed area"));
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
