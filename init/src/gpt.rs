//! GUID partition tables (UEFI 2.10, chapter 5.3): reads a disk's GPT (primary header at
//! LBA 1, falling back to the backup header at the last LBA), checks both CRC-32s, and
//! produces the partition list; grows the last partition to the end of an enlarged disk
//! and writes the primary and backup tables back with fresh CRCs.
//!
//! Partition type GUIDs follow the UAPI Discoverable Partitions Specification
//! (<https://uapi-group.org/specifications/specs/discoverable_partitions_specification/>).
//! Headers and entries are kept as raw bytes and edited in place, so fields and entry
//! bytes this module does not know survive a rewrite.

use crate::crc32::crc32;
use std::fmt;

/// A GUID as stored on disk: the first three fields little-endian ("mixed-endian").
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

/// The field order of the canonical text form: bytes 0..4, 4..6 and 6..8 are reversed on disk.
const TEXT_ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];

const fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Guid {
    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub const fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        let mut text = [0u8; 16];
        let (mut i, mut n) = (0, 0);
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            let (Some(h), Some(l)) = (nibble(b[i]), nibble(b[i + 1])) else {
                return None;
            };
            text[n] = h << 4 | l;
            n += 1;
            i += 2;
        }
        Some(Guid::from_text_bytes(text))
    }

    /// The GUID whose canonical text form spells `text` (big-endian byte order, the order
    /// of a UUID string and of systemd's `sd_id128_t`).
    pub const fn from_text_bytes(text: [u8; 16]) -> Guid {
        let mut disk = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            disk[i] = text[TEXT_ORDER[i]];
            i += 1;
        }
        Guid(disk)
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

/// A compile-time GUID constant.
const fn guid(s: &str) -> Guid {
    match Guid::parse(s) {
        Some(g) => g,
        None => panic!("bad GUID constant"),
    }
}

/// DPS: root partition, x86-64.
pub const ROOT_X86_64: Guid = guid("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
/// DPS: root verity (hash tree) partition, x86-64.
pub const ROOT_VERITY_X86_64: Guid = guid("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5");
/// DPS: variable data partition (/var), any architecture.
pub const VAR: Guid = guid("4d21b016-b534-45c2-a9fb-5c16e091fd2d");
/// DPS / UEFI: EFI system partition.
pub const ESP: Guid = guid("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");

/// A human name for a partition type, for messages.
pub fn type_name(t: &Guid) -> &'static str {
    match *t {
        ROOT_X86_64 => "root x86-64",
        ROOT_VERITY_X86_64 => "root-verity x86-64",
        VAR => "var",
        ESP => "esp",
        _ => "other",
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, &i) in TEXT_ORDER.iter().enumerate() {
            if matches!(n, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{:02x}", self.0[i])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_MIN: usize = 92;
/// More entries than any real table has; bounds the read on a hostile disk.
const MAX_ENTRIES_BYTES: u64 = 1 << 20;

fn le32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Random access to a disk (a block device, or a buffer in tests).
pub trait Disk {
    /// Fills `buf` from byte offset `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
    /// Writes all of `buf` at byte offset `off`.
    fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()>;
    /// Makes the writes durable.
    fn flush(&mut self) -> std::io::Result<()>;
}

impl Disk for std::fs::File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, off)
    }
    fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, off)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// One used partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The Linux partition number: the entry's index in the array plus one.
    pub number: u32,
    /// The partition type GUID.
    pub type_guid: Guid,
    /// The unique partition GUID (PARTUUID).
    pub uuid: Guid,
    /// First LBA, inclusive.
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
}

impl Partition {
    /// Size in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
}

/// A verified partition table.
#[derive(Clone, Debug)]
pub struct Table {
    /// Logical block size in bytes.
    pub lba_size: u64,
    /// Raw header bytes (`header_size` long) of the copy that was read, as if primary.
    header: Vec<u8>,
    /// The raw entry array.
    entries: Vec<u8>,
    /// True when the primary copy was bad and the backup was used.
    pub from_backup: bool,
}

