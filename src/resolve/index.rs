//! The package universe: every binary stanza of a set of `Packages` indices for one
//! architecture (plus `Architecture: all`), with the lookups the solver needs.
//!
//! Consumes index files as apt leaves them in `/var/lib/apt/lists` (uncompressed,
//! `Acquire::GzipIndexes "false"`) and produces a [`Universe`]: versions of each
//! package sorted newest first (the first is apt's candidate under default pins), a
//! reverse `Provides` map, and apt's package order, which apt uses as the last
//! tie-break between providers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use super::control::{self, Paragraph};
use super::relation::{self, Atom, Group};
use super::version;

/// One `Packages` index file and the archive coordinates it came from.
#[derive(Clone, Debug)]
pub struct IndexFile {
    /// Path of the uncompressed index.
    pub path: PathBuf,
    /// Suite as apt reports it (`$(SUITE)` of `apt-get indextargets`), e.g. `stable-security`.
    pub suite: String,
    /// Archive component, e.g. `main`.
    pub component: String,
}

/// One binary package version: the fields of its stanza that resolving and fetching need.
#[derive(Clone, Debug)]
pub struct Stanza {
    /// `Package:`
    pub name: String,
    /// `Version:`
    pub version: String,
    /// `Architecture:` (the universe's architecture or `all`).
    pub architecture: String,
    /// `Multi-Arch:` (`same`, `foreign`, `allowed`), if present.
    pub multi_arch: Option<String>,
    /// `Essential: yes`
    pub essential: bool,
    /// `Important: yes` or `Protected: yes` (apt's "important" flag).
    pub important: bool,
    /// apt's priority number: 1 required, 2 important, 3 standard, 4 optional, 5 extra,
    /// 0 when the field is missing (apt leaves it zero).
    pub priority: u8,
    /// `Size:` of the .deb in bytes.
    pub size: u64,
    /// `Installed-Size:` in KiB.
    pub installed_size_kib: u64,
    /// `SHA256:` of the .deb.
    pub sha256: String,
    /// Source package name (`Source:` without version, or the package name).
    pub source: String,
    /// Source version (from `Source: name (version)`, or `Version:`).
    pub source_version: String,
    /// `Filename:` relative to the archive root.
    pub filename: String,
    /// Suite of the index this stanza was read from.
    pub suite: String,
    /// Component of the index this stanza was read from.
    pub component: String,
    /// `Pre-Depends:`
    pub pre_depends: Vec<Group>,
    /// `Depends:`
    pub depends: Vec<Group>,
    /// `Recommends:`
    pub recommends: Vec<Group>,
    /// `Conflicts:` (no alternatives allowed, Policy 7.4)
    pub conflicts: Vec<Atom>,
    /// `Breaks:`
    pub breaks: Vec<Atom>,
    /// `Provides:` entries: name and optional `(= version)`.
    pub provides: Vec<(String, Option<String>)>,
}

impl Stanza {
    /// The relation groups the solver must satisfy: Pre-Depends then Depends (the order
    /// apt stores them in), then Recommends when asked for. The flag says "critical".
    pub fn positive_groups(&self, recommends: bool) -> impl Iterator<Item = (&Group, bool)> {
        let rec: &[Group] = if recommends { &self.recommends } else { &[] };
        self.pre_depends
            .iter()
            .chain(&self.depends)
            .map(|g| (g, true))
            .chain(rec.iter().map(|g| (g, false)))
    }
}

/// All package versions of the loaded indices, indexed for resolving.
#[derive(Debug)]
pub struct Universe {
    arch: String,
    pkgs: Vec<Stanza>,
    /// Versions per package name, newest first; duplicates of a version seen in an
    /// earlier index are dropped (apt merges them into one version).
    by_name: HashMap<String, Vec<u32>>,
    /// Provided name -> (stanza, index into its `provides`), over all versions.
    providers: HashMap<String, Vec<(u32, u32)>>,
    /// apt's package ID order: the order names are first mentioned while reading the
    /// indices (as a package or as a relation target).
    order: HashMap<String, u32>,
}

