//! SHA-256 helpers: hex digests of bytes, files and streams, and a writer adapter that
//! hashes what passes through it (hash while writing, never a second read). [`stamp`]
//! remembers a full hash of a file for as long as the file cannot have changed.

pub mod stamp;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of a hex string (either case).
pub fn unhex(s: &str) -> Result<Vec<u8>> {
    if s.len() % 2 != 0 {
        anyhow::bail!("\"{s}\" is not hex (odd length)");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .with_context(|| format!("\"{s}\" is not hex"))
        })
        .collect()
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 and length of everything `r` yields.
pub fn sha256_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// SHA-256 and size of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    sha256_reader(io::BufReader::new(f)).with_context(|| format!("reading {}", path.display()))
}

/// SHA-256 and size of the (possibly sparse) file at `path`: only its data regions are
/// read (`SEEK_DATA`/`SEEK_HOLE`), its holes are hashed as the zeros they read as. A
/// freshly written `disk.raw` is mostly holes (the empty parts of the ESP and /var):
/// reading them back made the kernel zero-fill every page of them first.
pub fn sha256_sparse_file(path: &Path) -> Result<(String, u64)> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let fd = f.as_raw_fd();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let data = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(d) => (d as u64).min(len),
            Err(nix::errno::Errno::ENXIO) => len, // only a hole is left
            Err(_) => pos,                        // no SEEK_DATA here: read it all
        };
        hash_zeros(&mut h, &zeros, data - pos);
        let end = lseek(fd, data as i64, Whence::SeekHole).map_or(len, |e| (e as u64).min(len));
        let mut p = data;
        while p < end {
            let n = ((end - p) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], p)
                .with_context(|| format!("reading {}", path.display()))?;
            h.update(&buf[..n]);
            p += n as u64;
        }
        pos = end.max(data);
    }
    Ok((hex(&h.finalize()), len))
}

/// Feeds `n` zero bytes to `h` from the all-zero buffer `zeros`.
fn hash_zeros(h: &mut Sha256, zeros: &[u8], mut n: u64) {
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        h.update(&zeros[..k]);
        n -= k as u64;
    }
}

/// True when `s` looks like a SHA-256 hex digest (64 lower-case hex digits).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A writer that hashes and counts every byte it forwards.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
    /// Returns the inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn writer_matches_one_shot() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest, len) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(len, 11);
        assert_eq!(digest, sha256_hex(b"hello world"));
        assert!(is_sha256_hex(&digest));
        assert!(!is_sha256_hex("ABC"));
    }

    #[test]
    fn a_sparse_file_hashes_as_its_bytes() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.raw");
        let f = std::fs::File::create(&p).unwrap();
        // Holes at the start, between and after data, across 1 MiB pieces.
        f.set_len((9 << 20) + 5).unwrap();
        f.write_all_at(&[1u8; 5000], 3 << 20).unwrap();
        f.write_all_at(b"tail", (6 << 20) - 2).unwrap();
        drop(f);
        assert_eq!(
            sha256_sparse_file(&p).unwrap(),
            sha256_file(&p).unwrap(),
            "the sparse read hashes other bytes"
        );
        let empty = d.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            sha256_sparse_file(&empty).unwrap(),
            sha256_file(&empty).unwrap()
        );
    }
}
