//! Cache manifests: OCI 1.1 artifact manifests that list a cache's entries.
//!
//! Consumes the entries (blobs by sha256) and a config document; produces the exact
//! manifest bytes (an image manifest with `artifactType`,
//! <https://github.com/opencontainers/image-spec/blob/main/manifest.md>) and, for a
//! stage entry, reads one back and checks its signature. Two kinds:
//!
//! - inputs ([`INPUTS_TYPE`]): the packages and artifacts of one recipe and lock, tagged
//!   `inputs-NAME-ARCH-HASH` (HASH from the lock's text). Not signed: each blob is
//!   checked against the lock's sha256 on use.
//! - stage entries ([`STAGE_TYPE`]): the files of one stage-cache entry, tagged
//!   `stage-KIND-KEY` (KEY the input digest). The config ([`StageConfig`]) names the
//!   kind, the input digest, every file with its sha256 and the stage's data; the
//!   annotation [`SIGNATURE`] is an Ed25519 signature of the config's exact bytes by the
//!   key in [`PUBLIC_KEY`]. The config is fetched by the digest the manifest names, so
//!   the signature covers every file of the entry.
//!
//! The bytes are deterministic (fields in a fixed order, layers in the caller's order):
//! two builders pushing the same entries write the same manifest.

use super::keys::{PublicKey, SigningKey};
use crate::io::stage_cache::FileRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The artifact type (and config media type) of an inputs manifest.
pub const INPUTS_TYPE: &str = "application/vnd.slipway.cache.inputs.v1+json";
/// The artifact type (and config media type) of a stage entry manifest.
pub const STAGE_TYPE: &str = "application/vnd.slipway.cache.stage.v1+json";
/// The media type of a Debian package blob.
pub const DEB_TYPE: &str = "application/vnd.debian.binary-package";
/// The media type of any other file.
pub const FILE_TYPE: &str = "application/octet-stream";
/// The annotation holding the base64 signature of the config.
pub const SIGNATURE: &str = "dev.slipway.cache.signature";
/// The annotation holding the base64 public key that made it.
pub const PUBLIC_KEY: &str = "dev.slipway.cache.public-key";
/// OCI's image manifest media type.
pub const OCI_MANIFEST: &str = crate::push::layout::OCI_MANIFEST;
const TITLE: &str = "org.opencontainers.image.title";

/// One entry of a manifest.
#[derive(Debug, Clone)]
pub struct Layer {
    /// sha256, hex.
    pub sha256: String,
    /// Size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// Title annotation.
    pub title: String,
}

/// A stage entry's config: what the signature covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// The stage kind (`build`).
    pub kind: String,
    /// The input digest the entry was built from.
    pub key: String,
    /// Its files.
    pub files: Vec<FileRecord>,
    /// The stage's own data (the build report of a whole build).
    pub meta: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    schema_version: u32,
    media_type: String,
    #[serde(default)]
    artifact_type: String,
    config: Desc,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// A tag made of `parts`: characters outside `[A-Za-z0-9_.-]` become `-`, at most 128.
fn tag(parts: &[&str]) -> String {
    let t: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    t.chars().take(128).collect()
}

/// The tag of the inputs of recipe `name` on `arch` under the lock text `lock`.
pub fn inputs_tag(name: &str, arch: &str, lock: &str) -> String {
    let hash = crate::io::hash::sha256_hex(lock.as_bytes());
    let name: String = name.chars().take(48).collect();
    tag(&["inputs", &name, arch, &hash[..40]])
}

/// The tag of the stage entry `kind` with input digest `key`.
pub fn stage_tag(kind: &str, key: &str) -> String {
    tag(&["stage", kind, key])
}

/// True for a plain file name (no path, not hidden, not the index).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.starts_with('.') && name != "index.json"
}

