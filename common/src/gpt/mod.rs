//! GUID partition tables (UEFI 2.10, chapter 5.3), read and written, on disks of 512- or
//! 4096-byte logical sectors.
//!
//! Reading consumes a [`Disk`] and produces a verified [`Table`]: the primary header at
//! LBA 1, or else the backup at the last LBA, with both CRC-32s checked. Writing produces
//! the byte ranges of a table (protective MBR, primary header and entry array, backup
//! array and header): a fresh one from a partition list ([`Table::new`]), or an edited one
//! ([`Table::grow`]) whose header and entry bytes this module does not know survive.
//!
//! Partition type GUIDs follow the UAPI Discoverable Partitions Specification
//! (<https://uapi-group.org/specifications/specs/discoverable_partitions_specification/>).

mod read;
mod write;

use crate::guid::Guid;

/// Partition type GUIDs of the Discoverable Partitions Specification.
pub mod types {
    use crate::guid::Guid;

    /// EFI system partition (also UEFI's own).
    pub const ESP: Guid = Guid::constant("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    /// Root, x86-64.
    pub const ROOT_X86_64: Guid = Guid::constant("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    /// Root verity (hash tree), x86-64.
    pub const ROOT_VERITY_X86_64: Guid = Guid::constant("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5");
    /// Root, arm64.
    pub const ROOT_ARM64: Guid = Guid::constant("b921b045-1df0-41c3-af44-4c6f280d3fae");
    /// Root verity (hash tree), arm64.
    pub const ROOT_VERITY_ARM64: Guid = Guid::constant("df3300ce-d69f-4c92-978c-9bfb0f38d820");
    /// Variable data (/var), any architecture.
    pub const VAR: Guid = Guid::constant("4d21b016-b534-45c2-a9fb-5c16e091fd2d");

    /// A human name for a partition type, for messages.
    pub fn name(t: &Guid) -> &'static str {
        match *t {
            ROOT_X86_64 => "root x86-64",
            ROOT_VERITY_X86_64 => "root-verity x86-64",
            ROOT_ARM64 => "root arm64",
            ROOT_VERITY_ARM64 => "root-verity arm64",
            VAR => "var",
            ESP => "esp",
            _ => "other",
        }
    }
}

/// Partition attribute bit 60: read-only (DPS, for root and verity partitions).
pub const READ_ONLY: u64 = 1 << 60;

/// The entry count of a table this module writes (the UEFI minimum array is 16 KiB).
pub const ENTRIES: u32 = 128;
/// The size of one entry this module writes.
pub const ENTRY_SIZE: u32 = 128;
/// The longest partition name: 36 UTF-16 code units.
pub const NAME_UNITS: usize = 36;

/// Random access to a disk (a block device, an image file, or a buffer in tests).
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
    /// Attribute bits ([`READ_ONLY`], ...).
    pub attributes: u64,
    /// The label (at most [`NAME_UNITS`] UTF-16 code units).
    pub name: String,
    /// The logical sector size of the disk it lies on, in bytes.
    pub sector_size: u64,
}

impl Partition {
    /// Size in logical sectors.
    pub fn blocks(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
    /// Byte offset on the disk.
    pub fn offset(&self) -> u64 {
        self.first_lba * self.sector_size
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.blocks() * self.sector_size
    }
}

/// A partition table: header and entry array as raw bytes, so that a rewrite keeps what
/// this module does not interpret.
#[derive(Clone, Debug)]
pub struct Table {
    /// Logical sector size in bytes.
    pub sector_size: u64,
    /// Header bytes (`header_size` long), always in the primary's view (my LBA 1).
    header: Vec<u8>,
    /// The raw entry array.
    entries: Vec<u8>,
    /// True when the primary copy was bad and the backup was read.
    pub from_backup: bool,
}

/// The header signature.
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The size of a UEFI 2.x header; the rest of its sector is reserved (zero).
const HEADER_SIZE: usize = 92;

/// Header field offsets (UEFI 2.10, table 5-5).
mod field {
    pub const REVISION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const HEADER_CRC: usize = 16;
    pub const MY_LBA: usize = 24;
    pub const ALTERNATE_LBA: usize = 32;
    pub const FIRST_USABLE: usize = 40;
    pub const LAST_USABLE: usize = 48;
    pub const DISK_GUID: usize = 56;
    pub const ENTRIES_LBA: usize = 72;
    pub const ENTRY_COUNT: usize = 80;
    pub const ENTRY_SIZE: usize = 84;
    pub const ENTRIES_CRC: usize = 88;
}

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

fn guid_at(b: &[u8], o: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[o..o + 16]);
    Guid(g)
}

impl Table {
    /// The disk GUID.
    pub fn disk_guid(&self) -> Guid {
        guid_at(&self.header, field::DISK_GUID)
    }

    /// The first LBA partitions may use.
    pub fn first_usable(&self) -> u64 {
        le64(&self.header, field::FIRST_USABLE)
    }

    /// The last LBA partitions may use.
    pub fn last_usable(&self) -> u64 {
        le64(&self.header, field::LAST_USABLE)
    }

    /// The LBA of the backup header as the table says.
    pub fn backup_lba(&self) -> u64 {
        le64(&self.header, field::ALTERNATE_LBA)
    }

    fn entry_size(&self) -> usize {
        le32(&self.header, field::ENTRY_SIZE) as usize
    }

    /// Sectors one copy of the entry array occupies.
    fn entries_sectors(&self) -> u64 {
        (self.entries.len() as u64).div_ceil(self.sector_size)
    }

    /// The used entries, in table order.
    pub fn partitions(&self) -> Vec<Partition> {
        let size = self.entry_size();
        let mut out = Vec::new();
        for (i, e) in self.entries.chunks_exact(size).enumerate() {
            let type_guid = guid_at(e, 0);
            if type_guid.is_zero() {
                continue;
            }
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|u| u16::from_le_bytes([u[0], u[1]]))
                .take_while(|&u| u != 0)
                .collect();
            out.push(Partition {
                number: i as u32 + 1,
                type_guid,
                uuid: guid_at(e, 16),
                first_lba: le64(e, 32),
                last_lba: le64(e, 40),
                attributes: le64(e, 48),
                name: String::from_utf16_lossy(&units),
                sector_size: self.sector_size,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
