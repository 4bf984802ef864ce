//! The block memo: consumes the blocks the previous build compressed, produces their
//! stored bytes again by the sha256 of their content, so a rebuild after one changed
//! file compresses only the blocks that changed (zstd was a third of such a rebuild).
//!
//! A block's stored bytes depend only on its content, the level and the zstd library,
//! so a memo made by the same slipway binary at the same level gives the very bytes
//! compression would. The file holds a header naming those, then one record per block
//! (digest, stored-as-is flag, length, bytes), then the sha256 of all that: a memo that
//! does not match its header or its digest (torn, damaged, another binary) is ignored,
//! never trusted. It is rewritten with the blocks a build used when that build
//! compressed more than a few of them (so it does not grow, and a one-file rebuild does
//! not rewrite 60 MB); it is a cache only (no fsync: a torn one is ignored).

use super::compress::Packed;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A block's content digest.
pub type BlockDigest = [u8; 32];

/// Where a remembered block's stored bytes are in the loaded memo; None when the block
/// is stored as is (its bytes are its content).
type Place = Option<(usize, usize)>;

/// Where a block of this build is for the next memo: in the loaded memo, stored as is,
/// or compressed now.
enum Kept {
    Loaded(Place),
    Fresh(Vec<u8>),
}

/// A memo saves this build's blocks when more than one in this many was compressed.
const RESAVE: u64 = 32;

/// The blocks of the previous build, and those of this one as they are written.
pub struct Memo {
    path: PathBuf,
    header: Vec<u8>,
    loaded: Vec<u8>,
    known: HashMap<BlockDigest, Place>,
    /// This build's blocks, in the order written: the next memo.
    next: Vec<(BlockDigest, Kept)>,
    /// Digests already in `next`.
    in_next: std::collections::HashSet<BlockDigest>,
    /// Blocks found in the memo.
    pub hits: AtomicU64,
    /// Blocks compressed.
    pub misses: AtomicU64,
}

impl Memo {
    /// The memo at `path` for blocks of `block_size` at zstd `level`, empty when there is
    /// none or it does not verify.
    pub fn open(path: &Path, block_size: u32, level: i32) -> Result<Memo> {
        let header = format!(
            "slipway squashfs block memo 1 zstd {level} block {block_size} binary {}\n",
            crate::io::stage_cache::self_digest()?
        )
        .into_bytes();
        let mut m = Memo {
            path: path.to_path_buf(),
            header,
            loaded: Vec::new(),
            known: HashMap::new(),
            next: Vec::new(),
            in_next: Default::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        if let Ok(bytes) = std::fs::read(path) {
            if let Some(known) = parse(&bytes, &m.header) {
                m.known = known;
                m.loaded = bytes;
            }
        }
        Ok(m)
    }

    /// `block` as stored, when the memo has it.
    pub fn get<'a>(&self, digest: &BlockDigest, block: &'a [u8]) -> Option<Packed<'a>> {
        let place = self.known.get(digest)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(match place {
            Some((at, len)) => Packed::Compressed(self.loaded[*at..*at + *len].to_vec()),
            None => Packed::Stored(block),
        })
    }

    /// Records that a block with `digest` was written as `p`, for the next memo.
    pub fn record(&mut self, digest: &BlockDigest, p: &Packed) {
        if !self.in_next.insert(*digest) {
            return;
        }
        let kept = match (self.known.get(digest), p.is_compressed()) {
            (Some(place), _) => Kept::Loaded(*place),
            (None, true) => Kept::Fresh(p.bytes().to_vec()),
            (None, false) => Kept::Loaded(None),
        };
        self.next.push((*digest, kept));
    }

    /// Replaces the memo with this build's blocks, unless (almost) all of them came from
    /// it.
    pub fn save(self) -> Result<()> {
        let misses = self.misses.load(Ordering::Relaxed);
        if misses == 0 || misses * RESAVE < self.hits.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut out = self.header.clone();
        for (d, kept) in &self.next {
            let bytes = match kept {
                Kept::Loaded(Some((at, len))) => &self.loaded[*at..*at + *len],
                Kept::Fresh(b) => &b[..],
                Kept::Loaded(None) => &[][..],
            };
            out.extend_from_slice(d);
            out.push(u8::from(matches!(kept, Kept::Loaded(None))));
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, &out).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.path.display()))
    }
}

/// The content digest of `block`.
pub fn digest(block: &[u8]) -> BlockDigest {
    Sha256::digest(block).into()
}

/// The records of the memo `bytes` when it starts with `header` and its trailing
/// digest matches.
fn parse(bytes: &[u8], header: &[u8]) -> Option<HashMap<BlockDigest, Place>> {
    let body_end = bytes.len().checked_sub(32)?;
    if !bytes.starts_with(header) || body_end < header.len() {
        return None;
    }
    if Sha256::digest(&bytes[..body_end])[..] != bytes[body_end..] {
        return None;
    }
    let mut known = HashMap::new();
    let mut at = header.len();
    while at < body_end {
        let rec = bytes.get(at..at + 37)?;
        let d: BlockDigest = rec[..32].try_into().ok()?;
        let stored = rec[32] == 1;
        let len = u32::from_le_bytes(rec[33..37].try_into().ok()?) as usize;
        at += 37;
        if at + len > body_end {
            return None;
        }
        known.insert(d, (!stored).then_some((at, len)));
        at += len;
    }
    Some(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_memo_gives_the_blocks_back_and_a_damaged_one_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("blocks");
        let mut m = Memo::open(&p, 4096, 3).unwrap();
        let (a, b) = (b"compressed".to_vec(), b"stored as is".to_vec());
        m.record(&digest(b"A"), &Packed::Compressed(a.clone()));
        m.record(&digest(b"B"), &Packed::Stored(&b));
        m.misses.store(2, Ordering::Relaxed);
        m.save().unwrap();
        let m = Memo::open(&p, 4096, 3).unwrap();
        assert_eq!(m.get(&digest(b"A"), b"A").unwrap().bytes(), &a[..]);
        let s = m.get(&digest(b"B"), &b).unwrap();
        assert!(!s.is_compressed() && s.bytes() == &b[..]);
        assert!(m.get(&digest(b"C"), b"C").is_none());
        // Another level, or one flipped byte: nothing is trusted.
        assert!(Memo::open(&p, 4096, 4).unwrap().known.is_empty());
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(Memo::open(&p, 4096, 3).unwrap().known.is_empty());
    }
}
