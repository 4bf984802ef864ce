//! A kernel module's `.modinfo`: consumes the bytes of a `.ko`, `.ko.xz`, `.ko.zst` or
//! `.ko.gz` file and produces its name, hard dependencies, soft dependencies and aliases.
//!
//! `.modinfo` is an ELF section of NUL-separated `key=value` strings written by
//! `MODULE_INFO()` and friends (include/linux/moduleparam.h, scripts/mod/modpost.c adds
//! `depends=`, `name=` and `vermagic=`). Reading it needs only the ELF64 header and the
//! section header table (ELF gABI, "Sections"), so a forty-line reader does the job; no
//! symbol tables and no relocations are touched.

use anyhow::{bail, Context, Result};
use std::io::Read;

/// Decompressed modules larger than this are refused (the largest module of Debian's
/// cloud kernels is about 3 MiB; amdgpu in the generic flavour is about 60 MiB).
const MODULE_LIMIT: u64 = 512 << 20;

/// What `.modinfo` says about one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`: the module name as the kernel knows it (underscores).
    pub name: String,
    /// `depends=`: modules whose symbols it uses (hard dependencies).
    pub depends: Vec<String>,
    /// `softdep=` `pre:` names: loaded before it by modprobe when they exist.
    pub pre: Vec<String>,
    /// `softdep=` `post:` names: loaded after it by modprobe when they exist.
    pub post: Vec<String>,
    /// `alias=` patterns (fnmatch syntax, e.g. `pci:v00001AF4d00001000sv*`).
    pub aliases: Vec<String>,
    /// `vermagic=`: the kernel release and build options it was built for.
    pub vermagic: String,
}

/// How a module file is compressed (kbuild's `CONFIG_MODULE_COMPRESS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `.ko`
    None,
    /// `.ko.xz` (Debian 13's kernels)
    Xz,
    /// `.ko.zst`
    Zstd,
    /// `.ko.gz`
    Gzip,
}

/// The compression of a module file, from its name.
pub fn compression_of(path: &str) -> Option<Compression> {
    if path.ends_with(".ko") {
        Some(Compression::None)
    } else if path.ends_with(".ko.xz") {
        Some(Compression::Xz)
    } else if path.ends_with(".ko.zst") {
        Some(Compression::Zstd)
    } else if path.ends_with(".ko.gz") {
        Some(Compression::Gzip)
    } else {
        None
    }
}

/// The module name of a module file path (`kernel/fs/fat/vfat.ko.xz` -> `vfat`), with
/// `-` folded to `_` as the kernel does (`amd-uncore.ko` is module `amd_uncore`).
pub fn name_of_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    Some(normalize(stem))
}

/// Folds `-` to `_`: module names and aliases treat them as the same character.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads `.modinfo` from the module file `path` whose (possibly compressed) bytes are
/// `bytes`.
pub fn read(path: &str, bytes: &[u8]) -> Result<ModInfo> {
    let comp =
        compression_of(path).with_context(|| format!("{path}: not a kernel module file name"))?;
    let owned;
    let elf: &[u8] = if comp == Compression::None {
        bytes
    } else {
        owned = decompress(comp, bytes).with_context(|| format!("decompressing {path}"))?;
        &owned
    };
    let section = elf_section(elf, ".modinfo")
        .with_context(|| format!("{path}: reading the ELF section headers"))?
        .with_context(|| format!("{path}: no .modinfo section (not a kernel module?)"))?;
    let info = parse(section);
    if info.name.is_empty() {
        bail!("{path}: .modinfo has no name= entry");
    }
    Ok(info)
}

/// The whole decompressed module, at most `MODULE_LIMIT` bytes.
pub fn decompress(comp: Compression, bytes: &[u8]) -> Result<Vec<u8>> {
    let reader: Box<dyn Read + '_> = match comp {
        Compression::None => Box::new(bytes),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new(bytes)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(bytes)?),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(bytes)),
    };
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    reader.take(MODULE_LIMIT + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MODULE_LIMIT {
        bail!("more than {MODULE_LIMIT} bytes once decompressed");
    }
    Ok(out)
}

/// Parses the NUL-separated `key=value` strings of a `.modinfo` section.
pub fn parse(section: &[u8]) -> ModInfo {
    let mut m = ModInfo::default();
    for item in section.split(|&b| b == 0) {
        let Ok(s) = std::str::from_utf8(item) else {
            continue;
        };
        let Some((key, value)) = s.split_once('=') else {
            continue;
        };
        match key {
            "name" => m.name = normalize(value),
            "depends" => m
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "softdep" => parse_softdep(value, &mut m.pre, &mut m.post),
            "alias" => m.aliases.push(value.to_string()),
            "vermagic" => m.vermagic = value.trim().to_string(),
            _ => {}
        }
    }
    m
}

