//! Unified kernel images: consumes systemd's EFI stub (`linuxx64.efi.stub` from Debian's
//! systemd-boot-efi), the kernel, the initramfs, the kernel command line and os-release,
//! and produces one PE binary that systemd-boot starts as a type #2 entry (two slots) or
//! UEFI firmware starts directly (one slot, as `EFI/BOOT/BOOTX64.EFI`), and that carries
//! the dm-verity root hash inside the signed command line.
//!
//! The stub finds its payload in PE sections named `.osrel`, `.cmdline`, `.uname`,
//! `.initrd` and `.linux` (UAPI Unified Kernel Image specification,
//! <https://uapi-group.org/specifications/specs/unified_kernel_image/>). They are added
//! with `objcopy --add-section`; their virtual addresses are computed here from the stub's
//! own section table (read natively): after the end of its last section, each aligned to
//! the stub's SectionAlignment, `.linux` last as ukify places it. Nothing of the host
//! (time, paths) enters: objcopy stamps the wall clock into the COFF header, so the
//! stub's own timestamp is written back afterwards and the PE checksum recomputed.

use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use std::fs;

/// One PE section header (the fields slipway needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name (up to 8 bytes; longer names live in the string table and are not resolved).
    pub name: String,
    /// Relative virtual address.
    pub virtual_address: u32,
    /// Size in memory.
    pub virtual_size: u32,
    /// File offset of the raw data.
    pub raw_offset: u32,
    /// Size of the raw data in the file.
    pub raw_size: u32,
}

/// What a PE32+ header says about the image.
#[derive(Debug, Clone)]
pub struct PeInfo {
    /// Preferred load address.
    pub image_base: u64,
    /// Alignment of sections in memory.
    pub section_alignment: u32,
    /// The section table.
    pub sections: Vec<Section>,
    /// The COFF TimeDateStamp.
    pub timestamp: u32,
}

impl PeInfo {
    /// The section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
    /// The content of section `name` in `pe` (the raw data, cut to the virtual size).
    pub fn section_data<'a>(&self, pe: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let s = self.section(name)?;
        let start = s.raw_offset as usize;
        let len = s.virtual_size.min(s.raw_size) as usize;
        pe.get(start..start.checked_add(len)?)
    }
}

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    let s = b.get(o..o + 2).context("PE header is truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    let s = b.get(o..o + 4).context("PE header is truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64> {
    Ok(u64::from(u32_at(b, o)?) | (u64::from(u32_at(b, o + 4)?) << 32))
}

/// Reads the COFF and optional headers and the section table of a PE32+ file (Microsoft
/// PE/COFF specification, sections 3 and 4).
pub fn pe_info(pe: &[u8]) -> Result<PeInfo> {
    if pe.get(0..2) != Some(b"MZ") {
        bail!("not a PE file (no MZ signature)");
    }
    let nt = u32_at(pe, 0x3c)? as usize;
    if pe.get(nt..nt + 4) != Some(b"PE\0\0") {
        bail!("not a PE file (no PE signature at {nt:#x})");
    }
    let coff = nt + 4;
    let nsections = u16_at(pe, coff + 2)? as usize;
    let timestamp = u32_at(pe, coff + 4)?;
    let opt_size = u16_at(pe, coff + 16)? as usize;
    let opt = coff + 20;
    if u16_at(pe, opt)? != 0x20b {
        bail!("not a PE32+ (64-bit) image");
    }
    let section_alignment = u32_at(pe, opt + 32)?;
    if !section_alignment.is_power_of_two() {
        bail!("PE SectionAlignment {section_alignment} is not a power of two");
    }
    let image_base = u64_at(pe, opt + 24)?;
    let table = opt + opt_size;
    let mut sections = Vec::with_capacity(nsections);
    for i in 0..nsections {
        let h = table + i * 40;
        let raw_name = pe.get(h..h + 8).context("PE section table is truncated")?;
        let end = raw_name.iter().position(|&c| c == 0).unwrap_or(8);
        sections.push(Section {
            name: String::from_utf8_lossy(&raw_name[..end]).into_owned(),
            virtual_size: u32_at(pe, h + 8)?,
            virtual_address: u32_at(pe, h + 12)?,
            raw_size: u32_at(pe, h + 16)?,
            raw_offset: u32_at(pe, h + 20)?,
        });
    }
    Ok(PeInfo {
        image_base,
        section_alignment,
        sections,
        timestamp,
    })
}

/// Offsets of the COFF TimeDateStamp and of the optional header's CheckSum.
fn stamp_and_checksum_offsets(pe: &[u8]) -> Result<(usize, usize)> {
    let nt = u32_at(pe, 0x3c)? as usize;
    let coff = nt + 4;
    Ok((coff + 4, coff + 20 + 64))
}

/// The PE image checksum (as IMAGEHLP's CheckSumMappedFile computes it): the 16-bit
/// one's-complement-style sum of the file with the CheckSum field taken as zero, plus
/// the file length.
pub fn pe_checksum(pe: &[u8]) -> Result<u32> {
    let (_, at) = stamp_and_checksum_offsets(pe)?;
    let mut sum: u64 = 0;
    for (i, w) in pe.chunks(2).enumerate() {
        let o = i * 2;
        if o == at || o == at + 2 {
            continue;
        }
        let v = u64::from(w[0]) | (u64::from(*w.get(1).unwrap_or(&0)) << 8);
        sum += v;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    u32::try_from(sum + pe.len() as u64).context("PE file too large for a checksum")
}

/// Sets the COFF TimeDateStamp (objcopy stamps the wall clock into PE output and has no
/// option against it) and, when the file carries a checksum, recomputes it.
fn set_timestamp(pe: &mut [u8], timestamp: u32) -> Result<()> {
    let (ts, cs) = stamp_and_checksum_offsets(pe)?;
    if pe.len() < cs + 4 {
        bail!("PE header is truncated");
    }
    pe[ts..ts + 4].copy_from_slice(&timestamp.to_le_bytes());
    if u32_at(pe, cs)? != 0 {
        let sum = pe_checksum(pe)?;
        pe[cs..cs + 4].copy_from_slice(&sum.to_le_bytes());
    }
    Ok(())
}

/// The parts of a UKI.
pub struct Parts<'a> {
    /// systemd's EFI stub (`usr/lib/systemd/boot/efi/linuxx64.efi.stub`).
    pub stub: &'a [u8],
    /// The kernel (`boot/vmlinuz-*`).
    pub kernel: &'a [u8],
    /// The initramfs.
    pub initrd: &'a [u8],
    /// The kernel command line.
    pub cmdline: &'a str,
    /// The image's os-release.
    pub os_release: &'a [u8],
    /// The kernel release (`uname -r`), if known.
    pub uname: Option<&'a str>,
}

/// Builds the UKI: the stub with the payload sections added. Deterministic: the same
/// parts give the same bytes.
pub fn build_uki(p: &Parts) -> Result<Vec<u8>> {
    build_uki_with(p, &[])
}

/// The sections of the UKI [`build_uki_with`] makes of `p` and `extra`, in file order
/// after the stub's own: `.osrel`, `.cmdline`, `.uname`, the `extra` ones (`.pcrpkey`,
/// `.pcrsig`), `.initrd`, `.linux` last as ukify places it.
pub fn payload<'a>(p: &Parts<'a>, extra: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    let mut payload: Vec<(&str, &[u8])> =
        vec![(".osrel", p.os_release), (".cmdline", p.cmdline.as_bytes())];
    if let Some(u) = p.uname {
        payload.push((".uname", u.as_bytes()));
    }
    payload.extend_from_slice(extra);
    payload.push((".initrd", p.initrd));
    payload.push((".linux", p.kernel));
    payload
}

