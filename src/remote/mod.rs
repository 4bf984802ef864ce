//! The registry cache: a build cache shared by many machines through an OCI registry
//! (`--cache-from REF`, `--cache-to REF`; docs/cache.md, decision 0041).
//!
//! Consumes [`Settings`] (the registries, credentials, transport rules and the fleet's
//! keys, from [`config`]) and what a build asks for: blobs by sha256 (packages and
//! artifacts, which the lock or the recipe pins) and stage entries by input digest.
//! Produces those files, verified, in a work directory the caller names, and pushes what
//! the build fetched or built: every entry is one blob named by its own digest, listed
//! in an OCI 1.1 artifact manifest ([`manifest`]) tagged per recipe and lock (inputs)
//! or per input digest (stage entries), so the registry's garbage collection keeps what
//! is referenced.
//!
//! Trust: a package or artifact is used only if its bytes have the sha256 the lock
//! names (the caller inserts it into the verified cache, which checks again). A stage
//! entry is used only from a manifest whose config, the list of its files with their
//! digests and the input digest it was built from, carries a valid Ed25519 signature by
//! a trusted key, and only when that input digest is the build's own. Anything else is
//! rebuilt (or fetched from the origin), with a warning.
//!
//! The transport is `slipway push`'s client ([`crate::push::client`]): its
//! authentication, token realm policy, TLS rules, retries and deadlines. A registry to
//! read from that cannot be reached costs one warning and the build goes on without it;
//! a registry to write to that fails fails the command (exit 4).

pub mod config;
pub mod keys;
pub mod manifest;
mod transfer;

pub use config::Settings;
use keys::{PublicKey, SigningKey};
use manifest::{Layer, StageConfig, INPUTS_TYPE, STAGE_TYPE};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use transfer::Endpoint;

/// What the registry cache did in one run (`registry_cache` in report.json).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// The registry read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The registry written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Entries taken from the registry (packages, artifacts, stage entries).
    pub taken: usize,
    /// Their bytes.
    pub taken_bytes: u64,
    /// Entries this run made itself: fetched from the origin or built.
    pub built: usize,
    /// Entries the registry offered that were refused (wrong digest, no valid signature,
    /// another input digest); each is also a warning.
    pub refused: usize,
    /// Blobs uploaded.
    pub pushed: usize,
    /// Their bytes.
    pub pushed_bytes: u64,
    /// Blobs the registry already had.
    pub present: usize,
    /// Manifests written.
    pub manifests: usize,
}

impl Counts {
    /// One line for the progress output.
    pub fn line(&self) -> String {
        format!(
            "registry cache: {} taken ({:.1} MB), {} built here, {} refused, {} pushed ({:.1} MB), {} already there, {} manifests",
            self.taken,
            self.taken_bytes as f64 / 1e6,
            self.built,
            self.refused,
            self.pushed,
            self.pushed_bytes as f64 / 1e6,
            self.present,
            self.manifests
        )
    }
}

/// The outcome of asking the registry for one entry.
#[derive(Debug)]
pub enum Pulled {
    /// In the work file, verified against the digest asked for.
    Got,
    /// The registry has no such entry (or is not configured, or unreachable after its
    /// first warning).
    Missing,
    /// The registry offered something unusable; the message is a warning to record.
    Refused(String),
}

/// A blob to push: `sha256:<hex>`, size, file, media type and a title.
#[derive(Debug, Clone)]
pub struct Item {
    /// The sha256, 64 hex digits.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Its file.
    pub path: PathBuf,
    /// Its media type in the manifest.
    pub media_type: String,
    /// Its `org.opencontainers.image.title`.
    pub title: String,
}

/// A stage entry pulled from the registry: its files (in the work directory) and what
/// the stage stored beside them.
#[derive(Debug)]
pub struct PulledStage {
    /// Each file: its record and where it is now.
    pub files: Vec<(crate::io::stage_cache::FileRecord, PathBuf)>,
    /// The stage's own data.
    pub meta: serde_json::Value,
}

/// The registry cache of one run.
pub struct Remote {
    from: Option<Endpoint>,
    to: Option<Endpoint>,
    signing: Option<SigningKey>,
    trusted: Vec<PublicKey>,
    counts: Mutex<Counts>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Remote(from {:?}, to {:?}, {} trusted keys)",
            self.from.as_ref().map(Endpoint::name),
            self.to.as_ref().map(Endpoint::name),
            self.trusted.len()
        )
    }
}

