//! tmpfiles.d(5) lines, parsed.
//!
//! Consumes the text of a `tmpfiles.d/*.conf` file and produces one [`TmpfilesLine`]
//! per entry: type, modifiers, path, mode, owner, group, age and argument, with `-`
//! mapped to `None`. The assembler applies the lines whose path lies under `/etc` or
//! `/usr` at build time; the rest is left to `systemd-tmpfiles` at boot.

use anyhow::{bail, Context, Result};

/// The line types tmpfiles.d(5) defines (systemd 257), without modifiers.
const TYPES: &[char] = &[
    'f', 'F', 'w', 'd', 'D', 'e', 'v', 'q', 'Q', 'p', 'L', 'c', 'b', 'C', 'x', 'X', 'r', 'R', 'z',
    'Z', 't', 'T', 'h', 'H', 'a', 'A',
];

/// A file mode field: `0755`, `~0644` (masked by the existing mode) or `:0644`
/// (only used when creating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub bits: u32,
    /// `~` prefix: mask the bits by what the file already has.
    pub masked: bool,
    /// `:` prefix: applies on creation only.
    pub create_only: bool,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfilesLine {
    /// The type letter (`d`, `L`, ...).
    pub kind: char,
    /// `+` after the type (`L+`, `f+`, `C+`, `a+`): replace or append.
    pub plus: bool,
    /// `!`: only at boot. Build-time application should skip these.
    pub boot_only: bool,
    /// `-`: errors creating the entry are ignored.
    pub ignore_errors: bool,
    /// Other modifiers (`=`, `~`, `^`, `$`) verbatim, in order.
    pub other_modifiers: String,
    /// The path with quotes and C escapes resolved.
    pub path: String,
    pub mode: Option<Mode>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub age: Option<String>,
    /// The rest of the line (may contain spaces), C escapes resolved.
    pub argument: Option<String>,
    /// True if path or argument contain `%` specifiers (left unexpanded).
    pub has_specifiers: bool,
    /// 1-based line number in the file.
    pub line: usize,
}

impl TmpfilesLine {
    /// True if the path lies under `prefix` (`/etc`, `/usr`), as a path, not as a
    /// string prefix (`/etcetera` is not under `/etc`).
    pub fn is_under(&self, prefix: &str) -> bool {
        let p = prefix.trim_end_matches('/');
        self.path == p || self.path.starts_with(&format!("{p}/"))
    }
}

/// Parses a tmpfiles.d file, dropping lines it cannot read; see [`parse_report`].
pub fn parse(text: &str) -> Vec<TmpfilesLine> {
    parse_report(text).0
}

/// Parses a tmpfiles.d file; returns the lines and, separately, an error message for
/// each line that could not be read (naming the line and what was expected).
pub fn parse_report(text: &str) -> (Vec<TmpfilesLine>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match parse_line(t, n + 1) {
            Ok(l) => out.push(l),
            Err(e) => bad.push(format!("line {}: {t}: {e:#}", n + 1)),
        }
    }
    (out, bad)
}

fn parse_line(t: &str, line: usize) -> Result<TmpfilesLine> {
    let mut rest = t;
    let mut fields: Vec<String> = Vec::new();
    // Six whitespace-separated fields (the path may be quoted), then the argument.
    while fields.len() < 6 {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (f, r) = field(rest).with_context(|| format!("field {}", fields.len() + 1))?;
        fields.push(f);
        rest = r;
    }
    let argument = rest.trim_start();
    let ty = fields.first().context("missing type")?;
    let mut chars = ty.chars();
    let kind = chars.next().context("missing type")?;
    if !TYPES.contains(&kind) {
        bail!(
            "unknown type {kind:?} (expected one of {})",
            TYPES.iter().collect::<String>()
        );
    }
    let mut l = TmpfilesLine {
        kind,
        plus: false,
        boot_only: false,
        ignore_errors: false,
        other_modifiers: String::new(),
        path: String::new(),
        mode: None,
        user: None,
        group: None,
        age: None,
        argument: None,
        has_specifiers: false,
        line,
    };
    for m in chars {
        match m {
            '+' => l.plus = true,
            '!' => l.boot_only = true,
            '-' => l.ignore_errors = true,
            '=' | '~' | '^' | '$' => l.other_modifiers.push(m),
            other => bail!("unknown modifier {other:?} in type {ty:?} (expected + ! - = ~ ^ $)"),
        }
    }
    let path = fields.get(1).context("missing path")?;
    if !path.starts_with('/') && !path.starts_with('%') {
        bail!("path {path:?} is not absolute");
    }
    l.path = path.clone();
    let opt = |i: usize| fields.get(i).filter(|s| s.as_str() != "-").cloned();
    if let Some(m) = opt(2) {
        l.mode = Some(parse_mode(&m)?);
    }
    l.user = opt(3);
    l.group = opt(4);
    l.age = opt(5);
    if !argument.is_empty() {
        l.argument = Some(unescape(argument));
    }
    l.has_specifiers = l.path.contains('%')
        || l.argument.as_deref().is_some_and(|a| a.contains('%'))
        || l.user.as_deref().is_some_and(|a| a.contains('%'))
        || l.group.as_deref().is_some_and(|a| a.contains('%'));
    Ok(l)
}

