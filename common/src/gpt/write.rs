//! Writing a GPT: consumes a partition list (a fresh table) or a read [`Table`] (grown to
//! an enlarged disk), produces the byte ranges to write: protective MBR, primary header
//! and entry array at the start, backup entry array and header at the end.

use super::{
    field, le64, put32, put64, Disk, Partition, Table, ENTRIES, ENTRY_SIZE, HEADER_SIZE,
    NAME_UNITS, SIGNATURE,
};
use crate::crc32::crc32;
use crate::guid::Guid;

/// UEFI 2.x header revision 1.0.
const REVISION: u32 = 0x0001_0000;

impl Table {
    /// A fresh table for a disk of `disk_sectors` sectors of `sector_size` bytes (512 or
    /// 4096): 128 entries of 128 bytes, each partition at entry `number - 1`. The error
    /// names the partition that does not fit or clashes.
    pub fn new(
        sector_size: u64,
        disk_sectors: u64,
        disk_guid: Guid,
        partitions: &[Partition],
    ) -> Result<Table, String> {
        if sector_size != 512 && sector_size != 4096 {
            return Err(format!(
                "logical sector size {sector_size} (expected 512 or 4096)"
            ));
        }
        let array = u64::from(ENTRIES * ENTRY_SIZE);
        let array_sectors = array.div_ceil(sector_size);
        let first_usable = 2 + array_sectors;
        let last_usable = disk_sectors
            .checked_sub(array_sectors + 2)
            .filter(|&l| l >= first_usable)
            .ok_or_else(|| format!("{disk_sectors} sectors are too few for a GPT"))?;
        let mut header = vec![0u8; HEADER_SIZE];
        header[0..8].copy_from_slice(SIGNATURE);
        put32(&mut header, field::REVISION, REVISION);
        put32(&mut header, field::HEADER_SIZE, HEADER_SIZE as u32);
        put64(&mut header, field::MY_LBA, 1);
        put64(&mut header, field::ALTERNATE_LBA, disk_sectors - 1);
        put64(&mut header, field::FIRST_USABLE, first_usable);
        put64(&mut header, field::LAST_USABLE, last_usable);
        header[field::DISK_GUID..field::DISK_GUID + 16].copy_from_slice(&disk_guid.0);
        put64(&mut header, field::ENTRIES_LBA, 2);
        put32(&mut header, field::ENTRY_COUNT, ENTRIES);
        put32(&mut header, field::ENTRY_SIZE, ENTRY_SIZE);
        let mut entries = vec![0u8; array as usize];
        let mut placed: Vec<&Partition> = Vec::new();
        for p in partitions {
            check(p, sector_size, first_usable, last_usable, &placed)?;
            let at = (p.number - 1) as usize * ENTRY_SIZE as usize;
            encode_entry(&mut entries[at..at + ENTRY_SIZE as usize], p)?;
            placed.push(p);
        }
        Ok(Table {
            sector_size,
            header,
            entries,
            from_backup: false,
        })
    }

    /// Plans growing partition `number` to the last usable LBA of a disk of `disk_sectors`
    /// sectors. Returns the new last LBA, or `None` when there is nothing to grow: the
    /// partition already ends there, or another partition lies after it.
    pub fn grow(&mut self, number: u32, disk_sectors: u64) -> Result<Option<u64>, String> {
        let parts = self.partitions();
        let p = parts
            .iter()
            .find(|p| p.number == number)
            .ok_or_else(|| format!("no partition {number}"))?;
        if parts.iter().any(|q| q.first_lba > p.last_lba) {
            return Ok(None);
        }
        let backup_header = disk_sectors
            .checked_sub(1)
            .ok_or_else(|| "empty disk".to_string())?;
        let new_last_usable = backup_header
            .checked_sub(self.entries_sectors() + 1)
            .ok_or_else(|| "disk too small for a GPT".to_string())?;
        if new_last_usable <= p.last_lba || new_last_usable < self.last_usable() {
            return Ok(None);
        }
        let off = (number as usize - 1) * self.entry_size();
        put64(&mut self.entries, off + 40, new_last_usable);
        put64(&mut self.header, field::ALTERNATE_LBA, backup_header);
        put64(&mut self.header, field::LAST_USABLE, new_last_usable);
        Ok(Some(new_last_usable))
    }

    /// Gives partition `number` the unique GUID `uuid` and the label `name`, keeping its
    /// type, place and attributes (an update writing a slot: its ids follow its content).
    pub fn relabel(&mut self, number: u32, uuid: Guid, name: &str) -> Result<(), String> {
        let mut p = self
            .partitions()
            .into_iter()
            .find(|p| p.number == number)
            .ok_or_else(|| format!("no partition {number}"))?;
        p.uuid = uuid;
        p.name = name.to_string();
        let size = self.entry_size();
        let at = (number as usize - 1) * size;
        let e = &mut self.entries[at..at + size];
        e[56..128].fill(0);
        encode_entry(e, &p)
    }

