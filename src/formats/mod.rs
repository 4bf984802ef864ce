//! Disk formats: consumes the host image's `disk.raw` and produces the files clouds and
//! hypervisors import. Each format is one small module implementing [`DiskFormat`]; add
//! one by writing the module and listing it in [`ALL`]. Beside each file goes a JSON
//! sidecar ([`sidecar`]) with what the target cloud needs to register the image.
//!
//! VHD, VMDK and the GCE tarball are written natively (their identifiers and time
//! stamps derive from the raw disk's digest and `SOURCE_DATE_EPOCH`, so the bytes do not
//! depend on the host's qemu-img); qcow2 is converted by qemu-img, whose qcow2 output
//! has no such fields.

pub mod gce;
pub mod iso;
pub mod netboot;
pub mod qcow2;
pub mod sidecar;
pub mod update;
pub mod vhd;
pub mod vmdk;

use anyhow::{Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// What a format is converted from: the raw disk and the build's fixed inputs.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// `disk.raw`.
    pub raw: &'a Path,
    /// Its sha256, the seed of every identifier a format writes.
    pub digest: [u8; 32],
    /// The build's `SOURCE_DATE_EPOCH`, for time stamps.
    pub epoch: u64,
}

/// The kernel drivers a cloud's machines need to boot and reach the network.
#[derive(Debug, Clone, Copy)]
pub struct Drivers {
    /// The platform (`aws`, `gce`, `azure`, ...).
    pub platform: &'static str,
    /// Module names (as `modinfo` spells them, underscores).
    pub modules: &'static [&'static str],
}

/// One output format derived from `disk.raw`.
pub trait DiskFormat: Sync {
    /// The `--format` name.
    fn name(&self) -> &'static str;
    /// The file written into the output directory.
    fn file_name(&self) -> &'static str;
    /// Host programs it runs (checked before the build starts).
    fn tools(&self) -> &'static [&'static str];
    /// The drivers the platforms this format is for need in the image (the build warns
    /// when the image's module set lacks any).
    fn drivers(&self) -> &'static [Drivers];
    /// Converts `src` into `dest` (atomically: write a temporary file, then rename).
    fn write(&self, src: &Source, dest: &Path) -> Result<()>;
}

/// Every format.
pub const ALL: &[&dyn DiskFormat] = &[&qcow2::Qcow2, &vhd::Vhd, &vmdk::Vmdk, &gce::Gce];

/// The format called `name`.
pub fn by_name(name: &str) -> Option<&'static dyn DiskFormat> {
    ALL.iter().copied().find(|f| f.name() == name)
}

/// Writes format `f` of `src` into `out_dir`; returns what was written.
pub fn write(f: &dyn DiskFormat, src: &Source, out_dir: &Path) -> Result<crate::output::Output> {
    let dest = out_dir.join(f.file_name());
    f.write(src, &dest)?;
    let (sha256, size) = crate::io::hash::sha256_file(&dest)?;
    Ok(crate::output::Output {
        kind: f.name().to_string(),
        path: dest.display().to_string(),
        size,
        sha256,
    })
}

/// For each driver list of `f` whose modules `has` lacks: the platform and the missing
/// modules.
pub fn missing_drivers(
    f: &dyn DiskFormat,
    has: impl Fn(&str) -> bool,
) -> Vec<(&'static str, Vec<&'static str>)> {
    f.drivers()
        .iter()
        .filter_map(|d| {
            let missing: Vec<&'static str> =
                d.modules.iter().copied().filter(|m| !has(m)).collect();
            (!missing.is_empty()).then_some((d.platform, missing))
        })
        .collect()
}

/// Reads `src` to its end in `chunk`-sized pieces, calling `each(offset, piece)`; the
/// last piece may be shorter.
pub(crate) fn for_each_chunk(
    src: &mut impl Read,
    chunk: usize,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let mut buf = vec![0u8; chunk];
    let mut offset = 0u64;
    loop {
        let mut n = 0;
        while n < chunk {
            let got = src.read(&mut buf[n..]).context("reading the raw disk")?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            return Ok(offset);
        }
        each(offset, &buf[..n])?;
        offset += n as u64;
        if n < chunk {
            return Ok(offset);
        }
    }
}

/// Copies `src` into `dst` from its start, seeking over all-zero 64 KiB blocks so the
/// copy stays sparse, and sizes `dst` to `len` bytes (at least the source's length).
pub(crate) fn copy_sparse(src: &Path, dst: &mut std::fs::File, len: u64) -> Result<u64> {
    let mut f = std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    dst.set_len(0).context("truncating the output")?;
    let n = for_each_chunk(&mut f, 64 << 10, |off, piece| {
        if piece.iter().all(|b| *b == 0) {
            return Ok(());
        }
        dst.seek(SeekFrom::Start(off))
            .context("seeking the output")?;
        dst.write_all(piece).context("writing the output")
    })
    .with_context(|| format!("copying {}", src.display()))?;
    dst.set_len(len.max(n)).context("sizing the output")?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for f in ALL {
            assert_eq!(
                by_name(f.name()).map(|g| g.file_name()),
                Some(f.file_name())
            );
        }
        let mut names: Vec<_> = ALL.iter().map(|f| f.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(by_name("vdi").is_none());
    }

    #[test]
    fn missing_drivers_names_platform_and_modules() {
        let has = |m: &str| m != "ena";
        let m = missing_drivers(&vmdk::Vmdk, has);
        assert_eq!(m, vec![("aws", vec!["ena"])]);
        assert!(missing_drivers(&vhd::Vhd, has).is_empty());
    }

    #[test]
    fn sparse_copy_keeps_bytes_and_size() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let mut data = vec![0u8; 300 << 10];
        data[70_000] = 7;
        data[(300 << 10) - 1] = 9;
        std::fs::write(&src, &data).unwrap();
        let mut out = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("dst"))
            .unwrap();
        let n = copy_sparse(&src, &mut out, 1 << 20).unwrap();
        assert_eq!(n, data.len() as u64);
        let back = std::fs::read(d.path().join("dst")).unwrap();
        assert_eq!(back.len(), 1 << 20);
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..].iter().all(|b| *b == 0));
    }
}
