//! The build report: what went in, what came out, and what slipway did instead of
//! maintainer scripts. Printed as text or JSON and written beside the outputs.
//!
//! It holds plain data handed to it (src/output.rs and the stages' summaries) and
//! imports none of the stages that write.

use serde::{Deserialize, Serialize};

pub use crate::output::{Output, StageTime};

/// Everything a build reports.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BuildReport {
    /// The recipe file.
    pub recipe: String,
    /// The image name.
    pub image: String,
    /// The lock file used.
    pub lock: String,
    /// Number of packages.
    pub packages: usize,
    /// Size of the .deb files.
    pub deb_bytes: u64,
    /// Dependency edges the recipe cut.
    pub cut_edges: Vec<String>,
    /// What the fetch did.
    pub fetch: Option<crate::fetch::packages::Summary>,
    /// Outputs written.
    pub outputs: Vec<Output>,
    /// Maintainer scripts skipped and what slipway did instead.
    pub scripts: Vec<String>,
    /// Warnings (scripts slipway cannot account for, and the like).
    pub warnings: Vec<String>,
    /// Base images a host image carries for containerd (`[[preload]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preloaded: Vec<crate::output::Preloaded>,
    /// Per-stage times.
    pub stages: Vec<StageTime>,
    /// Entries in the tree.
    pub tree_entries: usize,
    /// Bytes of file content in the tree.
    pub tree_bytes: u64,
    /// The SOURCE_DATE_EPOCH mtimes were clamped to.
    pub source_date_epoch: u64,
    /// Kernel modules kept (host images with a `[kernel]` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_modules: Option<String>,
    /// The host image's disk (host recipes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::output::HostDisk>,
    /// What the registry cache did (`--cache-from`, `--cache-to`): entries taken,
    /// built here, refused, pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_cache: Option<crate::remote::Counts>,
    /// OCI images written (one per architecture).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageReport>,
}

/// One OCI image (one architecture).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageReport {
    /// Debian architecture.
    pub architecture: String,
    /// `repository:tag`.
    pub reference: String,
    /// The manifest digest.
    pub manifest: String,
    /// The config digest.
    pub config: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerReport>,
    /// Compressed bytes (layers and config).
    pub compressed_bytes: u64,
    /// Uncompressed layer bytes.
    pub uncompressed_bytes: u64,
    /// Compressed bytes of the layers reused from the base image.
    pub shared_bytes: u64,
}

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerReport {
    /// Compressed digest.
    pub digest: String,
    /// Uncompressed digest.
    pub diff_id: String,
    /// Compressed size.
    pub size: u64,
    /// Uncompressed size.
    pub tar_size: u64,
    /// Reused from the base image.
    pub inherited: bool,
    /// What it holds.
    pub created_by: String,
}

impl BuildReport {
    /// A few human lines.
    pub fn summary_text(&self) -> String {
        let mut s = format!(
            "{}: {} packages ({:.1} MB of .deb files) from {}",
            self.image,
            self.packages,
            self.deb_bytes as f64 / 1e6,
            self.lock
        );
        for o in &self.outputs {
            s.push_str(&format!(
                "\n  {:<10} {} ({:.2} MB)",
                o.kind,
                o.path,
                o.size as f64 / 1e6
            ));
            if !o.sha256.is_empty() {
                s.push_str(&format!(" sha256:{}", o.sha256));
            }
        }
        if let Some(k) = &self.kernel_modules {
            s.push_str(&format!("\n  modules    {k}"));
        }
        for i in &self.images {
            s.push_str(&format!(
                "\n  image      {} ({}) {}: {} layers, {:.2} MB compressed, {:.2} MB uncompressed",
                i.reference,
                i.architecture,
                i.manifest,
                i.layers.len(),
                i.compressed_bytes as f64 / 1e6,
                i.uncompressed_bytes as f64 / 1e6
            ));
            if i.shared_bytes > 0 {
                s.push_str(&format!(
                    "; {} layers ({:.2} MB) shared with its base",
                    i.layers.iter().filter(|l| l.inherited).count(),
                    i.shared_bytes as f64 / 1e6
                ));
            }
        }
        for w in &self.warnings {
            s.push_str(&format!("\n  warning: {w}"));
        }
        let total: f64 = self.stages.iter().map(|t| t.seconds).sum();
        let per: Vec<String> = self
            .stages
            .iter()
            .map(|t| format!("{} {:.2}s", t.stage, t.seconds))
            .collect();
        s.push_str(&format!("\n  time {total:.2}s ({})", per.join(", ")));
        s
    }

    /// Takes what the stages recorded in `c`, after what it has.
    pub fn absorb(&mut self, c: crate::output::Collector) {
        self.outputs.extend(c.outputs);
        self.stages.extend(c.stages);
        self.warnings.extend(c.warnings);
    }
}
