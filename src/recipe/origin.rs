//! Where a recipe value was written: the file, the key path and the line. Kept from
//! parsing on the values that are checked only later, at assembly (an entry's owner, a
//! group's members, an alternatives choice, an overlay's files), so that those errors
//! name file, key and line and exit 2 like the ones found while loading.

use super::spans::Spans;
use std::fmt;
use std::sync::Arc;

/// A key in a recipe file.
///
/// Origins always compare equal: where a value was written is not part of what it is, so
/// an artifact a child declares again unchanged still equals its parent's.
#[derive(Debug, Clone)]
pub struct Origin {
    file: Arc<str>,
    key: String,
    spans: Arc<Spans>,
}

impl Origin {
    /// `key` in `file`, whose key positions are `spans`.
    pub fn new(file: &str, key: &str, spans: Arc<Spans>) -> Origin {
        Origin {
            file: file.into(),
            key: key.to_string(),
            spans,
        }
    }

    /// A key below this one: `entry[2]` -> `entry[2].owner`.
    pub fn sub(&self, key: &str) -> Origin {
        Origin {
            file: self.file.clone(),
            key: format!("{}.{key}", self.key),
            spans: self.spans.clone(),
        }
    }

    /// The recipe file.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The key path.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The line of the key (or of the nearest enclosing key written in the file).
    pub fn line(&self) -> Option<usize> {
        self.spans.line(&self.key)
    }

    /// `FILE: KEY: MSG (line N)`.
    pub fn message(&self, msg: impl fmt::Display) -> String {
        let line = self
            .line()
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        format!("{}: {}: {msg}{line}", self.file, self.key)
    }

    /// A bad-input error (exit 2) about this key.
    pub fn err(&self, msg: impl fmt::Display) -> anyhow::Error {
        crate::exit::err(crate::exit::Code::BadInput, self.message(msg))
    }

    /// `e` as a bad-input error about this key: `FILE: KEY: E (line N)`. The cause is
    /// written out whole, so that the line comes last as in every recipe error.
    pub fn wrap(&self, e: anyhow::Error) -> anyhow::Error {
        self.err(format!("{e:#}"))
    }
}

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl Eq for Origin {}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.key)?;
        if let Some(l) = self.line() {
            write!(f, " (line {l})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_key_and_line_and_exit_2() {
        let spans = Arc::new(Spans::parse("a = 1\n[[user]]\nname = \"x\"\n"));
        let at = Origin::new("r.toml", "user[0]", spans);
        assert_eq!(
            at.sub("name").message("bad"),
            "r.toml: user[0].name: bad (line 3)"
        );
        assert_eq!(at.to_string(), "r.toml: user[0] (line 2)");
        let e = at.wrap(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(format!("{e:#}"), "r.toml: user[0]: outer: inner (line 2)");
        assert_eq!(crate::exit::code_of(&e), 2);
        let other = Origin::new("p.toml", "x", Arc::new(Spans::default()));
        assert_eq!(at, other, "where a value was written is not part of it");
    }
}
