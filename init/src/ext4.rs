//! The few ext4 superblock fields slipway-init needs to prepare /var: the magic (is
//! there a file system at all?), the block size and the block count (does it need to
//! grow?). Layout: kernel Documentation/filesystems/ext4/super.rst.

/// Where the superblock starts on the device.
pub const OFFSET: u64 = 1024;
/// Bytes of the superblock read.
pub const SIZE: usize = 1024;

/// What the superblock says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// File-system block size in bytes.
    pub block_size: u64,
    /// File-system blocks.
    pub blocks: u64,
}

/// What the start of a partition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An ext2/3/4 superblock.
    Ext4(Superblock),
    /// Only zeros: no file system was ever made.
    Empty,
    /// Something else.
    Other,
}

/// Classifies the [`SIZE`] bytes read at [`OFFSET`].
pub fn probe(sb: &[u8]) -> Probe {
    if sb.len() < SIZE {
        return Probe::Other;
    }
    if sb[56..58] == [0x53, 0xEF] {
        let le32 =
            |o: usize| u64::from(u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]));
        let log = le32(24);
        if log > 6 {
            return Probe::Other;
        }
        let incompat_64bit = le32(96) & 0x80 != 0;
        let hi = if incompat_64bit { le32(0x150) } else { 0 };
        return Probe::Ext4(Superblock {
            block_size: 1024 << log,
            blocks: le32(4) | hi << 32,
        });
    }
    if sb.iter().all(|&b| b == 0) {
        Probe::Empty
    } else {
        Probe::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_superblocks() {
        let mut sb = vec![0u8; SIZE];
        assert_eq!(probe(&sb), Probe::Empty);
        sb[56] = 0x53;
        sb[57] = 0xEF;
        sb[24] = 2; // 4096-byte blocks
        sb[4..8].copy_from_slice(&16384u32.to_le_bytes());
        assert_eq!(
            probe(&sb),
            Probe::Ext4(Superblock {
                block_size: 4096,
                blocks: 16384
            })
        );
        sb[96] = 0x80; // 64bit
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            probe(&sb),
            Probe::Ext4(Superblock {
                block_size: 4096,
                blocks: (1 << 32) + 16384
            })
        );
        sb[56] = 0;
        assert_eq!(probe(&sb), Probe::Other);
        assert_eq!(probe(&sb[..10]), Probe::Other);
    }
}
