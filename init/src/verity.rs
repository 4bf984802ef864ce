//! dm-verity metadata: parses the superblock `veritysetup format` writes at the start of
//! the hash device (cryptsetup's `struct verity_sb`, 512 bytes, little-endian) and
//! produces the device-mapper `verity` target line for it
//! (kernel Documentation/admin-guide/device-mapper/verity.rst).

use crate::cmdline::OnCorruption;

/// Bytes of the on-disk superblock.
pub const SUPERBLOCK_SIZE: usize = 512;

/// What the superblock says about the data and hash devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// 1 = normal (salt before data), 0 = Chrome OS.
    pub hash_type: u32,
    /// Hash algorithm name as the kernel's crypto API knows it (e.g. "sha256").
    pub algorithm: String,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks the tree covers.
    pub data_blocks: u64,
    /// The salt.
    pub salt: Vec<u8>,
}

fn le32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

impl Superblock {
    /// Parses and checks a superblock.
    pub fn parse(b: &[u8]) -> Result<Superblock, String> {
        if b.len() < SUPERBLOCK_SIZE {
            return Err("short read".into());
        }
        if &b[0..8] != b"verity\0\0" {
            return Err(
                "no verity superblock (expected \"verity\" at offset 0; was the hash \
                 partition made with veritysetup format, without --no-superblock?)"
                    .into(),
            );
        }
        let version = le32(b, 8);
        if version != 1 {
            return Err(format!("verity superblock version {version} is not 1"));
        }
        let hash_type = le32(b, 12);
        if hash_type > 1 {
            return Err(format!("verity hash type {hash_type} is unknown"));
        }
        let alg = &b[32..64];
        let end = alg.iter().position(|&c| c == 0).unwrap_or(alg.len());
        let algorithm = std::str::from_utf8(&alg[..end])
            .ok()
            .filter(|a| !a.is_empty() && a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
            .ok_or("verity hash algorithm name is not printable")?
            .to_string();
        let data_block_size = le32(b, 64);
        let hash_block_size = le32(b, 68);
        for (what, v) in [("data", data_block_size), ("hash", hash_block_size)] {
            if !v.is_power_of_two() || !(512..=(1 << 20)).contains(&v) {
                return Err(format!("verity {what} block size {v} is invalid"));
            }
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[72..80]);
        let data_blocks = u64::from_le_bytes(n);
        if data_blocks == 0 {
            return Err("verity superblock covers 0 data blocks".into());
        }
        let salt_size = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_size > 256 {
            return Err(format!("verity salt size {salt_size} is over 256"));
        }
        Ok(Superblock {
            hash_type,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt: b[88..88 + salt_size].to_vec(),
        })
    }

    /// Bytes of data the tree covers.
    pub fn data_bytes(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size)
    }

    /// The hash tree's first block on the hash device: the superblock occupies block 0.
    pub fn hash_start_block(&self) -> u64 {
        (SUPERBLOCK_SIZE as u64).div_ceil(u64::from(self.hash_block_size))
    }

    /// The `verity` target parameters (everything after the target name).
    pub fn table_params(
        &self,
        data_dev: &str,
        hash_dev: &str,
        root_hash: &str,
        on_corruption: OnCorruption,
    ) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            self.salt.iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut s = format!(
            "{} {data_dev} {hash_dev} {} {} {} {} {} {root_hash} {salt}",
            self.hash_type,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block(),
            self.algorithm
        );
        match on_corruption {
            OnCorruption::Panic => s.push_str(" 1 panic_on_corruption"),
            OnCorruption::Restart => s.push_str(" 1 restart_on_corruption"),
            OnCorruption::Eio => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A superblock laid out by hand after cryptsetup's `struct verity_sb`.
    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..32].copy_from_slice(&[0x55; 16]);
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&2560u64.to_le_bytes());
        b[80..82].copy_from_slice(&4u16.to_le_bytes());
        b[88..92].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        b
    }

    #[test]
    fn parses_the_superblock() {
        let sb = Superblock::parse(&sample()).unwrap();
        assert_eq!(sb.algorithm, "sha256");
        assert_eq!(sb.data_blocks, 2560);
        assert_eq!(sb.data_bytes(), 2560 * 4096);
        assert_eq!(sb.salt, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(sb.hash_start_block(), 1);
    }

    #[test]
    fn rejects_damaged_superblocks() {
        let mut b = sample();
        b[0] = b'V';
        assert!(Superblock::parse(&b)
            .unwrap_err()
            .contains("no verity superblock"));
        let mut b = sample();
        b[64..68].copy_from_slice(&4000u32.to_le_bytes());
        assert!(Superblock::parse(&b)
            .unwrap_err()
            .contains("data block size 4000"));
        let mut b = sample();
        b[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert!(Superblock::parse(&b).unwrap_err().contains("salt size 300"));
        assert!(Superblock::parse(&b[..100]).is_err());
    }

    #[test]
    fn builds_the_table_line() {
        let sb = Superblock::parse(&sample()).unwrap();
        let h = "0f".repeat(32);
        assert_eq!(
            sb.table_params("254:1", "254:2", &h, OnCorruption::Panic),
            format!("1 254:1 254:2 4096 4096 2560 1 sha256 {h} deadbeef 1 panic_on_corruption")
        );
        let mut no_salt = sb.clone();
        no_salt.salt.clear();
        assert_eq!(
            no_salt.table_params("8:1", "8:2", &h, OnCorruption::Eio),
            format!("1 8:1 8:2 4096 4096 2560 1 sha256 {h} -")
        );
        assert!(sb
            .table_params("8:1", "8:2", &h, OnCorruption::Restart)
            .ends_with(" 1 restart_on_corruption"));
    }
}
