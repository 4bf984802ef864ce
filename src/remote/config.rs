//! Where the registry cache settings come from: a flag wins over its environment
//! variable, which wins over the config file.
//!
//! | setting | flag | environment | `cache.toml` key |
//! |---|---|---|---|
//! | read from | `--cache-from REF` | `SLIPWAY_CACHE_FROM` | `cache-from` |
//! | write to | `--cache-to REF` | `SLIPWAY_CACHE_TO` | `cache-to` |
//! | signing key (PEM) | `--cache-signing-key FILE` | `SLIPWAY_CACHE_SIGNING_KEY` | `signing-key` |
//! | trusted public keys | `--cache-trusted-key FILE` (repeatable) | `SLIPWAY_CACHE_TRUSTED_KEYS` (`:`-separated) | `trusted-keys` |
//! | plain-HTTP registries | | | `insecure` |
//! | trusted token realms | | | `trust-realm` |
//!
//! The file is `$SLIPWAY_CACHE_CONFIG`, else `$XDG_CONFIG_HOME/slipway/cache.toml`, else
//! `~/.config/slipway/cache.toml`; a missing file is no settings. Relative key paths in
//! it are relative to the file. A value `none` for `cache-from` or `cache-to` turns the
//! setting off. Time limits are push's (`SLIPWAY_PUSH_TIMEOUT`,
//! `SLIPWAY_PUSH_READ_TIMEOUT`).

use super::keys::{PublicKey, SigningKey};
use crate::exit::{self, Code};
use crate::push::client::{Net, Retry};
use crate::push::deadline::{self, Timeouts};
use crate::push::reference::Reference;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What the command line says (each `None`/empty when not given).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--cache-from`.
    pub from: Option<String>,
    /// `--cache-to`.
    pub to: Option<String>,
    /// `--cache-signing-key`.
    pub signing_key: Option<PathBuf>,
    /// `--cache-trusted-key`.
    pub trusted_keys: Vec<PathBuf>,
}

/// The resolved settings.
#[derive(Debug, Default)]
pub struct Settings {
    /// The repository read from.
    pub from: Option<Reference>,
    /// The repository written to.
    pub to: Option<Reference>,
    /// Transport (plain-HTTP hosts, trusted realms, retries, time limits).
    pub net: Net,
    /// The key that signs stage entries pushed.
    pub signing: Option<SigningKey>,
    /// The keys whose signatures stage entries are taken under.
    pub trusted: Vec<PublicKey>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    cache_from: Option<String>,
    cache_to: Option<String>,
    signing_key: Option<PathBuf>,
    #[serde(default)]
    trusted_keys: Vec<PathBuf>,
    #[serde(default)]
    insecure: Vec<String>,
    #[serde(default)]
    trust_realm: Vec<String>,
}

fn bad(msg: String) -> anyhow::Error {
    exit::err(Code::BadInput, msg)
}

/// The config file's path, if any is named or exists.
fn file_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLIPWAY_CACHE_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("slipway/cache.toml")).filter(|p| p.is_file())
}

fn read_file(path: &Path) -> Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading registry cache config {}", path.display()))
        .map_err(|e| exit::with_code(Code::BadInput, e))?;
    let mut f: File =
        toml::from_str(&text).map_err(|e| bad(format!("{}: {}", path.display(), e.message())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    f.signing_key = f.signing_key.map(|k| dir.join(k));
    f.trusted_keys = f.trusted_keys.iter().map(|k| dir.join(k)).collect();
    Ok(f)
}

/// `REF` as a cache repository: `HOST[:PORT]/REPO`, no tag or digest (the cache picks
/// its own tags). `none` is no repository.
fn repository(value: &str, whence: &str) -> Result<Option<Reference>> {
    if value.trim() == "none" || value.trim().is_empty() {
        return Ok(None);
    }
    let mut r: Reference = value
        .parse()
        .map_err(|e: anyhow::Error| bad(format!("{whence}: {e:#}")))?;
    let has_tag = value
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'));
    if r.digest.is_some() || has_tag {
        return Err(bad(format!(
            "{whence}: {value:?} names a tag or digest; give the repository alone (HOST[:PORT]/REPO): the cache tags its own manifests"
        )));
    }
    r.tag = None;
    Ok(Some(r))
}

/// Resolves the settings from `flags`, the environment and the config file.
pub fn resolve(flags: &Flags) -> Result<Settings> {
    let file = match file_path() {
        Some(p) => read_file(&p)?,
        None => File::default(),
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let pick = |flag: &Option<String>, var: &str, file: &Option<String>| {
        if let Some(v) = flag {
            return Some((
                v.clone(),
                if var.ends_with("FROM") {
                    "--cache-from"
                } else {
                    "--cache-to"
                }
                .to_string(),
            ));
        }
        if let Some(v) = env(var) {
            return Some((v, var.to_string()));
        }
        file.clone().map(|v| (v, "cache.toml".to_string()))
    };
    let from = match pick(&flags.from, "SLIPWAY_CACHE_FROM", &file.cache_from) {
        Some((v, w)) => repository(&v, &w)?,
        None => None,
    };
    let to = match pick(&flags.to, "SLIPWAY_CACHE_TO", &file.cache_to) {
        Some((v, w)) => repository(&v, &w)?,
        None => None,
    };
    let signing_path = flags
        .signing_key
        .clone()
        .or_else(|| env("SLIPWAY_CACHE_SIGNING_KEY").map(PathBuf::from))
        .or(file.signing_key);
    let signing = match signing_path {
        Some(p) => Some(SigningKey::read(&p).map_err(|e| exit::with_code(Code::BadInput, e))?),
        None => None,
    };
    let trusted_paths: Vec<PathBuf> = if !flags.trusted_keys.is_empty() {
        flags.trusted_keys.clone()
    } else if let Some(v) = env("SLIPWAY_CACHE_TRUSTED_KEYS") {
        v.split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect()
    } else {
        file.trusted_keys
    };
    let mut trusted = Vec::new();
    for p in &trusted_paths {
        trusted.push(PublicKey::read(p).map_err(|e| exit::with_code(Code::BadInput, e))?);
    }
    // A fleet's signer trusts its own key.
    if let Some(k) = &signing {
        if !trusted.contains(&k.public()) {
            trusted.push(k.public());
        }
    }
    let net = Net {
        insecure: file.insecure,
        trust_realm: file.trust_realm,
        retry: Retry::default(),
        timeouts: Timeouts {
            total: deadline::setting(None, "SLIPWAY_PUSH_TIMEOUT", deadline::DEFAULT_TOTAL)?,
            read: deadline::setting(None, "SLIPWAY_PUSH_READ_TIMEOUT", deadline::DEFAULT_READ)?,
        },
    };
    Ok(Settings {
        from,
        to,
        net,
        signing,
        trusted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_without_tags() {
        let r = repository("127.0.0.1:5000/fleet/cache", "--cache-to")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repo.as_str()),
            ("127.0.0.1:5000", "fleet/cache")
        );
        assert!(repository("none", "x").unwrap().is_none());
        let e = repository("127.0.0.1:5000/fleet/cache:v1", "--cache-to").unwrap_err();
        assert!(format!("{e:#}").contains("tag or digest"), "{e:#}");
        assert!(repository("no-registry", "--cache-from").is_err());
    }
}
