//! Stream-optimized VMDK (AWS VM Import, VMware): consumes `disk.raw`, produces
//! `disk.vmdk`, laid out as VMware's "Virtual Disk Format 1.1" describes the
//! `streamOptimized` monolithic sparse extent:
//!
//! - sector 0: the sparse extent header (little-endian; magic `KDMV`, version 3, flags
//!   "valid newline test" + "compressed grains" + "markers", 64 KiB grains, 512
//!   entries per grain table, grain directory offset "at end", deflate);
//! - from sector 1: the embedded text descriptor (`createType="streamOptimized"`, one
//!   `RW n SPARSE` extent, geometry in the disk database);
//! - each grain that holds a non-zero byte: a grain marker (LBA, compressed length)
//!   and the grain compressed with zlib (RFC 1950 deflate, level 6), padded to a sector;
//!   all-zero grains are left out (a zero grain-table entry reads as zeros);
//! - after every 512 grains (32 MiB): a grain-table marker and the grain table;
//! - a grain-directory marker and the grain directory; a footer marker and the footer
//!   (the header again, with the directory's real offset); the end-of-stream marker.
//!
//! The descriptor's content id (CID) derives from the raw disk's sha256; the format
//! has no time stamps. One compressor at one level, grains in disk order: the same raw
//! disk gives the same bytes on every host.

use anyhow::{bail, Context, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::Write;
use std::path::Path;

/// Stream-optimized VMDK.
pub struct Vmdk;

/// Sector size.
const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain-table entries per grain table.
pub const GTES_PER_GT: u64 = 512;
/// The header's magic number ("KDMV" little-endian).
pub const MAGIC: u32 = 0x564d_444b;
/// Header flags: valid newline detection (bit 0), compressed grains (bit 16),
/// markers (bit 17).
pub const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
/// The grain directory offset of a header whose directory is at the end.
pub const GD_AT_END: u64 = u64::MAX;
/// Sectors reserved for the descriptor.
const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain (header + descriptor, rounded up to a grain).
const OVERHEAD: u64 = GRAIN_SECTORS;
/// Marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// The deflate level: pinned, so output does not follow a library default.
const LEVEL: u32 = 6;

impl super::DiskFormat for Vmdk {
    fn name(&self) -> &'static str {
        "vmdk"
    }
    fn file_name(&self) -> &'static str {
        "disk.vmdk"
    }
    fn tools(&self) -> &'static [&'static str] {
        &[]
    }
    fn drivers(&self) -> &'static [super::Drivers] {
        // AWS Nitro: the Elastic Network Adapter and NVMe (EBS volumes are NVMe).
        &[super::Drivers {
            platform: "aws",
            modules: &["ena", "nvme"],
        }]
    }
    fn write(&self, src: &super::Source, dest: &Path) -> Result<()> {
        let mut input = std::fs::File::open(src.raw)
            .with_context(|| format!("opening {}", src.raw.display()))?;
        let len = input
            .metadata()
            .with_context(|| format!("reading {}", src.raw.display()))?
            .len();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.file_name().to_string());
        let mut af = crate::io::atomic::AtomicFile::create(dest)?;
        {
            let out = std::io::BufWriter::with_capacity(1 << 20, af.file());
            let mut w = Writer::new(out, len, &name, cid(&src.digest))?;
            super::for_each_chunk(&mut input, (GRAIN_SECTORS * SECTOR) as usize, |off, g| {
                w.grain(off / (GRAIN_SECTORS * SECTOR), g)
            })
            .with_context(|| format!("writing {}", dest.display()))?;
            w.finish()
                .with_context(|| format!("writing {}", dest.display()))?;
        }
        af.commit()
    }
}

/// The descriptor's content id for a raw disk with sha256 `digest` (never `ffffffff`,
/// which means "no parent" in `parentCID`).
pub fn cid(digest: &[u8; 32]) -> u32 {
    let c = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    if c == u32::MAX {
        0xfffe_fffe
    } else {
        c
    }
}

/// The embedded descriptor for `sectors` of capacity in extent file `name`.
pub fn descriptor(sectors: u64, name: &str, cid: u32) -> String {
    // Geometry as VMware gives SCSI disks: 255 heads, 63 sectors per track.
    let cylinders = (sectors / (255 * 63)).clamp(1, 65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {sectors} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n"
    )
}

