//! Reading an OCI image layout for a push.
//!
//! Consumes a directory with `oci-layout`, `index.json` and `blobs/sha256/<hex>`
//! (<https://github.com/opencontainers/image-spec/blob/main/image-layout.md>). Produces a
//! verified [`Plan`]: the blobs and manifests of the chosen image in push order (blobs,
//! then child manifests, then the top manifest or index), plus the SBOM and other artifact
//! manifests whose `subject` is that image. Every blob is checked against its descriptor's
//! sha256 and size here, before anything touches the network.

use crate::exit::{self, Code, WithCode};
use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2 (accepted when a layout holds one).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (accepted when a layout holds one).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The annotation naming an entry of `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The OCI content descriptor, shared with the image writer.
pub use crate::writers::oci::spec::Descriptor;

/// A manifest or index document: the fields that link to other content.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

/// A blob to upload.
#[derive(Debug, Clone)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Its file in the layout.
    pub path: PathBuf,
}

/// A manifest or index to PUT, with its exact bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The Content-Type to send.
    pub media_type: String,
    /// The document as stored in the layout.
    pub bytes: Vec<u8>,
}

/// Everything one image (or artifact) consists of, in push order.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// Config and layer blobs, each once.
    pub blobs: Vec<Blob>,
    /// Manifests, children before parents; the last one is the top.
    pub manifests: Vec<Manifest>,
}

impl Image {
    /// The top manifest or index (pushed last, under the tag).
    pub fn top(&self) -> Option<&Manifest> {
        self.manifests.last()
    }
    /// Sum of blob sizes.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// An artifact manifest (an SBOM, a signature) that refers to the image by `subject`.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The artifact's blobs and its manifest.
    pub image: Image,
    /// The digest of the manifest or index it refers to.
    pub subject: String,
    /// Its `artifactType` (or config media type, per OCI 1.1).
    pub artifact_type: String,
    /// Its annotations (copied into the referrers fallback index).
    pub annotations: BTreeMap<String, String>,
}

/// A verified push plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The image.
    pub image: Image,
    /// Its `org.opencontainers.image.ref.name`, if the entry had one.
    pub ref_name: Option<String>,
    /// Artifacts whose subject is the image or one of its child manifests.
    pub referrers: Vec<Referrer>,
}

/// Reads the layout at `root`, picks the image (by `ref_name` when several), and verifies
/// every blob of it and of its referrers.
pub fn load(root: &Path, ref_name: Option<&str>) -> Result<Plan> {
    let marker = root.join("oci-layout");
    let text = std::fs::read_to_string(&marker).map_err(|e| {
        exit::err(
            Code::BadInput,
            format!(
                "{}: not an OCI image layout (reading oci-layout: {e})",
                root.display()
            ),
        )
    })?;
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
    if version.as_deref() != Some("1.0.0") {
        return Err(exit::err(
            Code::BadInput,
            format!(
                "{}: imageLayoutVersion is {version:?}, expected \"1.0.0\"",
                marker.display()
            ),
        ));
    }
    let index_path = root.join("index.json");
    let bytes = std::fs::read(&index_path)
        .with_context(|| format!("reading {}", index_path.display()))
        .with_code(Code::BadInput)?;
    let index: Document = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not an image index", index_path.display()))
        .with_code(Code::BadInput)?;

    let reader = Reader { root };
    // Split the entries into images and referrers (manifests with a subject).
    let mut images = Vec::new();
    let mut referrers = Vec::new();
    for d in &index.manifests {
        check_digest(d, "index.json")?;
        if d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST {
            let bytes = reader.read_manifest(d, "index.json")?;
            let doc = reader.parse(d, &bytes)?;
            if let Some(subject) = doc.subject {
                referrers.push((d.clone(), doc.artifact_type, doc.config, subject));
                continue;
            }
        }
        images.push(d);
    }
    let entry = choose(&images, ref_name, &index_path)?;

    let mut seen = Seen::default();
    let mut image = Image::default();
    reader.walk(entry, "index.json", &mut image, &mut seen)?;
    let pushed: HashSet<&str> = image.manifests.iter().map(|m| m.digest.as_str()).collect();

    let mut out = Vec::new();
    for (d, artifact_type, config, subject) in referrers {
        if !pushed.contains(subject.digest.as_str()) {
            continue;
        }
        let mut art = Image::default();
        // Blobs shared with the image are uploaded once; the artifact's own list keeps
        // only what the image did not already bring.
        reader.walk(&d, "index.json", &mut art, &mut seen)?;
        let artifact_type = artifact_type
            .or(d.artifact_type.clone())
            .or(config.map(|c| c.media_type))
            .unwrap_or_default();
        out.push(Referrer {
            image: art,
            subject: subject.digest,
            artifact_type,
            annotations: d.annotations.clone(),
        });
    }

    // Every blob must match its descriptor before the first request.
    for b in image
        .blobs
        .iter()
        .chain(out.iter().flat_map(|r| r.image.blobs.iter()))
    {
        verify_blob(b)?;
    }
    Ok(Plan {
        image,
        ref_name: entry.annotations.get(REF_NAME).cloned(),
        referrers: out,
    })
}

fn choose<'a>(
    images: &[&'a Descriptor],
    ref_name: Option<&str>,
    index_path: &Path,
) -> Result<&'a Descriptor> {
    let name_of = |d: &Descriptor| {
        d.annotations
            .get(REF_NAME)
            .cloned()
            .unwrap_or_else(|| format!("(no {REF_NAME}) {}", d.digest))
    };
    let listing = || {
        images
            .iter()
            .map(|d| format!("{} ({})", name_of(d), d.media_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(want) = ref_name {
        return images
            .iter()
            .copied()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(want))
            .ok_or_else(|| {
                exit::err(
                    Code::BadInput,
                    format!(
                        "{}: no image named {want:?}; the layout has: {}",
                        index_path.display(),
                        listing()
                    ),
                )
            });
    }
    match images {
        [one] => Ok(one),
        [] => Err(exit::err(
            Code::BadInput,
            format!("{}: lists no image", index_path.display()),
        )),
        _ => Err(exit::err(
            Code::BadInput,
            format!(
                "{}: lists {} images, choose one with --ref NAME: {}",
                index_path.display(),
                images.len(),
                listing()
            ),
        )),
    }
}

#[derive(Default)]
struct Seen {
    blobs: HashSet<String>,
    manifests: HashSet<String>,
}

struct Reader<'a> {
    root: &'a Path,
}

impl Reader<'_> {
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    /// Reads a manifest blob and checks its size and digest.
    fn read_manifest(&self, d: &Descriptor, from: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(&d.digest);
        let bytes = std::fs::read(&path)
            .with_context(|| {
                format!(
                    "manifest {} (listed in {from}) is missing from the layout: {}",
                    d.digest,
                    path.display()
                )
            })
            .with_code(Code::BadInput)?;
        let actual = format!("sha256:{}", crate::io::hash::sha256_hex(&bytes));
        if actual != d.digest || bytes.len() as u64 != d.size {
            return Err(mismatch(
                &d.digest,
                d.size,
                &actual,
                bytes.len() as u64,
                &path,
            ));
        }
        Ok(bytes)
    }

    fn parse(&self, d: &Descriptor, bytes: &[u8]) -> Result<Document> {
        serde_json::from_slice(bytes)
            .with_context(|| format!("manifest {}: not a valid manifest or index", d.digest))
            .with_code(Code::BadInput)
    }

    /// Adds `d` (a manifest or index) and everything below it to `img`, children first.
    fn walk(&self, d: &Descriptor, from: &str, img: &mut Image, seen: &mut Seen) -> Result<()> {
        check_digest(d, from)?;
        if !seen.manifests.insert(d.digest.clone()) {
            return Ok(());
        }
        let bytes = self.read_manifest(d, from)?;
        let doc = self.parse(d, &bytes)?;
        let media_type = doc
            .media_type
            .clone()
            .unwrap_or_else(|| d.media_type.clone());
        let here = format!("manifest {}", d.digest);
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                for child in &doc.manifests {
                    self.walk(child, &here, img, seen)?;
                }
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let config = doc.config.as_ref().ok_or_else(|| {
                    exit::err(Code::BadInput, format!("{here}: has no config descriptor"))
                })?;
                for (i, b) in std::iter::once(config).chain(&doc.layers).enumerate() {
                    check_digest(b, &here)?;
                    let path = self.blob_path(&b.digest);
                    if !b.urls.is_empty() && !path.exists() {
                        continue; // non-distributable: the registry is not asked for it
                    }
                    if !path.is_file() {
                        let what = if i == 0 {
                            "config".to_string()
                        } else {
                            format!("layer {i}")
                        };
                        return Err(exit::err(
                            Code::BadInput,
                            format!(
                                "blob {} ({what} of {here}) is missing from the layout: {}",
                                b.digest,
                                path.display()
                            ),
                        ));
                    }
                    if seen.blobs.insert(b.digest.clone()) {
                        img.blobs.push(Blob {
                            digest: b.digest.clone(),
                            size: b.size,
                            path,
                        });
                    }
                }
            }
            other => {
                return Err(exit::err(
                    Code::BadInput,
                    format!("{here}: unsupported media type {other:?} (expected an OCI or Docker v2 manifest or index)"),
                ))
            }
        }
        img.manifests.push(Manifest {
            digest: d.digest.clone(),
            media_type,
            bytes,
        });
        Ok(())
    }
}

fn check_digest(d: &Descriptor, from: &str) -> Result<()> {
    let ok = d
        .digest
        .strip_prefix("sha256:")
        .is_some_and(crate::io::hash::is_sha256_hex);
    if ok {
        Ok(())
    } else {
        Err(exit::err(
            Code::BadInput,
            format!(
                "{from}: descriptor digest {:?} is not sha256:<64 hex digits> (only sha256 is supported)",
                d.digest
            ),
        ))
    }
}

fn mismatch(want: &str, want_size: u64, got: &str, got_size: u64, path: &Path) -> anyhow::Error {
    exit::err(
        Code::Fetch,
        format!(
            "blob {want} is corrupt: {} has {got} ({got_size} bytes), the descriptor says {want} ({want_size} bytes); nothing was pushed",
            path.display()
        ),
    )
}

/// Checks a blob file's size and sha256 against its descriptor.
fn verify_blob(b: &Blob) -> Result<()> {
    let meta =
        std::fs::metadata(&b.path).with_context(|| format!("reading {}", b.path.display()))?;
    if meta.len() != b.size {
        return Err(mismatch(
            &b.digest,
            b.size,
            "a different size",
            meta.len(),
            &b.path,
        ));
    }
    let (hex, size) = crate::io::hash::sha256_file(&b.path)?;
    let got = format!("sha256:{hex}");
    if got != b.digest || size != b.size {
        return Err(mismatch(&b.digest, b.size, &got, size, &b.path));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn blob(root: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let hex = crate::io::hash::sha256_hex(bytes);
        std::fs::write(root.join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    fn manifest(root: &Path, config: &[u8], layer: &[u8]) -> serde_json::Value {
        let c = blob(root, "application/vnd.oci.image.config.v1+json", config);
        let l = blob(root, "application/vnd.oci.image.layer.v1.tar", layer);
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": c, "layers": [l]});
        blob(root, OCI_MANIFEST, m.to_string().as_bytes())
    }

    fn layout(entries: &[serde_json::Value]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            d.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let idx = json!({"schemaVersion": 2, "manifests": entries});
        std::fs::write(d.path().join("index.json"), idx.to_string()).unwrap();
        d
    }

    #[test]
    fn index_children_first_and_shared_blobs_once() {
        let d = layout(&[]);
        let root = d.path();
        let a = manifest(root, b"{\"a\":1}", b"shared layer");
        let b = manifest(root, b"{\"b\":1}", b"shared layer");
        let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [a, b]});
        let mut top = blob(root, OCI_INDEX, idx.to_string().as_bytes());
        top["annotations"] = json!({REF_NAME: "v1"});
        std::fs::write(
            root.join("index.json"),
            json!({"schemaVersion": 2, "manifests": [top]}).to_string(),
        )
        .unwrap();
        let plan = load(root, None).unwrap();
        let order: Vec<&str> = plan
            .image
            .manifests
            .iter()
            .map(|m| m.digest.as_str())
            .collect();
        assert_eq!(
            order,
            [
                a["digest"].as_str().unwrap(),
                b["digest"].as_str().unwrap(),
                top["digest"].as_str().unwrap()
            ]
        );
        // Two configs and one layer shared by both manifests.
        assert_eq!(plan.image.blobs.len(), 3);
        assert_eq!(plan.ref_name.as_deref(), Some("v1"));
        assert_eq!(plan.image.top().unwrap().media_type, OCI_INDEX);
    }

    #[test]
    fn choosing_among_images() {
        let d = layout(&[]);
        let root = d.path();
        let mut a = manifest(root, b"{\"a\":1}", b"a");
        let mut b = manifest(root, b"{\"b\":1}", b"b");
        a["annotations"] = json!({REF_NAME: "one"});
        b["annotations"] = json!({REF_NAME: "two"});
        std::fs::write(
            root.join("index.json"),
            json!({"schemaVersion": 2, "manifests": [a, b]}).to_string(),
        )
        .unwrap();
        let e = format!("{:#}", load(root, None).unwrap_err());
        assert!(
            e.contains("--ref") && e.contains("one") && e.contains("two"),
            "{e}"
        );
        let p = load(root, Some("two")).unwrap();
        assert_eq!(p.image.top().unwrap().digest, b["digest"].as_str().unwrap());
        assert!(load(root, Some("three")).is_err());
    }

    #[test]
    fn corrupt_and_missing() {
        let d = layout(&[]);
        let root = d.path();
        let m = manifest(root, b"{}", b"layer bytes");
        std::fs::write(
            root.join("index.json"),
            json!({"schemaVersion": 2, "manifests": [m]}).to_string(),
        )
        .unwrap();
        let layer = crate::io::hash::sha256_hex(b"layer bytes");
        let path = root.join("blobs/sha256").join(&layer);
        std::fs::write(&path, b"layer bytez").unwrap();
        let e = load(root, None).unwrap_err();
        assert_eq!(exit::code_of(&e), Code::Fetch as i32);
        assert!(format!("{e:#}").contains(&layer), "{e:#}");
        std::fs::remove_file(&path).unwrap();
        let e = load(root, None).unwrap_err();
        assert_eq!(exit::code_of(&e), Code::BadInput as i32);
        assert!(format!("{e:#}").contains("layer 1"), "{e:#}");
        std::fs::remove_file(root.join("oci-layout")).unwrap();
        assert!(format!("{:#}", load(root, None).unwrap_err()).contains("not an OCI image layout"));
    }
}
