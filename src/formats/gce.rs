//! Google Compute Engine: consumes `disk.raw`, produces `disk.tar.gz`, a gzip-compressed
//! tar holding one member named exactly `disk.raw`, which is what GCE's "import an
//! existing image" path expects (`gcloud compute images create --source-uri`).
//!
//! The member has a GNU tar header (sizes of 8 GiB and more use GNU's base-256
//! encoding), mode 0644, owner root:root (uid and gid 0), and mtime
//! `SOURCE_DATE_EPOCH`. The gzip header carries no name and mtime 0, and the deflate
//! level is pinned, so the same raw disk gives the same bytes. (GCE's docs build the
//! archive with `tar --format=oldgnu -S`; a sparse member only saves work for the
//! compressor, which handles the zero runs anyway.)

use anyhow::{Context, Result};
use flate2::Compression;
use std::io::Write;
use std::path::Path;

/// GCE image tarball.
pub struct Gce;

/// The one member's name, as GCE requires it.
pub const MEMBER: &str = "disk.raw";
/// The gzip level: pinned, so output does not follow a library default.
const LEVEL: u32 = 6;

impl super::DiskFormat for Gce {
    fn name(&self) -> &'static str {
        "gce"
    }
    fn file_name(&self) -> &'static str {
        "disk.tar.gz"
    }
    fn tools(&self) -> &'static [&'static str] {
        &[]
    }
    fn drivers(&self) -> &'static [super::Drivers] {
        // GCE: gVNIC, and virtio-net and virtio-scsi on the shapes that use them.
        &[super::Drivers {
            platform: "gce",
            modules: &["gve", "virtio_net", "virtio_scsi"],
        }]
    }
    fn write(&self, src: &super::Source, dest: &Path) -> Result<()> {
        let input = std::fs::File::open(src.raw)
            .with_context(|| format!("opening {}", src.raw.display()))?;
        let len = input
            .metadata()
            .with_context(|| format!("reading {}", src.raw.display()))?
            .len();
        let mut af = crate::io::atomic::AtomicFile::create(dest)?;
        {
            let out = std::io::BufWriter::with_capacity(1 << 20, af.file());
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(out, Compression::new(LEVEL));
            let mut tar = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_path(MEMBER).context("naming the tar member")?;
            h.set_size(len);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(src.epoch);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_username("root").context("tar header")?;
            h.set_groupname("root").context("tar header")?;
            h.set_cksum();
            tar.append(&h, std::io::BufReader::with_capacity(1 << 20, input))
                .with_context(|| format!("writing {} into {}", MEMBER, dest.display()))?;
            let gz = tar
                .into_inner()
                .with_context(|| format!("writing {}", dest.display()))?;
            let mut out = gz
                .finish()
                .with_context(|| format!("writing {}", dest.display()))?;
            out.flush()
                .with_context(|| format!("writing {}", dest.display()))?;
        }
        af.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::DiskFormat;
    use std::io::Read;

    #[test]
    fn one_member_disk_raw_with_fixed_metadata() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        let mut data = vec![0u8; 3 << 20];
        data[12345] = 42;
        std::fs::write(&raw, &data).unwrap();
        let src = crate::formats::Source {
            raw: &raw,
            digest: [0; 32],
            epoch: 1_600_000_000,
        };
        let dest = d.path().join("disk.tar.gz");
        Gce.write(&src, &dest).unwrap();
        let bytes = std::fs::read(&dest).unwrap();
        // gzip: no mtime, no file name flag.
        assert_eq!(&bytes[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut n = 0;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            n += 1;
            assert_eq!(e.path().unwrap().to_str(), Some(MEMBER));
            assert_eq!(e.header().mtime().unwrap(), 1_600_000_000);
            assert_eq!(e.header().uid().unwrap(), 0);
            assert_eq!(e.header().mode().unwrap(), 0o644);
            let mut got = Vec::new();
            e.read_to_end(&mut got).unwrap();
            assert!(got == data, "member content differs");
        }
        assert_eq!(n, 1);
        let again = d.path().join("again.tar.gz");
        Gce.write(&src, &again).unwrap();
        assert_eq!(std::fs::read(again).unwrap(), bytes);
    }
}
