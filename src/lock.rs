//! Lock files (`RECIPE.lock`): every package and artifact of an image pinned by version
//! and sha256, plus a digest of the recipe inputs that resolution depends on, so that
//! `--locked` can tell when the recipe changed. Written deterministically: the same
//! resolution always gives the same bytes.

use crate::io::hash::sha256_hex;
use crate::recipe::Recipe;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The lock format version.
pub const LOCK_VERSION: u32 = 1;

/// A whole lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lock {
    /// Format version.
    pub lock_version: u32,
    /// Digest of the recipe inputs that resolution depends on.
    pub input_digest: String,
    /// Debian release.
    pub release: String,
    /// Debian architecture.
    pub architecture: String,
    /// The parent recipe's lock digest, for recipes that extend another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Pinned packages, sorted by name.
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
    /// Pinned non-Debian files, sorted by destination.
    #[serde(default, rename = "artifact", skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<LockedArtifact>,
    /// Dependencies the recipe cut with `packages.exclude`.
    #[serde(default, rename = "cut", skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<LockedCut>,
}

/// Which parent lock a child lock was made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ParentRef {
    /// The parent's recipe path, relative to the child's directory.
    pub recipe: String,
    /// The parent's lock input digest.
    pub input_digest: String,
}

/// One pinned Debian package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// sha256 of the .deb.
    pub sha256: String,
    /// Source package name.
    pub source: String,
    /// Source package version.
    pub source_version: String,
    /// The suite it was found in.
    pub suite: String,
}

/// One pinned artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedArtifact {
    pub url: String,
    pub sha256: String,
    pub size: u64,
    pub dest: String,
}

/// One dependency edge the recipe cut.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedCut {
    pub from: String,
    pub to: String,
    pub relation: String,
}

impl LockedPackage {
    /// `name=version`, the form apt takes.
    pub fn spec(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// The digest of everything in `r` that changes what a lock contains.
pub fn input_digest(r: &Recipe) -> String {
    let mut s = format!(
        "lock-version {LOCK_VERSION}\nrelease {}\narch {}\nsuites {}\ncomponents {}\nrecommends {}\n",
        r.debian.release,
        r.debian.architecture,
        r.debian.suites.join(" "),
        r.debian.components.join(" "),
        r.recommends
    );
    for p in &r.include {
        s.push_str(&format!("include {p}\n"));
    }
    for p in &r.exclude {
        s.push_str(&format!("exclude {p}\n"));
    }
    for a in &r.artifacts {
        s.push_str(&format!(
            "artifact {} {} {} {:o} {:?}\n",
            a.url, a.sha256, a.dest, a.mode, a.member
        ));
    }
    format!("sha256:{}", sha256_hex(s.as_bytes()))
}

/// A Debian version (Debian Policy 5.6.12): digits, letters, `. + ~ - :`.
fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b))
}

fn is_package(s: &str) -> bool {
    crate::recipe::raw::PackageName::try_from(s.to_string()).is_ok() && !s.contains('=')
}

fn is_sha256(s: &str) -> bool {
    crate::io::hash::is_sha256_hex(s)
}