impl Table {
    /// Reads and verifies the table of a disk of `disk_lbas` blocks of `lba_size` bytes:
    /// the primary copy, else the backup. The error names what was wrong with each.
    pub fn read(disk: &dyn Disk, lba_size: u64, disk_lbas: u64) -> Result<Table, String> {
        let primary = Self::read_copy(disk, lba_size, 1);
        let primary_err = match primary {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        if disk_lbas < 3 {
            return Err(format!("primary GPT: {primary_err}"));
        }
        match Self::read_copy(disk, lba_size, disk_lbas - 1) {
            Ok(mut t) => {
                // Normalise to the primary's view: my LBA 1, the alternate at the end.
                let (my, alt) = (le64(&t.header, 24), le64(&t.header, 32));
                put64(&mut t.header, 24, alt);
                put64(&mut t.header, 32, my);
                put64(&mut t.header, 72, 2);
                t.from_backup = true;
                Ok(t)
            }
            Err(backup_err) => Err(format!(
                "primary GPT: {primary_err}; backup GPT: {backup_err}"
            )),
        }
    }

    fn read_copy(disk: &dyn Disk, lba_size: u64, lba: u64) -> Result<Table, String> {
        let mut sector = vec![0u8; lba_size as usize];
        disk.read_at(&mut sector, lba * lba_size)
            .map_err(|e| format!("reading LBA {lba}: {e}"))?;
        let header = parse_header(&sector, lba)?;
        let entries_lba = le64(&header, 72);
        let len = u64::from(le32(&header, 80)) * u64::from(le32(&header, 84));
        let mut entries = vec![0u8; len as usize];
        disk.read_at(&mut entries, entries_lba * lba_size)
            .map_err(|e| format!("reading the entries at LBA {entries_lba}: {e}"))?;
        if crc32(&entries) != le32(&header, 88) {
            return Err(format!(
                "partition entry array at LBA {entries_lba}: CRC-32 mismatch"
            ));
        }
        Ok(Table {
            lba_size,
            header,
            entries,
            from_backup: false,
        })
    }

    /// The disk GUID.
    #[cfg(test)]
    pub fn disk_guid(&self) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&self.header[56..72]);
        Guid(g)
    }

    /// The last LBA partitions may use.
    pub fn last_usable(&self) -> u64 {
        le64(&self.header, 48)
    }

    fn entry_size(&self) -> usize {
        le32(&self.header, 84) as usize
    }

    /// The used entries, in table order.
    pub fn partitions(&self) -> Vec<Partition> {
        let size = self.entry_size();
        let mut out = Vec::new();
        for (i, e) in self.entries.chunks_exact(size).enumerate() {
            let mut t = [0u8; 16];
            t.copy_from_slice(&e[0..16]);
            let type_guid = Guid(t);
            if type_guid.is_zero() {
                continue;
            }
            let mut u = [0u8; 16];
            u.copy_from_slice(&e[16..32]);
            out.push(Partition {
                number: i as u32 + 1,
                type_guid,
                uuid: Guid(u),
                first_lba: le64(e, 32),
                last_lba: le64(e, 40),
            });
        }
        out
    }

    /// Blocks one copy of the entry array occupies.
    fn entries_lbas(&self) -> u64 {
        (self.entries.len() as u64).div_ceil(self.lba_size)
    }

    /// Plans growing partition `number` to the last usable LBA of a disk of `disk_lbas`
    /// blocks. Returns the new last LBA, or `None` when there is nothing to grow: the
    /// partition already ends there, or another partition lies after it.
    pub fn grow(&mut self, number: u32, disk_lbas: u64) -> Result<Option<u64>, String> {
        let parts = self.partitions();
        let p = parts
            .iter()
            .find(|p| p.number == number)
            .ok_or_else(|| format!("no partition {number}"))?;
        if parts.iter().any(|q| q.first_lba > p.last_lba) {
            return Ok(None);
        }
        let backup_header = disk_lbas
            .checked_sub(1)
            .ok_or_else(|| "empty disk".to_string())?;
        let new_last_usable = backup_header
            .checked_sub(self.entries_lbas() + 1)
            .ok_or_else(|| "disk too small for a GPT".to_string())?;
        if new_last_usable <= p.last_lba || new_last_usable < self.last_usable() {
            return Ok(None);
        }
        let off = (number as usize - 1) * self.entry_size();
        put64(&mut self.entries, off + 40, new_last_usable);
        put64(&mut self.header, 32, backup_header);
        put64(&mut self.header, 48, new_last_usable);
        Ok(Some(new_last_usable))
    }

    /// The primary header sector, entry array and backup header sector as they are to be
    /// written: `(byte offset, bytes)` in write order (backup first, so a crash between
    /// the writes leaves the old primary valid).
    pub fn serialize(&self) -> Vec<(u64, Vec<u8>)> {
        let lba = self.lba_size;
        let entries_crc = crc32(&self.entries);
        let mut primary = self.header.clone();
        put32(&mut primary, 88, entries_crc);
        put64(&mut primary, 24, 1);
        let backup_lba = le64(&primary, 32);
        let backup_entries_lba = backup_lba - self.entries_lbas();
        let mut backup = primary.clone();
        put64(&mut backup, 24, backup_lba);
        put64(&mut backup, 32, 1);
        put64(&mut backup, 72, backup_entries_lba);
        let sector = |h: &mut Vec<u8>| {
            put32(h, 16, 0);
            let c = crc32(h);
            put32(h, 16, c);
            let mut s = h.clone();
            s.resize(lba as usize, 0);
            s
        };
        let primary_sector = sector(&mut primary);
        let backup_sector = sector(&mut backup);
        vec![
            (backup_entries_lba * lba, self.entries.clone()),
            (backup_lba * lba, backup_sector),
            (le64(&primary, 72) * lba, self.entries.clone()),
            (lba, primary_sector),
        ]
    }

    /// Writes both copies and fixes the protective MBR's size; zeroes the old backup
    /// header when it moved (it now lies inside a partition).
    pub fn write(&self, disk: &mut dyn Disk, old_backup_lba: Option<u64>) -> Result<(), String> {
        for (off, bytes) in self.serialize() {
            disk.write_at(&bytes, off)
                .map_err(|e| format!("writing {} bytes at offset {off}: {e}", bytes.len()))?;
        }
        let backup_lba = le64(&self.header, 32);
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
            disk.write_at(&vec![0u8; self.lba_size as usize], old * self.lba_size)
                .map_err(|e| format!("clearing the old backup header at LBA {old}: {e}"))?;
        }
        disk.flush().map_err(|e| format!("syncing: {e}"))
    }

    /// The LBA of the backup header as the table says.
    pub fn backup_lba(&self) -> u64 {
        le64(&self.header, 32)
    }
}

