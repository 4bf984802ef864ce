//! Directory listings in the directory table: runs of entries, each run under a header
//! naming the inode-table block its entries' inodes are in and a base inode number
//! (entries store the offset in that block and a 16-bit difference from the base).
//!
//! A run ends after 256 entries, when the next inode is in another block or too far in
//! number, and when the listing crosses into the next 8 KiB metadata block; each run
//! that starts in a new block gets an index entry (its offset in the listing, its block,
//! its first name), which the kernel's lookup uses to skip ahead in large directories.
//! "." and ".." are not stored: a listing's size counts them as 3 bytes.

use super::compress::Compressor;
use super::format::{InodeType, Put, DIR_HEADER_MAX, METADATA_SIZE};
use super::metadata::MetaWriter;
use anyhow::Result;

/// One entry of a listing.
pub struct DirEntry<'a> {
    /// File name.
    pub name: &'a str,
    /// Reference of its inode in the inode table.
    pub inode_ref: u64,
    /// Its inode number.
    pub inode: u32,
    /// Its type.
    pub kind: InodeType,
}

/// Where a written listing is.
pub struct Listing {
    /// Reference of its first byte in the directory table.
    pub start: u64,
    /// Its size as the directory inode records it (bytes + 3).
    pub size: u32,
    /// Encoded index entries.
    pub index: Vec<u8>,
    /// Number of index entries.
    pub index_count: u16,
}

const HEADER: u64 = 12;
const ENTRY: u64 = 8;
const BLOCK: u64 = METADATA_SIZE as u64;

/// How many entries from the start of `entries` share one header written at the
/// uncompressed position `at`.
fn run_length(entries: &[DirEntry], at: u64) -> usize {
    let first = &entries[0];
    let mut pos = at + HEADER;
    let mut n = 0;
    for e in entries.iter().take(DIR_HEADER_MAX) {
        let delta = i64::from(e.inode) - i64::from(first.inode);
        let same_block = e.inode_ref >> 16 == first.inode_ref >> 16;
        let crosses = n > 0 && pos / BLOCK != at / BLOCK;
        if !same_block || i16::try_from(delta).is_err() || crosses {
            break;
        }
        pos += ENTRY + e.name.len() as u64;
        n += 1;
    }
    n
}

/// Writes the listing of `entries` (sorted by name) into `dirs`.
pub fn write_listing(
    dirs: &mut MetaWriter,
    c: &mut Compressor,
    entries: &[DirEntry],
) -> Result<Listing> {
    let start = dirs.reference();
    let start_u = dirs.uncompressed();
    let mut index = Vec::new();
    let mut index_count = 0u16;
    let mut indexed_block = start_u / BLOCK;
    let mut rest = entries;
    while !rest.is_empty() {
        let at = dirs.uncompressed();
        let n = run_length(rest, at);
        let (run, tail) = rest.split_at(n);
        if at / BLOCK != indexed_block {
            indexed_block = at / BLOCK;
            index.put32((at - start_u) as u32);
            index.put32((dirs.reference() >> 16) as u32);
            index.put32(run[0].name.len() as u32 - 1);
            index.extend_from_slice(run[0].name.as_bytes());
            index_count += 1;
        }
        let mut b = Vec::with_capacity(HEADER as usize + n * 24);
        b.put32(n as u32 - 1);
        b.put32((run[0].inode_ref >> 16) as u32);
        b.put32(run[0].inode);
        for e in run {
            let delta = (i64::from(e.inode) - i64::from(run[0].inode)) as i16;
            b.put16((e.inode_ref & 0xffff) as u16);
            b.put16(delta as u16);
            b.put16(e.kind.basic());
            b.put16(e.name.len() as u16 - 1);
            b.extend_from_slice(e.name.as_bytes());
        }
        dirs.write(c, &b)?;
        rest = tail;
    }
    Ok(Listing {
        start,
        size: (dirs.uncompressed() - start_u) as u32 + 3,
        index,
        index_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, block: u64, inode: u32) -> DirEntry<'_> {
        DirEntry {
            name,
            inode_ref: block << 16 | 40,
            inode,
            kind: InodeType::File,
        }
    }

    #[test]
    fn runs_split_on_inode_block_and_number_distance() {
        let e = [
            entry("a", 0, 1),
            entry("b", 0, 2),
            entry("c", 900, 3),
            entry("d", 900, 40000),
        ];
        assert_eq!(run_length(&e, 0), 2);
        assert_eq!(run_length(&e[2..], 0), 1);
        let mut c = Compressor::new(3).unwrap();
        let mut m = MetaWriter::new();
        let l = write_listing(&mut m, &mut c, &e).unwrap();
        // Three headers of 12 bytes, four entries of 8 + 1 bytes, plus 3.
        assert_eq!(l.size, 3 * 12 + 4 * 9 + 3);
        assert_eq!(l.index_count, 0);
    }

    #[test]
    fn a_listing_over_8k_is_indexed_at_each_new_block() {
        let names: Vec<String> = (0..1000).map(|i| format!("file-{i:05}")).collect();
        let e: Vec<DirEntry> = names.iter().map(|n| entry(n, 0, 1)).collect();
        let mut c = Compressor::new(3).unwrap();
        let mut m = MetaWriter::new();
        let l = write_listing(&mut m, &mut c, &e).unwrap();
        // 1000 entries of 18 bytes: 18000 bytes and a header per run: 3 blocks.
        assert_eq!(l.index_count, 2);
        let first = u32::from_le_bytes(l.index[0..4].try_into().unwrap());
        assert!((8192..8192 + 18).contains(&first), "{first}");
    }
}
