//! Finds the Debian mirror the host already uses, from its apt sources (one-line
//! `sources.list` files and deb822 `.sources` files), so no host name is written into
//! slipway. Only the URIs are taken: the host's other apt settings never leak in.

use anyhow::{bail, Result};
use std::path::Path;

/// The archive and security mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// The main archive (serves RELEASE and RELEASE-updates).
    pub archive: String,
    /// The security archive (serves RELEASE-security).
    pub security: String,
}

const CODENAMES: &[&str] = &[
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "stable",
    "oldstable",
    "testing",
    "unstable",
];

/// One `deb` source: its URI and suites.
#[derive(Debug)]
struct Source {
    uri: String,
    suites: Vec<String>,
}

fn parse_one_line(text: &str, out: &mut Vec<Source>) {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
}

fn parse_deb822(text: &str, out: &mut Vec<Source>) {
    for stanza in text.split("\n\n") {
        let (mut types, mut uris, mut suites, mut enabled) =
            (String::new(), String::new(), String::new(), true);
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim().to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "types" => types = v,
                    "uris" => uris = v,
                    "suites" => suites = v,
                    "enabled" => enabled = v != "no",
                    _ => {}
                }
            }
        }
        if enabled && types.split_whitespace().any(|t| t == "deb") {
            for uri in uris.split_whitespace() {
                out.push(Source {
                    uri: uri.to_string(),
                    suites: suites.split_whitespace().map(str::to_string).collect(),
                });
            }
        }
    }
}

/// Reads the mirrors from the apt configuration under `etc_apt` (normally `/etc/apt`).
pub fn from_host(etc_apt: &Path) -> Result<Mirrors> {
    let mut sources = Vec::new();
    if let Ok(t) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        parse_one_line(&t, &mut sources);
    }
    if let Ok(rd) = std::fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let Ok(t) = std::fs::read_to_string(&p) else {
                continue;
            };
            match p.extension().and_then(|e| e.to_str()) {
                Some("list") => parse_one_line(&t, &mut sources),
                Some("sources") => parse_deb822(&t, &mut sources),
                _ => {}
            }
        }
    }
    pick(&sources).ok_or(()).or_else(|_| {
        bail!(
            "no Debian mirror found in {}/sources.list or sources.list.d: set `debian.mirror` in the recipe or `SLIPWAY_MIRROR`",
            etc_apt.display()
        )
    })
}

fn pick(sources: &[Source]) -> Option<Mirrors> {
    let is_debian = |s: &str| CODENAMES.contains(&s.split('-').next().unwrap_or(""));
    let archive = sources
        .iter()
        .find(|s| {
            s.suites
                .iter()
                .any(|x| is_debian(x) && !x.ends_with("-security"))
        })?
        .uri
        .trim_end_matches('/')
        .to_string();
    let security = sources
        .iter()
        .find(|s| {
            s.suites
                .iter()
                .any(|x| is_debian(x) && x.ends_with("-security"))
        })
        .map(|s| s.uri.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("{archive}-security"));
    Some(Mirrors { archive, security })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_and_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://mirror.example/debian-security/\nSuites: bookworm-security\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/other.list"),
            "deb https://vendor.example/apt cloud-sdk main\n",
        )
        .unwrap();
        let m = from_host(dir.path()).unwrap();
        assert_eq!(m.archive, "http://mirror.example/debian");
        assert_eq!(m.security, "http://mirror.example/debian-security");
    }

    #[test]
    fn security_defaults_beside_archive() {
        let mut v = Vec::new();
        parse_one_line(
            "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian trixie main\n",
            &mut v,
        );
        let m = pick(&v).unwrap();
        assert_eq!(m.security, "http://m.example/debian-security");
    }

    #[test]
    fn none_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(from_host(dir.path()).is_err());
    }
}
