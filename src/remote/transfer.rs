//! One registry of the cache: blobs pulled into files (hashed while written), blobs
//! and manifests pushed, a stage manifest's signed config read back. Every request goes
//! through `slipway push`'s client, so authentication, the token realm policy, TLS,
//! retries and the deadline are push's (docs/push.md).

use super::keys::PublicKey;
use super::manifest::{self, OCI_MANIFEST};
use crate::push::client::{Body, Client, Net, ReadBody};
use crate::push::deadline::Deadline;
use crate::push::layout::{Blob, Manifest};
use crate::push::reference::Reference;
use crate::push::upload;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What a blob pull found.
pub enum Fetched {
    /// The bytes have the digest (and size) asked for; this many.
    Ok(u64),
    /// The registry has no blob by that digest.
    Missing,
    /// It served other bytes; why.
    Mismatch(String),
}

/// What a stage manifest gave.
pub enum Signed {
    /// No manifest under the tag.
    Missing,
    /// A manifest that must not be used; why.
    Refused(String),
    /// The config bytes, signed by a trusted key.
    Config(Vec<u8>),
}

/// One registry repository, its client created when first used.
pub struct Endpoint {
    reference: Reference,
    net: Net,
    deadline: Deadline,
    client: Mutex<Option<Client>>,
    disabled: AtomicBool,
}

impl Endpoint {
    /// The repository `r`, reached with `net`, every request ending by `deadline`.
    pub fn new(r: Reference, net: &Net, deadline: Deadline) -> Endpoint {
        Endpoint {
            reference: r,
            net: net.clone(),
            deadline,
            client: Mutex::new(None),
            disabled: AtomicBool::new(false),
        }
    }

    /// `HOST/REPO`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.reference.registry, self.reference.repo)
    }

    /// Stops using this registry for reading (it failed once; one warning is enough).
    pub fn disable(&self) {
        self.disabled.store(true, Ordering::Relaxed);
    }

    /// Runs `f` with the client, made (and `GET /v2/` answered) on first use.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let creds = credentials(&self.reference)?;
            let mut c = Client::new(&self.reference, &self.net, creds, self.deadline);
            c.ping()?;
            *guard = Some(c);
        }
        match guard.as_mut() {
            Some(c) => f(c),
            None => anyhow::bail!("no client"),
        }
    }

    /// `GET`s the blob `digest` into the new file `dest`, hashing at most one byte more
    /// than `size`, which it must have exactly when `exact`.
    pub fn pull_blob(&self, digest: &str, size: u64, exact: bool, dest: &Path) -> Result<Fetched> {
        if self.disabled.load(Ordering::Relaxed) {
            return Ok(Fetched::Missing);
        }
        self.with(|c| {
            let path = format!("/v2/{}/blobs/{digest}", c.repo());
            let read = ReadBody::Save {
                limit: size,
                to: dest,
            };
            let r = c.send_with("GET", &path, &[], Body::Empty, true, read)?;
            match (r.status, r.hashed.clone()) {
                (200, Some((d, n))) if d == digest && (n == size || (!exact && n <= size)) => {
                    Ok(Fetched::Ok(n))
                }
                (200, Some((d, n))) => Ok(Fetched::Mismatch(if n > size {
                    format!("the registry serves more than the {size} bytes of {digest}")
                } else {
                    format!("the registry serves {n} bytes with {d} for {digest}")
                })),
                (404, _) => Ok(Fetched::Missing),
                (s, _) => anyhow::bail!("GET {path}: HTTP {s}: {}", r.error_text()),
            }
        })
    }

    /// The config of the stage manifest under `tag`, if a key in `trusted` signed it.
    pub fn signed_config(&self, tag: &str, trusted: &[PublicKey]) -> Result<Signed> {
        if self.disabled.load(Ordering::Relaxed) {
            return Ok(Signed::Missing);
        }
        self.with(|c| {
            let Some(bytes) = upload::get_manifest(c, tag, OCI_MANIFEST)? else {
                return Ok(Signed::Missing);
            };
            let checked = match manifest::read_stage(&bytes, trusted) {
                Ok(m) => m,
                Err(why) => return Ok(Signed::Refused(why)),
            };
            if let Some(why) = checked.refusal() {
                return Ok(Signed::Refused(why));
            }
            let path = format!("/v2/{}/blobs/{}", c.repo(), checked.config_digest);
            let r = c.send("GET", &path, &[], Body::Empty, true)?;
            if r.status == 404 {
                return Ok(Signed::Refused("its config blob is missing".into()));
            }
            anyhow::ensure!(
                r.status == 200,
                "GET {path}: HTTP {}: {}",
                r.status,
                r.error_text()
            );
            let got = format!("sha256:{}", crate::io::hash::sha256_hex(&r.body));
            if got != checked.config_digest || r.body.len() as u64 != checked.config_size {
                return Ok(Signed::Refused(format!(
                    "its config blob has {got}, not {}",
                    checked.config_digest
                )));
            }
            match checked.verify(&r.body) {
                Ok(()) => Ok(Signed::Config(r.body)),
                Err(why) => Ok(Signed::Refused(why)),
            }
        })
    }

    /// Uploads the file `path` as blob `sha256` unless the registry has it (confirmed by
    /// digest, as push does). Returns whether it uploaded.
    pub fn push_blob(&self, sha256: &str, size: u64, path: &Path) -> Result<bool> {
        let blob = Blob {
            digest: format!("sha256:{sha256}"),
            size,
            path: path.to_path_buf(),
        };
        self.with(|c| {
            if upload::blob_exists(c, &blob)? {
                return Ok(false);
            }
            upload::upload_blob(c, &blob, &mut |_| {})
                .with_context(|| format!("pushing {} to the registry cache", path.display()))?;
            Ok(true)
        })
    }

    /// Uploads a manifest's config document.
    pub fn push_config(&self, config: &[u8]) -> Result<()> {
        let work = tempfile::Builder::new()
            .prefix("slipway-cache-config-")
            .tempdir()
            .context("creating a temporary directory")?;
        let path = work.path().join("config.json");
        crate::io::atomic::write(&path, config)?;
        self.push_blob(
            &crate::io::hash::sha256_hex(config),
            config.len() as u64,
            &path,
        )?;
        Ok(())
    }

    /// PUTs the manifest `bytes` under `tag`, confirmed by digest.
    pub fn put_manifest(&self, tag: &str, bytes: &[u8]) -> Result<()> {
        let m = Manifest {
            digest: format!("sha256:{}", crate::io::hash::sha256_hex(bytes)),
            media_type: OCI_MANIFEST.into(),
            bytes: bytes.to_vec(),
        };
        self.with(|c| upload::put_manifest(c, tag, &m).map(|_| ()))
    }
}

/// Credentials for `r`, as `slipway push` finds them without flags:
/// `SLIPWAY_REGISTRY_USERNAME`/`_PASSWORD`, else Docker's config.json.
fn credentials(r: &Reference) -> Result<Option<crate::push::auth::Credentials>> {
    use crate::push::auth;
    if let Some(c) = auth::from_env() {
        return Ok(Some(c));
    }
    match auth::docker_config_path() {
        Some(p) => auth::from_docker_config(&p, &r.registry),
        None => Ok(None),
    }
}
