//! GUIDs (UUIDs) as GPT stores them, and their text: consumes the canonical text form
//! `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` or 16 bytes of a hash, produces the 16 on-disk
//! bytes and the text back.
//!
//! On disk (UEFI 2.10, appendix A) the first three fields are little-endian, the rest in
//! text order ("mixed-endian"); a UUID string and systemd's `sd_id128_t` are in text order.

use std::fmt;

/// A GUID as stored on disk: the first three fields little-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

/// The text-order index of each on-disk byte: bytes 0..4, 4..6 and 6..8 are reversed.
const TEXT_ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];

const fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Guid {
    /// The all-zero GUID (an unused GPT entry's type).
    pub const ZERO: Guid = Guid([0; 16]);

    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    pub const fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        let mut text = [0u8; 16];
        let (mut i, mut n) = (0, 0);
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            let (Some(h), Some(l)) = (nibble(b[i]), nibble(b[i + 1])) else {
                return None;
            };
            text[n] = h << 4 | l;
            n += 1;
            i += 2;
        }
        Some(Guid::from_uuid_bytes(text))
    }

    /// A compile-time constant; panics (at compile time) on a malformed string.
    pub const fn constant(s: &str) -> Guid {
        match Guid::parse(s) {
            Some(g) => g,
            None => panic!("bad GUID constant"),
        }
    }

    /// The GUID whose text form spells `text` (the byte order of a UUID string).
    pub const fn from_uuid_bytes(text: [u8; 16]) -> Guid {
        let mut disk = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            disk[i] = text[TEXT_ORDER[i]];
            i += 1;
        }
        Guid(disk)
    }

    /// The 16 bytes in text order (the inverse of [`Guid::from_uuid_bytes`]).
    pub const fn uuid_bytes(&self) -> [u8; 16] {
        let mut text = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            text[TEXT_ORDER[i]] = self.0[i];
            i += 1;
        }
        text
    }

    /// A version-4-shaped UUID (RFC 9562 section 5.4) from the first 16 bytes of a hash:
    /// reproducible ids that tools accept as random ones. `h` must hold 16 bytes or more.
    pub fn from_hash(h: &[u8]) -> Guid {
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid::from_uuid_bytes(b)
    }

    /// True for the all-zero GUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The canonical text form, lower case.
    pub fn to_text(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, b) in self.uuid_bytes().iter().enumerate() {
            if matches!(n, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_disk_order() {
        let g = Guid::parse("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709").unwrap();
        assert_eq!(g.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_eq!(g.to_text(), g.to_string());
        // On disk the first three fields are little-endian.
        assert_eq!(&g.0[0..4], &[0xe3, 0xbc, 0x68, 0x4f]);
        assert_eq!(&g.0[4..6], &[0xcd, 0xe8]);
        assert_eq!(&g.0[6..8], &[0xb1, 0x4d]);
        assert_eq!(&g.0[8..10], &[0x96, 0xe7]);
        assert_eq!(Guid::from_uuid_bytes(g.uuid_bytes()), g);
        assert!(Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b70").is_none());
        assert!(Guid::parse("4f68bce3xe8cd-4db1-96e7-fbcaf984b709").is_none());
        assert!(Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b7g9").is_none());
        assert!(Guid::parse("").is_none());
    }

    #[test]
    fn from_hash_sets_version_and_variant() {
        let g = Guid::from_hash(&[0xff; 32]);
        let t = g.to_string();
        assert_eq!(&t[14..15], "4", "{t}");
        assert_eq!(&t[19..20], "b", "{t}");
        let z = Guid::from_hash(&[0; 16]).to_string();
        assert_eq!(z, "00000000-0000-4000-8000-000000000000");
    }
}
