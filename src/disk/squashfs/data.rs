//! File contents into squashfs data blocks: each file is cut into blocks of the block
//! size, each block compressed on its own; an all-zero block is a hole (size 0, nothing
//! stored), as sparse files are kept; files smaller than a block (and, with tail packing,
//! the tails of larger ones) are packed together into fragment blocks; a file whose
//! bytes equal an earlier file's shares that file's blocks, as mksquashfs does.

use super::compress::Compressor;
use super::format::DATA_UNCOMPRESSED;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Write;

/// Counts the bytes written through it (positions in the image).
pub struct Sink<W: Write> {
    inner: W,
    /// Bytes written so far, from the start of the image.
    pub pos: u64,
}

impl<W: Write> Sink<W> {
    /// A sink at position `pos`.
    pub fn new(inner: W, pos: u64) -> Self {
        Sink { inner, pos }
    }
    /// Writes `bytes`.
    pub fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner
            .write_all(bytes)
            .context("writing the squashfs image")?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
    /// The inner writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Where one file's content is.
#[derive(Debug, Clone, Default)]
pub struct FileData {
    /// Size in bytes.
    pub size: u64,
    /// Where its first block is.
    pub start: u64,
    /// The stored size of each block (0 for a hole; [`DATA_UNCOMPRESSED`] set when the
    /// block is stored as is).
    pub blocks: Vec<u32>,
    /// Fragment block index and offset of its tail, if it has one there.
    pub fragment: Option<(u32, u32)>,
    /// Bytes of holes.
    pub sparse: u64,
}

/// Fragment table entry: where a fragment block is and its stored size word.
pub type FragmentEntry = (u64, u32);

/// Writes file contents into the data area.
pub struct DataWriter<'t> {
    block_size: usize,
    tail_ends: bool,
    comp: Compressor,
    /// The fragment block being filled.
    pending: Vec<u8>,
    /// Finished fragment blocks.
    pub fragments: Vec<FragmentEntry>,
    seen: HashMap<&'t [u8], usize>,
    /// Every distinct content written, by the index [`DataWriter::file`] returns.
    pub files: Vec<FileData>,
    /// Files that shared an earlier file's data.
    pub duplicates: u64,
}

impl<'t> DataWriter<'t> {
    /// A writer for `block_size` blocks at zstd `level`; `tail_ends` puts the tails of
    /// files larger than a block into fragments too.
    pub fn new(block_size: u32, level: i32, tail_ends: bool) -> Result<Self> {
        Ok(DataWriter {
            block_size: block_size as usize,
            tail_ends,
            comp: Compressor::new(level)?,
            pending: Vec::new(),
            fragments: Vec::new(),
            seen: HashMap::new(),
            files: Vec::new(),
            duplicates: 0,
        })
    }

    /// Writes `data` (unless an identical file was written) and returns the index of
    /// its [`FileData`].
    pub fn file<W: Write>(&mut self, out: &mut Sink<W>, data: &'t [u8]) -> Result<usize> {
        if let Some(&i) = self.seen.get(data) {
            self.duplicates += 1;
            return Ok(i);
        }
        let bs = self.block_size;
        let tail = data.len() % bs;
        let to_fragment = tail > 0 && (data.len() < bs || self.tail_ends);
        let in_blocks = if to_fragment {
            &data[..data.len() - tail]
        } else {
            data
        };
        let mut f = FileData {
            size: data.len() as u64,
            start: out.pos,
            ..FileData::default()
        };
        for block in in_blocks.chunks(bs) {
            if block.iter().all(|b| *b == 0) {
                f.blocks.push(0);
                f.sparse += block.len() as u64;
                continue;
            }
            let packed = self.comp.pack(block)?;
            out.put(packed.bytes())?;
            let len = packed.bytes().len() as u32;
            f.blocks.push(if packed.is_compressed() {
                len
            } else {
                len | DATA_UNCOMPRESSED
            });
        }
        if to_fragment {
            if self.pending.len() + tail > bs {
                self.flush_fragment(out)?;
            }
            let index = self.fragments.len() as u32;
            f.fragment = Some((index, self.pending.len() as u32));
            self.pending.extend_from_slice(&data[data.len() - tail..]);
        }
        self.files.push(f);
        self.seen.insert(data, self.files.len() - 1);
        Ok(self.files.len() - 1)
    }

    /// Writes the fragment block being filled, if any.
    pub fn flush_fragment<W: Write>(&mut self, out: &mut Sink<W>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = std::mem::take(&mut self.pending);
        let packed = self.comp.pack(&block)?;
        let start = out.pos;
        out.put(packed.bytes())?;
        let len = packed.bytes().len() as u32;
        let word = if packed.is_compressed() {
            len
        } else {
            len | DATA_UNCOMPRESSED
        };
        self.fragments.push((start, word));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_blocks_fragments_and_duplicates() {
        let mut out = Sink::new(Vec::new(), 96);
        let mut d = DataWriter::new(4096, 3, false).unwrap();
        // Two blocks of text, a hole, and a 100-byte tail: a block file without fragment.
        let mut big = b"0123456789abcdef".repeat(512);
        big.extend(vec![0u8; 4096]);
        big.extend(vec![b'z'; 100]);
        let i = d.file(&mut out, &big).unwrap();
        let f = d.files[i].clone();
        assert_eq!(f.start, 96);
        assert_eq!(f.blocks.len(), 4);
        assert_eq!(f.blocks[2], 0, "the zero block is a hole");
        assert_eq!(f.sparse, 4096);
        assert!(f.fragment.is_none(), "no tail packing by default");
        // Two small files share a fragment block; an identical third shares the first.
        let a = d.file(&mut out, b"hello").unwrap();
        let b = d.file(&mut out, b"world!").unwrap();
        let a2 = d.file(&mut out, b"hello").unwrap();
        assert_eq!(a, a2);
        assert_eq!(d.duplicates, 1);
        assert_eq!(d.files[a].fragment, Some((0, 0)));
        assert_eq!(d.files[b].fragment, Some((0, 5)));
        assert!(d.fragments.is_empty());
        d.flush_fragment(&mut out).unwrap();
        assert_eq!(d.fragments.len(), 1);
        assert_eq!(d.fragments[0].0 + stored(d.fragments[0].1), out.pos);
    }

    fn stored(word: u32) -> u64 {
        u64::from(word & !DATA_UNCOMPRESSED)
    }
}
