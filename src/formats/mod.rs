//! Disk formats: consumes the host image's `disk.raw` and produces the files clouds and
//! hypervisors import. Each format is one small module implementing [`DiskFormat`]; add
//! one by writing the module and listing it in [`ALL`].

pub mod qcow2;

use anyhow::Result;
use std::path::Path;

/// One output format derived from `disk.raw`.
pub trait DiskFormat: Sync {
    /// The `--format` name.
    fn name(&self) -> &'static str;
    /// The file written into the output directory.
    fn file_name(&self) -> &'static str;
    /// Host programs it runs (checked before the build starts).
    fn tools(&self) -> &'static [&'static str];
    /// Converts `raw` into `dest` (atomically: write a temporary file, then rename).
    fn write(&self, raw: &Path, dest: &Path) -> Result<()>;
}

/// Every format.
pub const ALL: &[&dyn DiskFormat] = &[&qcow2::Qcow2];

/// The format called `name`.
pub fn by_name(name: &str) -> Option<&'static dyn DiskFormat> {
    ALL.iter().copied().find(|f| f.name() == name)
}

/// Writes format `f` of `raw` into `out_dir`; returns what was written.
pub fn write(f: &dyn DiskFormat, raw: &Path, out_dir: &Path) -> Result<crate::report::Output> {
    let dest = out_dir.join(f.file_name());
    f.write(raw, &dest)?;
    let (sha256, size) = crate::io::hash::sha256_file(&dest)?;
    Ok(crate::report::Output {
        kind: f.name().to_string(),
        path: dest.display().to_string(),
        size,
        sha256,
    })
}
