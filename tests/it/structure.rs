//! The main crate's module structure (issue 19): no import cycle between the top-level
//! modules of src/, the library never imports the command line (`crate::cli`), and only
//! the command line uses clap.
//!
//! Reads every `.rs` file under src/ as text, drops comments, string and character
//! literals and the `#[cfg(test)]` modules (unit tests may reach anywhere), and takes
//! every path that leaves the file's top-level module: `crate::x...`, the groups of
//! `use crate::{x, y::z}`, and `super::` chains that climb to the crate root. Each such
//! path is an edge `top -> x`, kept with the file and line where it first appears. A
//! cycle is reported with the place of each of its edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where an edge was first seen: a file under src/ and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    file: String,
    line: usize,
}

/// The import graph between top-level modules: `from -> to -> first place`.
type Graph = BTreeMap<String, BTreeMap<String, Place>>;

/// `text` with comments, string literals and character literals blanked out (newlines
/// kept, so line numbers stay right).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Blanks c[from..to], keeping newlines.
    let blank = |out: &mut String, from: usize, to: usize| {
        for &ch in &c[from..to.min(c.len())] {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        if at(0) == '/' && at(1) == '/' {
            let end = (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if at(0) == '/' && at(1) == '*' {
            let (mut depth, mut k) = (0usize, i);
            while k < c.len() {
                if c[k] == '/' && c.get(k + 1) == Some(&'*') {
                    depth += 1;
                    k += 2;
                } else if c[k] == '*' && c.get(k + 1) == Some(&'/') {
                    depth -= 1;
                    k += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    k += 1;
                }
            }
            blank(&mut out, i, k);
            i = k;
        } else if !ident_before && (at(0) == 'r' || (at(0) == 'b' && at(1) == 'r')) && {
            let s = if at(0) == 'b' { 2 } else { 1 };
            let hashes = (0..).take_while(|&h| at(s + h) == '#').count();
            at(s + hashes) == '"'
        } {
            let s = if at(0) == 'b' { 2 } else { 1 };
            let hashes = (0..).take_while(|&h| at(s + h) == '#').count();
            let mut k = i + s + hashes + 1;
            while k < c.len() {
                if c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')) {
                    k += 1 + hashes;
                    break;
                }
                k += 1;
            }
            blank(&mut out, i, k);
            i = k;
        } else if at(0) == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, k + 1);
            i = k + 1;
        } else if at(0) == '\'' && (at(1) == '\\' || at(2) == '\'') {
            // A character literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            let mut k = i + 1;
            while k < c.len() && c[k] != '\'' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, k + 1);
            i = k + 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `code` (already stripped) without the bodies of `#[cfg(test)]` modules and items.
fn drop_tests(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(p) = out[from..].find("#[cfg(test)]") {
        let start = from + p;
        let rest = &out[start..];
        // The item ends at its first `;` (a `mod tests;` declaration) or its matching `}`.
        let semi = rest.find(';');
        let brace = rest.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => start + s + 1,
            (Some(s), None) => start + s + 1,
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = out.len();
                for (k, ch) in out[start + b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = start + b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => out.len(),
        };
        let blanked: String = out[start..end]
            .chars()
            .map(|ch| if ch == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blanked);
        from = start + blanked.len();
    }
    out
}

/// The module path of a file under src/: `a.rs` -> [a], `a/mod.rs` -> [a],
/// `a/b.rs` -> [a, b]; the crate root (lib.rs, main.rs) -> [].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_string());
        }
    }
    parts
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// The identifier starting at byte `at` of `s` (after spaces), and where it ends.
fn ident_at(s: &str, at: usize) -> Option<(String, usize)> {
    let start = at + (s[at..].len() - s[at..].trim_start().len());
    let len = s[start..]
        .find(|ch: char| !is_ident(ch))
        .unwrap_or(s.len() - start);
    (len > 0).then(|| (s[start..start + len].to_string(), start + len))
}

