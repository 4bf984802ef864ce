//! The OCI image-spec JSON documents slipway writes (image-spec v1.1): descriptors,
//! image manifests, image indexes and the image configuration. Field order is fixed by
//! the struct definitions and maps are sorted, so the same values always serialize to the
//! same bytes (and so to the same digest).
//!
//! Spec: <https://github.com/opencontainers/image-spec/blob/v1.1.0/manifest.md>,
//! `image-index.md`, `config.md`, `descriptor.md`, `image-layout.md`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Media type of an image manifest.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image index.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an image configuration.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed layer.
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed layer.
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Media type of the empty JSON object used as an artifact's config.
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Media type (and artifact type) of an SPDX JSON document.
pub const SPDX: &str = "application/spdx+json";

/// Annotation: the tag of an index.json entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor: what a blob is, its digest and size. The one model for what
/// slipway writes (`writers::oci`) and what a push reads (`push::layout`); the field order
/// is the serialized order, so the bytes (and digests) of written documents follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries of a multi-arch image).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
    /// Artifact type (index entries that point at artifacts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// Where a non-distributable layer can also be downloaded from (read from layouts
    /// that a push is given; slipway's own images have none).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A descriptor of `bytes` with `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", crate::io::hash::sha256_hex(bytes)),
            size: bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
            urls: Vec::new(),
        }
    }
    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// An image's platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// GOARCH-style architecture (amd64, arm64, arm, 386, ppc64le, s390x, riscv64).
    pub architecture: String,
    /// Always `linux`.
    pub os: String,
    /// CPU variant (v8 for arm64, v7 for armhf).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The OCI platform of a Debian architecture.
    pub fn of_debian(arch: &str) -> Self {
        let (architecture, variant) = match arch {
            "amd64" => ("amd64", None),
            "arm64" => ("arm64", Some("v8")),
            "armhf" => ("arm", Some("v7")),
            "i386" => ("386", None),
            "ppc64el" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        }
    }
}

/// An image manifest (also used for artifacts such as the SBOM).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST`].
    pub media_type: String,
    /// Set for artifacts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub artifact_type: Option<String>,
    /// The configuration blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// What an artifact refers to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (index.json of a layout, or a multi-arch image).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX`].
    pub media_type: String,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// The image configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was made (RFC 3339, from SOURCE_DATE_EPOCH).
    pub created: String,
    /// GOARCH-style architecture.
    pub architecture: String,
    /// CPU variant.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    /// Always `linux`.
    pub os: String,
    /// How to run it.
    pub config: RunConfig,
    /// The uncompressed layer digests.
    pub rootfs: RootFs,
    /// One entry per layer.
    pub history: Vec<History>,
}

/// The execution parameters of an image (the `config` member of the configuration).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `uid:gid` (numeric, so runtimes can check run-as-non-root).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    /// Ports, e.g. `8080/tcp`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `NAME=value`, sorted by name.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub env: Vec<String>,
    /// The entrypoint.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub labels: BTreeMap<String, String>,
}

/// `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The layer list of a configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `sha256:<hex>` of each uncompressed layer, bottom first.
    pub diff_ids: Vec<String>,
}

/// One history entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// When (the image's `created`).
    pub created: String,
    /// What made the layer.
    pub created_by: String,
    /// A note (the packages in it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
}

/// RFC 3339 UTC time of `secs` since the epoch (the image's `created`).
pub use slipway_common::date::rfc3339;

/// JSON bytes of `v` (compact: what is hashed is what is written).
pub fn to_json<T: Serialize>(v: &T) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    serde_json::to_vec(v).context("serializing OCI JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_mapping() {
        assert_eq!(Platform::of_debian("arm64").variant.as_deref(), Some("v8"));
        assert_eq!(Platform::of_debian("amd64").architecture, "amd64");
        assert_eq!(Platform::of_debian("ppc64el").architecture, "ppc64le");
    }
}
