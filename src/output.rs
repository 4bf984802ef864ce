//! What a stage wrote: one record per output file, collected by the pipeline and
//! printed in the build report.

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
