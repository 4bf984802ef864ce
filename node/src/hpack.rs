//! HPACK (RFC 7541): header-block encoding for requests and decoding for responses.
//!
//! The encoder emits every field as a literal without indexing and without Huffman
//! coding (§6.2.2), so it keeps no state and the peer's table never matters. The decoder
//! is complete: indexed fields, literals with and without indexing, never-indexed
//! literals, Huffman strings, the static table (Appendix A) and the dynamic table with
//! eviction and size updates (§4, §6.3), since containerd's Go HTTP/2 stack uses all of
//! them.

use std::collections::VecDeque;

use crate::huffman;

/// A header field as decoded (names are lower case on HTTP/2).
pub type Field = (String, String);

/// The static table, RFC 7541 Appendix A (index 1 is the first entry).
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Appends an integer with an `n`-bit prefix (§5.1); `first` holds the bits above it.
fn put_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Appends a string literal without Huffman coding (§5.2).
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_int(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes `fields` as literals without indexing, new names (§6.2.2, first form).
pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        put_str(&mut out, name);
        put_str(&mut out, value);
    }
    out
}

/// A decoding context: the dynamic table, which lives as long as the connection.
pub struct Decoder {
    table: VecDeque<Field>,
    size: usize,
    /// The bound we announced in SETTINGS_HEADER_TABLE_SIZE (the peer may lower it).
    limit: usize,
    max: usize,
}

