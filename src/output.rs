//! What the stages made, as plain data: one record per output file, the time each stage
//! took and its warnings, gathered in a [`Collector`] the pipeline passes down, and the
//! records of the host disk and of preloaded images. Consumed by the build report
//! (src/report.rs), which imports nothing that writes.

use serde::{Deserialize, Serialize};

/// One output file.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl Output {
    /// The record of the file `path` (hashed here), of `kind`.
    pub fn of_file(kind: &str, path: &std::path::Path) -> anyhow::Result<Output> {
        let (sha256, size) = crate::io::hash::sha256_file(path)?;
        Ok(Output {
            kind: kind.into(),
            path: path.display().to_string(),
            size,
            sha256,
        })
    }
}

/// The time one stage took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTime {
    /// The stage.
    pub stage: String,
    /// Seconds.
    pub seconds: f64,
}

/// What the stages of one build wrote, how long each took, and their warnings, in the
/// order they happened.
#[derive(Debug, Default)]
pub struct Collector {
    /// Outputs written.
    pub outputs: Vec<Output>,
    /// Per-stage times.
    pub stages: Vec<StageTime>,
    /// Warnings.
    pub warnings: Vec<String>,
}

impl Collector {
    /// Records an output.
    pub fn output(&mut self, o: Output) {
        self.outputs.push(o);
    }

    /// Records a stage time.
    pub fn time(&mut self, stage: &str, seconds: f64) {
        self.stages.push(StageTime {
            stage: stage.into(),
            seconds,
        });
    }

    /// Records the time since `start` for `stage`.
    pub fn since(&mut self, stage: &str, start: std::time::Instant) {
        self.time(stage, start.elapsed().as_secs_f64());
    }

    /// Records warnings.
    pub fn warn(&mut self, w: impl IntoIterator<Item = String>) {
        self.warnings.extend(w);
    }
}

/// One partition of the disk, as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Its GPT name.
    pub name: String,
    /// Type GUID.
    pub type_guid: String,
    /// Partition UUID.
    pub uuid: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Bytes of content written into it (the file system image).
    pub content: u64,
}

/// What the disk stage made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostDisk {
    /// The kernel release.
    pub kernel: String,
    /// The dm-verity root hash (hex).
    pub root_hash: String,
    /// The kernel command line inside the UKI.
    pub cmdline: String,
    /// The root file system kind.
    pub root_fs: String,
    /// The partitions, in table order.
    pub partitions: Vec<PartitionInfo>,
    /// The modules the initramfs loads, in order.
    pub initramfs_modules: Vec<String>,
    /// Disk size in bytes.
    pub disk_size: u64,
}

/// One preloaded image, as the build report lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preloaded {
    /// The image name containerd gets (base name and the image's tag).
    pub name: String,
    /// containerd namespace.
    pub namespace: String,
    /// The archive in the image.
    pub path: String,
    /// Its size and sha256.
    pub size: u64,
    pub sha256: String,
}
