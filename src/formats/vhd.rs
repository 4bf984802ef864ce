//! Fixed VHD (Azure): consumes `disk.raw`, produces `disk.vhd` = the raw bytes, padded
//! with zeros to a whole number of MiB (Azure rejects other virtual sizes) that is also
//! a whole CHS geometry ([`padded_size`]), followed by
//! the 512-byte hard disk footer of Microsoft's "Virtual Hard Disk Image Format
//! Specification" (version 1.0).
//!
//! Footer fields (big-endian, spec section "Hard Disk Footer Format"): cookie
//! `conectix`; features 2 (the reserved bit, always set); version 1.0; data offset all
//! ones (fixed disks have no dynamic header); time stamp in seconds since 2000-01-01
//! 00:00:00 UTC, here from `SOURCE_DATE_EPOCH` (0 when the epoch is older); creator
//! application `slpw` with slipway's version, host OS `Wi2k`; original and current size;
//! the CHS geometry computed as the spec's appendix does; disk type 2 (fixed); the
//! checksum (ones' complement of the byte sum with the checksum field zero); a unique id
//! derived from the raw disk's sha256; saved state 0. Nothing depends on the clock or a
//! random source, so the same raw disk and epoch give the same bytes.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// Fixed VHD.
pub struct Vhd;

/// Bytes in a MiB: Azure wants the virtual size to be a multiple of it.
pub const MIB: u64 = 1 << 20;
/// The footer's size.
pub const FOOTER: usize = 512;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
pub const VHD_EPOCH: u64 = 946_684_800;
/// The creator application field: slipway.
pub const CREATOR: &[u8; 4] = b"slpw";
/// Disk type: fixed.
pub const FIXED: u32 = 2;

impl super::DiskFormat for Vhd {
    fn name(&self) -> &'static str {
        "vhd"
    }
    fn file_name(&self) -> &'static str {
        "disk.vhd"
    }
    fn tools(&self) -> &'static [&'static str] {
        &[]
    }
    fn drivers(&self) -> &'static [super::Drivers] {
        // Azure: the Hyper-V synthetic NIC and storage (over the VMBus).
        &[super::Drivers {
            platform: "azure",
            modules: &["hv_netvsc", "hv_storvsc"],
        }]
    }
    fn write(&self, src: &super::Source, dest: &Path) -> Result<()> {
        let raw_len = std::fs::metadata(src.raw)
            .with_context(|| format!("reading {}", src.raw.display()))?
            .len();
        let size = padded_size(raw_len);
        let footer = footer(size, src.epoch, &src.digest);
        let mut af = crate::io::atomic::AtomicFile::create(dest)?;
        let f = af.file();
        super::copy_sparse(src.raw, f, size)
            .with_context(|| format!("writing {}", dest.display()))?;
        f.seek(SeekFrom::Start(size))
            .and_then(|_| f.write_all(&footer))
            .with_context(|| format!("writing the VHD footer of {}", dest.display()))?;
        af.commit()
    }
}

/// The VHD's virtual size for `raw_len` bytes of disk: the first whole number of MiB
/// (Azure's rule) from `raw_len` on whose CHS geometry covers it exactly, so readers that
/// size the disk by its geometry (Virtual PC, QEMU for creators it does not know) and
/// readers that use the footer's current size see the same disk. Between about 248 MiB
/// and 31.5 GiB that is a multiple of 63 MiB (16 heads x 63 sectors); beyond the largest
/// geometry (127 GiB) every reader uses the current size.
pub fn padded_size(raw_len: u64) -> u64 {
    let first = raw_len.div_ceil(MIB).max(1) * MIB;
    (0..=256)
        .map(|i| first + i * MIB)
        .find(|s| {
            let (c, h, spt) = geometry(*s);
            u64::from(c) * u64::from(h) * u64::from(spt) * 512 == *s
        })
        .unwrap_or(first)
}

/// The CHS geometry of `size` bytes, as the spec's appendix computes it: (cylinders,
/// heads, sectors per track).
pub fn geometry(size: u64) -> (u16, u8, u8) {
    let mut total = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    total = cth / heads;
    (total as u16, heads as u8, spt as u8)
}

/// The footer of a fixed disk of `size` bytes.
pub fn footer(size: u64, epoch: u64, digest: &[u8; 32]) -> [u8; FOOTER] {
    let mut f = [0u8; FOOTER];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    let stamp = u32::try_from(epoch.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    f[24..28].copy_from_slice(&stamp.to_be_bytes());
    f[28..32].copy_from_slice(CREATOR);
    f[32..36].copy_from_slice(&creator_version().to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = geometry(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&FIXED.to_be_bytes());
    let mut id = Sha256::new();
    id.update(b"slipway-vhd-unique-id");
    id.update(digest);
    let id = crate::disk::gpt::Guid::from_hash(&id.finalize());
    // The unique id as a UUID's bytes in text order.
    let text = id.to_text().replace('-', "");
    if let Ok(b) = crate::io::hash::unhex(&text) {
        f[68..84].copy_from_slice(&b);
    }
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// Ones' complement of the sum of the footer's bytes, the checksum field counted as 0.
pub fn checksum(f: &[u8; FOOTER]) -> u32 {
    let sum = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, b)| s.wrapping_add(u32::from(*b)));
    !sum
}

/// slipway's version as the creator version field: major in the high 16 bits, minor
/// in the low ones.
fn creator_version() -> u32 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major << 16) | (minor & 0xffff)
}