/// The first identifier of each item of the `{...}` group opening at byte `open` of `s`.
fn group_heads(s: &str, open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut item_start = open + 1;
    for (k, ch) in s[open..].char_indices() {
        let k = open + k;
        match ch {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                if let Some((id, _)) = ident_at(s, item_start) {
                    heads.push(id);
                }
                item_start = k + 1;
                if ch == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads
}

/// The top-level modules named by the path starting at byte `at` of `code` (just after
/// `crate::`, or after `super::` chains that reached the root).
fn heads_at(code: &str, at: usize) -> Vec<String> {
    let rest = code[at..].trim_start();
    let at = code.len() - rest.len();
    if rest.starts_with('{') {
        group_heads(code, at)
    } else {
        ident_at(code, at).map(|(id, _)| id).into_iter().collect()
    }
}

/// Every (top-level module, line) that the stripped `code` of the module `path` imports.
fn imports(code: &str, path: &[String]) -> Vec<(String, usize)> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (p, _) in code.match_indices("crate::") {
        let before = code[..p].chars().next_back();
        if before.is_some_and(|ch| is_ident(ch) || ch == '$' || ch == ':') {
            continue;
        }
        for h in heads_at(code, p + "crate::".len()) {
            out.push((h, line_of(p)));
        }
    }
    for (p, _) in code.match_indices("super::") {
        let before = code[..p].chars().next_back();
        if before.is_some_and(|ch| is_ident(ch) || ch == ':') {
            continue;
        }
        let mut end = p;
        let mut ups = 0;
        while code[end..].starts_with("super::") {
            ups += 1;
            end += "super::".len();
        }
        if ups == path.len() {
            for h in heads_at(code, end) {
                out.push((h, line_of(p)));
            }
        }
    }
    out
}

/// The graph of `files` (path relative to src/, stripped code without tests), restricted
/// to the top-level modules in `modules`.
fn graph(files: &[(PathBuf, String)], modules: &BTreeSet<String>) -> Graph {
    let mut g = Graph::new();
    for (rel, code) in files {
        let path = module_path(rel);
        let Some(top) = path.first() else { continue };
        for (to, line) in imports(code, &path) {
            if to == *top || !modules.contains(&to) {
                continue;
            }
            g.entry(top.clone())
                .or_default()
                .entry(to)
                .or_insert_with(|| Place {
                    file: format!("src/{}", rel.display()),
                    line,
                });
        }
    }
    g
}

/// The strongly connected components of `g` with more than one module (each a set of
/// modules on a cycle), by Tarjan's algorithm.
fn cyclic_components(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest cycle through the first module of `comp`, staying inside `comp`.
fn cycle_in(g: &Graph, comp: &[String]) -> Vec<String> {
    let start = &comp[0];
    let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in g.get(v).into_iter().flat_map(|m| m.keys()) {
            if !comp.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![v.clone()];
                let mut at = v;
                while at != start {
                    at = prev[at];
                    path.push(at.clone());
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    comp.to_vec()
}

/// One report per cycle: the modules, then each edge with where it is.
fn describe_cycles(g: &Graph) -> Vec<String> {
    cyclic_components(g)
        .iter()
        .map(|comp| {
            let cycle = cycle_in(g, comp);
            let mut s = format!(
                "cycle {} (component: {})",
                cycle.join(" -> "),
                comp.join(", ")
            );
            for pair in cycle.windows(2) {
                if let Some(p) = g.get(&pair[0]).and_then(|m| m.get(&pair[1])) {
                    s += &format!("\n  {} -> {}: {}:{}", pair[0], pair[1], p.file, p.line);
                }
            }
            // The component's other edges: each is on some cycle too.
            for from in comp {
                for (to, p) in g.get(from).into_iter().flatten() {
                    let on_path = cycle.windows(2).any(|w| w[0] == *from && w[1] == *to);
                    if comp.contains(to) && !on_path {
                        s += &format!("\n  also {from} -> {to}: {}:{}", p.file, p.line);
                    }
                }
            }
            s
        })
        .collect()
}

/// Every `.rs` file under src/ with its path relative to src/ and its stripped code.
fn sources(src: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let rd = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display()));
        for e in rd {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
                let rel = p.strip_prefix(src).expect("under src/").to_path_buf();
                out.push((rel, strip(&text)));
            }
        }
    }
    out.sort();
    out
}

