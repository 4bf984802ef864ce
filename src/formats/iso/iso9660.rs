//! A minimal iso9660 writer: consumes a root directory of files and one subdirectory
//! (the ISO's whole shape, see docs/decisions/0038-iso-layout.md), an El Torito EFI boot
//! image among them and the volume's identifiers, produces the ISO's layout (each file's
//! extent) and the bytes of its system area, volume descriptors, path tables,
//! directories and boot catalog. The files' bytes are copied in by the caller.
//!
//! ECMA-119 (iso9660) with an El Torito boot catalog (platform 0xEF, UEFI, no emulation)
//! and, in the system area, a protective MBR and a GPT whose one partition is the boot
//! image (an ESP), so that the same file written raw to a USB stick boots under UEFI
//! (the "hybrid" layout). Names are ISO level-2 d-characters in upper case with `;1`;
//! Linux shows them in lower case (isofs `map=normal`). No Rock Ridge or Joliet: nothing
//! on this medium needs owners, modes or long names. Every field is a function of the
//! inputs and the epoch, so two builds give the same bytes.

use anyhow::{bail, Result};
use slipway_common::gpt::{types, Partition, Table};
use slipway_common::guid::Guid;

/// The iso9660 logical block.
pub const BLOCK: u64 = 2048;
/// The first volume descriptor (the PVD) is at sector 16: byte 32768.
pub const PVD_SECTOR: u64 = 16;
/// Byte offset of the Volume Set Identifier inside the PVD.
pub const VOLSET_OFFSET: usize = 190;
/// El Torito's boot system identifier.
const EL_TORITO: &[u8] = b"EL TORITO SPECIFICATION";

/// One file on the medium.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Its name in the root directory, or in the subdirectory when `in_sub`.
    pub name: String,
    /// Whether it lies in the subdirectory.
    pub in_sub: bool,
    /// Size in bytes (below 4 GiB: one extent).
    pub size: u64,
}

/// What the volume is.
pub struct Volume<'a> {
    /// Volume identifier (d-characters, at most 32).
    pub volume_id: &'a str,
    /// Volume set identifier (at most 128 bytes).
    pub volume_set: &'a str,
    /// The subdirectory's name.
    pub sub: &'a str,
    /// The files; the subdirectory's in the order given.
    pub files: Vec<FileSpec>,
    /// Index in `files` of the El Torito EFI boot image (a FAT image).
    pub boot: usize,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// Seed of the GPT's GUIDs.
    pub seed: [u8; 32],
}

/// The laid-out medium.
pub struct Layout {
    /// Each file's first sector, in [`Volume::files`] order.
    pub extents: Vec<u64>,
    /// The metadata to write: (byte offset, bytes).
    pub meta: Vec<(u64, Vec<u8>)>,
    /// Total size in bytes, backup GPT included.
    pub size: u64,
}

fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

fn both16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

/// (year, month, day, hour, minute, second) of `epoch` (UTC).
fn civil(epoch: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (epoch / 86400) as i64;
    let (y, m, d) = slipway_common::date::civil_from_days(days);
    let s = epoch % 86400;
    (
        y,
        m,
        d,
        (s / 3600) as u32,
        (s / 60 % 60) as u32,
        (s % 60) as u32,
    )
}

/// The 7-byte date of a directory record (ECMA-119 9.1.5).
fn dir_date(epoch: u64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = civil(epoch);
    let y = (y - 1900).clamp(0, 255) as u8;
    [y, mo as u8, d as u8, h as u8, mi as u8, s as u8, 0]
}

/// The 17-byte date of a volume descriptor (ECMA-119 8.4.26.1).
fn vd_date(epoch: Option<u64>) -> [u8; 17] {
    let mut b = [b'0'; 17];
    b[16] = 0;
    if let Some(e) = epoch {
        let (y, mo, d, h, mi, s) = civil(e);
        let t = format!("{:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}00", y.clamp(0, 9999));
        b[..16].copy_from_slice(t.as_bytes());
    }
    b
}

