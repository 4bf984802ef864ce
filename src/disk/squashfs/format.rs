//! The on-disk constants and records of squashfs 4.0 that more than one part of the writer
//! needs: the superblock, inode type numbers, flags, and little-endian encoding helpers.
//!
//! Spec: the Linux kernel's `Documentation/filesystems/squashfs.rst` and
//! `fs/squashfs/squashfs_fs.h` (every field is little-endian).

/// "hsqs" read as a little-endian u32.
pub const MAGIC: u32 = 0x7371_7368;
/// Bytes of a metadata block before compression.
pub const METADATA_SIZE: usize = 8192;
/// A metadata block's 2-byte header has this bit set when the block is stored as is.
pub const METADATA_UNCOMPRESSED: u16 = 1 << 15;
/// A data block's size word has this bit set when the block is stored as is.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// The compressor id of zstd.
pub const ZSTD: u16 = 6;
/// zstd's level when mksquashfs is given none; only other levels are written as
/// compressor options.
pub const ZSTD_DEFAULT_LEVEL: i32 = 15;
/// No fragment / no xattr.
pub const NONE_U32: u32 = u32::MAX;
/// An absent table.
pub const NONE_U64: u64 = u64::MAX;
/// The longest name a directory entry holds.
pub const NAME_MAX: usize = 256;
/// The most entries one directory header covers.
pub const DIR_HEADER_MAX: usize = 256;
/// Bytes of the superblock.
pub const SUPERBLOCK_SIZE: usize = 96;
/// The image is padded to a multiple of this (as mksquashfs does by default).
pub const PAD: u64 = 4096;

/// Superblock flags (squashfs_fs.h `SQUASHFS_*` bit numbers as masks).
pub mod flags {
    /// Files whose size exceeds the block size put their tails in fragments too.
    pub const ALWAYS_FRAGMENTS: u16 = 1 << 5;
    /// Identical files share their data.
    pub const DUPLICATES: u16 = 1 << 6;
    /// The export (inode lookup) table is present.
    pub const EXPORTABLE: u16 = 1 << 7;
    /// Compressor options follow the superblock.
    pub const COMPRESSOR_OPTIONS: u16 = 1 << 10;
}

/// Inode types; the basic ones (1-7) are also the types of directory entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeType {
    /// Directory.
    Dir = 1,
    /// Regular file.
    File = 2,
    /// Symbolic link.
    Symlink = 3,
    /// Block device.
    BlockDevice = 4,
    /// Character device.
    CharDevice = 5,
    /// Named pipe.
    Fifo = 6,
}

impl InodeType {
    /// The basic type number.
    pub fn basic(self) -> u16 {
        self as u16
    }
    /// The extended type number (basic + 7).
    pub fn extended(self) -> u16 {
        self as u16 + 7
    }
}

/// The device number as squashfs stores it (the kernel's `new_encode_dev`).
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Appends little-endian values.
pub trait Put {
    /// A u16.
    fn put16(&mut self, v: u16);
    /// A u32.
    fn put32(&mut self, v: u32);
    /// A u64.
    fn put64(&mut self, v: u64);
}

impl Put for Vec<u8> {
    fn put16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

/// The superblock's fields that vary (squashfs_fs.h `struct squashfs_super_block`).
#[derive(Debug, Clone, Default)]
pub struct Superblock {
    /// Number of inodes.
    pub inodes: u32,
    /// Creation time.
    pub mkfs_time: u32,
    /// Data block size (a power of two, 4 KiB to 1 MiB).
    pub block_size: u32,
    /// Number of fragment blocks.
    pub fragments: u32,
    /// Flags, see [`flags`].
    pub flags: u16,
    /// Number of distinct uids and gids.
    pub ids: u16,
    /// Reference of the root directory's inode.
    pub root_inode: u64,
    /// Bytes of the file system before padding.
    pub bytes_used: u64,
    /// Where the id table's index is.
    pub id_table: u64,
    /// Where the xattr id table's header is ([`NONE_U64`] without xattrs).
    pub xattr_id_table: u64,
    /// Where the inode table starts.
    pub inode_table: u64,
    /// Where the directory table starts.
    pub directory_table: u64,
    /// Where the fragment table's index is.
    pub fragment_table: u64,
    /// Where the export table's index is ([`NONE_U64`] when not exportable).
    pub lookup_table: u64,
}

impl Superblock {
    /// The 96 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SUPERBLOCK_SIZE);
        b.put32(MAGIC);
        b.put32(self.inodes);
        b.put32(self.mkfs_time);
        b.put32(self.block_size);
        b.put32(self.fragments);
        b.put16(ZSTD);
        b.put16(self.block_size.trailing_zeros() as u16);
        b.put16(self.flags);
        b.put16(self.ids);
        b.put16(4);
        b.put16(0);
        for v in [
            self.root_inode,
            self.bytes_used,
            self.id_table,
            self.xattr_id_table,
            self.inode_table,
            self.directory_table,
            self.fragment_table,
            self.lookup_table,
        ] {
            b.put64(v);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernels_encoding() {
        // /dev/null, /dev/sda1 and a minor above 255 (a large loop device).
        assert_eq!(encode_dev(1, 3), 0x0103);
        assert_eq!(encode_dev(8, 1), 0x0801);
        assert_eq!(encode_dev(7, 0x123), 0x0010_0723);
    }

    #[test]
    fn the_superblock_is_96_bytes_with_the_block_log() {
        let sb = Superblock {
            block_size: 131072,
            ..Superblock::default()
        };
        let b = sb.encode();
        assert_eq!(b.len(), SUPERBLOCK_SIZE);
        assert_eq!(&b[0..4], b"hsqs");
        assert_eq!(u16::from_le_bytes([b[22], b[23]]), 17);
        assert_eq!(u16::from_le_bytes([b[20], b[21]]), ZSTD);
    }
}
