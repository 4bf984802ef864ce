//! File contents into squashfs data blocks: each file is cut into blocks of the block
//! size, each block compressed on its own; an all-zero block is a hole (size 0, nothing
//! stored), as sparse files are kept; files smaller than a block (and, with tail packing,
//! the tails of larger ones) are packed together into fragment blocks; a file whose
//! bytes equal an earlier file's shares that file's blocks, as mksquashfs does.

use super::compress::{Compressor, Packed};
use super::format::DATA_UNCOMPRESSED;
use super::memo::{BlockDigest, Memo};
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

/// Blocks are compressed in batches of about this many bytes, spread over the threads.
const BATCH: usize = 8 << 20;

/// A file whose blocks wait for compression: None for a hole.
struct Job<'t> {
    file: usize,
    blocks: Vec<Option<&'t [u8]>>,
}

/// Writes file contents into the data area.
pub struct DataWriter<'t> {
    block_size: usize,
    tail_ends: bool,
    /// One compressor per thread; the first also compresses fragment blocks.
    comps: Vec<Compressor>,
    queue: Vec<Job<'t>>,
    queued: usize,
    /// The fragment block being filled.
    pending: Vec<u8>,
    /// Finished fragment blocks.
    pub fragments: Vec<FragmentEntry>,
    /// Files written so far by a cheap key (see [`key`]), to find identical ones.
    seen: HashMap<(usize, [u8; 64]), Vec<usize>>,
    /// The content of each entry of `files`.
    contents: Vec<&'t [u8]>,
    /// Every distinct content written, by the index [`DataWriter::file`] returns.
    pub files: Vec<FileData>,
    /// Files that shared an earlier file's data.
    pub duplicates: u64,
    /// The previous build's blocks, when kept ([`DataWriter::with_memo`]).
    pub memo: Option<Memo>,
}

/// A key that identical files share and most different files do not: the length and
/// the first and last 32 bytes. Hashing whole files to find duplicates cost more than
/// compressing them; files with one key are compared byte for byte.
fn key(data: &[u8]) -> (usize, [u8; 64]) {
    let mut k = [0u8; 64];
    let head = data.len().min(32);
    k[..head].copy_from_slice(&data[..head]);
    let tail = data.len().min(32);
    k[32..32 + tail].copy_from_slice(&data[data.len() - tail..]);
    (data.len(), k)
}

/// The size word of a stored data block.
fn word(p: &Packed) -> u32 {
    let len = p.bytes().len() as u32;
    if p.is_compressed() {
        len
    } else {
        len | DATA_UNCOMPRESSED
    }
}

/// A block packed, with its content digest when there is a memo.
type Done<'a> = (Packed<'a>, Option<BlockDigest>);

/// `block` as stored: from `memo` when it has it, else compressed by `c`.
fn pack_one<'a>(c: &mut Compressor, memo: Option<&Memo>, block: &'a [u8]) -> Result<Done<'a>> {
    let Some(m) = memo else {
        return Ok((c.pack(block)?, None));
    };
    let d = super::memo::digest(block);
    if let Some(p) = m.get(&d, block) {
        return Ok((p, Some(d)));
    }
    m.misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok((c.pack(block)?, Some(d)))
}

