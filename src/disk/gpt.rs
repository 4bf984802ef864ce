//! GPT: the partition table of a disk image, written natively so that the same layout
//! always gives the same bytes. Partition types come from the UAPI Discoverable
//! Partitions Specification, so the initramfs (and systemd) find partitions by type.
//!
//! Layout: protective MBR (LBA 0), primary header (LBA 1), 128 entries of 128 bytes
//! (LBA 2-33), partitions aligned to 1 MiB, backup entries and header at the end of the
//! disk. Spec: UEFI 2.10, section 5.3; <https://uapi-group.org/specifications/specs/discoverable_partitions_specification/>.

use anyhow::{bail, Context, Result};
use std::io::{Seek, SeekFrom, Write};

/// Logical block size.
pub const LBA: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Partition alignment.
pub const ALIGN: u64 = 1 << 20;

/// A GUID, stored as its 16 on-disk bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the textual form (`c12a7328-f81f-11d2-ba4b-00a0c93ec93b`).
    pub fn parse(s: &str) -> Result<Guid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("\"{s}\" is not a GUID");
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).context("GUID digit")?;
        }
        Ok(Guid::from_uuid_bytes(b))
    }
    /// From the 16 bytes of a UUID in textual (big-endian) order; the first three fields
    /// are stored little-endian on disk.
    pub fn from_uuid_bytes(b: [u8; 16]) -> Guid {
        let mut d = b;
        d[0..4].reverse();
        d[4..6].reverse();
        d[6..8].reverse();
        Guid(d)
    }
    /// A version-4-shaped UUID from 16 bytes of a hash (reproducible "random" ids).
    pub fn from_hash(h: &[u8]) -> Guid {
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid::from_uuid_bytes(b)
    }
    /// The textual form.
    pub fn to_text(self) -> String {
        let mut b = self.0;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        let h = crate::io::hash::hex(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// Partition types of the Discoverable Partitions Specification.
pub mod types {
    /// EFI system partition.
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// Root, x86-64.
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    /// Root verity, x86-64.
    pub const ROOT_VERITY_X86_64: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
    /// Root, arm64.
    pub const ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
    /// Root verity, arm64.
    pub const ROOT_VERITY_ARM64: &str = "df3300ce-d69f-4c92-978c-9bfb0f38d820";
    /// /var.
    pub const VAR: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
}

/// One partition.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub uuid: Guid,
    /// Label (at most 36 UTF-16 units).
    pub name: String,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits (bit 60: read-only, per the DPS for root and verity).
    pub attributes: u64,
}

impl Partition {
    /// Byte offset of the partition.
    pub fn offset(&self) -> u64 {
        self.first_lba * LBA
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * LBA
    }
}

/// A disk layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Disk size in bytes (a multiple of 512).
    pub size: u64,
    /// Partitions in table order.
    pub partitions: Vec<Partition>,
}

/// What to lay out: (type, uuid, name, size in bytes; 0 = the rest of the disk).
pub struct Want {
    /// Type GUID text.
    pub type_guid: &'static str,
    /// Unique GUID.
    pub uuid: Guid,
    /// Label.
    pub name: String,
    /// Bytes (rounded up to 1 MiB); 0 takes what is left (last partition only).
    pub size: u64,
    /// Attributes.
    pub attributes: u64,
}

