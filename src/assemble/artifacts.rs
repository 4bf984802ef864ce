//! The artifacts stage of assembly: consumes the recipe's `[[artifact]]` entries (each
//! already in the cache, and hashed again here as it is read), produces their files
//! in the tree at their `dest` with their mode. An artifact with `member` is a tar
//! archive (plain, gzip, xz or zstd, told apart by magic bytes); the named member is
//! installed instead of the archive.

use crate::deb::{decompress, Compression};
use crate::exit::{with_code, Code};
use crate::fetch::cache::{Cache, DigestMismatch};
use crate::fetch::verify::{open_nofollow, read_hashing};
use crate::recipe::Recipe;
use crate::tree::{Entry, Tree};
use anyhow::{bail, Context, Result};
use std::io::Read;

/// Largest decompressed archive read (a release tarball of a few binaries is far smaller).
const ARCHIVE_LIMIT: u64 = 2 << 30;

/// Installs every artifact of `r` into `tree`.
pub fn install(tree: &mut Tree, r: &Recipe, cache: &Cache, epoch: u64) -> Result<()> {
    for a in &r.artifacts {
        let what = || format!("{}: artifact {} ({})", r.display(), a.dest, a.url);
        let data = read_blob(cache, &a.sha256).with_context(what)?;
        // A member the archive lacks, or a dest the tree refuses, is the recipe's
        // mistake (exit 2, naming where the recipe wrote it).
        let bytes = match &a.member {
            None => data,
            Some(m) => member(&data, m).map_err(|e| a.at.sub("member").wrap(e))?,
        };
        let dest = a.dest.trim_start_matches('/');
        tree.put(dest, Entry::file(bytes, a.mode, epoch))
            .map_err(|e| a.at.sub("dest").wrap(e))?;
    }
    Ok(())
}

/// The bytes of the blob `sha256`, hashed as they are read: the blob may have changed
/// since it was fetched. A mismatch removes the blob (the next run fetches it again) and
/// fails with exit 4.
fn read_blob(cache: &Cache, sha256: &str) -> Result<Vec<u8>> {
    let blob = cache.blob_path(sha256);
    let mut f = open_nofollow(&blob).with_context(|| format!("opening {}", blob.display()))?;
    let hint = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (data, digest) =
        read_hashing(&mut f, hint).with_context(|| format!("reading {}", blob.display()))?;
    if digest != sha256 {
        // Removes it, so that the next fetch replaces it.
        let _ = cache.check(sha256);
        return Err(with_code(
            Code::Fetch,
            anyhow::Error::new(DigestMismatch {
                what: blob.display().to_string(),
                expected: sha256.into(),
                actual: digest,
            })
            .context("the cached blob changed after it was verified; it was removed, run the build again to fetch it again"),
        ));
    }
    Ok(data)
}

/// The compression of `data`, from its first bytes.
fn sniff(data: &[u8]) -> Compression {
    if data.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// The bytes of regular file `name` in the (maybe compressed) tar archive `data`.
fn member(data: &[u8], name: &str) -> Result<Vec<u8>> {
    let tar = decompress(sniff(data), data, ARCHIVE_LIMIT)?;
    let want = name.trim_start_matches("./");
    let mut seen = Vec::new();
    let mut ar = tar::Archive::new(tar.as_slice());
    for e in ar.entries().context("reading the tar archive")? {
        let mut e = e.context("reading the tar archive")?;
        let path = e.path().context("reading a member name")?.into_owned();
        let p = path.to_string_lossy();
        let p = p.trim_start_matches("./");
        if p == want {
            if !e.header().entry_type().is_file() {
                bail!("member {name} is not a regular file");
            }
            let mut out = Vec::new();
            e.read_to_end(&mut out)
                .with_context(|| format!("reading member {name}"))?;
            return Ok(out);
        }
        if seen.len() < 20 {
            seen.push(p.to_string());
        }
    }
    bail!(
        "member {name:?} is not in the archive (it holds: {})",
        if seen.is_empty() {
            "nothing".into()
        } else {
            seen.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(name: &str, data: &[u8]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        t.append_data(&mut h, name, data).unwrap();
        t.into_inner().unwrap()
    }

    #[test]
    fn a_blob_that_changed_in_the_cache_fails_with_exit_4_and_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(d.path().join("c"))).unwrap();
        let src = d.path().join("f");
        std::fs::write(&src, b"artifact").unwrap();
        let sha = crate::io::hash::sha256_hex(b"artifact");
        let blob = cache.insert(&src, &sha).unwrap();
        assert_eq!(read_blob(&cache, &sha).unwrap(), b"artifact");
        std::fs::write(&blob, b"artifacT").unwrap();
        let e = read_blob(&cache, &sha).unwrap_err();
        assert_eq!(crate::exit::code_of(&e), 4, "{e:#}");
        assert!(
            format!("{e:#}").contains(&format!("expected {sha}")),
            "{e:#}"
        );
        assert!(!blob.exists(), "the changed blob is removed");
    }

    #[test]
    fn members_come_out_of_plain_and_compressed_archives() {
        let plain = tarball("./tool-1/tool", b"#!tool");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(plain.as_slice(), 1).unwrap();
        for data in [&plain, &gz, &zst] {
            assert_eq!(member(data, "tool-1/tool").unwrap(), b"#!tool");
        }
        let e = format!("{:#}", member(&gz, "tool").unwrap_err());
        assert!(
            e.contains("\"tool\" is not in the archive") && e.contains("tool-1/tool"),
            "{e}"
        );
    }
}
