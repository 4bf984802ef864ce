//! A squashfs metadata area (inode table, directory table, and the blocks of the lookup
//! tables): bytes are cut into 8 KiB pieces, each stored as a 2-byte length header and
//! the piece compressed (or as it is, with the header's high bit set).
//!
//! A position inside the area is a reference: the offset of its metadata block within
//! the area's compressed bytes, shifted left 16, plus the offset inside the block's
//! uncompressed 8 KiB. Blocks are compressed as soon as they fill, so the reference of
//! the next byte is always known.

use super::compress::Compressor;
use super::format::{METADATA_SIZE, METADATA_UNCOMPRESSED};
use anyhow::Result;

/// One metadata area being written.
#[derive(Default)]
pub struct MetaWriter {
    /// Finished blocks, with their headers.
    done: Vec<u8>,
    /// The block being filled (always shorter than 8 KiB between calls).
    pending: Vec<u8>,
    /// Where each finished block starts in `done`.
    starts: Vec<u64>,
    /// Bytes written before compression.
    written: u64,
}

impl MetaWriter {
    /// An empty area.
    pub fn new() -> Self {
        MetaWriter::default()
    }

    /// The reference of the next byte.
    pub fn reference(&self) -> u64 {
        ((self.done.len() as u64) << 16) | self.pending.len() as u64
    }

    /// The number of bytes written so far, before compression: a byte's block is
    /// `uncompressed / 8192`.
    pub fn uncompressed(&self) -> u64 {
        self.written
    }

    /// Appends `bytes`, compressing every block that fills.
    pub fn write(&mut self, c: &mut Compressor, mut bytes: &[u8]) -> Result<()> {
        self.written += bytes.len() as u64;
        while !bytes.is_empty() {
            let n = (METADATA_SIZE - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == METADATA_SIZE {
                self.flush(c)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, c: &mut Compressor) -> Result<()> {
        let block = std::mem::take(&mut self.pending);
        let packed = c.pack(&block)?;
        let len = packed.bytes().len() as u16;
        let header = if packed.is_compressed() {
            len
        } else {
            len | METADATA_UNCOMPRESSED
        };
        self.starts.push(self.done.len() as u64);
        self.done.extend_from_slice(&header.to_le_bytes());
        self.done.extend_from_slice(packed.bytes());
        Ok(())
    }

    /// The area's bytes and where each of its blocks starts (relative to the area).
    pub fn finish(mut self, c: &mut Compressor) -> Result<(Vec<u8>, Vec<u64>)> {
        if !self.pending.is_empty() {
            self.flush(c)?;
        }
        Ok((self.done, self.starts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_point_into_blocks_and_blocks_read_back() {
        let mut c = Compressor::new(3).unwrap();
        let mut m = MetaWriter::new();
        assert_eq!(m.reference(), 0);
        m.write(&mut c, &[7u8; 100]).unwrap();
        assert_eq!(m.reference(), 100);
        m.write(&mut c, &[9u8; METADATA_SIZE]).unwrap();
        // The first block (100 sevens, 8092 nines) is finished: the reference names the
        // second block's compressed start and offset 100 inside it.
        let first_len = m.done.len() as u64;
        assert_eq!(m.reference(), (first_len << 16) | 100);
        assert_eq!(m.uncompressed(), 100 + METADATA_SIZE as u64);
        let (bytes, starts) = m.finish(&mut c).unwrap();
        assert_eq!(starts, vec![0, first_len]);
        let mut all = Vec::new();
        for s in starts {
            let s = s as usize;
            let h = u16::from_le_bytes([bytes[s], bytes[s + 1]]);
            let len = (h & !METADATA_UNCOMPRESSED) as usize;
            let body = &bytes[s + 2..s + 2 + len];
            if h & METADATA_UNCOMPRESSED != 0 {
                all.extend_from_slice(body);
            } else {
                all.extend(zstd::bulk::decompress(body, METADATA_SIZE).unwrap());
            }
        }
        assert_eq!(all.len(), 100 + METADATA_SIZE);
        assert!(all[..100].iter().all(|b| *b == 7) && all[100..].iter().all(|b| *b == 9));
    }
}
