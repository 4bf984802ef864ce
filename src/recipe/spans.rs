//! Where each key of a TOML file is: a map from key paths (`user[1].gecos`,
//! `debian.suites[0]`, `alternatives.iptables`) to 1-based lines, read once while the
//! recipe (or lock) is parsed. Errors found after serde, during validation or assembly,
//! look their key up here so that every message can name the line (docs/recipes.md,
//! "Errors").

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

/// Key path -> line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    lines: BTreeMap<String, usize>,
}

impl Spans {
    /// Reads the key positions of `text` (an unparseable text gives an empty map: the
    /// serde pass reports its error with its own line).
    pub fn parse(text: &str) -> Spans {
        let mut lines = BTreeMap::new();
        if let Ok(Value::Table(root)) = Value::deserialize(toml::Deserializer::new(text)) {
            for (k, v) in &root {
                walk(text, &v.0, k.clone(), &mut lines);
            }
        }
        Spans { lines }
    }

    /// Whether the file writes `key` itself.
    pub fn has(&self, key: &str) -> bool {
        self.lines.contains_key(key)
    }

    /// The line of `key`, or of its nearest enclosing key (`a.b[2].c` falls back to
    /// `a.b[2]`, then `a.b`, then `a`).
    pub fn line(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(l) = self.lines.get(k) {
                return Some(*l);
            }
            let cut = k.rfind(['.', '['])?;
            k = &k[..cut];
        }
    }
}

fn walk(text: &str, node: &Spanned<Value>, key: String, out: &mut BTreeMap<String, usize>) {
    out.insert(key.clone(), line_of(text, node.span().start));
    match node.get_ref() {
        Value::Table(m) => {
            for (k, v) in m {
                walk(text, &v.0, format!("{key}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(text, &v.0, format!("{key}[{i}]"), out);
            }
        }
        Value::Leaf => {}
    }
}

/// The line (1-based) of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML value with the span of every value below it.
struct Node(Spanned<Value>);

enum Value {
    Table(BTreeMap<String, Node>),
    Array(Vec<Node>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::<Value>::deserialize(d).map(Node)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Leaf)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(n) = s.next_element::<Node>()? {
            v.push(n);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut t = BTreeMap::new();
        while let Some(k) = m.next_key::<String>()? {
            let v = m.next_value::<Node>()?;
            t.insert(k, v);
        }
        Ok(Value::Table(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_tables_arrays_and_arrays_of_tables() {
        let t = "schema-version = 1\n[debian]\nsuites = [\n  \"a\",\n  \"b\",\n]\n\n[[user]]\nname = \"x\"\n\n[[user]]\nname = \"y\"\ngecos = \"z\"\n[alternatives]\niptables = \"/x\"\n";
        let s = Spans::parse(t);
        assert_eq!(s.line("schema-version"), Some(1));
        assert_eq!(s.line("debian.suites[1]"), Some(5));
        assert_eq!(s.line("user[1].gecos"), Some(13));
        assert_eq!(s.line("user[1].nothing"), Some(11));
        assert_eq!(s.line("alternatives.iptables"), Some(15));
        assert_eq!(s.line("nowhere"), None);
        assert!(s.has("user[1].gecos") && !s.has("user[1].nothing"));
    }
}
