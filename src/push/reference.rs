//! Image references on the command line: `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
//!
//! Consumes the user's string; produces a checked [`Reference`] (registry host, repository
//! name, tag, optional digest). The grammar follows the distribution reference format
//! (lower-case path components separated by `/`, tags of `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
//! see <https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests>.

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

/// The tag used when a reference names none.
pub const DEFAULT_TAG: &str = "latest";

/// Where to push: a registry, a repository in it, and a tag (and optionally a digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry as written (`127.0.0.1:5000`, `[::1]:5000`, `docker.io`).
    pub registry: String,
    /// The repository name (`team/app`).
    pub repo: String,
    /// The tag; [`DEFAULT_TAG`] when the reference had neither tag nor digest.
    pub tag: Option<String>,
    /// The digest (`sha256:...`) when the reference pins one.
    pub digest: Option<String>,
}

impl Reference {
    /// The registry host without a port (`127.0.0.1`, `::1`, `docker.io`).
    pub fn host(&self) -> &str {
        host_of(&self.registry)
    }

    /// The host that serves the API: Docker Hub's `docker.io` is `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" || self.registry == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The reference a manifest is pushed under: the tag, else the digest.
    pub fn manifest_reference(&self) -> &str {
        self.tag
            .as_deref()
            .or(self.digest.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// `REGISTRY/REPO@DIGEST`, the form printed after a push.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repo)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `host` without its port; brackets of an IPv6 literal are removed.
pub fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl FromStr for Reference {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| -> Result<Self> {
            bail!("{s:?} is not an image reference: {why} (expected HOST[:PORT]/REPO[:TAG][@sha256:HEX])")
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            let Some(hex) = d.strip_prefix("sha256:") else {
                return bad("only sha256 digests are supported");
            };
            if !crate::io::hash::is_sha256_hex(hex) {
                return bad("the digest is not sha256: and 64 lower-case hex digits");
            }
        }
        let Some((registry, path)) = rest.split_once('/') else {
            return bad("no registry host");
        };
        if !looks_like_host(registry) {
            return bad(&format!(
                "{registry:?} is not a registry host (a host has a dot or a port, or is localhost; for Docker Hub write docker.io/{rest})"
            ));
        }
        // A tag is after the last ':' of the last path component.
        let (name, tag) = match path.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (path, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return bad(&format!(
                    "{t:?} is not a tag (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
                ));
            }
        }
        if let Err(why) = check_repo(name) {
            return bad(&why);
        }
        let mut repo = name.to_string();
        if (registry == "docker.io" || registry == "index.docker.io") && !repo.contains('/') {
            repo = format!("library/{repo}");
        }
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repo,
            tag,
            digest: digest.map(str::to_string),
        })
    }
}

fn looks_like_host(s: &str) -> bool {
    if s == "localhost" || s.starts_with("localhost:") {
        return true;
    }
    if s.starts_with('[') {
        return s.contains(']');
    }
    (s.contains('.') || s.contains(':'))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        && match s.split_once(':') {
            Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
            None => true,
        }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// Checks a repository name: components of `[a-z0-9]+` joined by `.`, `_`, `__` or `-`s.
fn check_repo(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty repository name".into());
    }
    if name.len() > 255 {
        return Err("repository name longer than 255 characters".into());
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "repository {name:?} has upper-case letters (names are lower-case)"
        ));
    }
    for comp in name.split('/') {
        if !valid_component(comp) {
            return Err(format!(
                "{comp:?} is not a repository path component (lower-case letters and digits, joined by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn host_port_path_tag() {
        let r = p("127.0.0.1:5000/a/b:v1.2");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.host(), "127.0.0.1");
        assert_eq!(r.repo, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.digest, None);
        assert_eq!(r.manifest_reference(), "v1.2");
        assert_eq!(r.to_string(), "127.0.0.1:5000/a/b:v1.2");
    }

    #[test]
    fn digest_reference() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = p(&format!("registry.example/a@{d}"));
        assert_eq!(r.registry, "registry.example");
        assert_eq!(r.repo, "a");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.manifest_reference(), d);
        let both = p(&format!("localhost:5000/x/y:t@{d}"));
        assert_eq!(both.tag.as_deref(), Some("t"));
        assert_eq!(both.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn default_tag_is_latest() {
        let r = p("localhost/app");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.repo, "app");
        // A port is not a tag.
        let r = p("localhost:5000/app");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn ipv6_and_docker_hub() {
        let r = p("[::1]:5000/x:y");
        assert_eq!(r.host(), "::1");
        assert_eq!(r.registry, "[::1]:5000");
        let h = p("docker.io/debian:trixie");
        assert_eq!(h.repo, "library/debian");
        assert_eq!(h.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "127.0.0.1:5000/Upper/case:t",
            "127.0.0.1:5000/a/B",
            "noregistry",
            "team/app:tag",
            "127.0.0.1:5000/",
            "127.0.0.1:5000/a//b",
            "127.0.0.1:5000/a:",
            "127.0.0.1:5000/a:.hidden",
            "127.0.0.1:5000/a-:t",
            "127.0.0.1:5000/a___b",
            "127.0.0.1:5000/a@sha256:abc",
            "127.0.0.1:5000/a@md5:00",
            "127.0.0.1:x/a",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} accepted");
        }
        let e = "127.0.0.1:5000/Upper:t"
            .parse::<Reference>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("upper-case"), "{e}");
    }

    #[test]
    fn separators() {
        for good in ["a.b", "a_b", "a__b", "a-b", "a--b", "a0/b1.c_d"] {
            assert!(check_repo(good).is_ok(), "{good}");
        }
        for bad in ["a..b", "_a", "a_", "a._b"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }
}