impl Decoder {
    /// A decoder whose table may grow to `limit` octets (4096 is HTTP/2's default).
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            limit,
            max: limit,
        }
    }

    fn entry(&self, index: usize) -> Result<Field, String> {
        if index == 0 {
            return Err("HPACK index 0".into());
        }
        if let Some((n, v)) = STATIC.get(index - 1) {
            return Ok((n.to_string(), v.to_string()));
        }
        self.table
            .get(index - STATIC.len() - 1)
            .cloned()
            .ok_or_else(|| format!("HPACK index {index} beyond the tables"))
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            if let Some((n, v)) = self.table.pop_back() {
                self.size -= n.len() + v.len() + 32;
            }
        }
    }

    fn insert(&mut self, f: Field) {
        let sz = f.0.len() + f.1.len() + 32;
        if sz > self.max {
            // §4.4: an entry larger than the table empties it and is not added.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - sz);
        self.size += sz;
        self.table.push_front(f);
    }

    /// Decodes one complete header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, String> {
        let mut r = Reader { b: block, pos: 0 };
        let mut out = Vec::new();
        let mut fields_seen = false;
        while !r.done() {
            let b = r.peek()?;
            if b & 0x80 != 0 {
                let i = r.int(7)?;
                out.push(self.entry(i)?);
                fields_seen = true;
            } else if b & 0xc0 == 0x40 {
                let f = self.literal(&mut r, 6)?;
                self.insert(f.clone());
                out.push(f);
                fields_seen = true;
            } else if b & 0xe0 == 0x20 {
                // §4.2: size updates come first in a block.
                if fields_seen {
                    return Err("HPACK table size update after a header field".into());
                }
                let n = r.int(5)?;
                if n > self.limit {
                    return Err(format!(
                        "HPACK table size update to {n}, above our limit {}",
                        self.limit
                    ));
                }
                self.max = n;
                self.evict_to(n);
            } else {
                // 0000xxxx without indexing, 0001xxxx never indexed: both 4-bit prefix.
                out.push(self.literal(&mut r, 4)?);
                fields_seen = true;
            }
        }
        Ok(out)
    }

    fn literal(&self, r: &mut Reader, prefix: u32) -> Result<Field, String> {
        let i = r.int(prefix)?;
        let name = if i == 0 {
            r.string()?
        } else {
            self.entry(i)?.0
        };
        let value = r.string()?;
        Ok((name, value))
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn peek(&self) -> Result<u8, String> {
        self.b
            .get(self.pos)
            .copied()
            .ok_or_else(|| "truncated HPACK block".to_string())
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with an `n`-bit prefix (§5.1).
    fn int(&mut self, n: u32) -> Result<usize, String> {
        let max = (1usize << n) - 1;
        let mut v = (self.byte()? as usize) & max;
        if v < max {
            return Ok(v);
        }
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift > 28 {
                return Err("HPACK integer too large".into());
            }
            v += ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let huff = self.peek()? & 0x80 != 0;
        let len = self.int(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| "HPACK string runs past the block".to_string())?;
        let raw = &self.b[self.pos..end];
        self.pos = end;
        let bytes = if huff {
            huffman::decode(raw)?
        } else {
            raw.to_vec()
        };
        String::from_utf8(bytes).map_err(|_| "HPACK string is not UTF-8".to_string())
    }
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

    fn pairs(f: &[Field]) -> Vec<(&str, &str)> {
        f.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    #[test]
    fn integers_rfc_c1() {
        let mut v = Vec::new();
        put_int(&mut v, 0, 5, 10);
        assert_eq!(v, [0x0a]);
        v.clear();
        put_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [0x1f, 0x9a, 0x0a]);
        let mut r = Reader { b: &v, pos: 0 };
        assert_eq!(r.int(5).unwrap(), 1337);
    }

    #[test]
    fn requests_with_huffman_rfc_c4() {
        // RFC 7541 C.4: three requests on one connection, sharing the dynamic table.
        let mut d = Decoder::new(4096);
        let h = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap();
        assert_eq!(
            pairs(&h),
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]
        );
        assert_eq!(d.size, 57);
        let h = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(h[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(h[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.size, 110);
        let h = d
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .unwrap();
        assert_eq!(
            pairs(&h),
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ]
        );
        assert_eq!(d.size, 164);
        assert_eq!(d.table[0].0, "custom-key");
        assert_eq!(d.table[2].0, ":authority");
    }

    #[test]
    fn eviction_and_size_update() {
        // A 256-octet table (as in RFC 7541 C.5) overflows and evicts the oldest entry.
        let mut d = Decoder::new(256);
        let mut block = Vec::new();
        for i in 0..4 {
            block.push(0x40);
            put_str(&mut block, &format!("name-{i}"));
            put_str(&mut block, &"v".repeat(40));
        }
        d.decode(&block).unwrap();
        // each entry: 6 + 40 + 32 = 78; four would be 312 > 256, so three remain.
        assert_eq!(d.table.len(), 3);
        assert_eq!(d.table.back().unwrap().0, "name-1");
        // Index 62 is the newest entry.
        assert_eq!(d.decode(&[0x80 | 62]).unwrap()[0].0, "name-3");
        // A size update to 0 empties the table; one above our limit is an error.
        d.decode(&[0x20]).unwrap();
        assert!(d.table.is_empty());
        assert!(d.decode(&[0x80 | 62]).is_err());
        let mut up = Vec::new();
        put_int(&mut up, 0x20, 5, 4096);
        assert!(d.decode(&up).is_err());
    }

    #[test]
    fn encoder_output_decodes() {
        let fields = [
            (":method", "POST"),
            (":path", "/runtime.v1.RuntimeService/Version"),
            ("content-type", "application/grpc"),
            ("x-long", &*"y".repeat(300)),
        ];
        let mut d = Decoder::new(4096);
        let got = d.decode(&encode(&fields)).unwrap();
        assert_eq!(pairs(&got), fields);
        assert!(d.table.is_empty(), "literals without indexing add nothing");
    }

    #[test]
    fn truncated_blocks_fail() {
        assert!(Decoder::new(4096).decode(&[0x00, 0x05, b'a']).is_err());
        assert!(Decoder::new(4096).decode(&[0xff]).is_err());
        assert!(Decoder::new(4096).decode(&[0x80 | 70]).is_err());
    }
}