    /// The backup entry array, backup header sector, primary entry array and primary
    /// header sector as they are to be written: `(byte offset, bytes)` in write order
    /// (backup first, so a crash between the writes leaves the old primary valid).
    pub fn serialize(&self) -> Vec<(u64, Vec<u8>)> {
        let sector = self.sector_size;
        let mut primary = self.header.clone();
        put32(&mut primary, field::ENTRIES_CRC, crc32(&self.entries));
        put64(&mut primary, field::MY_LBA, 1);
        let backup_lba = le64(&primary, field::ALTERNATE_LBA);
        let backup_entries_lba = backup_lba - self.entries_sectors();
        let mut backup = primary.clone();
        put64(&mut backup, field::MY_LBA, backup_lba);
        put64(&mut backup, field::ALTERNATE_LBA, 1);
        put64(&mut backup, field::ENTRIES_LBA, backup_entries_lba);
        let seal = |h: &mut Vec<u8>| {
            put32(h, field::HEADER_CRC, 0);
            let c = crc32(h);
            put32(h, field::HEADER_CRC, c);
            let mut s = h.clone();
            s.resize(sector as usize, 0);
            s
        };
        let primary_sector = seal(&mut primary);
        let backup_sector = seal(&mut backup);
        vec![
            (backup_entries_lba * sector, self.entries.clone()),
            (backup_lba * sector, backup_sector),
            (
                le64(&primary, field::ENTRIES_LBA) * sector,
                self.entries.clone(),
            ),
            (sector, primary_sector),
        ]
    }

    /// The protective MBR (UEFI 2.10, section 5.2.3) as LBA 0's sector: one partition of
    /// type 0xEE from LBA 1 over the whole disk (capped at 2^32 - 1 sectors).
    pub fn protective_mbr(&self) -> Vec<u8> {
        let mut m = vec![0u8; self.sector_size as usize];
        let sectors = u32::try_from(self.backup_lba()).unwrap_or(u32::MAX);
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

    /// Writes both copies of an edited table in place and fixes the protective MBR's size;
    /// zeroes the old backup header when it moved (it now lies inside a partition).
    pub fn write(&self, disk: &mut dyn Disk, old_backup_lba: Option<u64>) -> Result<(), String> {
        for (off, bytes) in self.serialize() {
            disk.write_at(&bytes, off)
                .map_err(|e| format!("writing {} bytes at offset {off}: {e}", bytes.len()))?;
        }
        let backup_lba = self.backup_lba();
        let mut mbr = [0u8; 512];
        disk.read_at(&mut mbr, 0)
            .map_err(|e| format!("reading the protective MBR: {e}"))?;
        if mbr[510..512] == [0x55, 0xAA] && mbr[446 + 4] == 0xEE {
            let size = u32::try_from(backup_lba).unwrap_or(u32::MAX);
            put32(&mut mbr, 446 + 12, size);
            disk.write_at(&mbr, 0)
                .map_err(|e| format!("writing the protective MBR: {e}"))?;
        }
        if let Some(old) = old_backup_lba.filter(|&o| o != backup_lba && o > 1) {
            disk.write_at(
                &vec![0u8; self.sector_size as usize],
                old * self.sector_size,
            )
            .map_err(|e| format!("clearing the old backup header at LBA {old}: {e}"))?;
        }
        disk.flush().map_err(|e| format!("syncing: {e}"))
    }
}

/// Checks that `p` fits the usable range and overlaps none of `placed`.
fn check(
    p: &Partition,
    sector_size: u64,
    first_usable: u64,
    last_usable: u64,
    placed: &[&Partition],
) -> Result<(), String> {
    let what = format!("partition {} ({:?})", p.number, p.name);
    if p.number == 0 || p.number > ENTRIES {
        return Err(format!("{what}: number outside 1-{ENTRIES}"));
    }
    if p.sector_size != sector_size {
        return Err(format!(
            "{what}: laid out for {}-byte sectors, the disk has {sector_size}",
            p.sector_size
        ));
    }
    if p.type_guid.is_zero() {
        return Err(format!("{what}: the zero type GUID marks an unused entry"));
    }
    if p.first_lba < first_usable || p.last_lba > last_usable || p.first_lba > p.last_lba {
        return Err(format!(
            "{what}: LBAs {}-{} outside the usable {first_usable}-{last_usable}",
            p.first_lba, p.last_lba
        ));
    }
    if let Some(q) = placed
        .iter()
        .find(|q| q.number == p.number || (q.first_lba <= p.last_lba && p.first_lba <= q.last_lba))
    {
        return Err(format!("{what} clashes with partition {}", q.number));
    }
    Ok(())
}

/// Fills one 128-byte entry (UEFI 2.10, table 5-6).
fn encode_entry(e: &mut [u8], p: &Partition) -> Result<(), String> {
    e[0..16].copy_from_slice(&p.type_guid.0);
    e[16..32].copy_from_slice(&p.uuid.0);
    put64(e, 32, p.first_lba);
    put64(e, 40, p.last_lba);
    put64(e, 48, p.attributes);
    let units: Vec<u16> = p.name.encode_utf16().collect();
    if units.len() > NAME_UNITS {
        return Err(format!(
            "partition name \"{}\" is longer than {NAME_UNITS} characters",
            p.name
        ));
    }
    for (j, u) in units.iter().enumerate() {
        e[56 + j * 2..58 + j * 2].copy_from_slice(&u.to_le_bytes());
    }
    Ok(())
}