/// What one parsing thread produces for a slice of one index.
struct Chunk {
    stanzas: Vec<Stanza>,
    mentions: Vec<String>,
}

impl Universe {
    /// Reads `files` (in apt's source order) and keeps stanzas for `arch` and `all`.
    pub fn load(files: &[IndexFile], arch: &str) -> Result<Universe> {
        let mut chunks: Vec<Chunk> = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file.path)
                .with_context(|| format!("reading package index {}", file.path.display()))?;
            chunks.extend(parse_parallel(&text, file, arch)?);
        }
        Ok(Self::from_chunks(arch, chunks))
    }

    /// Builds a universe from stanzas given as control text, one index per entry of
    /// `texts` (`suite`, `text`). Meant for tests and small synthetic universes.
    pub fn from_texts(texts: &[(&str, &str)], arch: &str) -> Result<Universe> {
        let mut chunks = Vec::new();
        for (suite, text) in texts {
            let file = IndexFile {
                path: PathBuf::from(format!("<{suite}>")),
                suite: suite.to_string(),
                component: "main".to_string(),
            };
            chunks.push(parse_chunk(text, 0, &file, arch)?);
        }
        Ok(Self::from_chunks(arch, chunks))
    }

    fn from_chunks(arch: &str, chunks: Vec<Chunk>) -> Universe {
        let mut order: HashMap<String, u32> = HashMap::new();
        let mut pkgs = Vec::new();
        for chunk in chunks {
            for m in chunk.mentions {
                let next = order.len() as u32;
                order.entry(m).or_insert(next);
            }
            pkgs.extend(chunk.stanzas);
        }
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        let mut providers: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        for (i, p) in pkgs.iter().enumerate() {
            let i = i as u32;
            let versions = by_name.entry(p.name.clone()).or_default();
            if versions
                .iter()
                .any(|&j| pkgs[j as usize].version == p.version)
            {
                continue;
            }
            versions.push(i);
            for (k, (prov, _)) in p.provides.iter().enumerate() {
                providers
                    .entry(prov.clone())
                    .or_default()
                    .push((i, k as u32));
            }
        }
        for versions in by_name.values_mut() {
            // Stable sort: equal versions keep index order (earlier source first).
            versions.sort_by(|&a, &b| {
                version::compare(&pkgs[b as usize].version, &pkgs[a as usize].version)
            });
        }
        Universe {
            arch: arch.to_string(),
            pkgs,
            by_name,
            providers,
            order,
        }
    }

    /// The architecture this universe was loaded for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Number of distinct package versions loaded.
    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    /// True when no stanza was loaded.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// apt's candidate for `name`: the highest version over all indices (every source
    /// has the default pin priority 500 here).
    pub fn candidate(&self, name: &str) -> Option<&Stanza> {
        self.by_name
            .get(name)
            .and_then(|v| v.first())
            .map(|&i| &self.pkgs[i as usize])
    }

    /// The stanza of `name` at exactly `version` (compared as Debian versions).
    pub fn exact(&self, name: &str, version: &str) -> Option<&Stanza> {
        self.versions(name)
            .find(|s| version::compare(&s.version, version).is_eq())
    }

    /// All versions of `name`, newest first.
    pub fn versions<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Stanza> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.pkgs[i as usize])
    }

    /// Is there a real package (one with a stanza) called `name`?
    pub fn is_real(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every version that provides `name`, with the provided version if any.
    pub fn providers<'a>(
        &'a self,
        name: &str,
    ) -> impl Iterator<Item = (&'a Stanza, Option<&'a str>)> + 'a {
        self.providers
            .get(name)
            .into_iter()
            .flatten()
            .map(|&(i, k)| {
                let s = &self.pkgs[i as usize];
                (s, s.provides[k as usize].1.as_deref())
            })
    }

    /// apt's package ID for `name` (its first mention while reading the indices).
    pub fn apt_order(&self, name: &str) -> u32 {
        self.order.get(name).copied().unwrap_or(u32::MAX)
    }

    /// Up to `n` known names close to `name`: names it is a prefix of or contained in,
    /// and names within a small edit distance; best first.
    pub fn close_names(&self, name: &str, n: usize) -> Vec<String> {
        let limit = (name.len() / 3).clamp(2, 3);
        let mut scored: Vec<(usize, &str)> = self
            .by_name
            .keys()
            .chain(self.providers.keys())
            .filter_map(|cand| {
                if cand == name {
                    return None;
                }
                if cand.starts_with(name) || (name.len() >= 4 && cand.contains(name)) {
                    // Rank containment after close typos but before distant ones.
                    return Some((limit + cand.len() - name.len(), cand.as_str()));
                }
                if cand.len().abs_diff(name.len()) > limit {
                    return None;
                }
                let d = edit_distance(name, cand);
                (d <= limit).then_some((d, cand.as_str()))
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored
            .into_iter()
            .take(n)
            .map(|(_, s)| s.to_string())
            .collect()
    }
}

/// Levenshtein distance over bytes (package names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Parses one index text on up to two threads (the machine this runs on is small),
/// splitting at a paragraph boundary; chunks come back in file order.
fn parse_parallel(text: &str, file: &IndexFile, arch: &str) -> Result<Vec<Chunk>> {
    const MIN_SPLIT: usize = 4 << 20;
    let split = if text.len() >= MIN_SPLIT {
        text[text.len() / 2..]
            .find("\n\n")
            .map(|i| text.len() / 2 + i + 2)
    } else {
        None
    };
    let Some(split) = split else {
        return Ok(vec![parse_chunk(text, 0, file, arch)?]);
    };
    let (a, b) = text.split_at(split);
    let line_offset = a.bytes().filter(|&c| c == b'\n').count();
    std::thread::scope(|s| {
        let hb = s.spawn(|| parse_chunk(b, line_offset, file, arch));
        let ca = parse_chunk(a, 0, file, arch)?;
        let cb = hb
            .join()
            .map_err(|_| anyhow!("index parser thread panicked on {}", file.path.display()))??;
        Ok(vec![ca, cb])
    })
}

fn parse_chunk(text: &str, line_offset: usize, file: &IndexFile, arch: &str) -> Result<Chunk> {
    let mut stanzas = Vec::new();
    let mut mentions = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    control::for_each_paragraph(text, |p| -> Result<()> {
        let line = p.line + line_offset;
        let ctx = || format!("{}: stanza at line {line}", file.path.display());
        let name = p
            .get("Package")
            .ok_or_else(|| anyhow!("no Package field"))
            .with_context(ctx)?;
        let a = p.get("Architecture").unwrap_or("");
        if a != arch && a != "all" {
            return Ok(());
        }
        let stanza = parse_stanza(p, name, a, file).with_context(ctx)?;
        // apt creates a package the first time it sees a name: the stanza's own name,
        // then relation targets in the order it parses the fields, then Provides.
        let mut mention = |n: &'_ str| {
            // Arch-qualified targets (`foo:any`) are separate packages for apt.
            if !n.contains(':') && !seen.contains(n) {
                seen.insert(n.to_string());
                mentions.push(n.to_string());
            }
        };
        mention(name);
        for field in [
            "Pre-Depends",
            "Depends",
            "Conflicts",
            "Breaks",
            "Recommends",
            "Suggests",
            "Replaces",
            "Enhances",
            "Provides",
        ] {
            if let Some(v) = p.get(field) {
                for target in v.split([',', '|']) {
                    let t = target.trim_start();
                    let end = t
                        .find(|c: char| c.is_whitespace() || c == '(' || c == '[')
                        .unwrap_or(t.len());
                    if end > 0 {
                        mention(&t[..end]);
                    }
                }
            }
        }
        stanzas.push(stanza);
        Ok(())
    })?;
    // `mentions` holds first mentions within the chunk; merging chunks in order keeps
    // the global first mention.
    Ok(Chunk { stanzas, mentions })
}