/// Compresses `blocks` in order, split into one contiguous run per compressor (each
/// block on its own, so the bytes do not depend on the number of threads), taking
/// those `memo` has from it.
fn pack_all<'a>(
    comps: &mut [Compressor],
    memo: Option<&Memo>,
    blocks: &[&'a [u8]],
) -> Result<Vec<Done<'a>>> {
    if comps.len() == 1 || blocks.len() < 2 {
        return blocks
            .iter()
            .map(|b| pack_one(&mut comps[0], memo, b))
            .collect();
    }
    let per = blocks.len().div_ceil(comps.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = comps
            .iter_mut()
            .zip(blocks.chunks(per))
            .map(|(c, run)| {
                s.spawn(move || {
                    run.iter()
                        .map(|b| pack_one(c, memo, b))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(blocks.len());
        for h in handles {
            let run = h
                .join()
                .map_err(|_| anyhow::anyhow!("a squashfs compression thread panicked"))??;
            out.extend(run);
        }
        Ok(out)
    })
}

impl<'t> DataWriter<'t> {
    /// A writer for `block_size` blocks at zstd `level` on `threads` threads;
    /// `tail_ends` puts the tails of files larger than a block into fragments too.
    pub fn new(block_size: u32, level: i32, tail_ends: bool, threads: usize) -> Result<Self> {
        Ok(DataWriter {
            block_size: block_size as usize,
            tail_ends,
            comps: (0..threads.max(1))
                .map(|_| Compressor::new(level))
                .collect::<Result<_>>()?,
            queue: Vec::new(),
            queued: 0,
            pending: Vec::new(),
            fragments: Vec::new(),
            seen: HashMap::new(),
            contents: Vec::new(),
            files: Vec::new(),
            duplicates: 0,
            memo: None,
        })
    }

    /// Takes blocks from `memo` where it has them, and records every block in it.
    pub fn with_memo(mut self, memo: Memo) -> Self {
        self.memo = Some(memo);
        self
    }

    /// Writes `data` (unless an identical file was written) and returns the index of
    /// its [`FileData`], which is complete once [`DataWriter::finish`] has run.
    pub fn file<W: Write>(&mut self, out: &mut Sink<W>, data: &'t [u8]) -> Result<usize> {
        let key = key(data);
        let same = self
            .seen
            .get(&key)
            .and_then(|c| c.iter().find(|&&i| self.contents[i] == data));
        if let Some(&i) = same {
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
            ..FileData::default()
        };
        let blocks: Vec<Option<&[u8]>> = in_blocks
            .chunks(bs)
            .map(|b| (!b.iter().all(|x| *x == 0)).then_some(b))
            .collect();
        for (b, stored) in in_blocks.chunks(bs).zip(&blocks) {
            match stored {
                Some(_) => self.queued += b.len(),
                None => f.sparse += b.len() as u64,
            }
        }
        let index = self.files.len();
        self.files.push(f);
        self.queue.push(Job {
            file: index,
            blocks,
        });
        if self.queued >= BATCH {
            self.flush_queue(out)?;
        }
        if to_fragment {
            if self.pending.len() + tail > bs {
                self.flush_fragment(out)?;
            }
            self.files[index].fragment =
                Some((self.fragments.len() as u32, self.pending.len() as u32));
            self.pending.extend_from_slice(&data[data.len() - tail..]);
        }
        self.seen.entry(key).or_default().push(index);
        self.contents.push(data);
        Ok(index)
    }

    /// Compresses and writes the queued blocks, in queue order.
    fn flush_queue<W: Write>(&mut self, out: &mut Sink<W>) -> Result<()> {
        let work: Vec<&[u8]> = self
            .queue
            .iter()
            .flat_map(|j| j.blocks.iter().flatten().copied())
            .collect();
        let packed = pack_all(&mut self.comps, self.memo.as_ref(), &work)?;
        let mut packed = packed.iter();
        for job in self.queue.drain(..) {
            let f = &mut self.files[job.file];
            f.start = out.pos;
            for b in job.blocks {
                let Some((p, d)) = b.and_then(|_| packed.next()) else {
                    f.blocks.push(0);
                    continue;
                };
                out.put(p.bytes())?;
                f.blocks.push(word(p));
                if let (Some(m), Some(d)) = (self.memo.as_mut(), d) {
                    m.record(d, p);
                }
            }
        }
        self.queued = 0;
        Ok(())
    }

    /// Writes the fragment block being filled, if any (after the queued blocks).
    fn flush_fragment<W: Write>(&mut self, out: &mut Sink<W>) -> Result<()> {
        self.flush_queue(out)?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = std::mem::take(&mut self.pending);
        let (packed, d) = pack_one(&mut self.comps[0], self.memo.as_ref(), &block)?;
        self.fragments.push((out.pos, word(&packed)));
        out.put(packed.bytes())?;
        if let (Some(m), Some(d)) = (self.memo.as_mut(), d) {
            m.record(&d, &packed);
        }
        Ok(())
    }

    /// Writes everything still queued and the last fragment block.
    pub fn finish<W: Write>(&mut self, out: &mut Sink<W>) -> Result<()> {
        self.flush_fragment(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_blocks_fragments_and_duplicates() {
        let mut out = Sink::new(Vec::new(), 96);
        let mut d = DataWriter::new(4096, 3, false, 1).unwrap();
        // Two blocks of text, a hole, and a 100-byte tail: a block file without fragment.
        let mut big = b"0123456789abcdef".repeat(512);
        big.extend(vec![0u8; 4096]);
        big.extend(vec![b'z'; 100]);
        let i = d.file(&mut out, &big).unwrap();
        d.flush_queue(&mut out).unwrap();
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
        d.finish(&mut out).unwrap();
        assert_eq!(d.fragments.len(), 1);
        assert_eq!(d.fragments[0].0 + stored(d.fragments[0].1), out.pos);
    }

    #[test]
    fn the_bytes_do_not_depend_on_the_threads() {
        let files: Vec<Vec<u8>> = (0..40u8)
            .map(|i| {
                let mut v: Vec<u8> = (0..50_000u32 * u32::from(i % 7))
                    .map(|x| (x % 251) as u8 ^ i)
                    .collect();
                v.extend(vec![0u8; 8192 * usize::from(i % 3)]);
                v
            })
            .collect();
        let write = |threads| {
            let mut out = Sink::new(Vec::new(), 0);
            let mut d = DataWriter::new(4096, 3, true, threads).unwrap();
            for f in &files {
                d.file(&mut out, f).unwrap();
            }
            d.finish(&mut out).unwrap();
            (out.into_inner(), format!("{:?} {:?}", d.files, d.fragments))
        };
        assert!(write(1) == write(3));
    }

    #[test]
    fn a_memo_gives_the_same_bytes_and_spares_the_unchanged_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks");
        let mut files: Vec<Vec<u8>> = (0..12u8)
            .map(|i| (0..20_000u32).map(|x| (x % 241) as u8 ^ i).collect())
            .collect();
        let write = |files: &[Vec<u8>], memo: bool| {
            let mut out = Sink::new(Vec::new(), 0);
            let mut d = DataWriter::new(4096, 3, false, 2).unwrap();
            if memo {
                d = d.with_memo(Memo::open(&path, 4096, 3).unwrap());
            }
            for f in files {
                d.file(&mut out, f).unwrap();
            }
            d.finish(&mut out).unwrap();
            let m = d.memo.take();
            let counts = m.as_ref().map(|m| {
                let get =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                (get(&m.hits), get(&m.misses))
            });
            if let Some(m) = m {
                m.save().unwrap();
            }
            (
                out.into_inner(),
                format!("{:?} {:?}", d.files, d.fragments),
                counts,
            )
        };
        let (plain, layout, _) = write(&files, false);
        let (first, l1, c1) = write(&files, true);
        assert!(first == plain && l1 == layout, "a memo changed the bytes");
        assert_eq!(c1.unwrap().0, 0, "an empty memo had blocks");
        // One file changes: only its blocks (and the fragment block) are compressed.
        files[5][7] ^= 0xff;
        let (plain, layout, _) = write(&files, false);
        let (again, l2, c2) = write(&files, true);
        assert!(
            again == plain && l2 == layout,
            "blocks from the memo changed the bytes"
        );
        let (hits, misses) = c2.unwrap();
        assert!(hits > 0 && misses <= 2, "hits {hits}, misses {misses}");
    }

    fn stored(word: u32) -> u64 {
        u64::from(word & !DATA_UNCOMPRESSED)
    }
}
