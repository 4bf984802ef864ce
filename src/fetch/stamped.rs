//! Checks of cache files that remember a full hash: consumes a cache file (a blob, a
//! decoded package's file) and the digest recorded for it, produces whether it holds
//! those bytes (or the bytes themselves). A file whose stamp records it as it is now
//! ([`crate::io::hash::stamp`]: same device, inode, size, mtime and ctime, verified in
//! the last day) is not hashed again; any other is hashed in full, and stamped when it
//! matches. docs/decisions/0044-verification-stamps.md gives the trust argument.
//!
//! The stamp of a file lives beside it (`NAME.verified`, 0600) and goes where the file
//! goes: removed with a discarded blob, moved aside with a decoded entry that is
//! replaced. Its new file is made in a locked work directory of the cache, so no
//! temporary name appears in `blobs/` or `decoded/`.

use super::cache::{Cache, WorkDir};
use super::verify::{self, open_nofollow, Mismatch};
use crate::io::hash::stamp::{self, Identity, Pending};
use crate::io::hash::{sha256_hex, sha256_reader};
use anyhow::{Context, Result};
use std::fs::File;
use std::path::Path;

impl Cache {
    /// Whether the open cache file `file` (at `path`, identity `id`) holds the bytes
    /// with digest `sha256`: as its stamp says, else hashed in full (and stamped).
    pub(super) fn holds(
        &self,
        path: &Path,
        file: &File,
        id: Identity,
        sha256: &str,
    ) -> Result<bool> {
        let stamp = stamp::beside(path);
        if stamp::recorded(&stamp, &id).as_deref() == Some(sha256) {
            return Ok(true);
        }
        let pending = self.pending(id);
        let (digest, _) = sha256_reader(std::io::BufReader::with_capacity(1 << 20, file))
            .with_context(|| format!("reading {}", path.display()))?;
        if digest != sha256 {
            stamp::remove(&stamp);
            return Ok(false);
        }
        if let Some((_work, p)) = pending {
            p.finish(file, sha256, &stamp);
        }
        Ok(true)
    }

    /// Reads all of the cache file `path`, checking it against `sha256` and `size`: the
    /// bytes when they match, else what differed. A file its stamp vouches for is read
    /// without hashing; any other is hashed while it is read (no second pass) and
    /// stamped when it matches. The outer error is for a file that cannot be read.
    pub fn read_verified(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<std::result::Result<Vec<u8>, Mismatch>> {
        let mut f = open_nofollow(path).with_context(|| format!("opening {}", path.display()))?;
        let id = Identity::of_file(&f).with_context(|| format!("reading {}", path.display()))?;
        if id.size() != size {
            return Ok(Err(Mismatch::Size {
                expected: size,
                actual: id.size(),
            }));
        }
        let stamp = stamp::beside(path);
        if stamp::recorded(&stamp, &id).as_deref() == Some(sha256) {
            let bytes = verify::read_plain(&mut f, size)
                .with_context(|| format!("reading {}", path.display()))?;
            let same = Identity::of_file(&f).is_ok_and(|now| now == id);
            if same && bytes.len() as u64 == size {
                return Ok(Ok(bytes));
            }
            // Changed while it was read: what was read is checked in full.
            let digest = sha256_hex(&bytes);
            return Ok(verify::compare(bytes, &digest, sha256, size));
        }
        let pending = self.pending(id);
        let res = verify::read_open(&mut f, path, sha256, size)?;
        match (&res, pending) {
            (Ok(_), Some((_work, p))) => {
                p.finish(&f, sha256, &stamp);
            }
            (Err(_), _) => stamp::remove(&stamp),
            _ => {}
        }
        Ok(res)
    }

    /// A stamp about to be earned by a full hash of a file with identity `id`, its new
    /// file in a work directory of its own; None when none can be made (a cache this
    /// user may not write): the file is hashed all the same.
    fn pending(&self, id: Identity) -> Option<(WorkDir, Pending)> {
        let work = self.temp_dir().ok()?;
        let p = Pending::begin(work.path().join("stamp"), id).ok()?;
        Some((work, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A stamp is believed without a read: one edited to name another digest vouches
    /// for that digest (which is why only the cache's owner may write the cache). Any
    /// change of the file voids it, a flip that keeps size, mtime and inode included.
    #[test]
    fn a_stamp_skips_the_hash_until_the_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(d.path().join("c"))).unwrap();
        let dir = cache.decoded_dir().join("entry");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.tar");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(&path, &body).unwrap();
        let (sha, n) = (sha256_hex(&body), body.len() as u64);
        stamp::age(&path);
        assert_eq!(cache.read_verified(&path, &sha, n).unwrap().unwrap(), body);
        let stamp_path = stamp::beside(&path);
        let text = fs::read_to_string(&stamp_path).expect("stamped by the full read");
        let fake = sha256_hex(b"not these bytes");
        fs::write(&stamp_path, text.replace(&sha, &fake)).unwrap();
        assert_eq!(
            cache.read_verified(&path, &fake, n).unwrap().unwrap(),
            body,
            "the stamp was not believed"
        );
        let f = File::open(&path).unwrap();
        let id = Identity::of_file(&f).unwrap();
        assert!(cache.holds(&path, &f, id, &fake).unwrap());
        drop(f);
        let m = fs::metadata(&path).unwrap();
        let w = fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&w, &[body[150_000] ^ 4], 150_000).unwrap();
        w.set_modified(m.modified().unwrap()).unwrap();
        drop(w);
        assert!(matches!(
            cache.read_verified(&path, &fake, n).unwrap(),
            Err(Mismatch::Digest { .. })
        ));
        assert!(
            !stamp_path.exists(),
            "a stamp of a mismatching file is removed"
        );
        assert!(matches!(
            cache.read_verified(&path, &sha, n).unwrap(),
            Err(Mismatch::Digest { .. })
        ));
        assert!(
            fs::read_dir(d.path().join("c/tmp"))
                .unwrap()
                .next()
                .is_none(),
            "no work directory is left"
        );
    }
}
