//! The build report: what went in, what came out, and what slipway did instead of
//! maintainer scripts. Printed as text or JSON and written beside the outputs.

use serde::Serialize;

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// What it is ("tar", "dir", "oci-layout", ...).
    pub kind: String,
    /// Its path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// sha256 of the file (empty for directories).
    pub sha256: String,
}

/// The time one stage took.
#[derive(Debug, Clone, Serialize)]
pub struct StageTime {
    /// The stage.
    pub stage: String,
    /// Seconds.
    pub seconds: f64,
}

/// Everything a build reports.
#[derive(Debug, Clone, Serialize, Default)]
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
    /// Per-stage times.
    pub stages: Vec<StageTime>,
    /// Entries in the tree.
    pub tree_entries: usize,
    /// Bytes of file content in the tree.
    pub tree_bytes: u64,
    /// The SOURCE_DATE_EPOCH mtimes were clamped to.
    pub source_date_epoch: u64,
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

    /// Records a stage time.
    pub fn time(&mut self, stage: &str, seconds: f64) {
        self.stages.push(StageTime {
            stage: stage.into(),
            seconds,
        });
    }
}