/// `name` as an iso9660 file identifier: upper case, `;1` appended to files.
fn identifier(name: &str, dir: bool) -> Result<Vec<u8>> {
    let ok = !name.is_empty()
        && name.len() <= 30
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.');
    if !ok || (dir && name.contains('.')) || name.matches('.').count() > 1 {
        bail!(
            "{name:?} is not a name this ISO writer takes (at most 30 of A-Z 0-9 _ - and one dot)"
        );
    }
    let mut id = name.to_ascii_uppercase().into_bytes();
    if !dir {
        if !name.contains('.') {
            id.push(b'.');
        }
        id.extend_from_slice(b";1");
    }
    Ok(id)
}

/// One directory record (ECMA-119 9.1).
fn record(id: &[u8], extent: u64, size: u64, dir: bool, epoch: u64) -> Vec<u8> {
    let len = 33 + id.len() + (id.len() + 1) % 2;
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(extent as u32));
    r[10..18].copy_from_slice(&both32(size as u32));
    r[18..25].copy_from_slice(&dir_date(epoch));
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = id.len() as u8;
    r[33..33 + id.len()].copy_from_slice(id);
    r
}

/// A directory's sector: `.`, `..`, then `entries` (identifier, extent, size, is dir)
/// sorted by identifier as ECMA-119 9.3 asks.
fn directory(
    own: u64,
    parent: u64,
    mut entries: Vec<(Vec<u8>, u64, u64, bool)>,
    epoch: u64,
) -> Result<Vec<u8>> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut d = record(&[0], own, BLOCK, true, epoch);
    d.extend(record(&[1], parent, BLOCK, true, epoch));
    for (id, extent, size, dir) in &entries {
        d.extend(record(id, *extent, *size, *dir, epoch));
    }
    if d.len() > BLOCK as usize {
        bail!(
            "an ISO directory needs more than one sector ({} bytes)",
            d.len()
        );
    }
    d.resize(BLOCK as usize, 0);
    Ok(d)
}

/// A path table (ECMA-119 9.4) of the root and one subdirectory; `be`: the M table.
fn path_table(root: u64, sub_id: &[u8], sub: u64, be: bool) -> Vec<u8> {
    let mut t = Vec::new();
    for (id, extent) in [(&[0u8][..], root), (sub_id, sub)] {
        t.push(id.len() as u8);
        t.push(0);
        let e = extent as u32;
        t.extend_from_slice(&if be { e.to_be_bytes() } else { e.to_le_bytes() });
        t.extend_from_slice(&if be {
            1u16.to_be_bytes()
        } else {
            1u16.to_le_bytes()
        });
        t.extend_from_slice(id);
        if id.len() % 2 == 1 {
            t.push(0);
        }
    }
    t
}

fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    b.resize(len, b' ');
    b
}

/// The Primary Volume Descriptor (ECMA-119 8.4).
fn pvd(v: &Volume, sectors: u64, path_table_len: usize, root: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; BLOCK as usize];
    p[0] = 1;
    p[1..6].copy_from_slice(b"CD001");
    p[6] = 1;
    p[8..40].copy_from_slice(&padded("", 32));
    p[40..72].copy_from_slice(&padded(v.volume_id, 32));
    p[80..88].copy_from_slice(&both32(sectors as u32));
    p[120..124].copy_from_slice(&both16(1));
    p[124..128].copy_from_slice(&both16(1));
    p[128..132].copy_from_slice(&both16(BLOCK as u16));
    p[132..140].copy_from_slice(&both32(path_table_len as u32));
    p[140..144].copy_from_slice(&(LPATH as u32).to_le_bytes());
    p[148..152].copy_from_slice(&(MPATH as u32).to_be_bytes());
    p[156..190].copy_from_slice(root);
    p[VOLSET_OFFSET..VOLSET_OFFSET + 128].copy_from_slice(&padded(v.volume_set, 128));
    p[318..446].copy_from_slice(&padded("", 128));
    p[446..574].copy_from_slice(&padded("", 128));
    p[574..702].copy_from_slice(&padded("SLIPWAY", 128));
    p[702..813].copy_from_slice(&padded("", 111));
    p[813..830].copy_from_slice(&vd_date(Some(v.epoch)));
    p[830..847].copy_from_slice(&vd_date(Some(v.epoch)));
    p[847..864].copy_from_slice(&vd_date(None));
    p[864..881].copy_from_slice(&vd_date(None));
    p[881] = 1;
    p
}

