//! Reading a GPT: consumes a [`Disk`], produces a [`Table`] whose header and entry array
//! passed their CRC-32 checks, from the primary copy or else the backup.

use super::{field, le32, le64, put32, put64, Disk, Table, HEADER_SIZE, SIGNATURE};
use crate::crc32::crc32;

/// More entries than any real table has; bounds the read on a hostile disk.
const MAX_ENTRIES_BYTES: u64 = 1 << 20;

impl Table {
    /// Reads and verifies the table of a disk of `disk_sectors` sectors of `sector_size`
    /// bytes: the primary copy, else the backup. The error names what was wrong with each.
    pub fn read(disk: &dyn Disk, sector_size: u64, disk_sectors: u64) -> Result<Table, String> {
        let primary_err = match Self::read_copy(disk, sector_size, 1) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        if disk_sectors < 3 {
            return Err(format!("primary GPT: {primary_err}"));
        }
        match Self::read_copy(disk, sector_size, disk_sectors - 1) {
            Ok(mut t) => {
                // Normalise to the primary's view: my LBA 1, the alternate at the end.
                let (my, alt) = (
                    le64(&t.header, field::MY_LBA),
                    le64(&t.header, field::ALTERNATE_LBA),
                );
                put64(&mut t.header, field::MY_LBA, alt);
                put64(&mut t.header, field::ALTERNATE_LBA, my);
                put64(&mut t.header, field::ENTRIES_LBA, 2);
                t.from_backup = true;
                Ok(t)
            }
            Err(backup_err) => Err(format!(
                "primary GPT: {primary_err}; backup GPT: {backup_err}"
            )),
        }
    }

    /// Reads and verifies the copy whose header is at `lba`, as it is on disk.
    pub fn read_copy(disk: &dyn Disk, sector_size: u64, lba: u64) -> Result<Table, String> {
        let mut sector = vec![0u8; sector_size as usize];
        disk.read_at(&mut sector, lba * sector_size)
            .map_err(|e| format!("reading LBA {lba}: {e}"))?;
        let header = parse_header(&sector, lba)?;
        let entries_lba = le64(&header, field::ENTRIES_LBA);
        let len = u64::from(le32(&header, field::ENTRY_COUNT))
            * u64::from(le32(&header, field::ENTRY_SIZE));
        let mut entries = vec![0u8; len as usize];
        disk.read_at(&mut entries, entries_lba * sector_size)
            .map_err(|e| format!("reading the entries at LBA {entries_lba}: {e}"))?;
        if crc32(&entries) != le32(&header, field::ENTRIES_CRC) {
            return Err(format!(
                "partition entry array at LBA {entries_lba}: CRC-32 mismatch"
            ));
        }
        Ok(Table {
            sector_size,
            header,
            entries,
            from_backup: false,
        })
    }
}

/// Checks a header sector read from `lba`; returns its `header_size` bytes.
fn parse_header(sector: &[u8], lba: u64) -> Result<Vec<u8>, String> {
    if &sector[0..8] != SIGNATURE {
        return Err(format!("no \"EFI PART\" signature at LBA {lba}"));
    }
    let size = le32(sector, field::HEADER_SIZE) as usize;
    if size < HEADER_SIZE || size > sector.len() {
        return Err(format!("header size {size} out of range"));
    }
    let mut h = sector[..size].to_vec();
    let want = le32(&h, field::HEADER_CRC);
    put32(&mut h, field::HEADER_CRC, 0);
    if crc32(&h) != want {
        return Err(format!("header at LBA {lba}: CRC-32 mismatch"));
    }
    put32(&mut h, field::HEADER_CRC, want);
    let my = le64(&h, field::MY_LBA);
    if my != lba {
        return Err(format!("header at LBA {lba} says it is at LBA {my}"));
    }
    let entry_size = le32(&h, field::ENTRY_SIZE);
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(format!("partition entry size {entry_size} is invalid"));
    }
    let count = le32(&h, field::ENTRY_COUNT);
    if u64::from(count) * u64::from(entry_size) > MAX_ENTRIES_BYTES {
        return Err(format!("{count} partition entries is too many"));
    }
    Ok(h)
}
