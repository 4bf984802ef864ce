//! The `ar` container that wraps every `.deb`.
//!
//! Consumes the bytes of a whole `.deb` file and produces its members as borrowed
//! slices, in file order, without copying. The format is the common `ar` archive as
//! described in deb(5): an 8-byte global header `!<arch>\n`, then for each member a
//! 60-byte ASCII header (name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic
//! `` `\n ``) followed by the member data, padded with one byte to an even offset.
//! Which members a `.deb` must hold, and in what order, is checked by the caller.

use anyhow::{bail, ensure, Context, Result};

/// The global header that starts every `ar` archive.
const GLOBAL_MAGIC: &[u8] = b"!<arch>\n";
/// Size of one member header.
const HEADER_LEN: usize = 60;
/// The two bytes that end every member header.
const HEADER_MAGIC: &[u8] = b"`\n";

/// One member of an `ar` archive, borrowed from the archive bytes.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Member name with the padding spaces and the GNU-style trailing `/` removed.
    pub name: &'a str,
    /// The member's data, exactly `size` bytes (the padding byte is not included).
    pub data: &'a [u8],
}

/// Splits an `ar` archive into its members.
///
/// Every size is checked against the bytes that remain, so a truncated file is an
/// error naming the member that was cut, never a short slice.
pub fn members(bytes: &[u8]) -> Result<Vec<Member<'_>>> {
    ensure!(
        bytes.starts_with(GLOBAL_MAGIC),
        "not an ar archive (expected the header \"!<arch>\\n\" at offset 0)"
    );
    let mut out = Vec::new();
    let mut pos = GLOBAL_MAGIC.len();
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < HEADER_LEN {
            bail!(
                "truncated ar member header at offset {pos}: {} bytes left, a header needs {HEADER_LEN}",
                rest.len()
            );
        }
        let header = &rest[..HEADER_LEN];
        let name = parse_name(&header[0..16])
            .with_context(|| format!("ar member header at offset {pos}"))?;
        ensure!(
            &header[58..60] == HEADER_MAGIC,
            "ar member {name:?} at offset {pos}: bad header magic (expected \"`\\n\")"
        );
        let size = parse_decimal(&header[48..58])
            .with_context(|| format!("ar member {name:?} at offset {pos}: size field"))?;
        let data_start = pos + HEADER_LEN;
        let available = bytes.len() - data_start;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= available)
            .with_context(|| {
                format!(
                    "ar member {name:?} is truncated: its header says {size} bytes but only {available} remain"
                )
            })?;
        out.push(Member {
            name,
            data: &bytes[data_start..data_start + size],
        });
        // Members start at even offsets; the pad byte may be missing after the very
        // last member, which some writers omit and readers tolerate.
        pos = data_start + size;
        pos += pos % 2;
    }
    Ok(out)
}

/// Parses the 16-byte name field: ASCII, right-padded with spaces, optionally ending
/// in `/` (GNU ar writes `debian-binary/`, BSD ar `debian-binary   `).
fn parse_name(field: &[u8]) -> Result<&str> {
    let name = std::str::from_utf8(field)
        .ok()
        .filter(|s| s.is_ascii())
        .context("member name is not ASCII")?;
    let name = name.trim_end_matches(' ');
    let name = name.strip_suffix('/').unwrap_or(name);
    ensure!(!name.is_empty(), "empty member name");
    Ok(name)
}

/// Parses a space-padded decimal header field.
fn parse_decimal(field: &[u8]) -> Result<u64> {
    let text = std::str::from_utf8(field)
        .unwrap_or("")
        .trim_end_matches(' ');
    ensure!(
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
        "expected a decimal number, found {:?}",
        String::from_utf8_lossy(field)
    );
    text.parse::<u64>()
        .with_context(|| format!("number {text:?} is too large"))
}

/// Writes a minimal `ar` archive; used by tests in this module and by the `.deb`
/// reader's tests to build packages by hand.
#[cfg(test)]
pub(crate) fn write(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = GLOBAL_MAGIC.to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            data.len()
        );
        assert_eq!(header.len(), HEADER_LEN);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_odd_sizes() {
        let bytes = write(&[("debian-binary", b"2.0\n"), ("odd", b"abc"), ("e", b"")]);
        let m = members(&bytes).unwrap();
        let got: Vec<_> = m.iter().map(|m| (m.name, m.data)).collect();
        assert_eq!(
            got,
            vec![
                ("debian-binary", &b"2.0\n"[..]),
                ("odd", &b"abc"[..]),
                ("e", &b""[..])
            ]
        );
    }

    #[test]
    fn gnu_trailing_slash_is_stripped() {
        let bytes = write(&[("debian-binary/", b"2.0\n")]);
        assert_eq!(members(&bytes).unwrap()[0].name, "debian-binary");
    }

    #[test]
    fn missing_final_pad_is_tolerated() {
        let mut bytes = write(&[("a", b"xyz")]);
        bytes.pop();
        assert_eq!(members(&bytes).unwrap()[0].data, b"xyz");
    }

    #[test]
    fn truncated_member_is_an_error() {
        let bytes = write(&[("debian-binary", b"2.0\n"), ("data.tar", &[7u8; 100])]);
        let err = members(&bytes[..bytes.len() - 10]).unwrap_err().to_string();
        assert!(err.contains("\"data.tar\" is truncated"), "{err}");
    }

    #[test]
    fn truncated_header_is_an_error() {
        let bytes = write(&[("debian-binary", b"2.0\n"), ("x", b"12")]);
        let cut = GLOBAL_MAGIC.len() + HEADER_LEN + 4 + 30;
        let err = format!("{:#}", members(&bytes[..cut]).unwrap_err());
        assert!(err.contains("truncated ar member header"), "{err}");
    }

    #[test]
    fn bad_magic_and_bad_size_are_errors() {
        assert!(members(b"!<arch\n").is_err());
        let mut bytes = write(&[("a", b"xy")]);
        bytes[8 + 48] = b'x';
        let err = format!("{:#}", members(&bytes).unwrap_err());
        assert!(err.contains("size field"), "{err}");
    }
}