/// Places `wants` one after the other from 1 MiB, each aligned to 1 MiB, on a disk of
/// `disk_size` bytes (0: just big enough).
pub fn layout(disk_guid: Guid, wants: &[Want], disk_size: u64) -> Result<Layout> {
    let tail = (ENTRIES * ENTRY_SIZE) / LBA + 1; // backup entries + header, in LBAs
    let mut next = ALIGN;
    let mut parts = Vec::new();
    let needed: u64 = ALIGN
        + wants
            .iter()
            .map(|w| w.size.div_ceil(ALIGN) * ALIGN)
            .sum::<u64>()
        + ALIGN;
    let size = if disk_size == 0 { needed } else { disk_size };
    if size % LBA != 0 {
        bail!("the disk size {size} is not a multiple of {LBA}");
    }
    let last_usable = size / LBA - tail - 1;
    for (i, w) in wants.iter().enumerate() {
        let bytes = if w.size == 0 {
            if i + 1 != wants.len() {
                bail!("only the last partition can take the rest of the disk");
            }
            (last_usable + 1) * LBA - next
        } else {
            w.size.div_ceil(ALIGN) * ALIGN
        };
        let first = next / LBA;
        let last = first + bytes / LBA - 1;
        if last > last_usable {
            bail!(
                "the partitions need {:.1} MiB but the disk is {:.1} MiB (partition {} does not fit)",
                needed as f64 / (1 << 20) as f64,
                size as f64 / (1 << 20) as f64,
                w.name
            );
        }
        parts.push(Partition {
            type_guid: Guid::parse(w.type_guid)?,
            uuid: w.uuid,
            name: w.name.clone(),
            first_lba: first,
            last_lba: last,
            attributes: w.attributes,
        });
        next = (last + 1) * LBA;
    }
    Ok(Layout {
        disk_guid,
        size,
        partitions: parts,
    })
}

fn crc32(b: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(b);
    c.sum()
}

impl Layout {
    fn entries(&self) -> Result<Vec<u8>> {
        let mut t = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut t[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.uuid.0);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            let units: Vec<u16> = p.name.encode_utf16().collect();
            if units.len() > 36 {
                bail!("partition name \"{}\" is longer than 36 characters", p.name);
            }
            for (j, u) in units.iter().enumerate() {
                e[56 + j * 2..58 + j * 2].copy_from_slice(&u.to_le_bytes());
            }
        }
        Ok(t)
    }

    fn header(&self, primary: bool, entries_crc: u32) -> Vec<u8> {
        let last_lba = self.size / LBA - 1;
        let tail = (ENTRIES * ENTRY_SIZE) / LBA;
        let (my, alt, entries_lba) = if primary {
            (1, last_lba, 2)
        } else {
            (last_lba, 1, last_lba - tail)
        };
        let mut h = vec![0u8; LBA as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + tail).to_le_bytes());
        h[48..56].copy_from_slice(&(last_lba - tail - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn protective_mbr(&self) -> Vec<u8> {
        let mut m = vec![0u8; LBA as usize];
        let sectors = (self.size / LBA - 1).min(0xffff_ffff) as u32;
        let e = &mut m[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        e[4] = 0xee;
        e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xaa;
        m
    }

    /// Writes the protective MBR and both GPT copies into `f` (a file of `self.size`
    /// bytes; partition contents are written separately).
    pub fn write_table<F: Write + Seek>(&self, f: &mut F) -> Result<()> {
        let entries = self.entries()?;
        let crc = crc32(&entries);
        let last_lba = self.size / LBA - 1;
        let tail = (ENTRIES * ENTRY_SIZE) / LBA;
        let mut put = |lba: u64, b: &[u8]| -> Result<()> {
            f.seek(SeekFrom::Start(lba * LBA))
                .context("seeking in the disk image")?;
            f.write_all(b).context("writing the partition table")
        };
        put(0, &self.protective_mbr())?;
        put(1, &self.header(true, crc))?;
        put(2, &entries)?;
        put(last_lba - tail, &entries)?;
        put(last_lba, &self.header(false, crc))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip_and_mixed_endian() {
        let g = Guid::parse(types::ESP).unwrap();
        assert_eq!(g.0[0..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(g.to_text(), types::ESP);
        assert!(Guid::parse("xyz").is_err());
    }

    #[test]
    fn layout_aligns_and_fills() {
        let w = |n: &str, s| Want {
            type_guid: types::VAR,
            uuid: Guid([1; 16]),
            name: n.into(),
            size: s,
            attributes: 0,
        };
        let l = layout(Guid([9; 16]), &[w("a", 5 << 20), w("b", 0)], 64 << 20).unwrap();
        assert_eq!(l.partitions[0].offset(), 1 << 20);
        assert_eq!(l.partitions[0].size(), 5 << 20);
        assert_eq!(l.partitions[1].offset(), 6 << 20);
        assert!(l.partitions[1].last_lba <= (64 << 20) / 512 - 34);
        assert!(layout(Guid([9; 16]), &[w("a", 100 << 20)], 64 << 20).is_err());
    }
}
