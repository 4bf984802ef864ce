//! Protocol Buffers wire format (proto3), just what the CRI messages need: a writer for
//! varint and length-delimited fields and a reader that walks fields and skips unknown
//! ones. See <https://protobuf.dev/programming-guides/encoding/>.

/// Builds one message.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// A varint field (int32/int64/uint32/uint64/bool/enum); proto3 omits zero.
    pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        if v != 0 {
            self.key(field, 0);
            varint(&mut self.buf, v);
        }
        self
    }

    /// A bytes or string field; proto3 omits the empty value.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        if !v.is_empty() {
            self.key(field, 2);
            varint(&mut self.buf, v.len() as u64);
            self.buf.extend_from_slice(v);
        }
        self
    }

    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// A repeated string field: one entry per element, empty ones included.
    pub fn strings(&mut self, field: u32, v: &[String]) -> &mut Self {
        for s in v {
            self.key(field, 2);
            varint(&mut self.buf, s.len() as u64);
            self.buf.extend_from_slice(s.as_bytes());
        }
        self
    }

    /// An embedded message, always written (an empty message still marks presence).
    pub fn message(&mut self, field: u32, m: &Writer) -> &mut Self {
        self.key(field, 2);
        varint(&mut self.buf, m.buf.len() as u64);
        self.buf.extend_from_slice(&m.buf);
        self
    }

    /// One entry of a `map<string, string>` field (an embedded message with key = 1,
    /// value = 2).
    pub fn map_entry(&mut self, field: u32, k: &str, v: &str) -> &mut Self {
        let mut e = Writer::new();
        e.string(1, k).string(2, v);
        self.message(field, &e)
    }

    pub fn finish(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

/// A field value as read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    pub fn as_u64(self) -> u64 {
        match self {
            Value::Varint(v) | Value::Fixed64(v) => v,
            Value::Fixed32(v) => u64::from(v),
            Value::Bytes(_) => 0,
        }
    }

    pub fn as_bytes(self) -> &'a [u8] {
        match self {
            Value::Bytes(b) => b,
            _ => &[],
        }
    }

    pub fn as_string(self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

/// Reads all fields of one message, in order: (field number, value).
pub fn fields(mut b: &[u8]) -> Result<Vec<(u32, Value<'_>)>, String> {
    fn read_varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated protobuf varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("protobuf varint longer than 10 bytes".into())
    }
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("truncated protobuf field".into());
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = read_varint(&mut b)?;
        let field = (key >> 3) as u32;
        let v = match key & 7 {
            0 => Value::Varint(read_varint(&mut b)?),
            1 => {
                let s = take(&mut b, 8)?;
                Value::Fixed64(u64::from_le_bytes(s.try_into().map_err(|_| "fixed64")?))
            }
            2 => {
                let n = read_varint(&mut b)? as usize;
                Value::Bytes(take(&mut b, n)?)
            }
            5 => {
                let s = take(&mut b, 4)?;
                Value::Fixed32(u32::from_le_bytes(s.try_into().map_err(|_| "fixed32")?))
            }
            w => {
                return Err(format!(
                    "unsupported protobuf wire type {w} (field {field})"
                ))
            }
        };
        out.push((field, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut inner = Writer::new();
        inner.string(1, "hello").uint(4, 300);
        let mut w = Writer::new();
        w.message(1, &inner)
            .strings(3, &["a".into(), String::new()])
            .uint(2, 0)
            .map_entry(6, "k", "v")
            .uint(7, u64::MAX);
        let bytes = w.finish();
        let f = fields(&bytes).unwrap();
        assert_eq!(f.len(), 5, "zero varint is omitted");
        let inner_f = fields(f[0].1.as_bytes()).unwrap();
        assert_eq!(inner_f[0], (1, Value::Bytes(b"hello")));
        assert_eq!(inner_f[1], (4, Value::Varint(300)));
        assert_eq!(f[2].1.as_string(), "");
        assert_eq!(f[4], (7, Value::Varint(u64::MAX)));
    }

    #[test]
    fn known_encoding() {
        // The protobuf docs' example: field 1 = 150 is 08 96 01.
        let mut w = Writer::new();
        w.uint(1, 150);
        assert_eq!(w.finish(), [0x08, 0x96, 0x01]);
        // Field 2 = "testing": 12 07 74 65 73 74 69 6e 67.
        let mut w = Writer::new();
        w.string(2, "testing");
        assert_eq!(w.finish()[..2], [0x12, 0x07]);
    }

    #[test]
    fn truncated_input_fails() {
        assert!(fields(&[0x12, 0x07, b't']).is_err());
        assert!(fields(&[0x08]).is_err());
        assert!(fields(&[0x0b]).is_err(), "wire type 3 (group) is refused");
    }
}
