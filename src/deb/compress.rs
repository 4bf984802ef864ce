//! Decompression of the `control.tar*` and `data.tar*` members of a `.deb`.
//!
//! Consumes a member name and its compressed bytes and produces the decompressed
//! tar as one `Vec<u8>`. The compression is chosen by the member name's suffix, as
//! dpkg does (deb(5)): none, `.gz`, `.xz`, `.zst`, and the legacy `.lzma`. `.bz2`
//! is recognised only to say plainly that it is not supported.
//!
//! The decoders read straight from the borrowed input (`BufRead` over a slice) and
//! write straight into the output vector's spare capacity, so every byte is copied
//! once. Output is capped by a caller-given limit to defuse decompression bombs, and
//! the xz decoder's memory is capped as well, because a hostile header can ask for
//! a dictionary of gigabytes before a single byte is produced.

use std::io::Read;

use anyhow::{bail, Context, Result};

/// Memory the xz/lzma decoder may use. `xz -9e` needs 65 MiB to decode; 512 MiB
/// leaves room for any sane encoder setting while refusing absurd dictionaries.
const XZ_MEMLIMIT: u64 = 512 << 20;

/// How a tar member of a `.deb` is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain `*.tar`.
    None,
    /// `*.tar.gz` (gzip, RFC 1952).
    Gzip,
    /// `*.tar.xz`, the default of dpkg-deb.
    Xz,
    /// `*.tar.lzma`, the legacy "lzma alone" format.
    Lzma,
    /// `*.tar.zst` (Zstandard, RFC 8878), used by some derivatives.
    Zstd,
}

impl Compression {
    /// Picks the compression for a member named `{base}{suffix}`, for instance
    /// `data.tar.xz` with base `data.tar`. Returns `None` if the name does not start
    /// with `base`, and an error for a known but unsupported or unknown suffix.
    pub fn for_member(base: &str, member: &str) -> Option<Result<Compression>> {
        let suffix = member.strip_prefix(base)?;
        Some(match suffix {
            "" => Ok(Compression::None),
            ".gz" => Ok(Compression::Gzip),
            ".xz" => Ok(Compression::Xz),
            ".lzma" => Ok(Compression::Lzma),
            ".zst" => Ok(Compression::Zstd),
            ".bz2" => Err(anyhow::anyhow!(
                "member {member}: bzip2 compression is not supported \
                 (supported: none, .gz, .xz, .zst, .lzma)"
            )),
            _ => Err(anyhow::anyhow!(
                "member {member}: unknown compression {suffix:?} \
                 (supported: none, .gz, .xz, .zst, .lzma)"
            )),
        })
    }
}

/// Decompresses `input` completely, refusing to produce more than `limit` bytes.
///
/// A stream that ends early (a truncated member) or is corrupt is an error; so is
/// output past `limit`.
pub fn decompress(compression: Compression, input: &[u8], limit: u64) -> Result<Vec<u8>> {
    // A first guess at the output size, so that most members decode without
    // reallocation; the guess is only a capacity, never trusted as a length.
    let guess = |ratio: usize| input.len().saturating_mul(ratio).min(cap_usize(limit));
    match compression {
        Compression::None => {
            if input.len() as u64 > limit {
                bail!("size {} exceeds the limit of {limit} bytes", input.len());
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => {
            read_limited(flate2::bufread::MultiGzDecoder::new(input), guess(4), limit)
                .context("corrupt or truncated gzip stream")
        }
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMLIMIT,
                liblzma::stream::CONCATENATED,
            )
            .context("initialising the xz decoder")?;
            read_limited(
                liblzma::bufread::XzDecoder::new_stream(input, stream),
                guess(5),
                limit,
            )
            .context("corrupt or truncated xz stream")
        }
        Compression::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(XZ_MEMLIMIT)
                .context("initialising the lzma decoder")?;
            read_limited(
                liblzma::bufread::XzDecoder::new_stream(input, stream),
                guess(5),
                limit,
            )
            .context("corrupt or truncated lzma stream")
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(input)
                .context("initialising the zstd decoder")?;
            read_limited(decoder, guess(5), limit).context("corrupt or truncated zstd stream")
        }
    }
}

/// Reads `reader` to its end into a fresh vector, failing once more than `limit`
/// bytes have come out.
fn read_limited(reader: impl Read, capacity: usize, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    // One byte past the limit tells "exactly at the limit" from "over it".
    reader.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        bail!("decompressed size exceeds the limit of {limit} bytes (decompression bomb?)");
    }
    Ok(out)
}

fn cap_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        // With a checksum, as the zstd tool writes by default: without one a flipped
        // byte can decode to wrong output undetected (the tar checksums then help).
        let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn lzma(data: &[u8]) -> Vec<u8> {
        let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
        let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn all() -> Vec<(Compression, Vec<u8>)> {
        let d = sample();
        vec![
            (Compression::None, d.clone()),
            (Compression::Gzip, gz(&d)),
            (Compression::Xz, xz(&d)),
            (Compression::Lzma, lzma(&d)),
            (Compression::Zstd, zst(&d)),
        ]
    }

    #[test]
    fn every_format_round_trips() {
        for (c, bytes) in all() {
            assert_eq!(decompress(c, &bytes, u64::MAX).unwrap(), sample(), "{c:?}");
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        for (c, bytes) in all() {
            if c == Compression::None {
                continue;
            }
            for cut in [bytes.len() / 2, bytes.len() - 1] {
                let err = decompress(c, &bytes[..cut], u64::MAX);
                assert!(
                    err.is_err(),
                    "{c:?} cut at {cut} of {} decoded",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn corrupt_streams_are_errors() {
        for (c, mut bytes) in all() {
            if c == Compression::None {
                continue;
            }
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
            bytes[mid + 1] ^= 0xaa;
            assert!(decompress(c, &bytes, u64::MAX).is_err(), "{c:?}");
        }
    }

    #[test]
    fn output_limit_is_enforced() {
        let len = sample().len() as u64;
        for (c, bytes) in all() {
            assert!(decompress(c, &bytes, len).is_ok(), "{c:?} at the limit");
            let err = decompress(c, &bytes, len - 1).unwrap_err();
            assert!(
                format!("{err:#}").contains("exceeds the limit"),
                "{c:?}: {err:#}"
            );
        }
    }

    #[test]
    fn bomb_is_stopped_early() {
        // 64 MiB of zeros compress to a few KiB; a 1 MiB limit must stop it.
        let bomb = xz(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert!(decompress(Compression::Xz, &bomb, 1 << 20).is_err());
    }

    #[test]
    fn suffixes() {
        let f = |m| Compression::for_member("data.tar", m).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(f("data.tar.xz"), Some(Ok(Compression::Xz)));
        assert_eq!(f("data.tar"), Some(Ok(Compression::None)));
        assert_eq!(f("control.tar.xz"), None);
        let bz = f("data.tar.bz2").unwrap().unwrap_err();
        assert!(bz.contains("bzip2 compression is not supported"), "{bz}");
        assert!(f("data.tar.foo").unwrap().is_err());
    }
}
