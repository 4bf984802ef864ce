//! Package relationship fields (Debian Policy 7.1): `Depends`, `Pre-Depends`,
//! `Conflicts`, `Breaks`, `Provides`, ...
//!
//! Consumes the text of one field and produces a list of or-groups of [`Atom`]s.
//! Architecture qualifiers (`:any`, `:native`) are kept; `[arch]` restrictions and
//! `<profile>` lists (only found in source packages) are skipped.

use std::fmt;

use anyhow::{bail, Result};

use super::version;

/// A version comparison operator (Policy 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<<`
    Lt,
    /// `<=` (and the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl Op {
    /// Does `have` satisfy `have OP want`?
    pub fn holds(self, have: &str, want: &str) -> bool {
        let ord = version::compare(have, want);
        match self {
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
            Op::Eq => ord.is_eq(),
            Op::Ge => ord.is_ge(),
            Op::Gt => ord.is_gt(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }
}

/// One package reference inside a relation: `name[:arch] [(op version)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atom {
    /// Package (or virtual package) name.
    pub name: String,
    /// Architecture qualifier after `:`, e.g. `any` or `native`.
    pub arch: Option<String>,
    /// Version constraint, if any.
    pub version: Option<(Op, String)>,
}

impl Atom {
    /// Does a package version `v` satisfy this atom's version constraint?
    pub fn version_ok(&self, v: &str) -> bool {
        match &self.version {
            None => true,
            Some((op, want)) => op.holds(v, want),
        }
    }

    /// Does a `Provides:` entry with optional version satisfy this atom's constraint?
    /// Policy 7.5: an unversioned provide never satisfies a versioned relation.
    pub fn provide_ok(&self, provided: Option<&str>) -> bool {
        match (&self.version, provided) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((op, want)), Some(have)) => op.holds(have, want),
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some((op, v)) = &self.version {
            write!(f, " ({} {v})", op.as_str())?;
        }
        Ok(())
    }
}

/// Alternatives `a | b | c`: satisfied when any one is.
pub type Group = Vec<Atom>;

/// Formats an or-group the way it is written in a control file.
pub fn group_to_string(g: &[Atom]) -> String {
    g.iter()
        .map(Atom::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Parses a relationship field into or-groups. Empty entries (a trailing comma) are
/// ignored, as dpkg does.
pub fn parse(field: &str) -> Result<Vec<Group>> {
    let mut groups = Vec::new();
    for part in field.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        let mut group = Vec::new();
        for alt in part.split('|') {
            group.push(parse_atom(alt)?);
        }
        groups.push(group);
    }
    Ok(groups)
}

/// Parses one `name[:arch] [(op version)] [[arch...]] [<profile>]` reference.
pub fn parse_atom(text: &str) -> Result<Atom> {
    let s = text.trim();
    let name_end = s
        .find(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<')
        .unwrap_or(s.len());
    let (full_name, mut rest) = (&s[..name_end], s[name_end..].trim_start());
    if full_name.is_empty() {
        bail!("empty package name in relation {text:?}");
    }
    let (name, arch) = match full_name.split_once(':') {
        Some((n, a)) => (n, Some(a.to_string())),
        None => (full_name, None),
    };
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(&c))
    {
        bail!("invalid package name {name:?} in relation {text:?} (expected [a-z0-9+.-])");
    }
    let mut version = None;
    if let Some(r) = rest.strip_prefix('(') {
        let Some(close) = r.find(')') else {
            bail!("unclosed '(' in relation {text:?}");
        };
        let inner = r[..close].trim();
        rest = r[close + 1..].trim_start();
        let op_len = inner
            .find(|c: char| !matches!(c, '<' | '>' | '='))
            .unwrap_or(inner.len());
        let op = match &inner[..op_len] {
            "<<" => Op::Lt,
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            other => bail!("unknown version operator {other:?} in relation {text:?}"),
        };
        let v = inner[op_len..].trim();
        if v.is_empty() {
            bail!(
                "missing version after {:?} in relation {text:?}",
                op.as_str()
            );
        }
        version = Some((op, v.to_string()));
    }
    // `[arch]` restrictions and `<profile>` lists only occur in source stanzas;
    // anything else left over is a syntax error.
    if !(rest.is_empty() || rest.starts_with('[') || rest.starts_with('<')) {
        bail!("unexpected {rest:?} in relation {text:?}");
    }
    Ok(Atom {
        name: name.to_string(),
        arch,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_and_versions() {
        let g = parse("libc6 (>= 2.34), usrmerge | usr-is-merged, python3:any (<< 3.14),").unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0][0].name, "libc6");
        assert_eq!(g[0][0].version, Some((Op::Ge, "2.34".to_string())));
        assert_eq!(g[1].len(), 2);
        assert_eq!(g[1][1].name, "usr-is-merged");
        assert_eq!(g[2][0].arch.as_deref(), Some("any"));
        assert_eq!(g[2][0].to_string(), "python3:any (<< 3.14)");
        assert_eq!(group_to_string(&g[1]), "usrmerge | usr-is-merged");
    }

    #[test]
    fn operators_and_spacing() {
        let a = parse_atom(" foo(<<1.0) ").unwrap();
        assert_eq!(a.version, Some((Op::Lt, "1.0".into())));
        let a = parse_atom("foo ( =  1:2.0-1 )").unwrap();
        assert_eq!(a.version, Some((Op::Eq, "1:2.0-1".into())));
        assert!(parse_atom("foo (~= 1)").is_err());
        assert!(parse_atom("foo (>= 1").is_err());
        assert!(parse_atom("Foo").is_err());
        // Build-Depends style restrictions are tolerated and dropped.
        assert_eq!(parse_atom("foo [amd64] <!nocheck>").unwrap().name, "foo");
    }

    #[test]
    fn provides_semantics() {
        let a = parse_atom("foo (>= 1.2)").unwrap();
        assert!(!a.provide_ok(None));
        assert!(a.provide_ok(Some("1.2")));
        assert!(!a.provide_ok(Some("1.1")));
        assert!(parse_atom("foo").unwrap().provide_ok(None));
    }
}
