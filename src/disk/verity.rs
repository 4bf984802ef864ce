//! dm-verity: the hash tree over a read-only file system image and the superblock that
//! `veritysetup format` writes, so the kernel (and `veritysetup verify`) can check every
//! block of root against one root hash. Consumes the data image; produces the hash image
//! bytes and the root hash.
//!
//! Format (cryptsetup's "verity" on-disk format, hash type 1): a 512-byte superblock at
//! the start of the hash device, padded to one hash block; then the hash tree, top level
//! first. Each hash is sha256(salt || block); a hash block holds block_size / 32 hashes,
//! zero-padded. The root hash is the hash of the single top-level block.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

/// Block size for data and hashes.
pub const BLOCK: usize = 4096;

/// The result of formatting.
pub struct Verity {
    /// The hash device content (superblock + tree).
    pub hash_image: Vec<u8>,
    /// The root hash (hex).
    pub root_hash: String,
    /// The salt (hex).
    pub salt: String,
    /// Number of data blocks covered.
    pub data_blocks: u64,
}

fn hash(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Formats the hash tree of `data` (a multiple of [`BLOCK`]) with `salt` (32 bytes) and
/// `uuid` (16 bytes, written into the superblock).
pub fn format(data: &[u8], salt: &[u8; 32], uuid: &[u8; 16]) -> Result<Verity> {
    if data.is_empty() || data.len() % BLOCK != 0 {
        bail!(
            "verity: the data image is {} bytes, not a positive multiple of {BLOCK}",
            data.len()
        );
    }
    let per = BLOCK / 32;
    let data_blocks = (data.len() / BLOCK) as u64;
    // Levels, bottom (hashes of data blocks) first.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    let mut hashes: Vec<[u8; 32]> = data.chunks(BLOCK).map(|b| hash(salt, b)).collect();
    loop {
        let nblocks = hashes.len().div_ceil(per);
        let mut level = vec![0u8; nblocks * BLOCK];
        for (i, h) in hashes.iter().enumerate() {
            level[i * 32..i * 32 + 32].copy_from_slice(h);
        }
        let next: Vec<[u8; 32]> = level.chunks(BLOCK).map(|b| hash(salt, b)).collect();
        levels.push(level);
        if nblocks == 1 {
            let root = next[0];
            let mut sb = vec![0u8; BLOCK];
            sb[0..8].copy_from_slice(b"verity\0\0");
            sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
            sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type
            sb[16..32].copy_from_slice(uuid);
            sb[32..38].copy_from_slice(b"sha256");
            sb[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
            sb[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
            sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
            sb[80..82].copy_from_slice(&32u16.to_le_bytes());
            sb[88..120].copy_from_slice(salt);
            let mut hash_image = sb;
            for l in levels.iter().rev() {
                hash_image.extend_from_slice(l);
            }
            return Ok(Verity {
                hash_image,
                root_hash: crate::io::hash::hex(&root),
                salt: crate::io::hash::hex(salt),
                data_blocks,
            });
        }
        hashes = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_shape_and_determinism() {
        let data = vec![7u8; BLOCK * 200];
        let a = format(&data, &[1; 32], &[2; 16]).unwrap();
        let b = format(&data, &[1; 32], &[2; 16]).unwrap();
        assert_eq!(a.root_hash, b.root_hash);
        // 200 data blocks -> 2 level-0 blocks -> 1 top block; + superblock.
        assert_eq!(a.hash_image.len(), BLOCK * 4);
        assert_eq!(&a.hash_image[..8], b"verity\0\0");
        let c = format(&data, &[3; 32], &[2; 16]).unwrap();
        assert_ne!(a.root_hash, c.root_hash, "the salt matters");
        let mut flipped = data.clone();
        flipped[BLOCK * 150] ^= 1;
        assert_ne!(
            format(&flipped, &[1; 32], &[2; 16]).unwrap().root_hash,
            a.root_hash
        );
        assert!(format(&data[..100], &[1; 32], &[2; 16]).is_err());
    }
}
