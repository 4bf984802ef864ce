//! The `control` file of a binary package: one deb822 stanza.
//!
//! Consumes the text of `DEBIAN/control` and produces its fields. The syntax is
//! Debian Policy §5.1: `Name: value` lines, continuation lines that start with a
//! space or a tab, field names compared case-insensitively. Parsing stays literal:
//! the value keeps continuation lines joined with `\n`, each without its one leading
//! marker character (so Description's ` .` paragraph separator becomes `.`, and a
//! verbatim line `  code` keeps one leading space); interpreting fields (splitting
//! `Depends`, checking versions) belongs to the callers that need it.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Result};

/// Parses one deb822 stanza into field name -> value.
///
/// Leading and trailing blank lines and `#` comment lines are ignored. A second
/// stanza, a line without a colon, a continuation before the first field, an empty
/// field name and a repeated field (in any letter case) are errors naming the line.
pub fn parse_control(text: &str) -> Result<BTreeMap<String, String>> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    // Lower-cased names seen, to catch `Package` and `package` both present.
    let mut lower: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut stanza_ended = false;

    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            if current.is_some() {
                stanza_ended = true;
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        ensure!(
            !stanza_ended,
            "line {n}: a second stanza starts here, but a control file holds exactly one"
        );
        if line.starts_with([' ', '\t']) {
            let Some(name) = &current else {
                bail!("line {n}: continuation line before any field");
            };
            if let Some(v) = fields.get_mut(name) {
                v.push('\n');
                v.push_str(line[1..].trim_end());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            bail!("line {n}: expected \"Field: value\", found {line:?}");
        };
        ensure!(
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_graphic())
                && !name.starts_with('-'),
            "line {n}: invalid field name {name:?}"
        );
        if let Some(first) = lower.insert(name.to_ascii_lowercase(), name.to_owned()) {
            bail!("line {n}: field {name:?} repeats field {first:?}");
        }
        fields.insert(name.to_owned(), value.trim().to_owned());
        current = Some(name.to_owned());
    }
    ensure!(!fields.is_empty(), "no fields (empty control file)");
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_control() {
        let text = "Package: hello\nVersion: 2.10-3\nDepends: libc6 (>= 2.34),\n libfoo\n\
                    Description: greet\n A longer text.\n .\n   verbatim\n\n";
        let f = parse_control(text).unwrap();
        assert_eq!(f["Package"], "hello");
        assert_eq!(f["Depends"], "libc6 (>= 2.34),\nlibfoo");
        assert_eq!(f["Description"], "greet\nA longer text.\n.\n  verbatim");
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_control("Package: a\nnonsense\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_control(" cont\n").unwrap_err().to_string();
        assert!(e.contains("continuation line before any field"), "{e}");
        let e = parse_control("Package: a\n\nPackage: b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("second stanza"), "{e}");
        let e = parse_control("Package: a\npackage: b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("repeats"), "{e}");
        assert!(parse_control("\n\n").is_err());
    }

    #[test]
    fn empty_value_and_comments() {
        let f = parse_control("# comment\nEssential:\nPackage: x\n").unwrap();
        assert_eq!(f["Essential"], "");
    }
}
