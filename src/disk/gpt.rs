//! GPT layout of a host image: consumes what each partition is to hold (type, uuid, name,
//! size), produces a [`Layout`] with every partition placed, and writes its table. The
//! table itself (protective MBR, both headers and entry arrays, CRCs) is
//! `slipway_common::gpt`, the same code slipway-init reads it back with.
//!
//! Layout: protective MBR (LBA 0), primary header (LBA 1), 128 entries of 128 bytes
//! (LBA 2-33), partitions aligned to 1 MiB, backup entries and header at the end of the
//! disk. Spec: UEFI 2.10, section 5.3; <https://uapi-group.org/specifications/specs/discoverable_partitions_specification/>.

use anyhow::{anyhow, bail, Context, Result};
use slipway_common::gpt::{Table, ENTRIES, ENTRY_SIZE};
use std::io::{Seek, SeekFrom, Write};

pub use slipway_common::gpt::{types, Partition};
pub use slipway_common::guid::Guid;

/// Logical block size of the images slipway writes.
pub const LBA: u64 = 512;
/// Partition alignment.
pub const ALIGN: u64 = 1 << 20;

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
    /// Type GUID ([`types`]).
    pub type_guid: Guid,
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
    // Backup entries and header, in LBAs.
    let tail = u64::from(ENTRIES * ENTRY_SIZE) / LBA + 1;
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
            number: i as u32 + 1,
            type_guid: w.type_guid,
            uuid: w.uuid,
            name: w.name.clone(),
            first_lba: first,
            last_lba: last,
            attributes: w.attributes,
            sector_size: LBA,
        });
        next = (last + 1) * LBA;
    }
    Ok(Layout {
        disk_guid,
        size,
        partitions: parts,
    })
}

impl Layout {
    /// Writes the protective MBR and both GPT copies into `f` (a file of `self.size`
    /// bytes; partition contents are written separately).
    pub fn write_table<F: Write + Seek>(&self, f: &mut F) -> Result<()> {
        let table = Table::new(LBA, self.size / LBA, self.disk_guid, &self.partitions)
            .map_err(|e| anyhow!("partition table: {e}"))?;
        let mut writes = vec![(0, table.protective_mbr())];
        writes.extend(table.serialize());
        for (offset, bytes) in writes {
            f.seek(SeekFrom::Start(offset))
                .context("seeking in the disk image")?;
            f.write_all(&bytes).context("writing the partition table")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_table_reads_back() {
        let w = |n: &str, s| Want {
            type_guid: types::ROOT_X86_64,
            uuid: Guid::from_hash(n.repeat(16).as_bytes()),
            name: n.into(),
            size: s,
            attributes: 0,
        };
        let l = layout(Guid([9; 16]), &[w("a", 1 << 20), w("b", 0)], 8 << 20).unwrap();
        let mut disk = std::io::Cursor::new(vec![0u8; 8 << 20]);
        l.write_table(&mut disk).unwrap();
        struct Mem(Vec<u8>);
        impl slipway_common::gpt::Disk for Mem {
            fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
                buf.copy_from_slice(&self.0[off as usize..off as usize + buf.len()]);
                Ok(())
            }
            fn write_at(&mut self, _: &[u8], _: u64) -> std::io::Result<()> {
                unreachable!()
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let t = Table::read(&Mem(disk.into_inner()), 512, (8 << 20) / 512).unwrap();
        assert_eq!(t.partitions(), l.partitions);
        assert_eq!(t.disk_guid(), Guid([9; 16]));
    }
}