impl Remote {
    /// The registry cache `s` describes; `None` when it names no registry.
    pub fn new(s: Settings) -> Option<Remote> {
        if s.from.is_none() && s.to.is_none() {
            return None;
        }
        let deadline = crate::push::deadline::Deadline::after(s.net.timeouts.total);
        let ep = |r: Option<crate::push::reference::Reference>| {
            r.map(|r| Endpoint::new(r, &s.net, deadline))
        };
        let counts = Counts {
            from: s.from.as_ref().map(|r| r.to_string()),
            to: s.to.as_ref().map(|r| r.to_string()),
            ..Counts::default()
        };
        Some(Remote {
            from: ep(s.from.clone()),
            to: ep(s.to.clone()),
            signing: s.signing,
            trusted: s.trusted,
            counts: Mutex::new(counts),
        })
    }

    /// True when there is a registry to read from.
    pub fn reads(&self) -> bool {
        self.from.is_some()
    }

    /// True when there is a registry to write to.
    pub fn writes(&self) -> bool {
        self.to.is_some()
    }

    /// What this run did so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Records `n` entries this run fetched from the origin or built itself.
    pub fn note_built(&self, n: usize) {
        if n > 0 {
            self.count(|c| c.built += n);
        }
    }

    /// The blob `sha256` into the new file `dest`: of `size` bytes exactly (as the lock
    /// says) when `exact`, else at most. `what` names it in a warning. A blob with other
    /// bytes is refused.
    pub fn pull_blob(
        &self,
        sha256: &str,
        size: u64,
        exact: bool,
        dest: &Path,
        what: &str,
    ) -> Pulled {
        let Some(ep) = &self.from else {
            return Pulled::Missing;
        };
        let got = ep.pull_blob(&format!("sha256:{sha256}"), size, exact, dest);
        let p = self.judge(ep, got, what);
        if matches!(p, Pulled::Refused(_)) {
            let _ = std::fs::remove_file(dest);
        }
        p
    }

    /// Sorts a transfer's result into a [`Pulled`], counting it.
    fn judge(&self, ep: &Endpoint, got: anyhow::Result<transfer::Fetched>, what: &str) -> Pulled {
        match got {
            Ok(transfer::Fetched::Ok(size)) => {
                self.count(|c| {
                    c.taken += 1;
                    c.taken_bytes += size;
                });
                Pulled::Got
            }
            Ok(transfer::Fetched::Missing) => Pulled::Missing,
            Ok(transfer::Fetched::Mismatch(why)) => {
                self.count(|c| c.refused += 1);
                Pulled::Refused(format!(
                    "registry cache {}: {what}: {why}; not used (taken from elsewhere or built again)",
                    ep.name()
                ))
            }
            Err(e) => {
                ep.disable();
                Pulled::Refused(format!(
                    "registry cache {}: cannot read {what}, going on without the registry: {e:#}",
                    ep.name()
                ))
            }
        }
    }

    /// The stage entry of `kind` under the input digest `key`, its files pulled into
    /// `work`, if the registry has one under a manifest signed by a trusted key for this
    /// very key. `Err` carries nothing: every failure is a [`Pulled::Refused`] warning.
    pub fn pull_stage(&self, kind: &str, key: &str, work: &Path) -> (Pulled, Option<PulledStage>) {
        let Some(ep) = &self.from else {
            return (Pulled::Missing, None);
        };
        let what = format!("stage entry {kind} {}", &key[..key.len().min(16)]);
        let config = match ep.signed_config(&manifest::stage_tag(kind, key), &self.trusted) {
            Ok(transfer::Signed::Missing) => return (Pulled::Missing, None),
            Ok(transfer::Signed::Refused(why)) => {
                self.count(|c| c.refused += 1);
                let msg = format!(
                    "registry cache {}: {what}: {why}; ignored, built here",
                    ep.name()
                );
                return (Pulled::Refused(msg), None);
            }
            Ok(transfer::Signed::Config(c)) => c,
            Err(e) => {
                ep.disable();
                let msg = format!(
                    "registry cache {}: cannot read {what}, going on without the registry: {e:#}",
                    ep.name()
                );
                return (Pulled::Refused(msg), None);
            }
        };
        let config: StageConfig = match serde_json::from_slice(&config) {
            Ok(c) => c,
            Err(e) => {
                self.count(|c| c.refused += 1);
                let msg = format!("registry cache {}: {what}: its signed config cannot be read ({e}); ignored, built here", ep.name());
                return (Pulled::Refused(msg), None);
            }
        };
        if config.kind != kind || config.key != key {
            self.count(|c| c.refused += 1);
            let msg = format!(
                "registry cache {}: {what}: its signed config is for {} {}, not this build's input digest; ignored, built here",
                ep.name(),
                config.kind,
                config.key
            );
            return (Pulled::Refused(msg), None);
        }
        self.pull_stage_files(ep, &what, config, work)
    }

