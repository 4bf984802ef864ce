//! Base64 (RFC 4648 section 4, standard alphabet) for HTTP Basic credentials and the
//! `auth` field of Docker's config.json. The coding itself is the test agent protocol's
//! (`agent/src/protocol.rs`); this adds what credentials need: padding optional,
//! whitespace refused. Consumes bytes or text; produces text or bytes.

use crate::boot::agent::protocol::{b64_decode, b64_encode};

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    b64_encode(data)
}

/// Decodes standard base64; padding is optional, whitespace is not allowed.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let t = text.trim_end_matches('=');
    if text.len() - t.len() > 2 || t.len() % 4 == 1 || t.bytes().any(|c| c.is_ascii_whitespace()) {
        return None;
    }
    let padded = format!("{t}{}", "=".repeat((4 - t.len() % 4) % 4));
    b64_decode(&padded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let v = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in v {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(decode(enc.trim_end_matches('=')).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode("a").is_none());
        assert!(decode("ab!c").is_none());
        assert!(decode("Zg===").is_none());
    }

    proptest::proptest! {
        #[test]
        fn round_trip(data: Vec<u8>) {
            proptest::prop_assert_eq!(decode(&encode(&data)).unwrap(), data);
        }
    }
}
