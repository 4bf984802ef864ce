//! Base64 (RFC 4648 section 4, standard alphabet): consumes bytes or text, produces text
//! or bytes. Two readings of the text: [`decode`] for documents (ASCII whitespace such as
//! TOML line breaks or PEM lines is skipped, padding is required) and [`decode_token`] for
//! one-line tokens such as HTTP Basic credentials (padding optional, whitespace refused).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes a document's base64: ASCII whitespace is ignored, padding is required, anything
/// else is an error naming the offending character.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let chars: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if chars.len() % 4 != 0 {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            chars.len()
        ));
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let quads = chars.len() / 4;
    for (q, quad) in chars.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err("misplaced base64 padding '='".into());
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | u32::from(value(c)?);
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// Decodes a one-line token: padding is optional, whitespace is an error.
pub fn decode_token(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim_end_matches('=');
    if text.len() - t.len() > 2 || t.len() % 4 == 1 {
        return Err(format!("base64 length {} is not valid", text.len()));
    }
    if let Some(c) = t.chars().find(char::is_ascii_whitespace) {
        return Err(format!("{c:?} is not a base64 character"));
    }
    decode(&format!("{t}{}", "=".repeat((4 - t.len() % 4) % 4)))
}

/// The 6-bit value of a base64 character.
fn value(c: u8) -> Result<u8, String> {
    match c {
        b'A'..=b'Z' => Ok(c - b'A'),
        b'a'..=b'z' => Ok(c - b'a' + 26),
        b'0'..=b'9' => Ok(c - b'0' + 52),
        b'+' => Ok(62),
        b'/' => Ok(63),
        _ => Err(format!("{:?} is not a base64 character", char::from(c))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc4648_vectors_both_readings() {
        for (plain, enc) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(decode_token(enc).unwrap(), plain.as_bytes());
            assert_eq!(
                decode_token(enc.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn documents_skip_whitespace_and_need_padding() {
        assert_eq!(decode("Zm9v\n YmFy").unwrap(), b"foobar");
        assert!(decode("Zm9").is_err());
        assert!(decode("Zg==Zm9v").is_err());
        assert!(decode("Zm9*").unwrap_err().contains("'*'"));
    }

    #[test]
    fn tokens_refuse_whitespace_and_garbage() {
        assert!(decode_token("a").is_err());
        assert!(decode_token("ab!c").is_err());
        assert!(decode_token("Zg===").is_err());
        assert!(decode_token("Zm9v YmFy").is_err());
        assert!(decode_token("Zm9v\n").is_err());
    }
}
