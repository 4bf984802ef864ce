//! Compresses one squashfs block (data, fragment or metadata) with zstd, or keeps it as
//! it is when compression does not make it smaller, as squashfs requires.
//!
//! Each block is one zstd frame made in a single call, so the frame records the content
//! size and its window is no larger than the block: the kernel's decompressor sizes its
//! workspace by the block size. The bytes depend only on the input, the level and the
//! zstd library version, which Cargo.lock pins (never the host's libzstd).

use anyhow::{Context, Result};

/// A reusable zstd context at one level.
pub struct Compressor {
    zstd: zstd::bulk::Compressor<'static>,
}

/// One block as it is stored.
pub enum Packed<'a> {
    /// zstd-compressed bytes.
    Compressed(Vec<u8>),
    /// The input, stored as is.
    Stored(&'a [u8]),
}

impl Packed<'_> {
    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Packed::Compressed(v) => v,
            Packed::Stored(b) => b,
        }
    }
    /// True when compressed.
    pub fn is_compressed(&self) -> bool {
        matches!(self, Packed::Compressed(_))
    }
}

impl Compressor {
    /// A compressor at zstd `level`.
    pub fn new(level: i32) -> Result<Self> {
        let zstd = zstd::bulk::Compressor::new(level)
            .with_context(|| format!("setting up zstd at level {level}"))?;
        Ok(Compressor { zstd })
    }

    /// `block` compressed, or as it is when zstd does not shrink it.
    pub fn pack<'a>(&mut self, block: &'a [u8]) -> Result<Packed<'a>> {
        let out = self
            .zstd
            .compress(block)
            .with_context(|| format!("compressing a block of {} bytes", block.len()))?;
        Ok(if out.len() < block.len() {
            Packed::Compressed(out)
        } else {
            Packed::Stored(block)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitive_blocks_compress_and_random_ones_are_stored() {
        let mut c = Compressor::new(3).unwrap();
        let text = b"squashfs ".repeat(1000);
        let p = c.pack(&text).unwrap();
        assert!(p.is_compressed() && p.bytes().len() < text.len());
        assert_eq!(zstd::bulk::decompress(p.bytes(), text.len()).unwrap(), text);
        // A sha256 chain does not compress.
        let mut noise = Vec::new();
        let mut h = [0u8; 32];
        for _ in 0..64 {
            h = <sha2::Sha256 as sha2::Digest>::digest(h).into();
            noise.extend_from_slice(&h);
        }
        let p = c.pack(&noise).unwrap();
        assert!(!p.is_compressed());
        assert_eq!(p.bytes(), &noise[..]);
    }
}