// Fixed sectors: PVD 16, boot record 17, terminator 18, path tables 19 and 20, root
// directory 21, subdirectory 22, boot catalog 23; files from 24.
const BOOT_RECORD: u64 = 17;
const TERMINATOR: u64 = 18;
const LPATH: u64 = 19;
const MPATH: u64 = 20;
const ROOT: u64 = 21;
const SUB: u64 = 22;
const CATALOG: u64 = 23;
const FIRST_FILE: u64 = 24;
/// The tail after the files: room for the backup GPT (33 sectors of 512), in blocks.
const TAIL: u64 = 9;

/// The El Torito boot catalog: a validation entry for platform 0xEF (UEFI) and the
/// default entry, no emulation, loading `count` 512-byte sectors from the 2048-byte
/// sector `lba`.
fn catalog(lba: u64, count: u16) -> Vec<u8> {
    let mut c = vec![0u8; BLOCK as usize];
    c[0] = 1;
    c[1] = 0xef;
    c[0x1e] = 0x55;
    c[0x1f] = 0xaa;
    let sum: u16 = c[..32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    c[0x1c..0x1e].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    let e = &mut c[32..64];
    e[0] = 0x88;
    e[6..8].copy_from_slice(&count.to_le_bytes());
    e[8..12].copy_from_slice(&(lba as u32).to_le_bytes());
    c
}

/// Lays out `v`: every file after the fixed sectors, each from a sector boundary.
pub fn layout(v: &Volume) -> Result<Layout> {
    let mut extents = Vec::new();
    let mut next = FIRST_FILE;
    for f in &v.files {
        if f.size >= 1 << 32 {
            bail!(
                "{} is {} bytes; an ISO file of one extent holds less than 4 GiB",
                f.name,
                f.size
            );
        }
        extents.push(next);
        next += f.size.div_ceil(BLOCK);
    }
    let sectors = next;
    let boot = &v.files[v.boot];
    let boot_count = boot.size.div_ceil(512);
    let count = u16::try_from(boot_count).map_err(|_| {
        anyhow::anyhow!(
            "the El Torito boot image is {} bytes; its sector count is 16 bits (below 32 MiB)",
            boot.size
        )
    })?;
    let sub_id = identifier(v.sub, true)?;
    let mut root_entries = vec![(sub_id.clone(), SUB, BLOCK, true)];
    let mut sub_entries = Vec::new();
    for (f, e) in v.files.iter().zip(&extents) {
        let entry = (identifier(&f.name, false)?, *e, f.size, false);
        if f.in_sub {
            sub_entries.push(entry);
        } else {
            root_entries.push(entry);
        }
    }
    let root_rec = record(&[0], ROOT, BLOCK, true, v.epoch);
    let lpath = path_table(ROOT, &sub_id, SUB, false);
    let mpath = path_table(ROOT, &sub_id, SUB, true);
    let mut br = vec![0u8; BLOCK as usize];
    br[0] = 0;
    br[1..6].copy_from_slice(b"CD001");
    br[6] = 1;
    br[7..7 + EL_TORITO.len()].copy_from_slice(EL_TORITO);
    br[0x47..0x4b].copy_from_slice(&(CATALOG as u32).to_le_bytes());
    let mut term = vec![0u8; BLOCK as usize];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    let size = (sectors + TAIL) * BLOCK;
    let mut meta = vec![
        (PVD_SECTOR * BLOCK, pvd(v, sectors, lpath.len(), &root_rec)),
        (BOOT_RECORD * BLOCK, br),
        (TERMINATOR * BLOCK, term),
        (LPATH * BLOCK, lpath),
        (MPATH * BLOCK, mpath),
        (ROOT * BLOCK, directory(ROOT, ROOT, root_entries, v.epoch)?),
        (SUB * BLOCK, directory(SUB, ROOT, sub_entries, v.epoch)?),
        (CATALOG * BLOCK, catalog(extents[v.boot], count)),
    ];
    meta.extend(hybrid_gpt(v, extents[v.boot], boot.size, size)?);
    Ok(Layout {
        extents,
        meta,
        size,
    })
}

/// The system area's protective MBR and GPT (512-byte sectors) with one partition, the
/// boot image at sector `boot_extent`, typed ESP; the backup GPT goes in the tail.
fn hybrid_gpt(
    v: &Volume,
    boot_extent: u64,
    boot_size: u64,
    size: u64,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let guid = |label: &[u8]| {
        let h = crate::disk::image::derive(&[b"slipway-iso-gpt", label, &v.seed]);
        Guid::from_hash(&h)
    };
    let first = boot_extent * 4;
    let esp = Partition {
        number: 1,
        type_guid: types::ESP,
        uuid: guid(b"esp"),
        first_lba: first,
        last_lba: first + boot_size.div_ceil(512) - 1,
        attributes: 0,
        name: "efiboot".into(),
        sector_size: 512,
    };
    let t = Table::new(512, size / 512, guid(b"disk"), &[esp])
        .map_err(|e| anyhow::anyhow!("the ISO's hybrid GPT: {e}"))?;
    let mut out = vec![(0, t.protective_mbr())];
    out.extend(t.serialize());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> Volume<'static> {
        Volume {
            volume_id: "SLIPWAY",
            volume_set: "SLIPWAY-0123456789abcdef0123456789abcdef",
            sub: "slipway",
            files: vec![
                FileSpec {
                    name: "efiboot.img".into(),
                    in_sub: false,
                    size: 3 << 20,
                },
                FileSpec {
                    name: "config.area".into(),
                    in_sub: true,
                    size: 65536,
                },
                FileSpec {
                    name: "esp-4096.img".into(),
                    in_sub: true,
                    size: 5000,
                },
            ],
            boot: 0,
            epoch: 1_700_000_000,
            seed: [7; 32],
        }
    }

    #[test]
    fn layout_places_files_on_sectors_and_fills_the_descriptors() {
        let l = layout(&volume()).unwrap();
        assert_eq!(l.extents, [24, 24 + 1536, 24 + 1536 + 32]);
        assert_eq!(l.size, (24 + 1536 + 32 + 3 + TAIL) * BLOCK);
        let at = |off: u64| &l.meta.iter().find(|(o, _)| *o == off).unwrap().1;
        let pvd = at(32768);
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(&pvd[190..230], b"SLIPWAY-0123456789abcdef0123456789abcdef");
        assert_eq!(&pvd[813..829], b"2023111422132000");
        let cat = at(CATALOG * BLOCK);
        let sum = cat[..32].chunks(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        assert_eq!(sum, 0, "validation entry sums to zero");
        assert_eq!(&cat[38..40], &6144u16.to_le_bytes());
        assert_eq!(&cat[40..44], &24u32.to_le_bytes());
        let sub = at(SUB * BLOCK);
        let text = String::from_utf8_lossy(sub);
        assert!(text.find("CONFIG.AREA;1").unwrap() < text.find("ESP-4096.IMG;1").unwrap());
        let mbr = at(0);
        assert_eq!(mbr[446 + 4], 0xee);
        assert_eq!(
            l.meta.iter().filter(|(o, _)| *o == 512).count(),
            1,
            "GPT header"
        );
    }

    #[test]
    fn big_boot_images_and_odd_names_are_refused() {
        let mut v = volume();
        v.files[0].size = 32 << 20;
        assert!(format!("{:#}", layout(&v).err().unwrap()).contains("16 bits"));
        let mut v = volume();
        v.files[1].name = "a b".into();
        assert!(layout(&v).is_err());
    }
}