/// As [`build_uki`], with the `extra` sections (name, content) added too: the signed
/// PCR policy's `.pcrpkey` and `.pcrsig`.
pub fn build_uki_with(p: &Parts, extra: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    crate::tool::require(&["objcopy"])?;
    let info = pe_info(p.stub).context("reading the EFI stub's PE header")?;
    let payload = payload(p, extra);
    for (name, _) in &payload {
        if info.section(name).is_some() {
            bail!("the EFI stub already has a {name} section (is it a UKI already?)");
        }
    }
    let align = u64::from(info.section_alignment);
    let end = info
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
        .max()
        .context("the EFI stub has no sections")?;
    let work = tempfile::Builder::new()
        .prefix("slipway-uki-")
        .tempdir()
        .context("creating a work directory for the UKI")?;
    let stub = work.path().join("stub.efi");
    fs::write(&stub, p.stub).with_context(|| format!("writing {}", stub.display()))?;
    let mut t = Tool::new("adding the UKI sections to the EFI stub", "objcopy");
    let mut rva = end.div_ceil(align) * align;
    for (name, bytes) in &payload {
        if bytes.is_empty() {
            bail!("the UKI's {name} section would be empty");
        }
        let file = work.path().join(name.trim_start_matches('.'));
        fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
        t = t
            .arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={:#x}", info.image_base + rva));
        rva = (rva + bytes.len() as u64).div_ceil(align) * align;
    }
    let out = work.path().join("uki.efi");
    t.arg(&stub).arg(&out).run()?;
    let mut uki = fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
    set_timestamp(&mut uki, info.timestamp)?;
    // Check the result the way the stub will read it.
    let got = pe_info(&uki).context("reading back the UKI's PE header")?;
    for (name, bytes) in &payload {
        if got.section_data(&uki, name) != Some(*bytes) {
            bail!("objcopy did not write the UKI's {name} section as given");
        }
    }
    Ok(uki)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_pe_input_is_refused() {
        assert!(pe_info(b"not a PE file at all").is_err());
        let mut mz = vec![0u8; 256];
        mz[0..2].copy_from_slice(b"MZ");
        mz[0x3c] = 0x80;
        assert!(pe_info(&mz).is_err(), "no PE signature");
        mz[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert!(pe_info(&mz).is_err(), "no PE32+ optional header");
    }

    #[test]
    fn checksum_folds_carries_and_adds_the_length() {
        // A 0x100-byte "PE" whose checksum field (at 0x40 + 4 + 20 + 64 = 0x98) is skipped.
        let mut pe = vec![0xffu8; 0x100];
        pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        let base = pe_checksum(&pe).unwrap();
        pe[0x98] = 0;
        assert_eq!(
            pe_checksum(&pe).unwrap(),
            base,
            "the checksum field is ignored"
        );
        pe[0xa0] = 0xfe;
        assert_ne!(pe_checksum(&pe).unwrap(), base);
    }
}