/// The sparse extent header for `capacity` sectors, with the grain directory at
/// `gd_offset` (sectors; [`GD_AT_END`] in the leading copy).
pub fn header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // rgdOffset (48..56): no redundant directory.
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    h[72] = 0; // clean
    h[73] = b'\n';
    h[74] = b' ';
    h[75] = b'\r';
    h[76] = b'\n';
    h[77..79].copy_from_slice(&1u16.to_le_bytes()); // deflate
    h
}

/// A metadata marker sector: `sectors` of metadata of `kind` follow.
fn marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    // size (8..12) is 0 for metadata markers.
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// Writes the stream in one pass: grains as they come, each grain table when its
/// 512 grains are done, the directory and footer at the end.
struct Writer<W: Write> {
    out: W,
    /// Next free sector.
    pos: u64,
    capacity: u64,
    /// Grain tables in the file (sector of each), by index.
    gd: Vec<u32>,
    /// The grain table being filled, and its index.
    gt: Vec<u32>,
    gt_index: u64,
    zbuf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    fn new(mut out: W, len: u64, name: &str, cid: u32) -> Result<Self> {
        let capacity = len.div_ceil(GRAIN_SECTORS * SECTOR) * GRAIN_SECTORS;
        let desc = descriptor(capacity, name, cid);
        if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
            bail!("VMDK descriptor too long ({} bytes)", desc.len());
        }
        out.write_all(&header(capacity, GD_AT_END))?;
        let mut d = desc.into_bytes();
        d.resize(((OVERHEAD - 1) * SECTOR) as usize, 0);
        out.write_all(&d)?;
        Ok(Writer {
            out,
            pos: OVERHEAD,
            capacity,
            gd: Vec::new(),
            gt: vec![0; GTES_PER_GT as usize],
            gt_index: 0,
            zbuf: Vec::new(),
        })
    }

    fn sector_u32(&self) -> Result<u32> {
        u32::try_from(self.pos).context("VMDK grows past 2 TiB of sectors")
    }

    /// Writes the grain tables up to (not including) table `upto`.
    fn flush_tables(&mut self, upto: u64) -> Result<()> {
        while self.gt_index < upto {
            self.out.write_all(&marker(4, MARKER_GT))?;
            self.pos += 1;
            self.gd.push(self.sector_u32()?);
            let mut t = Vec::with_capacity((GTES_PER_GT * 4) as usize);
            for e in &self.gt {
                t.extend_from_slice(&e.to_le_bytes());
            }
            self.out.write_all(&t)?;
            self.pos += 4;
            self.gt.iter_mut().for_each(|e| *e = 0);
            self.gt_index += 1;
        }
        Ok(())
    }

    /// Grain number `n` (its bytes; the last may be short).
    fn grain(&mut self, n: u64, data: &[u8]) -> Result<()> {
        self.flush_tables(n / GTES_PER_GT)?;
        if data.iter().all(|b| *b == 0) {
            return Ok(());
        }
        self.zbuf.clear();
        let mut z = ZlibEncoder::new(std::mem::take(&mut self.zbuf), Compression::new(LEVEL));
        z.write_all(data)?;
        let full = (GRAIN_SECTORS * SECTOR) as usize;
        if data.len() < full {
            z.write_all(&vec![0u8; full - data.len()])?;
        }
        self.zbuf = z.finish()?;
        let lba = n * GRAIN_SECTORS;
        let mut head = [0u8; 12];
        head[0..8].copy_from_slice(&lba.to_le_bytes());
        head[8..12].copy_from_slice(&(self.zbuf.len() as u32).to_le_bytes());
        let total = 12 + self.zbuf.len() as u64;
        let padded = total.div_ceil(SECTOR) * SECTOR;
        self.gt[(n % GTES_PER_GT) as usize] = self.sector_u32()?;
        self.out.write_all(&head)?;
        self.out.write_all(&self.zbuf)?;
        self.out.write_all(&vec![0u8; (padded - total) as usize])?;
        self.pos += padded / SECTOR;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let tables = self.capacity.div_ceil(GRAIN_SECTORS * GTES_PER_GT);
        self.flush_tables(tables)?;
        let gd_sectors = (tables * 4).div_ceil(SECTOR);
        self.out.write_all(&marker(gd_sectors, MARKER_GD))?;
        self.pos += 1;
        let gd_offset = self.pos;
        let mut gd = Vec::with_capacity((gd_sectors * SECTOR) as usize);
        for e in &self.gd {
            gd.extend_from_slice(&e.to_le_bytes());
        }
        gd.resize((gd_sectors * SECTOR) as usize, 0);
        self.out.write_all(&gd)?;
        self.out.write_all(&marker(1, MARKER_FOOTER))?;
        self.out.write_all(&header(self.capacity, gd_offset))?;
        self.out.write_all(&marker(0, MARKER_EOS))?;
        self.out.flush()?;
        Ok(())
    }
}

