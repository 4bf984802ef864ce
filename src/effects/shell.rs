//! A small lexer for the POSIX-shell subset found in Debian maintainer scripts.
//!
//! Consumes script text and produces a flat list of simple commands (words after
//! quote removal), each with the line it starts on and its source text. It is not a
//! shell: it does not expand anything. A word that would need expansion (`$VAR`,
//! `$(...)`, backquotes) is kept verbatim and marked [`Word::dynamic`], so callers can
//! refuse to guess. Control structure is flattened: `if cond; then cmd; fi` yields the
//! commands `if cond`, `then cmd` and `fi`; [`command_words`] skips such leading
//! keywords and the usual wrappers (`in_sysroot`, `env`, `chroot DIR`).
//!
//! Quoting rules follow POSIX XCU 2.2 (Quoting) and 2.3 (Token Recognition) closely
//! enough for the scripts debhelper and package maintainers write; here-documents
//! (2.7.4) are skipped so their bodies are not mistaken for commands.

/// One shell word after quote removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text with quotes removed; expansions are kept verbatim (`$FOO`).
    pub text: String,
    /// True if the word contains an unquoted or double-quoted expansion
    /// (`$`, `` ` ``), i.e. its value is only known when the script runs.
    pub dynamic: bool,
}

/// One simple command: the words between command separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The words, redirections removed.
    pub words: Vec<Word>,
    /// 1-based line number where the command starts.
    pub line: usize,
    /// The source text of the command, continuation lines joined, whitespace runs
    /// collapsed; used in reports of what could not be parsed.
    pub raw: String,
}

/// Reserved words and wrappers that can stand before the command that matters.
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "do", "while", "until", "!", "{", "time", "exec",
];

/// Returns the words of `cmd` starting at the real command name: leading shell
/// keywords, variable assignments and wrappers (`in_sysroot`, `command`, `env`,
/// `chroot DIR`) are skipped. Returns an empty slice if nothing is left.
pub fn command_words(cmd: &Command) -> &[Word] {
    let mut w = cmd.words.as_slice();
    loop {
        let Some(first) = w.first() else { return w };
        let t = first.text.as_str();
        let wrapper = !first.dynamic
            && (KEYWORDS.contains(&t)
                || t == "in_sysroot"
                || t == "env"
                || (t == "command" && w.get(1).is_some_and(|n| n.text != "-v")));
        if wrapper || is_assignment(t) {
            w = &w[1..];
        } else if !first.dynamic && t == "chroot" && w.len() >= 2 {
            w = &w[2..];
        } else {
            return w;
        }
    }
}

/// `NAME=value` as a prefix assignment (POSIX XCU 2.9.1).
fn is_assignment(t: &str) -> bool {
    match t.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    out: Vec<Command>,
    words: Vec<Word>,
    cur: String,
    cur_dynamic: bool,
    in_word: bool,
    cmd_line: usize,
    cmd_raw: String,
    /// Here-document delimiters waiting for the end of the current line:
    /// (delimiter, strip leading tabs).
    heredocs: Vec<(String, bool)>,
}

/// Splits `script` into simple commands. Never fails: unterminated quotes run to the
/// end of the input, unknown syntax becomes plain words.
pub fn commands(script: &str) -> Vec<Command> {
    let mut lx = Lexer {
        chars: script.chars().collect(),
        pos: 0,
        line: 1,
        out: Vec::new(),
        words: Vec::new(),
        cur: String::new(),
        cur_dynamic: false,
        in_word: false,
        cmd_line: 1,
        cmd_raw: String::new(),
        heredocs: Vec::new(),
    };
    lx.run();
    lx.out
}

impl Lexer {
    fn peek(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }

    /// Consumes one character, recording it in the raw command text.
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        self.cmd_raw.push(c);
        Some(c)
    }

    fn end_word(&mut self) {
        if self.in_word {
            self.words.push(Word {
                text: std::mem::take(&mut self.cur),
                dynamic: self.cur_dynamic,
            });
        }
        self.in_word = false;
        self.cur_dynamic = false;
    }

    fn end_command(&mut self) {
        self.end_word();
        let raw = self.cmd_raw.replace("\\\n", " ");
        let raw: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if !self.words.is_empty() {
            self.out.push(Command {
                words: std::mem::take(&mut self.words),
                line: self.cmd_line,
                raw,
            });
        }
        self.cmd_raw.clear();
    }

    fn start_word(&mut self) {
        if !self.in_word {
            if self.words.is_empty() {
                // First word of a command: its line is where the command starts.
                self.cmd_line = self.line;
            }
            self.in_word = true;
        }
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            match c {
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some('\n') => {}
                        Some(n) => {
                            self.start_word();
                            self.cur.push(n);
                        }
                        None => {}
                    }
                }
                '\'' => {
                    self.start_word();
                    self.bump();
                    while let Some(n) = self.bump() {
                        if n == '\'' {
                            break;
                        }
                        self.cur.push(n);
                    }
                }
                '"' => {
                    self.start_word();
                    self.bump();
                    self.double_quoted();
                }
                '$' => {
                    self.start_word();
                    self.dollar();
                }
                '`' => {
                    self.start_word();
                    self.backquote();
                }
                '#' if !self.in_word => {
                    // Not recorded in the raw text: reports show the command only.
                    while let Some(n) = self.peek(0) {
                        if n == '\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                ' ' | '\t' | '\r' => {
                    self.bump();
                    self.end_word();
                }
                '\n' => {
                    self.end_command();
                    self.bump();
                    self.cmd_raw.clear();
                    self.skip_heredocs();
                }
                ';' | '&' | '|' | '(' | ')' => {
                    self.end_command();
                    self.bump();
                    self.cmd_raw.clear();
                }
                '<' | '>' => self.redirection(),
                _ => {
                    self.start_word();
                    self.bump();
                    self.cur.push(c);
                }
            }
        }
        self.end_command();
    }

    fn double_quoted(&mut self) {
        while let Some(n) = self.peek(0) {
            match n {
                '"' => {
                    self.bump();
                    return;
                }
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some('\n') => {}
                        Some(e @ ('$' | '`' | '"' | '\\')) => self.cur.push(e),
                        Some(e) => {
                            self.cur.push('\\');
                            self.cur.push(e);
                        }
                        None => {}
                    }
                }
                '$' => self.dollar(),
                '`' => self.backquote(),
                _ => {
                    self.bump();
                    self.cur.push(n);
                }
            }
        }
    }

    /// `$NAME`, `${...}`, `$(...)`, `$((...))`: kept verbatim, marks the word dynamic.
    fn dollar(&mut self) {
        self.bump();
        self.cur.push('$');
        match self.peek(0) {
            Some(open @ ('(' | '{')) => {
                let close = if open == '(' { ')' } else { '}' };
                let mut depth = 0usize;
                while let Some(n) = self.bump() {
                    self.cur.push(n);
                    if n == open {
                        depth += 1;
                    } else if n == close {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                }
                self.cur_dynamic = true;
            }
            Some(n) if n.is_ascii_alphanumeric() || "_@*#?-$!".contains(n) => {
                self.cur_dynamic = true;
                if n.is_ascii_alphabetic() || n == '_' {
                    while let Some(m) = self.peek(0) {
                        if !(m.is_ascii_alphanumeric() || m == '_') {
                            break;
                        }
                        self.bump();
                        self.cur.push(m);
                    }
                } else {
                    self.bump();
                    self.cur.push(n);
                }
            }
            // A lone `$` is literal.
            _ => {}
        }
    }

    fn backquote(&mut self) {
        self.bump();
        self.cur.push('`');
        while let Some(n) = self.bump() {
            self.cur.push(n);
            if n == '`' {
                break;
            }
        }
        self.cur_dynamic = true;
    }

    /// Drops a redirection (`>/dev/null`, `2>&1`, `<<EOF`) from the word list.
    fn redirection(&mut self) {
        // `2>` : a word made only of digits right before the operator is an fd.
        if self.in_word && !self.cur.is_empty() && self.cur.chars().all(|c| c.is_ascii_digit()) {
            self.cur.clear();
            self.in_word = false;
            self.cur_dynamic = false;
        } else {
            self.end_word();
        }
        let first = self.bump();
        let mut heredoc = false;
        let mut strip_tabs = false;
        if first == Some('<') && self.peek(0) == Some('<') {
            self.bump();
            heredoc = true;
            if self.peek(0) == Some('-') {
                self.bump();
                strip_tabs = true;
            }
        } else {
            while let Some(n) = self.peek(0) {
                if matches!(n, '>' | '<' | '&' | '|') {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        // The target word.
        while matches!(self.peek(0), Some(' ' | '\t')) {
            self.bump();
        }
        let saved = std::mem::take(&mut self.words);
        let mut target = String::new();
        while let Some(n) = self.peek(0) {
            if n.is_whitespace() || matches!(n, ';' | '&' | '|' | '(' | ')' | '<' | '>') {
                break;
            }
            match n {
                '\'' | '"' => {
                    self.bump();
                    while let Some(m) = self.bump() {
                        if m == n {
                            break;
                        }
                        target.push(m);
                    }
                }
                '\\' => {
                    self.bump();
                    if let Some(m) = self.bump() {
                        target.push(m);
                    }
                }
                _ => {
                    self.bump();
                    target.push(n);
                }
            }
        }
        self.words = saved;
        if heredoc && !target.is_empty() {
            self.heredocs.push((target, strip_tabs));
        }
    }

    /// After a newline: skips the bodies of pending here-documents.
    fn skip_heredocs(&mut self) {
        let pending = std::mem::take(&mut self.heredocs);
        for (delim, strip_tabs) in pending {
            loop {
                if self.pos >= self.chars.len() {
                    return;
                }
                let mut line = String::new();
                while let Some(n) = self.peek(0) {
                    self.pos += 1;
                    if n == '\n' {
                        self.line += 1;
                        break;
                    }
                    line.push(n);
                }
                let l = if strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if l == delim {
                    break;
                }
            }
        }
        self.cmd_raw.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(c: &Command) -> Vec<&str> {
        c.words.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn continuation_quotes_and_separators() {
        let s = "if [ \"$1\" = configure ]; then\n  adduser --system \\\n    --gecos 'A \"b\"' \"x y\" >/dev/null 2>&1 || true\nfi\n";
        let cmds = commands(s);
        let names: Vec<Vec<&str>> = cmds.iter().map(texts).collect();
        assert_eq!(
            names,
            vec![
                vec!["if", "[", "$1", "=", "configure", "]"],
                vec!["then"],
                vec!["adduser", "--system", "--gecos", "A \"b\"", "x y"],
                vec!["true"],
                vec!["fi"],
            ]
        );
        assert!(cmds[0].words[2].dynamic);
        assert!(!cmds[2].words[4].dynamic);
        assert_eq!(cmds[2].line, 2);
        assert_eq!(
            cmds[2].raw,
            "adduser --system --gecos 'A \"b\"' \"x y\" >/dev/null 2>&1"
        );
    }

    #[test]
    fn heredoc_and_comments_are_skipped() {
        let s =
            "cat <<EOF >/x\nadduser evil\nEOF\n# adduser commented\necho ok # adduser trailing\n";
        let cmds = commands(s);
        let names: Vec<Vec<&str>> = cmds.iter().map(texts).collect();
        assert_eq!(names, vec![vec!["cat"], vec!["echo", "ok"]]);
    }

    #[test]
    fn command_substitution_is_one_dynamic_word() {
        let cmds = commands("x $(foo bar) y\n");
        assert_eq!(texts(&cmds[0]), vec!["x", "$(foo bar)", "y"]);
        assert!(cmds[0].words[1].dynamic);
    }

    #[test]
    fn wrappers_are_skipped() {
        let cmds = commands("then in_sysroot env A=b adduser x\n");
        let w: Vec<&str> = command_words(&cmds[0])
            .iter()
            .map(|w| w.text.as_str())
            .collect();
        assert_eq!(w, vec!["adduser", "x"]);
    }
}