/// What a footer says (for tests and `inspect`).
#[derive(Debug, PartialEq, Eq)]
pub struct Footer {
    /// Current (virtual) size in bytes.
    pub size: u64,
    /// Disk type (2: fixed).
    pub disk_type: u32,
    /// Time stamp (seconds since 2000-01-01 UTC).
    pub timestamp: u32,
    /// Creator application.
    pub creator: [u8; 4],
    /// CHS geometry.
    pub geometry: (u16, u8, u8),
    /// Unique id.
    pub unique_id: [u8; 16],
}

/// Parses and checks the last 512 bytes of a VHD.
pub fn parse_footer(f: &[u8]) -> Result<Footer> {
    let Ok(f) = <&[u8; FOOTER]>::try_from(f) else {
        bail!("a VHD footer is {FOOTER} bytes, not {}", f.len());
    };
    if &f[0..8] != b"conectix" {
        bail!(
            "no VHD footer (cookie {:?})",
            String::from_utf8_lossy(&f[0..8])
        );
    }
    let be32 = |o: usize| u32::from_be_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]);
    let stored = be32(64);
    if stored != checksum(f) {
        bail!(
            "VHD footer checksum {stored:#010x}, computed {:#010x}",
            checksum(f)
        );
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&f[48..56]);
    let mut creator = [0u8; 4];
    creator.copy_from_slice(&f[28..32]);
    let mut unique_id = [0u8; 16];
    unique_id.copy_from_slice(&f[68..84]);
    Ok(Footer {
        size: u64::from_be_bytes(size),
        disk_type: be32(60),
        timestamp: be32(24),
        creator,
        geometry: (u16::from_be_bytes([f[56], f[57]]), f[58], f[59]),
        unique_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::DiskFormat;

    #[test]
    fn geometry_follows_the_spec_examples() {
        // 127 GiB and more: 255 sectors per track, 16 heads.
        assert_eq!(geometry(65535 * 16 * 255 * 512 + 4096), (65535, 16, 255));
        // Small disks: 17 sectors per track, at least 4 heads.
        assert_eq!(geometry(17 * 4 * 10 * 512), (10, 4, 17));
        // 1 GiB: 2097152 sectors -> 63 sectors, 16 heads, 2080 cylinders.
        assert_eq!(geometry(1 << 30), (2080, 16, 63));
    }

    #[test]
    fn padded_sizes_are_whole_mib_and_whole_geometry() {
        for raw in [
            1,
            MIB,
            5 * MIB + 4096,
            300 * MIB,
            461 * MIB + 7,
            3 << 30,
            40 << 30,
        ] {
            let s = padded_size(raw);
            assert!(s >= raw && s % MIB == 0, "{raw} -> {s}");
            let (c, h, spt) = geometry(s);
            assert_eq!(
                u64::from(c) * u64::from(h) * u64::from(spt) * 512,
                s,
                "{raw} -> {s}"
            );
            assert!(s - raw < 256 * MIB, "{raw} -> {s}");
        }
        // Past the largest geometry the footer's size is all there is.
        assert_eq!(padded_size(200 << 30), 200 << 30);
    }

    #[test]
    fn footer_round_trips_and_checksum_catches_a_flip() {
        let digest = [7u8; 32];
        let f = footer(512 * MIB, VHD_EPOCH + 1000, &digest);
        let p = parse_footer(&f).unwrap();
        assert_eq!(p.size, 512 * MIB);
        assert_eq!(p.disk_type, FIXED);
        assert_eq!(p.timestamp, 1000);
        assert_eq!(&p.creator, CREATOR);
        assert_eq!(p.geometry, geometry(512 * MIB));
        assert_eq!(p.unique_id[6] >> 4, 4, "a version-4-shaped UUID");
        let mut bad = f;
        bad[100] ^= 1;
        assert!(parse_footer(&bad)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        // Old epochs clamp to the VHD epoch; other digests give other ids.
        assert_eq!(parse_footer(&footer(MIB, 0, &digest)).unwrap().timestamp, 0);
        assert_ne!(
            parse_footer(&footer(MIB, 0, &[8u8; 32])).unwrap().unique_id,
            p.unique_id
        );
    }

    #[test]
    fn writes_padded_data_then_footer() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        let mut data = vec![0u8; 3 * MIB as usize + 4096];
        data[1] = 1;
        data[3 * MIB as usize + 100] = 2;
        std::fs::write(&raw, &data).unwrap();
        let src = crate::formats::Source {
            raw: &raw,
            digest: [1; 32],
            epoch: 1_700_000_000,
        };
        let dest = d.path().join("disk.vhd");
        Vhd.write(&src, &dest).unwrap();
        let out = std::fs::read(&dest).unwrap();
        let size = padded_size(data.len() as u64);
        assert_eq!(out.len() as u64, size + FOOTER as u64);
        assert_eq!(&out[..data.len()], &data[..]);
        assert!(out[data.len()..size as usize].iter().all(|b| *b == 0));
        let f = parse_footer(&out[size as usize..]).unwrap();
        assert_eq!(f.size, size);
        // Same input, same bytes.
        let again = d.path().join("again.vhd");
        Vhd.write(&src, &again).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), out);
    }
}
