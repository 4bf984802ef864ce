//! The tables after the data: the inode and directory tables as written by the
//! [`Emitter`], then the fragment, export (inode number to inode reference), id and
//! xattr tables. A lookup table is its entries cut into metadata blocks followed by the
//! blocks' positions; the superblock points at those positions (the xattr id table at a
//! small header before them, which names where the xattr key/value area starts).

use super::compress::Compressor;
use super::data::{FragmentEntry, Sink};
use super::emit::Emitter;
use super::format::{Put, Superblock, NONE_U64};
use super::metadata::MetaWriter;
use super::plan::Plan;
use anyhow::Result;
use std::io::Write;

/// Writes `entries` as a lookup table; returns where its block positions are.
fn lookup_table<W: Write>(out: &mut Sink<W>, c: &mut Compressor, entries: &[u8]) -> Result<u64> {
    let mut m = MetaWriter::new();
    m.write(c, entries)?;
    let (area, starts) = m.finish(c)?;
    let area_at = out.pos;
    out.put(&area)?;
    let index_at = out.pos;
    let mut index = Vec::with_capacity(starts.len() * 8);
    for s in starts {
        index.put64(area_at + s);
    }
    out.put(&index)?;
    Ok(index_at)
}

/// Writes every table after the data; returns the superblock's table positions and
/// counts, and the number of xattr sets.
pub fn write_tables<W: Write>(
    out: &mut Sink<W>,
    em: &mut Emitter,
    plan: &Plan,
    fragments: &[FragmentEntry],
    ids: &[u32],
) -> Result<(Superblock, u32)> {
    let mut sb = Superblock::default();
    let inodes = std::mem::take(&mut em.inodes);
    let dirs = std::mem::take(&mut em.dirs);
    let xattrs = std::mem::take(&mut em.xattrs);
    let refs = std::mem::take(&mut em.refs);
    let c = em.compressor();

    sb.inode_table = out.pos;
    out.put(&inodes.finish(c)?.0)?;
    sb.directory_table = out.pos;
    out.put(&dirs.finish(c)?.0)?;

    let mut frag = Vec::with_capacity(fragments.len() * 16);
    for (start, word) in fragments {
        frag.put64(*start);
        frag.put32(*word);
        frag.put32(0);
    }
    sb.fragment_table = lookup_table(out, c, &frag)?;
    sb.fragments = fragments.len() as u32;

    let mut export = vec![0u64; plan.inodes as usize];
    for n in &plan.nodes {
        if let Some(r) = refs[n.target] {
            export[n.inode as usize - 1] = r;
        }
    }
    let export: Vec<u8> = export.iter().flat_map(|r| r.to_le_bytes()).collect();
    sb.lookup_table = lookup_table(out, c, &export)?;

    let id_bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    sb.id_table = lookup_table(out, c, &id_bytes)?;
    sb.ids = ids.len() as u16;

    sb.xattr_id_table = NONE_U64;
    let mut sets = 0;
    if let Some(t) = xattrs.finish(c)? {
        let kv_at = out.pos;
        out.put(&t.kv)?;
        let mut m = MetaWriter::new();
        m.write(c, &t.ids)?;
        let (area, starts) = m.finish(c)?;
        let area_at = out.pos;
        out.put(&area)?;
        sb.xattr_id_table = out.pos;
        let mut head = Vec::new();
        head.put64(kv_at);
        head.put32(t.count);
        head.put32(0);
        for s in starts {
            head.put64(area_at + s);
        }
        out.put(&head)?;
        sets = t.count;
    }
    Ok((sb, sets))
}
