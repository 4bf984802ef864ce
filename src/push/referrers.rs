//! The OCI 1.1 referrers tag schema, for registries without the referrers API.
//!
//! Consumes the existing fallback index (the manifest tagged `sha256-<hex of subject>`, if
//! any) and the descriptor of a newly pushed artifact manifest; produces the index bytes to
//! PUT back under that tag. Spec:
//! <https://github.com/opencontainers/distribution-spec/blob/main/spec.md#referrers-tag-schema>.

use super::layout::{Descriptor, OCI_INDEX};
use anyhow::{Context, Result};

/// The fallback tag for `subject` (`sha256:<hex>` -> `sha256-<hex>`).
pub fn fallback_tag(subject: &str) -> String {
    subject.replacen(':', "-", 1)
}

/// The fallback index with `referrer` added (or kept, when already listed). An existing
/// index keeps its other entries and fields; a missing one starts empty.
pub fn merge(existing: Option<&[u8]>, referrer: &Descriptor) -> Result<Vec<u8>> {
    let mut index = match existing {
        Some(b) => serde_json::from_slice::<serde_json::Value>(b)
            .context("the registry's referrers fallback index is not JSON")?,
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [],
        }),
    };
    let obj = index
        .as_object_mut()
        .context("the registry's referrers fallback index is not a JSON object")?;
    let list = obj
        .entry("manifests")
        .or_insert_with(|| serde_json::json!([]))
        .as_array_mut()
        .context("the referrers fallback index has a non-array manifests field")?;
    let present = list
        .iter()
        .any(|d| d.get("digest").and_then(|x| x.as_str()) == Some(referrer.digest.as_str()));
    if !present {
        list.push(serde_json::to_value(referrer).context("serializing a descriptor")?);
    }
    serde_json::to_vec(&index).context("serializing the referrers fallback index")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(d: &str) -> Descriptor {
        Descriptor {
            media_type: super::super::layout::OCI_MANIFEST.into(),
            digest: d.into(),
            size: 10,
            artifact_type: Some("application/spdx+json".into()),
            annotations: Default::default(),
            urls: vec![],
            platform: None,
        }
    }

    #[test]
    fn tag_schema() {
        assert_eq!(fallback_tag("sha256:abcd"), "sha256-abcd");
    }

    #[test]
    fn new_and_merged_index() {
        let one = merge(None, &desc("sha256:01")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(v["mediaType"], OCI_INDEX);
        assert_eq!(v["manifests"][0]["artifactType"], "application/spdx+json");
        assert_eq!(v["manifests"][0]["digest"], "sha256:01");
        let two = merge(Some(&one), &desc("sha256:02")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&two).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        // Pushing the same referrer again changes nothing.
        assert_eq!(merge(Some(&two), &desc("sha256:02")).unwrap(), two);
        assert!(merge(Some(b"[]"), &desc("sha256:03")).is_err());
    }
}