/// The top-level modules: files and directories directly under src/.
fn top_modules(files: &[(PathBuf, String)]) -> BTreeSet<String> {
    files
        .iter()
        .filter_map(|(rel, _)| module_path(rel).into_iter().next())
        .collect()
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let files = sources(&src_dir());
    let modules = top_modules(&files);
    assert!(
        modules.len() > 10 && modules.contains("cli") && modules.contains("pipeline"),
        "the modules found under src/ look wrong: {modules:?}"
    );
    let no_tests: Vec<_> = files
        .iter()
        .map(|(rel, code)| (rel.clone(), drop_tests(code)))
        .filter(|(rel, _)| !rel.ends_with("tests.rs"))
        .collect();
    let g = graph(&no_tests, &modules);
    let edges: usize = g.values().map(BTreeMap::len).sum();
    assert!(
        edges > 20,
        "only {edges} import edges found: the parser is broken"
    );
    let cycles = describe_cycles(&g);
    assert!(
        cycles.is_empty(),
        "{} import cycle(s) between src/'s top-level modules:\n{}",
        cycles.len(),
        cycles.join("\n")
    );
}

#[test]
fn the_library_never_imports_the_cli() {
    let files = sources(&src_dir());
    let mut bad = Vec::new();
    for (rel, code) in &files {
        if module_path(rel).first().is_some_and(|m| m == "cli") {
            continue;
        }
        for (to, line) in imports(code, &module_path(rel)) {
            if to == "cli" {
                bad.push(format!("src/{}:{line}", rel.display()));
            }
        }
    }
    assert!(bad.is_empty(), "the library imports crate::cli at {bad:?}");
}

/// Core types do not derive clap: the command line parses the library's enums itself.
#[test]
fn only_the_cli_uses_clap() {
    let mut bad = Vec::new();
    for (rel, code) in &sources(&src_dir()) {
        if module_path(rel).first().is_some_and(|m| m == "cli") {
            continue;
        }
        for (p, _) in code.match_indices("clap::") {
            if !code[..p].ends_with(|ch: char| is_ident(ch) || ch == ':') {
                let line = code[..p].matches('\n').count() + 1;
                bad.push(format!("src/{}:{line}", rel.display()));
            }
        }
    }
    assert!(bad.is_empty(), "clap used outside src/cli/ at {bad:?}");
}

#[test]
fn the_cycle_finder_finds_a_synthetic_cycle_and_only_it() {
    let src: [(&str, &str); 5] = [
        ("a.rs", "use crate::b::X;\n// crate::e is a comment\n"),
        (
            "b/mod.rs",
            "pub mod inner;\nconst S: &str = \"crate::e\";\n",
        ),
        (
            "b/inner.rs",
            "use super::super::{c::Y, d};\nfn f<'a>(x: &'a u8) -> char { 'x' }\n",
        ),
        ("c.rs", "pub struct Y;\nfn g() { crate::a::h() }\n"),
        (
            "d.rs",
            "use crate::e;\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
        ),
    ];
    let mut files: Vec<(PathBuf, String)> = src
        .iter()
        .map(|(p, t)| (PathBuf::from(p), drop_tests(&strip(t))))
        .collect();
    files.push(("e.rs".into(), String::new()));
    let g = graph(&files, &top_modules(&files));
    let edges: Vec<(String, String)> = g
        .iter()
        .flat_map(|(f, m)| m.keys().map(move |t| (f.clone(), t.clone())))
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    // No edge from comments, strings, the lifetime or the test module.
    assert_eq!(
        edges,
        pairs(&[("a", "b"), ("b", "c"), ("b", "d"), ("c", "a"), ("d", "e")])
    );
    assert_eq!(g["b"]["c"].file, "src/b/inner.rs");
    assert_eq!(g["c"]["a"].line, 2);
    let cycles = describe_cycles(&g);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("cycle a -> b -> c -> a (component: a, b, c)"),
        "{}",
        cycles[0]
    );
    assert!(
        cycles[0].contains("b -> c: src/b/inner.rs:1"),
        "{}",
        cycles[0]
    );

    // Break the cycle: nothing is reported.
    files[3].1 = strip("pub struct Y;\n");
    assert!(describe_cycles(&graph(&files, &top_modules(&files))).is_empty());
}
