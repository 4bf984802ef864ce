//! Reading cache files while checking them, and creating cache files safely.
//!
//! Consumes a path and the digest recorded for it; produces its bytes, hashed in the same
//! pass that reads them (no second read), or a [`Mismatch`] saying what differed
//! ([`crate::fetch::cache::Cache::read_verified`] adds the stamps that skip the hash). Creates
//! new files with `O_CREAT|O_EXCL|O_NOFOLLOW` and an explicit mode, so a name planted in
//! advance (a symlink, a file) fails the creation instead of being written through.

use crate::io::hash::hex;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the cache writes: only the cache's owner reads it. The cache is
/// per user (`~/.cache/slipway` by default); nothing needs group or world access, and an
/// artifact blob may be a copy of a private host file.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the cache creates.
pub const DIR_MODE: u32 = 0o700;

/// Read size: large enough that a syscall per chunk costs nothing, small enough that the
/// chunk is still in the CPU cache when it is hashed.
const CHUNK: usize = 1 << 20;

/// How a file differed from what was recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Its size differs (a truncated or extended file).
    Size { expected: u64, actual: u64 },
    /// Its content has another sha256.
    Digest { expected: String, actual: String },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Size { expected, actual } => {
                write!(f, "size is {actual} bytes, recorded {expected}")
            }
            Mismatch::Digest { expected, actual } => {
                write!(f, "sha256 is {actual}, recorded {expected}")
            }
        }
    }
}

/// Opens `path` for reading without following a symlink at its last component.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Creates the new file `path` with `mode` (exactly: the umask does not apply). Fails if
/// anything, a symlink included, already has that name.
pub fn create_new(path: &Path, mode: u32) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(f)
}

/// Reads all of `path`, hashing every chunk as it arrives, and compares the result with
/// `sha256` and `size`. The outer error is for a file that cannot be read at all.
pub fn read_verified(
    path: &Path,
    sha256: &str,
    size: u64,
) -> Result<std::result::Result<Vec<u8>, Mismatch>> {
    let mut f = open_nofollow(path).with_context(|| format!("opening {}", path.display()))?;
    read_open(&mut f, path, sha256, size)
}

/// [`read_verified`] of the file `f`, open at its start (`path` names it in errors).
pub fn read_open(
    f: &mut File,
    path: &Path,
    sha256: &str,
    size: u64,
) -> Result<std::result::Result<Vec<u8>, Mismatch>> {
    let actual = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if actual != size {
        return Ok(Err(Mismatch::Size {
            expected: size,
            actual,
        }));
    }
    let (bytes, digest) =
        read_hashing(f, size).with_context(|| format!("reading {}", path.display()))?;
    Ok(compare(bytes, &digest, sha256, size))
}

/// `bytes`, whose sha256 is `digest`, when they are the `size` bytes with sha256
/// `sha256`; else how they differ.
pub fn compare(
    bytes: Vec<u8>,
    digest: &str,
    sha256: &str,
    size: u64,
) -> std::result::Result<Vec<u8>, Mismatch> {
    if bytes.len() as u64 != size {
        return Err(Mismatch::Size {
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    if digest != sha256 {
        return Err(Mismatch::Digest {
            expected: sha256.to_string(),
            actual: digest.to_string(),
        });
    }
    Ok(bytes)
}

/// Reads `r` to its end into memory (sized for `hint` bytes), without hashing: for a file
/// whose stamp vouches for it ([`crate::io::hash::stamp`]).
pub fn read_plain(r: &mut impl Read, hint: u64) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    r.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads `r` to its end into memory (sized for `hint` bytes) and returns the bytes with
/// their sha256, hashing each chunk right after it is read.
pub fn read_hashing(r: &mut impl Read, hint: u64) -> io::Result<(Vec<u8>, String)> {
    let mut buf: Vec<u8> = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    let mut h = Sha256::new();
    loop {
        let start = buf.len();
        // `read_to_end` fills spare capacity without zeroing it first and probes for the
        // end without growing a full buffer.
        let n = r.by_ref().take(CHUNK as u64).read_to_end(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[start..]);
    }
    Ok((buf, hex(&h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hash::sha256_hex;

    #[test]
    fn verified_read_returns_bytes_or_the_mismatch() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &body).unwrap();
        let sha = sha256_hex(&body);
        let n = body.len() as u64;
        assert_eq!(read_verified(&p, &sha, n).unwrap().unwrap(), body);
        assert!(matches!(
            read_verified(&p, &sha, n + 1).unwrap(),
            Err(Mismatch::Size { .. })
        ));
        let mut bad = body.clone();
        bad[2_500_000] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(matches!(
            read_verified(&p, &sha, n).unwrap(),
            Err(Mismatch::Digest { .. })
        ));
    }

    #[test]
    fn create_new_refuses_a_planted_symlink_and_sets_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let planted = d.path().join("tmp-name");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_new(&planted, FILE_MODE).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(create_new(&dangling, FILE_MODE).is_err());
        assert!(!d.path().join("nowhere").exists());
        let fresh = d.path().join("fresh");
        create_new(&fresh, FILE_MODE).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            open_nofollow(&planted).is_err(),
            "reads do not follow either"
        );
    }
}