/// `pre: a b post: c` as modprobe.d(5) writes it (MODULE_SOFTDEP uses the same syntax).
fn parse_softdep(value: &str, pre: &mut Vec<String>, post: &mut Vec<String>) {
    let mut into_post = None;
    for tok in value.split_whitespace() {
        match tok {
            "pre:" => into_post = Some(false),
            "post:" => into_post = Some(true),
            name => match into_post {
                Some(false) => pre.push(name.to_string()),
                Some(true) => post.push(name.to_string()),
                None => {}
            },
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    let s = b
        .get(off..off + 2)
        .with_context(|| format!("truncated at offset {off}"))?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let s = b
        .get(off..off + 4)
        .with_context(|| format!("truncated at offset {off}"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64> {
    let s = b
        .get(off..off + 8)
        .with_context(|| format!("truncated at offset {off}"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

fn range(b: &[u8], off: u64, len: u64) -> Result<&[u8]> {
    let start = usize::try_from(off).context("offset does not fit in memory")?;
    let len = usize::try_from(len).context("size does not fit in memory")?;
    start
        .checked_add(len)
        .and_then(|end| b.get(start..end))
        .with_context(|| format!("range {off}+{len} is outside the {} byte file", b.len()))
}

/// The contents of the section called `name` of a little-endian ELF64 file, or None.
/// Every offset is bounds-checked: a corrupt or hostile file gives an error, not a panic.
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    // e_ident: magic, EI_CLASS = ELFCLASS64 (2), EI_DATA = ELFDATA2LSB (1).
    if elf.get(..4) != Some(b"\x7fELF") {
        bail!("not an ELF file");
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not a little-endian 64-bit ELF file (the only kind amd64 and arm64 modules are)");
    }
    let shoff = u64_at(elf, 0x28)?;
    let shentsize = u64::from(u16_at(elf, 0x3a)?);
    let shnum = u64::from(u16_at(elf, 0x3c)?);
    let shstrndx = u64::from(u16_at(elf, 0x3e)?);
    if shentsize < 64 {
        bail!("section header size {shentsize} is smaller than ELF64's 64 bytes");
    }
    if shnum == 0 || shstrndx >= shnum {
        // Extended section numbering (e_shnum = 0, SHN_XINDEX) is for files with more
        // than 65279 sections; no kernel module has that many.
        bail!("no usable section header table ({shnum} sections, names in {shstrndx})");
    }
    let table = range(elf, shoff, shnum * shentsize)?;
    let header = |i: u64| -> Result<(u32, u64, u64)> {
        let h = (i * shentsize) as usize;
        Ok((
            u32_at(table, h)?,
            u64_at(table, h + 24)?,
            u64_at(table, h + 32)?,
        ))
    };
    let (_, str_off, str_size) = header(shstrndx)?;
    let names = range(elf, str_off, str_size)?;
    for i in 0..shnum {
        let (name_off, off, size) = header(i)?;
        let Some(rest) = names.get(name_off as usize..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] == name.as_bytes() {
            return Ok(Some(range(elf, off, size)?));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 file with a `.modinfo` section: header, the section data, the
    /// section-name table, then three section headers (null, .modinfo, .shstrtab).
    pub(crate) fn tiny_module(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        let data_off = f.len() as u64;
        f.extend_from_slice(modinfo);
        let str_off = f.len() as u64;
        f.extend_from_slice(shstrtab);
        while f.len() % 8 != 0 {
            f.push(0);
        }
        let shoff = f.len() as u64;
        let mut sh = |name: u32, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, data_off, modinfo.len() as u64);
        sh(10, str_off, shstrtab.len() as u64);
        f[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn reads_modinfo_of_plain_and_xz_modules() {
        let info = b"alias=fs-ext9\0license=GPL\0softdep=pre: crc32c post: foo-bar\0depends=jbd2,mb-cache\0name=ext9\0vermagic=6.12.0 SMP mod_unload \0";
        let ko = tiny_module(info);
        let m = read("kernel/fs/ext9.ko", &ko).unwrap();
        assert_eq!(m.name, "ext9");
        assert_eq!(m.depends, ["jbd2", "mb_cache"]);
        assert_eq!(m.pre, ["crc32c"]);
        assert_eq!(m.post, ["foo-bar"]);
        assert_eq!(m.aliases, ["fs-ext9"]);
        assert_eq!(m.vermagic, "6.12.0 SMP mod_unload");
        let mut xz = Vec::new();
        std::io::Write::write_all(&mut liblzma::write::XzEncoder::new(&mut xz, 6), &ko).unwrap();
        assert_eq!(read("kernel/fs/ext9.ko.xz", &xz).unwrap(), m);
        let zst = zstd::encode_all(&ko[..], 3).unwrap();
        assert_eq!(read("kernel/fs/ext9.ko.zst", &zst).unwrap(), m);
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let ko = tiny_module(b"name=x\0");
        for cut in [0, 3, 20, 63, 64, 70, ko.len() - 1] {
            let r = read("x.ko", &ko[..cut]);
            assert!(r.is_err(), "truncated to {cut}");
        }
        let mut bad = ko.clone();
        bad[0x28] = 0xff; // section table far outside the file
        assert!(format!("{:#}", read("x.ko", &bad).unwrap_err()).contains("outside"));
        assert!(read("x.ko", &tiny_module(b"license=GPL\0")).is_err());
        assert!(read("x.txt", &ko).is_err());
    }

    #[test]
    fn names_of_paths() {
        assert_eq!(
            name_of_path("kernel/arch/x86/events/amd/amd-uncore.ko").as_deref(),
            Some("amd_uncore")
        );
        assert_eq!(
            name_of_path("kernel/fs/fat/vfat.ko.xz").as_deref(),
            Some("vfat")
        );
        assert_eq!(name_of_path("modules.dep"), None);
    }
}