fn parse_stanza(p: &Paragraph<'_>, name: &str, arch: &str, file: &IndexFile) -> Result<Stanza> {
    let field = |k: &str| p.get(k);
    let req = |k: &str| field(k).ok_or_else(|| anyhow!("package {name}: missing field {k}"));
    let version = req("Version")?.to_string();
    let num = |k: &str| -> Result<u64> {
        match field(k) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .with_context(|| format!("package {name}: {k}: {v:?} is not a number")),
        }
    };
    let rel = |k: &str| -> Result<Vec<Group>> {
        match field(k) {
            None => Ok(Vec::new()),
            Some(v) => relation::parse(v).with_context(|| format!("package {name}: field {k}")),
        }
    };
    let flat = |k: &str| -> Result<Vec<Atom>> { Ok(rel(k)?.into_iter().flatten().collect()) };
    let (source, source_version) = match field("Source") {
        None => (name.to_string(), version.clone()),
        Some(s) => match s.split_once('(') {
            Some((n, v)) => (
                n.trim().to_string(),
                v.trim_end_matches(')').trim().to_string(),
            ),
            None => (s.to_string(), version.clone()),
        },
    };
    let priority = match field("Priority") {
        None => 0,
        Some("required") => 1,
        Some("important") => 2,
        Some("standard") => 3,
        Some("optional") => 4,
        Some(_) => 5,
    };
    let yes = |k: &str| field(k).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let mut provides = Vec::new();
    for g in rel("Provides")? {
        for a in g {
            let v = match a.version {
                None => None,
                Some((relation::Op::Eq, v)) => Some(v),
                // apt ignores Provides with other operators (with a warning).
                Some(_) => continue,
            };
            provides.push((a.name, v));
        }
    }
    Ok(Stanza {
        name: name.to_string(),
        architecture: arch.to_string(),
        multi_arch: field("Multi-Arch").map(str::to_string),
        essential: yes("Essential"),
        important: yes("Important") || yes("Protected"),
        priority,
        size: num("Size")?,
        installed_size_kib: num("Installed-Size")?,
        sha256: field("SHA256").unwrap_or("").to_string(),
        source,
        source_version,
        filename: field("Filename").unwrap_or("").to_string(),
        suite: file.suite.clone(),
        component: file.component.clone(),
        pre_depends: rel("Pre-Depends")?,
        depends: rel("Depends")?,
        recommends: rel("Recommends")?,
        conflicts: flat("Conflicts")?,
        breaks: flat("Breaks")?,
        provides,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "Package: foo\nVersion: 1.0-1\nArchitecture: amd64\nDepends: bar (>= 2), baz | qux\nProvides: virt (= 1.0)\nSource: foosrc (1.0-1)\n\nPackage: bar\nVersion: 2.0\nArchitecture: all\n\nPackage: arm\nVersion: 1\nArchitecture: arm64\n";
    const SEC: &str = "Package: foo\nVersion: 1.0-1+deb1u1\nArchitecture: amd64\n\nPackage: bar\nVersion: 2.0\nArchitecture: all\n";

    #[test]
    fn candidate_is_highest_version_over_suites() {
        let u =
            Universe::from_texts(&[("stable", MAIN), ("stable-security", SEC)], "amd64").unwrap();
        assert_eq!(u.candidate("foo").unwrap().version, "1.0-1+deb1u1");
        assert_eq!(u.candidate("foo").unwrap().suite, "stable-security");
        // Same version in two suites: the first source wins, like apt's first file.
        assert_eq!(u.candidate("bar").unwrap().suite, "stable");
        assert!(u.candidate("arm").is_none());
        let old = u.exact("foo", "1.0-1").unwrap();
        assert_eq!(
            (old.source.as_str(), old.source_version.as_str()),
            ("foosrc", "1.0-1")
        );
        assert_eq!(u.providers("virt").count(), 1);
        assert!(u.apt_order("foo") < u.apt_order("bar"));
        assert!(u.apt_order("bar") < u.apt_order("baz"));
        assert_eq!(u.len(), 3);
    }

    #[test]
    fn close_names_suggests_typos_and_prefixes() {
        let u = Universe::from_texts(&[("stable", MAIN)], "amd64").unwrap();
        assert_eq!(u.close_names("fo", 3), vec!["foo".to_string()]);
        assert_eq!(u.close_names("bra", 3)[0], "bar");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