fn parse_mode(m: &str) -> Result<Mode> {
    let mut s = m;
    let (mut masked, mut create_only) = (false, false);
    loop {
        if let Some(r) = s.strip_prefix('~') {
            masked = true;
            s = r;
        } else if let Some(r) = s.strip_prefix(':') {
            create_only = true;
            s = r;
        } else {
            break;
        }
    }
    let bits = u32::from_str_radix(s, 8)
        .ok()
        .filter(|b| *b <= 0o7777)
        .with_context(|| format!("mode {m:?} is not an octal mode (expected e.g. 0755, ~0644)"))?;
    Ok(Mode {
        bits,
        masked,
        create_only,
    })
}

/// Reads one field: bare, or quoted with `"`/`'` (C escapes resolved).
fn field(s: &str) -> Result<(String, &str)> {
    let mut chars = s.char_indices();
    let Some((_, q)) = chars.next() else {
        bail!("empty field")
    };
    if q == '"' || q == '\'' {
        let mut out = String::new();
        let mut esc = false;
        for (i, c) in chars {
            if esc {
                out.push('\\');
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == q {
                return Ok((unescape(&out), &s[i + c.len_utf8()..]));
            } else {
                out.push(c);
            }
        }
        bail!("unterminated quote");
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Ok((unescape(&s[..end]), &s[end..]))
}

/// C-style escapes (`\n`, `\t`, `\\`, `\xNN`) as systemd's `cunescape()` accepts.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some('x') => {
                let hex: String = (0..2)
                    .filter_map(|_| chars.next_if(|c| c.is_ascii_hexdigit()))
                    .collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if b.is_ascii() => out.push(char::from(b)),
                    _ => {
                        out.push_str("\\x");
                        out.push_str(&hex);
                    }
                }
            }
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // In the form of systemd's legacy.conf, var.conf and systemd.conf (trixie).
    const TEXT: &str = r#"
# comment
d /run/lock 0755 root root -
L /var/lock - - - - ../run/lock
L$ /var/log/README - - - - ../../usr/share/doc/systemd/README.logs
r! /forcefsck
q /var 0755 - - -
Z /run/log/journal/%m ~2750 root systemd-journal - -
a+ /var/log/journal    - - - - d:group::r-x,d:group:adm:r-x
d /var/lib/systemd/coredump 0755 root root 2w
f+ "/etc/with space" :0644 - - - hello\nworld
w- /proc/sys/kernel/x - - - - 1 2 3
e /etc/x
bogus /x
d relative
d /x 0999
"#;

    #[test]
    fn parses_real_forms() {
        let (lines, bad) = parse_report(TEXT);
        assert_eq!(lines.len(), 11);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad[0].starts_with("line 14: bogus"), "{}", bad[0]);
        assert!(bad[2].contains("not an octal mode"));
        let l = &lines[0];
        assert_eq!(
            (l.kind, l.path.as_str(), l.user.as_deref()),
            ('d', "/run/lock", Some("root"))
        );
        assert_eq!(
            l.mode,
            Some(Mode {
                bits: 0o755,
                masked: false,
                create_only: false
            })
        );
        assert_eq!(lines[1].argument.as_deref(), Some("../run/lock"));
        assert_eq!(lines[2].other_modifiers, "$");
        assert!(lines[3].boot_only);
        assert!(lines[5].has_specifiers);
        assert!(lines[5].mode.unwrap().masked);
        assert!(lines[6].plus);
        assert_eq!(
            lines[6].argument.as_deref(),
            Some("d:group::r-x,d:group:adm:r-x")
        );
        assert_eq!(lines[7].age.as_deref(), Some("2w"));
        assert_eq!(lines[8].path, "/etc/with space");
        assert!(lines[8].mode.unwrap().create_only);
        assert_eq!(lines[8].argument.as_deref(), Some("hello\nworld"));
        assert!(lines[8].is_under("/etc"));
        assert!(!lines[8].is_under("/et"));
        assert!(lines[9].ignore_errors);
        assert_eq!(lines[9].argument.as_deref(), Some("1 2 3"));
        assert_eq!(lines[10].mode, None);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_report(&s);
        }

        #[test]
        fn line_like_input_never_panics(s in "([dDfFLCzerRxw][+!=~^$-]{0,2} (/[a-z%]+|\"[^\"]*\"?) (-|~?:?[0-7]{0,5}) [a-z-]* [a-z-]* [0-9a-z-]* [^\n]*\n){0,5}") {
            let _ = parse_report(&s);
        }
    }
}