/// Reads a stream-optimized VMDK back into raw bytes (for tests): follows the footer's
/// grain directory and inflates every grain.
pub fn read_back(file: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let le64 = |b: &[u8], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    if file.len() < 2048 || le32(file, 0) != MAGIC {
        bail!("not a VMDK sparse extent");
    }
    let footer = &file[file.len() - 1024..file.len() - 512];
    if le32(footer, 0) != MAGIC || le32(&file[file.len() - 1536..], 12) != MARKER_FOOTER {
        bail!("no VMDK footer");
    }
    let capacity = le64(footer, 12);
    let gd_off = (le64(footer, 56) * SECTOR) as usize;
    let tables = capacity.div_ceil(GRAIN_SECTORS * GTES_PER_GT) as usize;
    let mut raw = vec![0u8; (capacity * SECTOR) as usize];
    for t in 0..tables {
        let gt_off = (u64::from(le32(file, gd_off + 4 * t)) * SECTOR) as usize;
        if gt_off == 0 {
            continue;
        }
        for e in 0..GTES_PER_GT as usize {
            let g = (u64::from(le32(file, gt_off + 4 * e)) * SECTOR) as usize;
            if g == 0 {
                continue;
            }
            let lba = le64(file, g);
            let n = le32(file, g + 8) as usize;
            let want = (t as u64 * GTES_PER_GT + e as u64) * GRAIN_SECTORS;
            if lba != want {
                bail!(
                    "grain marker at sector {} says LBA {lba}, table says {want}",
                    g / 512
                );
            }
            let mut z = flate2::read::ZlibDecoder::new(&file[g + 12..g + 12 + n]);
            let start = (lba * SECTOR) as usize;
            let end = start + (GRAIN_SECTORS * SECTOR) as usize;
            z.read_exact(&mut raw[start..end])
                .context("inflating a grain")?;
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::DiskFormat;

    fn write(data: &[u8], digest: [u8; 32]) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        std::fs::write(&raw, data).unwrap();
        let src = crate::formats::Source {
            raw: &raw,
            digest,
            epoch: 0,
        };
        let dest = d.path().join("disk.vmdk");
        Vmdk.write(&src, &dest).unwrap();
        std::fs::read(dest).unwrap()
    }

    #[test]
    fn round_trips_sparse_data_across_grain_tables() {
        // 40 MiB: two grain tables; data in the first grain, mid-table, and the last.
        let mut data = vec![0u8; 40 << 20];
        data[0] = 1;
        data[(33 << 20) + 5] = 2;
        for (i, b) in data[(20 << 20)..(20 << 20) + 200_000]
            .iter_mut()
            .enumerate()
        {
            *b = (i * 7 % 251) as u8;
        }
        let last = data.len() - 1;
        data[last] = 3;
        let v = write(&data, [5; 32]);
        assert_eq!(read_back(&v).unwrap(), data);
        // Far smaller than the raw disk: zero grains are left out.
        assert!(v.len() < 1 << 20, "{} bytes", v.len());
        let text = String::from_utf8_lossy(&v[512..512 * 21]);
        assert!(text.contains("createType=\"streamOptimized\""), "{text}");
        assert!(
            text.contains(&format!("CID={:08x}", cid(&[5; 32]))),
            "{text}"
        );
        assert!(text.contains(&format!("RW {} SPARSE \"disk.vmdk\"", data.len() / 512)));
        // Same input, same bytes; another digest, another CID only.
        assert_eq!(write(&data, [5; 32]), v);
        let other = write(&data, [6; 32]);
        assert_eq!(other.len(), v.len());
        assert_ne!(other, v);
    }

    #[test]
    fn a_short_last_grain_is_padded_with_zeros() {
        let data = vec![9u8; 100_000];
        let v = write(&data, [1; 32]);
        let back = read_back(&v).unwrap();
        assert_eq!(back.len(), 128 << 10);
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..].iter().all(|b| *b == 0));
    }
}
