//! A minimal DER reader for the update signature check: consumes DER bytes; produces
//! one TLV at a time ([`Tlv`]: its tag, its contents and its whole encoding). Single-byte
//! tags and definite lengths only (what Authenticode and X.509 use); anything else is
//! an error naming what was being read.

/// Tags used by [`super::signature`].
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
/// `[0]` constructed (EXPLICIT, or IMPLICIT over a constructed type).
pub const CTX0: u8 = 0xa0;
/// `[1]` constructed.
pub const CTX1: u8 = 0xa1;

/// One DER element.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    /// The tag byte.
    pub tag: u8,
    /// The contents (without tag and length).
    pub body: &'a [u8],
    /// The whole encoding (tag, length and contents).
    pub raw: &'a [u8],
}

/// A cursor over consecutive DER elements.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads the elements of `bytes`; `what` names them in errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { rest: bytes, what }
    }

    /// Whether every element was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element, whatever its tag.
    pub fn any(&mut self) -> Result<Tlv<'a>, String> {
        let bad = |why: &str| format!("{}: malformed DER ({why})", self.what);
        let b = self.rest;
        if b.len() < 2 {
            return Err(bad("truncated"));
        }
        let tag = b[0];
        if tag & 0x1f == 0x1f {
            return Err(bad("multi-byte tag"));
        }
        let (len, head) = match b[1] {
            n if n < 0x80 => (usize::from(n), 2),
            0x80 => return Err(bad("indefinite length")),
            n => {
                let k = usize::from(n & 0x7f);
                if k > 4 || b.len() < 2 + k {
                    return Err(bad("length"));
                }
                let len = b[2..2 + k]
                    .iter()
                    .fold(0usize, |a, &x| (a << 8) | usize::from(x));
                (len, 2 + k)
            }
        };
        let end = head
            .checked_add(len)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| bad("an element runs past its end"))?;
        self.rest = &b[end..];
        Ok(Tlv {
            tag,
            body: &b[head..end],
            raw: &b[..end],
        })
    }

    /// The next element, which must have tag `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, String> {
        let t = self.any()?;
        if t.tag != tag {
            return Err(format!(
                "{}: malformed DER (tag 0x{:02x} where 0x{tag:02x} was expected)",
                self.what, t.tag
            ));
        }
        Ok(t)
    }

    /// The next element if it has tag `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, String> {
        match self.rest.first() {
            Some(&t) if t == tag => self.any().map(Some),
            _ => Ok(None),
        }
    }
}

impl<'a> Tlv<'a> {
    /// A reader over this element's contents.
    pub fn read(&self, what: &'static str) -> Reader<'a> {
        Reader::new(self.body, what)
    }
}

/// The DER contents of an OBJECT IDENTIFIER given in dotted form (for comparisons).
pub fn oid(dotted: &str) -> Vec<u8> {
    let n: Vec<u64> = dotted.split('.').map(|x| x.parse().unwrap_or(0)).collect();
    let mut out = vec![(n[0] * 40 + n[1]) as u8];
    for &v in &n[2..] {
        let mut chunk = vec![(v & 0x7f) as u8];
        let mut v = v >> 7;
        while v > 0 {
            chunk.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        chunk.reverse();
        out.extend(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths_and_refuses_overruns() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        let mut r = Reader::new(&long, "x");
        let t = r.expect(OCTET_STRING).unwrap();
        assert_eq!((t.body.len(), t.raw.len()), (0x80, 0x83));
        assert!(r.is_empty());
        let e = Reader::new(&[0x30, 0x05, 1], "the thing")
            .any()
            .unwrap_err();
        assert!(e.contains("the thing") && e.contains("past its end"), "{e}");
        let e = Reader::new(&[0x02, 0x01, 1], "y")
            .expect(SEQUENCE)
            .unwrap_err();
        assert!(e.contains("tag 0x02"), "{e}");
        assert_eq!(
            oid("1.2.840.113549.1.9.4"),
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04]
        );
    }
}