impl Lock {
    /// Checks every value that becomes a URL, a file name or a line of a system file
    /// (dpkg's status): names, versions, architectures, suites, digests. An error names
    /// the lock file, the key and the line, and exits 2.
    fn check(&self, path: &Path, text: &str) -> Result<()> {
        let spans = std::sync::Arc::new(crate::recipe::spans::Spans::parse(text));
        let at =
            |key: &str| crate::recipe::Origin::new(&path.display().to_string(), key, spans.clone());
        if self.lock_version != LOCK_VERSION {
            return Err(at("lock-version").err(format!(
                "{} is not supported (expected {LOCK_VERSION}); run `slipway lock --update`",
                self.lock_version
            )));
        }
        let digest_ok = |d: &str| d.strip_prefix("sha256:").is_some_and(is_sha256);
        if !digest_ok(&self.input_digest) {
            return Err(at("input-digest").err(format!(
                "{:?} is not a sha256:HEX digest",
                self.input_digest
            )));
        }
        if let Some(p) = &self.parent {
            if !digest_ok(&p.input_digest) {
                return Err(at("parent.input-digest")
                    .err(format!("{:?} is not a sha256:HEX digest", p.input_digest)));
            }
        }
        let arch_ok = |a: &str| a == "all" || crate::recipe::ARCHITECTURES.contains(&a);
        if !crate::recipe::ARCHITECTURES.contains(&self.architecture.as_str()) {
            return Err(at("architecture").err(format!(
                "{:?} is not a Debian architecture",
                self.architecture
            )));
        }
        if crate::recipe::raw::Release::try_from(self.release.clone()).is_err() {
            return Err(at("release").err(format!(
                "{:?} is not a supported Debian release",
                self.release
            )));
        }
        for (i, p) in self.packages.iter().enumerate() {
            let key = |k: &str| at(&format!("package[{i}].{k}"));
            let bad = [
                ("name", is_package(&p.name), "a Debian package name"),
                ("version", is_version(&p.version), "a Debian version"),
                (
                    "architecture",
                    arch_ok(&p.architecture),
                    "a Debian architecture or all",
                ),
                (
                    "sha256",
                    is_sha256(&p.sha256),
                    "a sha256 digest (64 lower-case hex digits)",
                ),
                (
                    "source",
                    is_package(&p.source),
                    "a Debian source package name",
                ),
                (
                    "source-version",
                    is_version(&p.source_version),
                    "a Debian version",
                ),
                (
                    "suite",
                    crate::recipe::check::suite(&p.suite).is_ok(),
                    "an apt suite",
                ),
            ];
            if let Some((k, _, what)) = bad.iter().find(|(_, ok, _)| !ok) {
                return Err(key(k).err(format!("not {what}")));
            }
        }
        for (i, a) in self.artifacts.iter().enumerate() {
            let key = |k: &str| at(&format!("artifact[{i}].{k}"));
            if !is_sha256(&a.sha256) {
                return Err(key("sha256").err("not a sha256 digest (64 lower-case hex digits)"));
            }
            if !a.dest.starts_with('/')
                || a.dest.split('/').any(|c| c == "..")
                || a.dest.chars().any(char::is_control)
            {
                return Err(key("dest").err(format!(
                    "{:?} is not an absolute image path without `..`",
                    a.dest
                )));
            }
            if a.url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(key("url").err(format!("{:?} is not a URL", a.url)));
            }
        }
        Ok(())
    }

    /// Reads a lock file; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Lock>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let lock: Lock = crate::recipe::parse_toml(path, &text)?;
        lock.check(path, &text)?;
        Ok(Some(lock))
    }

    /// The lock's text: a header comment then TOML, the same bytes for the same lock.
    pub fn to_text(&self) -> Result<String> {
        let body = toml::to_string(self).context("serializing the lock")?;
        Ok(format!(
            "# Generated by `slipway lock`: every package and artifact pinned by sha256.\n# Edit the recipe, not this file.\n{body}"
        ))
    }

    /// Writes the lock atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::atomic::write(path, self.to_text()?.as_bytes())
    }

    /// The locked package called `name`.
    pub fn package(&self, name: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// Total size of the locked .deb files.
    pub fn total_size(&self) -> u64 {
        self.packages.iter().map(|p| p.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_byte_identical() {
        let lock = Lock {
            lock_version: LOCK_VERSION,
            input_digest: format!("sha256:{}", "00".repeat(32)),
            release: "trixie".into(),
            architecture: "amd64".into(),
            parent: None,
            packages: vec![LockedPackage {
                name: "busybox-static".into(),
                version: "1:1.37.0-6+b9".into(),
                architecture: "amd64".into(),
                size: 12,
                sha256: "ab".repeat(32),
                source: "busybox".into(),
                source_version: "1:1.37.0-6".into(),
                suite: "trixie".into(),
            }],
            artifacts: vec![],
            cuts: vec![],
        };
        let t = lock.to_text().unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        lock.write(&p).unwrap();
        let back = Lock::read(&p).unwrap().unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.to_text().unwrap(), t);
    }

    #[test]
    fn a_bad_value_names_file_key_and_line_and_exits_2() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        let text = format!(
            "lock-version = 1\ninput-digest = \"sha256:{}\"\nrelease = \"trixie\"\narchitecture = \"amd64\"\n[[package]]\nname = \"a1\"\nversion = \"1\\n2\"\narchitecture = \"all\"\nsize = 1\nsha256 = \"{}\"\nsource = \"a1\"\nsource-version = \"1\"\nsuite = \"trixie\"\n",
            "0".repeat(64),
            "1".repeat(64)
        );
        std::fs::write(&p, text).unwrap();
        let e = Lock::read(&p).unwrap_err();
        let m = format!("{e:#}");
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
        assert!(
            m.contains("x.lock: package[0].version: not a Debian version (line 7)"),
            "{m}"
        );
    }
}