    fn pull_stage_files(
        &self,
        ep: &Endpoint,
        what: &str,
        config: StageConfig,
        work: &Path,
    ) -> (Pulled, Option<PulledStage>) {
        let mut files = Vec::new();
        for (i, f) in config.files.iter().enumerate() {
            if !manifest::plain_name(&f.name) {
                self.count(|c| c.refused += 1);
                let msg = format!(
                    "registry cache {}: {what}: file name {:?} refused; ignored, built here",
                    ep.name(),
                    f.name
                );
                return (Pulled::Refused(msg), None);
            }
            let dest = work.join(format!("{i}-{}", f.name));
            let got = ep.pull_blob(&format!("sha256:{}", f.sha256), f.size, true, &dest);
            match self.judge(ep, got, &format!("{what}: {}", f.name)) {
                Pulled::Got => files.push((f.clone(), dest)),
                Pulled::Missing => {
                    let msg = format!(
                        "registry cache {}: {what}: blob of {} is missing; built here",
                        ep.name(),
                        f.name
                    );
                    return (Pulled::Refused(msg), None);
                }
                refused => return (refused, None),
            }
        }
        let stage = PulledStage {
            files,
            meta: config.meta,
        };
        (Pulled::Got, Some(stage))
    }

    /// Pushes `items` (packages and artifacts) and the inputs manifest of the recipe
    /// `name` for `arch` under the lock text `lock`, tagged by both.
    pub fn push_inputs(
        &self,
        name: &str,
        arch: &str,
        lock: &str,
        config: &serde_json::Value,
        items: &[Item],
    ) -> anyhow::Result<()> {
        let Some(ep) = &self.to else {
            return Ok(());
        };
        let config = serde_json::to_vec(config)?;
        let tag = manifest::inputs_tag(name, arch, lock);
        self.push_all(ep, &tag, INPUTS_TYPE, &config, items, None)
    }

    /// Pushes a stage entry under a manifest signed with the fleet's key (none without a
    /// signing key: an unsigned entry would be ignored by every reader). Returns whether
    /// it pushed.
    pub fn push_stage(
        &self,
        kind: &str,
        key: &str,
        files: &[(crate::io::stage_cache::FileRecord, PathBuf)],
        meta: &serde_json::Value,
    ) -> anyhow::Result<bool> {
        let (Some(ep), Some(signing)) = (&self.to, &self.signing) else {
            return Ok(false);
        };
        let config = StageConfig {
            kind: kind.into(),
            key: key.into(),
            files: files.iter().map(|(r, _)| r.clone()).collect(),
            meta: meta.clone(),
        };
        let bytes = serde_json::to_vec(&config)?;
        let items: Vec<Item> = files
            .iter()
            .map(|(r, p)| Item {
                sha256: r.sha256.clone(),
                size: r.size,
                path: p.clone(),
                media_type: manifest::FILE_TYPE.into(),
                title: r.name.clone(),
            })
            .collect();
        let tag = manifest::stage_tag(kind, key);
        self.push_all(ep, &tag, STAGE_TYPE, &bytes, &items, Some(signing))?;
        Ok(true)
    }

    fn push_all(
        &self,
        ep: &Endpoint,
        tag: &str,
        artifact_type: &str,
        config: &[u8],
        items: &[Item],
        signing: Option<&SigningKey>,
    ) -> anyhow::Result<()> {
        let mut layers: Vec<Layer> = Vec::new();
        for it in items {
            if layers.iter().any(|l| l.sha256 == it.sha256) {
                continue;
            }
            let uploaded = ep.push_blob(&it.sha256, it.size, &it.path)?;
            self.count(|c| {
                if uploaded {
                    c.pushed += 1;
                    c.pushed_bytes += it.size;
                } else {
                    c.present += 1;
                }
            });
            layers.push(Layer {
                sha256: it.sha256.clone(),
                size: it.size,
                media_type: it.media_type.clone(),
                title: it.title.clone(),
            });
        }
        let m = manifest::build(artifact_type, config, &layers, signing);
        ep.push_config(config)?;
        ep.put_manifest(tag, &m)?;
        self.count(|c| c.manifests += 1);
        Ok(())
    }
}