/// Checks a header sector read from `lba`; returns its `header_size` bytes.
fn parse_header(sector: &[u8], lba: u64) -> Result<Vec<u8>, String> {
    if &sector[0..8] != SIGNATURE {
        return Err(format!("no \"EFI PART\" signature at LBA {lba}"));
    }
    let size = le32(sector, 12) as usize;
    if size < HEADER_MIN || size > sector.len() {
        return Err(format!("header size {size} out of range"));
    }
    let mut h = sector[..size].to_vec();
    let want = le32(&h, 16);
    put32(&mut h, 16, 0);
    if crc32(&h) != want {
        return Err(format!("header at LBA {lba}: CRC-32 mismatch"));
    }
    put32(&mut h, 16, want);
    if le64(&h, 24) != lba {
        return Err(format!(
            "header at LBA {lba} says it is at LBA {}",
            le64(&h, 24)
        ));
    }
    let entry_size = le32(&h, 84);
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(format!("partition entry size {entry_size} is invalid"));
    }
    if u64::from(le32(&h, 80)) * u64::from(entry_size) > MAX_ENTRIES_BYTES {
        return Err(format!("{} partition entries is too many", le32(&h, 80)));
    }
    Ok(h)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A disk in memory.
    pub struct MemDisk(pub Vec<u8>);

    impl Disk for MemDisk {
        fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
            let o = off as usize;
            let src = self.0.get(o..o + buf.len()).ok_or(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "past the end",
            ))?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
            let o = off as usize;
            self.0[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Builds a fresh GPT by hand (fields from UEFI 2.10 table 5-5 and 5-6) on a disk of
    /// `lbas` 512-byte blocks with the given (type, uuid, first, last) partitions.
    pub fn make_disk(lbas: u64, parts: &[(Guid, Guid, u64, u64)]) -> MemDisk {
        let mut d = MemDisk(vec![0u8; (lbas * 512) as usize]);
        let mut entries = vec![0u8; 128 * 128];
        for (i, (t, u, f, l)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&t.0);
            e[16..32].copy_from_slice(&u.0);
            put64(e, 32, *f);
            put64(e, 40, *l);
        }
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(SIGNATURE);
        put32(&mut h, 8, 0x0001_0000);
        put32(&mut h, 12, 92);
        put64(&mut h, 24, 1);
        put64(&mut h, 32, lbas - 1);
        put64(&mut h, 40, 34);
        put64(&mut h, 48, lbas - 34);
        h[56..72].copy_from_slice(&[7u8; 16]);
        put64(&mut h, 72, 2);
        put32(&mut h, 80, 128);
        put32(&mut h, 84, 128);
        let t = Table {
            lba_size: 512,
            header: h,
            entries,
            from_backup: false,
        };
        for (off, b) in t.serialize() {
            d.write_at(&b, off).unwrap();
        }
        d.0[446 + 4] = 0xEE;
        put32(&mut d.0, 446 + 8, 1);
        put32(&mut d.0, 446 + 12, (lbas - 1) as u32);
        d.0[510] = 0x55;
        d.0[511] = 0xAA;
        d
    }

    #[test]
    fn guid_text_round_trip_and_disk_order() {
        let g = Guid::parse("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709").unwrap();
        assert_eq!(g.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        // On disk the first three fields are little-endian.
        assert_eq!(&g.0[0..4], &[0xe3, 0xbc, 0x68, 0x4f]);
        assert_eq!(&g.0[4..6], &[0xcd, 0xe8]);
        assert_eq!(&g.0[8..10], &[0x96, 0xe7]);
        assert!(Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b70").is_none());
        assert!(Guid::parse("4f68bce3xe8cd-4db1-96e7-fbcaf984b709").is_none());
        assert!(Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b7g9").is_none());
    }

    fn uuid(n: u8) -> Guid {
        Guid([n; 16])
    }

    #[test]
    fn reads_what_it_wrote_and_checks_crcs() {
        let d = make_disk(
            4096,
            &[
                (ROOT_X86_64, uuid(1), 2048, 2559),
                (ROOT_VERITY_X86_64, uuid(2), 2560, 2623),
                (VAR, uuid(3), 2624, 3071),
            ],
        );
        let t = Table::read(&d, 512, 4096).unwrap();
        assert!(!t.from_backup);
        let p = t.partitions();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].number, 3);
        assert_eq!(p[2].type_guid, VAR);
        assert_eq!(p[0].blocks(), 512);
        assert_eq!(t.disk_guid(), Guid([7; 16]));

        // A flipped byte in an entry breaks the primary's array CRC: the backup is used.
        let mut bad = MemDisk(d.0.clone());
        bad.0[2 * 512 + 40] ^= 1;
        let t = Table::read(&bad, 512, 4096).unwrap();
        assert!(t.from_backup);
        assert_eq!(t.partitions(), p);
        // Both copies bad: the error names both.
        bad.0[4095 * 512 + 30] ^= 1;
        let e = Table::read(&bad, 512, 4096).unwrap_err();
        assert!(
            e.contains("entry array at LBA 2: CRC-32 mismatch")
                && e.contains("backup GPT: header at LBA 4095: CRC-32 mismatch"),
            "{e}"
        );
        let blank = MemDisk(vec![0u8; 4096 * 512]);
        let e = Table::read(&blank, 512, 4096).unwrap_err();
        assert!(e.contains("no \"EFI PART\" signature at LBA 1"), "{e}");
    }

    #[test]
    fn grows_the_last_partition_to_an_enlarged_disk() {
        let small = make_disk(
            4096,
            &[
                (ROOT_X86_64, uuid(1), 2048, 2559),
                (VAR, uuid(3), 2624, 3071),
            ],
        );
        // Enlarge the disk to 8192 blocks: the backup copy is now in the middle.
        let mut d = MemDisk(small.0.clone());
        d.0.resize(8192 * 512, 0);
        let mut t = Table::read(&d, 512, 8192).unwrap();
        assert_eq!(t.backup_lba(), 4095);
        // The root partition is not last: nothing to grow.
        assert_eq!(t.grow(1, 8192).unwrap(), None);
        assert_eq!(t.grow(2, 8192).unwrap(), Some(8192 - 34));
        t.write(&mut d, Some(4095)).unwrap();

        let again = Table::read(&d, 512, 8192).unwrap();
        assert!(!again.from_backup);
        assert_eq!(again.backup_lba(), 8191);
        assert_eq!(again.last_usable(), 8158);
        assert_eq!(again.partitions()[1].last_lba, 8158);
        assert_eq!(again.partitions()[0], t.partitions()[0]);
        // The backup copy at the new end verifies on its own.
        let backup = Table::read_copy(&d, 512, 8191).unwrap();
        assert_eq!(backup.partitions(), again.partitions());
        assert_eq!(le64(&backup.header, 72), 8191 - 32);
        // The old backup header is gone and the protective MBR covers the disk.
        assert_eq!(&d.0[4095 * 512..4095 * 512 + 8], &[0u8; 8]);
        assert_eq!(le32(&d.0, 446 + 12), 8191);
        // Growing again is a no-op.
        let mut t2 = again.clone();
        assert_eq!(t2.grow(2, 8192).unwrap(), None);
    }
}
