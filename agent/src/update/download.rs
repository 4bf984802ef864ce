//! Downloads with resume and digest verification: consumes a [`Blob`] (digest and size)
//! and a [`Registry`]; produces the blob's file in the store directory (on /var), whose
//! sha256 was checked against the digest before it got its final name.
//!
//! Bytes go into `HEX.partial` in ranges of [`CHUNK`] bytes, each appended once it
//! arrived whole. A download that stops (network, a killed agent, a power cut) leaves
//! the partial file; the next run hashes what it holds and asks for the rest with an
//! HTTP `Range` from there. A blob whose bytes do not hash to its digest is a
//! [`Failure::Digest`]: the partial file is removed (a byte changed in the registry, or
//! on the wire, would otherwise stay in every later attempt) and nothing is written to
//! any slot.

use super::payload::Blob;
use super::registry::Registry;
use super::Failure;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes asked for in one request.
pub const CHUNK: u64 = 4 << 20;

fn io(what: &str, p: &Path, e: std::io::Error) -> Failure {
    Failure::Other(format!("{what} {}: {e}", p.display()))
}

/// The sha256 of the first `len` bytes of `f` (from its start).
fn hash_prefix(f: &mut File, len: u64, p: &Path) -> Result<Sha256, Failure> {
    let mut h = Sha256::new();
    f.seek(SeekFrom::Start(0))
        .map_err(|e| io("seeking", p, e))?;
    let mut r = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| io("reading", p, e))?;
        if n == 0 {
            return Ok(h);
        }
        h.update(&buf[..n]);
    }
}

/// The file of `b` in `store`, verified: an earlier download that is whole and right is
/// used as it is.
pub fn fetch(
    reg: &mut Registry,
    store: &Path,
    b: &Blob,
    say: &mut dyn FnMut(String),
) -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(store).map_err(|e| io("creating", store, e))?;
    let done = store.join(b.hex());
    if done.is_file() {
        let mut f = File::open(&done).map_err(|e| io("opening", &done, e))?;
        let h = hash_prefix(&mut f, u64::MAX, &done)?;
        if format!("{:x}", h.finalize()) == b.hex() {
            say(format!("{} ({}): already downloaded", b.digest, b.role()));
            return Ok(done);
        }
        std::fs::remove_file(&done).map_err(|e| io("removing", &done, e))?;
    }
    let partial = store.join(format!("{}.partial", b.hex()));
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&partial)
        .map_err(|e| io("opening", &partial, e))?;
    let mut have = f.metadata().map_err(|e| io("reading", &partial, e))?.len();
    if have > b.size {
        f.set_len(0).map_err(|e| io("truncating", &partial, e))?;
        have = 0;
    }
    let mut h = hash_prefix(&mut f, have, &partial)?;
    if have > 0 {
        say(format!(
            "{} ({}): resuming at byte {have} of {}",
            b.digest,
            b.role(),
            b.size
        ));
    }
    f.seek(SeekFrom::Start(have))
        .map_err(|e| io("seeking", &partial, e))?;
    while have < b.size {
        let n = CHUNK.min(b.size - have);
        let bytes = reg.range(&b.digest, have, n, b.size).map_err(|e| {
            Failure::Other(format!(
                "{e} (the download resumes at byte {have} next time)"
            ))
        })?;
        f.write_all(&bytes)
            .map_err(|e| io("writing", &partial, e))?;
        h.update(&bytes);
        have += n;
    }
    f.sync_all().map_err(|e| io("syncing", &partial, e))?;
    let got = format!("{:x}", h.finalize());
    if got != b.hex() {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::Digest(format!(
            "digest error: the {} blob {} downloaded as sha256:{got} ({} bytes); refused, \
             nothing was written to a slot",
            b.role(),
            b.digest,
            b.size
        )));
    }
    std::fs::rename(&partial, &done).map_err(|e| io("renaming", &partial, e))?;
    say(format!(
        "{} ({}): {} bytes, digest verified",
        b.digest,
        b.role(),
        b.size
    ));
    Ok(done)
}