/// The manifest listing `layers` with `config` (of media type `artifact_type`), signed
/// when `signing` is given.
pub fn build(
    artifact_type: &str,
    config: &[u8],
    layers: &[Layer],
    signing: Option<&SigningKey>,
) -> Vec<u8> {
    let mut annotations = BTreeMap::new();
    if let Some(k) = signing {
        annotations.insert(
            SIGNATURE.to_string(),
            slipway_common::base64::encode(&k.sign(config)),
        );
        annotations.insert(PUBLIC_KEY.to_string(), k.public().to_base64());
    }
    let doc = Doc {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        artifact_type: artifact_type.into(),
        config: Desc {
            media_type: artifact_type.into(),
            digest: format!("sha256:{}", crate::io::hash::sha256_hex(config)),
            size: config.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: layers
            .iter()
            .map(|l| Desc {
                media_type: l.media_type.clone(),
                digest: format!("sha256:{}", l.sha256),
                size: l.size,
                annotations: BTreeMap::from([(TITLE.to_string(), l.title.clone())]),
            })
            .collect(),
        annotations,
    };
    // Serializing plain structs and maps cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// A stage manifest read back: the config to fetch, and why it must not be used if so.
pub struct Checked {
    /// `sha256:<hex>` of the config.
    pub config_digest: String,
    /// Its size.
    pub config_size: u64,
    /// The signature and the trusted key it claims, when both are present and trusted.
    signature: Result<(Vec<u8>, PublicKey), String>,
}

/// Reads a stage manifest and picks out its signature; `Err` names what is wrong.
pub fn read_stage(bytes: &[u8], trusted: &[PublicKey]) -> Result<Checked, String> {
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    if doc.artifact_type != STAGE_TYPE || doc.config.media_type != STAGE_TYPE {
        return Err(format!(
            "artifact type {:?}, not {STAGE_TYPE}",
            doc.artifact_type
        ));
    }
    let signature = match (
        doc.annotations.get(SIGNATURE),
        doc.annotations.get(PUBLIC_KEY),
    ) {
        (Some(sig), Some(key)) => match (
            slipway_common::base64::decode(sig),
            PublicKey::from_base64(key),
        ) {
            (Ok(sig), Ok(key)) if trusted.contains(&key) => Ok((sig, key)),
            (Ok(_), Ok(key)) => Err(format!(
                "it is signed by key {}, which this build does not trust",
                key.id()
            )),
            _ => Err("its signature annotations cannot be read".to_string()),
        },
        _ if trusted.is_empty() => {
            Err("it is not signed, and no trusted key is configured".to_string())
        }
        _ => Err("its manifest is not signed by the fleet's key".to_string()),
    };
    Ok(Checked {
        config_digest: doc.config.digest,
        config_size: doc.config.size,
        signature,
    })
}

impl Checked {
    /// `Ok` when the signature is a trusted key's signature of `config`.
    pub fn verify(&self, config: &[u8]) -> Result<(), String> {
        let (sig, key) = self.signature.as_ref().map_err(Clone::clone)?;
        if key.verifies(config, sig) {
            Ok(())
        } else {
            Err(format!(
                "its signature by key {} does not match its config",
                key.id()
            ))
        }
    }

    /// Why the manifest is refused before its config is even fetched.
    pub fn refusal(&self) -> Option<String> {
        self.signature.as_ref().err().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_valid_and_deterministic() {
        let t = inputs_tag("base/py thon", "amd64", "lock text");
        assert!(t.starts_with("inputs-base-py-thon-amd64-"), "{t}");
        assert!(t.len() <= 128);
        assert_eq!(t, inputs_tag("base/py thon", "amd64", "lock text"));
        assert_ne!(t, inputs_tag("base/py thon", "amd64", "lock text 2"));
        assert_eq!(stage_tag("build", "ab"), "stage-build-ab");
        assert!(!plain_name("../x") && !plain_name(".x") && plain_name("disk.raw"));
    }

    #[test]
    fn only_a_trusted_signature_of_the_exact_config_passes() {
        let d = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        std::fs::write(d.path().join("k"), pem).unwrap();
        let k = SigningKey::read(&d.path().join("k")).unwrap();
        let config = br#"{"kind":"build"}"#;
        let signed = build(STAGE_TYPE, config, &[], Some(&k));
        assert_eq!(signed, build(STAGE_TYPE, config, &[], Some(&k)));
        let c = read_stage(&signed, &[k.public()]).unwrap();
        assert!(c.refusal().is_none());
        assert!(c.verify(config).is_ok());
        assert!(c.verify(br#"{"kind":"bui1d"}"#).is_err());
        let other = PublicKey([7; 32]);
        assert!(read_stage(&signed, &[other]).unwrap().refusal().is_some());
        let unsigned = build(STAGE_TYPE, config, &[], None);
        let why = read_stage(&unsigned, &[k.public()])
            .unwrap()
            .refusal()
            .unwrap();
        assert!(why.contains("not signed"), "{why}");
        assert!(read_stage(&build(INPUTS_TYPE, config, &[], Some(&k)), &[k.public()]).is_err());
    }
}
