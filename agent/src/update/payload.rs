//! The update payload's manifest, read and checked: consumes the manifest bytes a
//! registry sent (already matched to their digest by [`super::registry`]); produces a
//! [`Payload`]: the version, the root hash, and the three blobs in write order with
//! their digests and sizes. Anything else is refused with what was expected: another
//! artifact type, blobs missing or out of order, a digest that is not sha256, an
//! annotation that disagrees with its blob's size, another architecture.
//! The vocabulary is `slipway_common::update`, the same the build writes with.

use serde::Deserialize;
use slipway_common::update as u;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    artifact_type: String,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: String,
    size: u64,
}

/// One blob of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its media type (root, verity or UKI).
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

impl Blob {
    /// The hex digits of the digest.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    /// `root`, `verity` or `uki`.
    pub fn role(&self) -> &'static str {
        match self.media_type.as_str() {
            u::ROOT_TYPE => "root",
            u::VERITY_TYPE => "verity",
            _ => "uki",
        }
    }
}

/// A checked payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The manifest's digest.
    pub digest: String,
    /// The image name.
    pub image: String,
    /// The image version.
    pub version: String,
    /// The dm-verity root hash the UKI pins.
    pub root_hash: String,
    /// Root, verity tree and UKI, in the order they are written.
    pub blobs: Vec<Blob>,
    /// Boots the new version gets to reach its health gate (the UKI's `+N`).
    pub tries: u32,
}

/// The annotation with the recipe's `[disk] tries` (1 to 9).
pub const TRIES: &str = u::TRIES;
/// Tries when a payload does not say.
pub const DEFAULT_TRIES: u32 = 3;

impl Payload {
    /// Bytes of all blobs.
    pub fn size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// The Debian architecture this agent runs on.
pub fn own_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads the manifest `bytes` whose digest is `digest`.
pub fn parse(bytes: &[u8], digest: &str) -> Result<Payload, String> {
    let at = format!("manifest {digest}");
    let doc: Doc =
        serde_json::from_slice(bytes).map_err(|e| format!("{at}: not an OCI manifest ({e})"))?;
    if doc.schema_version != 2 || doc.media_type != super::registry::OCI_MANIFEST {
        return Err(format!(
            "{at}: schemaVersion {} and mediaType {:?} (expected 2 and {})",
            doc.schema_version,
            doc.media_type,
            super::registry::OCI_MANIFEST
        ));
    }
    if doc.artifact_type != u::ARTIFACT_TYPE {
        return Err(format!(
            "{at}: artifactType {:?} is not a slipway update (expected {}; is the tag an image?)",
            doc.artifact_type,
            u::ARTIFACT_TYPE
        ));
    }
    let types: Vec<&str> = doc.layers.iter().map(|l| l.media_type.as_str()).collect();
    if types != u::WRITE_ORDER {
        return Err(format!(
            "{at}: the blobs are {types:?} (expected {:?}, in that order)",
            u::WRITE_ORDER
        ));
    }
    let a = |k: &str| {
        doc.annotations
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("{at}: the annotation {k} is missing"))
    };
    let version = a(u::VERSION)?.to_string();
    let version_ok = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-~+".contains(&b));
    if !version_ok {
        return Err(format!(
            "{at}: {}: {version:?} is not an image version",
            u::VERSION
        ));
    }
    let root_hash = a(u::ROOT_HASH)?.to_string();
    if !hex64(&root_hash) {
        return Err(format!(
            "{at}: {}: {root_hash:?} is not a sha256 root hash",
            u::ROOT_HASH
        ));
    }
    let arch = a(u::ARCHITECTURE)?;
    if arch != own_architecture() {
        return Err(format!(
            "{at}: the payload is for {arch}, this node is {}",
            own_architecture()
        ));
    }
    let mut blobs = Vec::new();
    for (l, key) in doc
        .layers
        .iter()
        .zip([u::ROOT_SIZE, u::VERITY_SIZE, u::UKI_SIZE])
    {
        if !l.digest.strip_prefix("sha256:").is_some_and(hex64) {
            return Err(format!("{at}: {:?} is not a sha256 digest", l.digest));
        }
        if l.size == 0 || a(key)? != l.size.to_string() {
            return Err(format!(
                "{at}: {key} is {:?}, the blob {} has {} bytes",
                a(key)?,
                l.digest,
                l.size
            ));
        }
        blobs.push(Blob {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size,
        });
    }
    let tries = match doc.annotations.get(TRIES) {
        None => DEFAULT_TRIES,
        Some(t) => t
            .parse()
            .ok()
            .filter(|n| (1..=9).contains(n))
            .ok_or_else(|| format!("{at}: the annotation {TRIES} is {t:?} (expected 1 to 9)"))?,
    };
    Ok(Payload {
        digest: digest.to_string(),
        tries,
        image: doc.annotations.get(u::TITLE).cloned().unwrap_or_default(),
        version,
        root_hash,
        blobs,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A payload manifest for `version` with blobs of the given sizes.
    pub fn manifest(version: &str, root_hash: &str, sizes: [u64; 3]) -> Vec<u8> {
        let layers: Vec<_> = u::WRITE_ORDER
            .iter()
            .zip(sizes)
            .enumerate()
            .map(|(i, (t, n))| json!({"mediaType": t, "digest": format!("sha256:{}", format!("{i}").repeat(64)), "size": n}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": super::super::registry::OCI_MANIFEST,
            "artifactType": u::ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": format!("sha256:{}", "4".repeat(64)), "size": 2},
            "layers": layers,
            "annotations": {
                u::VERSION: version, u::ROOT_HASH: root_hash, u::ARCHITECTURE: own_architecture(),
                u::ROOT_SIZE: sizes[0].to_string(), u::VERITY_SIZE: sizes[1].to_string(), u::UKI_SIZE: sizes[2].to_string(),
                u::TITLE: "containerd-host",
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_payload_reads_back_and_bad_ones_say_why() {
        let h = "ab".repeat(32);
        let p = parse(&manifest("2", &h, [10, 2, 3]), "sha256:x").unwrap();
        assert_eq!(
            (p.version.as_str(), p.root_hash.as_str()),
            ("2", h.as_str())
        );
        assert_eq!(
            p.blobs.iter().map(Blob::role).collect::<Vec<_>>(),
            ["root", "verity", "uki"]
        );
        assert_eq!(p.size(), 15);
        let mut v: serde_json::Value =
            serde_json::from_slice(&manifest("2", &h, [10, 2, 3])).unwrap();
        v["annotations"][u::ROOT_SIZE] = json!("11");
        let e = parse(&serde_json::to_vec(&v).unwrap(), "sha256:x").unwrap_err();
        assert!(e.contains("root-size is \"11\""), "{e}");
        v["layers"].as_array_mut().unwrap().swap(0, 2);
        assert!(parse(&serde_json::to_vec(&v).unwrap(), "sha256:x")
            .unwrap_err()
            .contains("in that order"));
        v["artifactType"] = json!("application/vnd.oci.image.config.v1+json");
        assert!(parse(&serde_json::to_vec(&v).unwrap(), "sha256:x")
            .unwrap_err()
            .contains("not a slipway update"));
        let e = parse(&manifest("2 beta", &h, [1, 1, 1]), "sha256:x").unwrap_err();
        assert!(e.contains("is not an image version"), "{e}");
        let e = parse(&manifest("2", "abc", [1, 1, 1]), "sha256:x").unwrap_err();
        assert!(e.contains("is not a sha256 root hash"), "{e}");
    }
}
