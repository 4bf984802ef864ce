//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B): decodes Huffman-coded header
//! strings from a peer; the encoder half is test-only (our requests send raw literals).
//!
//! The code in Appendix B is canonical: within one code length, codes increase with the
//! symbol value, and each length starts where the previous one ended (shifted left). So
//! the table below holds only the code length of each symbol; the codes themselves are
//! derived at first use. The tests pin derived codes against values printed in the RFC.

use std::sync::OnceLock;

/// Code length in bits of each symbol 0..=255 followed by EOS (256), from RFC 7541
/// Appendix B (sixteen symbols per row).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // ' '..'/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // '0'..'?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // '@'..'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 'P'..'_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // '`'..'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 'p'..0x7f
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// The derived code: per symbol its code, and per length the canonical ranges.
struct Code {
    /// code[sym] (right-aligned in `LENGTHS[sym]` bits).
    codes: [u32; 257],
    /// Symbols sorted by (length, value).
    sorted: Vec<u16>,
    /// For each length: the first code of that length, the index of its first symbol in
    /// `sorted`, and how many symbols have it.
    first_code: [u32; MAX_LEN + 1],
    first_index: [usize; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
}

fn code() -> &'static Code {
    static CODE: OnceLock<Code> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut sorted: Vec<u16> = (0..=EOS).collect();
        sorted.sort_by_key(|&s| (LENGTHS[s as usize], s));
        let mut c = Code {
            codes: [0; 257],
            sorted,
            first_code: [0; MAX_LEN + 1],
            first_index: [0; MAX_LEN + 1],
            count: [0; MAX_LEN + 1],
        };
        let mut next: u32 = 0;
        let mut len = LENGTHS[c.sorted[0] as usize] as usize;
        c.first_code[len] = 0;
        for (i, &s) in c.sorted.iter().enumerate() {
            let l = LENGTHS[s as usize] as usize;
            if l != len {
                next <<= l - len;
                len = l;
                c.first_code[l] = next;
                c.first_index[l] = i;
            }
            if c.count[l] == 0 {
                c.first_index[l] = i;
                c.first_code[l] = next;
            }
            c.codes[s as usize] = next;
            c.count[l] += 1;
            next += 1;
        }
        c
    })
}

/// Decodes a Huffman-coded string. Fails on EOS inside the data, on padding longer than
/// 7 bits, and on padding that is not a prefix of EOS (all ones), as §5.2 requires.
pub fn decode(data: &[u8]) -> Result<Vec<u8>, String> {
    let c = code();
    let mut out = Vec::with_capacity(data.len() * 8 / 5);
    let mut acc: u32 = 0; // bits of the current, not yet complete code
    let mut len: usize = 0;
    for &byte in data {
        for bit in (0..8).rev() {
            acc = (acc << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if len > MAX_LEN {
                return Err("invalid Huffman code (longer than 30 bits)".into());
            }
            let n = c.count[len];
            if n > 0 && acc >= c.first_code[len] && acc - c.first_code[len] < n {
                let sym = c.sorted[c.first_index[len] + (acc - c.first_code[len]) as usize];
                if sym == EOS {
                    return Err("EOS symbol inside a Huffman-coded string".into());
                }
                out.push(sym as u8);
                acc = 0;
                len = 0;
            }
        }
    }
    if len > 7 {
        return Err("Huffman padding longer than 7 bits".into());
    }
    if acc != (1u32 << len) - 1 {
        return Err("Huffman padding is not all ones".into());
    }
    Ok(out)
}

/// Huffman-encodes `data`, padding the last byte with the most significant bits of EOS.
#[cfg(test)]
pub fn encode(data: &[u8]) -> Vec<u8> {
    let c = code();
    let mut out = Vec::with_capacity(data.len());
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in data {
        let l = u32::from(LENGTHS[b as usize]);
        acc = (acc << l) | u64::from(c.codes[b as usize]);
        bits += l;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn derived_codes_match_the_rfc_table() {
        // Values printed in RFC 7541 Appendix B.
        let c = code();
        assert_eq!(c.codes[0], 0x1ff8);
        assert_eq!(c.codes[1], 0x7fffd8);
        assert_eq!(c.codes[b' ' as usize], 0x14);
        assert_eq!(c.codes[b'0' as usize], 0x0);
        assert_eq!(c.codes[b'a' as usize], 0x3);
        assert_eq!(c.codes[b'z' as usize], 0x7b);
        assert_eq!(c.codes[255], 0x3ffffee);
        assert_eq!(c.codes[256], 0x3fffffff);
        // Kraft equality: a complete prefix code.
        let kraft: u64 = LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1u64 << 30);
    }

    #[test]
    fn rfc_examples() {
        // RFC 7541 C.4.1 and C.4.2 / C.6.1 string literals.
        let cases = [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            ("302", "6402"),
            ("private", "aec3 771a 4b"),
            (
                "Mon, 21 Oct 2013 20:13:21 GMT",
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            ),
            (
                "https://www.example.com",
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            ),
        ];
        for (text, coded) in cases {
            assert_eq!(encode(text.as_bytes()), hex(coded), "{text}");
            assert_eq!(decode(&hex(coded)).unwrap(), text.as_bytes(), "{text}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn bad_padding_is_refused() {
        // 'a' is 00011 (5 bits); pad with zeros instead of ones.
        assert!(decode(&[0b0001_1000]).is_err());
        // A whole byte of padding (after a complete symbol) is more than 7 bits.
        let mut v = encode(b"aaaaaaaa"); // 40 bits: exactly 5 bytes, no padding
        assert_eq!(v.len(), 5);
        v.push(0xff);
        assert!(decode(&v).is_err());
        // EOS itself (30 ones) inside the string.
        assert!(decode(&[0xff, 0xff, 0xff, 0xfc]).is_err());
    }
}
