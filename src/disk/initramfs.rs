//! The initramfs of a host image: consumes the assembled image tree, its module plan and
//! the static `slipway-init` binary; produces a zstd-compressed newc cpio holding `/init`,
//! the modules the boot needs (decompressed: `finit_module` is given plain `.ko` files)
//! and `/etc/slipway/modules`, their load order. Nothing else: no shell, no udev.
//! What slipway-init does with it: docs/initramfs.md.

use crate::kernel::ModulePlan;
use crate::tree::{Entry, Kind, Tree};
use crate::writers::cpio::{self, Compression, CpioOptions};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The module features the initramfs loads: disks, the verified root, /var.
pub const BOOT_FEATURES: &[&str] = &["storage", "root", "var"];

/// Modules the initramfs loads too when the recipe's module plan has them (bare metal,
/// docs/bare-metal.md): efivarfs (the boot-disk scope reads `LoaderDevicePartUUID`),
/// isofs and the CD-ROM, SATA and USB drivers (the installer's medium), loop (a
/// network-booted root from the initrd). A recipe without them boots as before.
pub const BOOT_IF_PLANNED: &[&str] = &[
    "efivarfs",
    "isofs",
    "loop",
    "ahci",
    "sr_mod",
    "xhci_pci",
    "usb_storage",
    "uas",
];

/// The initramfs's module requests for `plan`: [`BOOT_FEATURES`] and those of
/// [`BOOT_IF_PLANNED`] the plan has.
pub fn boot_features(plan: &ModulePlan) -> Vec<&'static str> {
    let mut f = BOOT_FEATURES.to_vec();
    f.extend(
        BOOT_IF_PLANNED
            .iter()
            .filter(|m| plan.get(m).is_some() || plan.is_builtin_hit(m)),
    );
    f
}

/// The list slipway-init reads.
pub const MODULE_LIST: &str = "etc/slipway/modules";

/// The program slipway-init's binary is looked up as, and its environment override.
pub const INIT_NAME: &str = "slipway-init";

/// A built initramfs.
pub struct Initramfs {
    /// The compressed archive.
    pub bytes: Vec<u8>,
    /// The modules it loads, in order (module names).
    pub modules: Vec<String>,
    /// Uncompressed size of the modules.
    pub module_bytes: u64,
}

/// Decompresses a module file by its suffix (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
fn decompress_module(path: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() * 3);
    let res = if path.ends_with(".xz") {
        liblzma::read::XzDecoder::new(data).read_to_end(&mut out)
    } else if path.ends_with(".zst") {
        zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out))
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(data).read_to_end(&mut out)
    } else {
        return Ok(data.to_vec());
    };
    res.with_context(|| format!("decompressing the kernel module /{path}"))?;
    Ok(out)
}

/// The tree path of a module without its compression suffix.
fn plain_path(path: &str) -> &str {
    for s in [".xz", ".zst", ".gz"] {
        if let Some(p) = path.strip_suffix(s) {
            return p;
        }
    }
    path
}

/// Builds the initramfs: `init` (the binary's bytes), the modules `features` need (from
/// `plan`, read from `tree`), in load order; every mtime `epoch`.
pub fn build(
    tree: &Tree,
    plan: &ModulePlan,
    features: &[&str],
    init: &[u8],
    epoch: u64,
) -> Result<Initramfs> {
    let names: Vec<String> = features.iter().map(|s| s.to_string()).collect();
    let order = plan
        .load_order(&names)
        .context("ordering the initramfs modules")?;
    let mut t = Tree::new();
    let mut list = String::from("# load order, written by slipway (dependencies first)\n");
    let mut modules = Vec::new();
    let mut module_bytes = 0;
    let mut placed: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
    for m in order {
        let e = tree
            .get(&m.path)
            .with_context(|| format!("the kernel module /{} is not in the tree", m.path))?;
        let Kind::File(c) = &e.kind else {
            bail!("the kernel module /{} is not a regular file", m.path);
        };
        let ko = decompress_module(&m.path, c.as_slice())?;
        let dest = plain_path(&m.path);
        module_bytes += ko.len() as u64;
        t.ensure_parents(dest, epoch)?;
        t.put(dest, Entry::file(ko, 0o644, epoch))?;
        list.push_str(dest);
        // Its hard dependencies, so slipway-init skips it when one found no device.
        for d in &m.deps {
            if let Some(p) = placed.get(d.as_str()) {
                list.push(' ');
                list.push_str(p);
            }
        }
        list.push('\n');
        placed.insert(&m.name, dest.to_string());
        modules.push(m.name.clone());
    }
    t.ensure_parents(MODULE_LIST, epoch)?;
    t.put(MODULE_LIST, Entry::file(list.into_bytes(), 0o644, epoch))?;
    t.put("init", Entry::file(init.to_vec(), 0o755, epoch))?;
    let mut console = Entry::file(vec![], 0o600, epoch);
    console.kind = Kind::CharDevice(5, 1);
    t.ensure_parents("dev/console", epoch)?;
    t.put("dev/console", console)?;
    for d in ["proc", "sys", "run", "sysroot"] {
        t.put(d, Entry::dir(0o755, epoch))?;
    }
    let w = cpio::write_compressed_to(&t, CpioOptions { epoch }, Compression::Zstd, Vec::new())
        .context("writing the initramfs")?;
    Ok(Initramfs {
        bytes: w,
        modules,
        module_bytes,
    })
}

/// [`build`], through a cache in `dir` keyed by everything that goes into the archive
/// (the init binary, the epoch, the features, and each module's path, dependencies and
/// content digest in load order), so a rebuild with the same kernel and init skips the
/// decompression and the zstd -19 pass. A damaged entry is rebuilt.
pub fn build_cached(
    tree: &Tree,
    plan: &ModulePlan,
    features: &[&str],
    init: &[u8],
    epoch: u64,
    dir: &Path,
) -> Result<Initramfs> {
    use sha2::{Digest, Sha256};
    let names: Vec<String> = features.iter().map(|s| s.to_string()).collect();
    let mut h = Sha256::new();
    h.update(b"slipway-initramfs-v1\0");
    h.update(Sha256::digest(init));
    h.update(epoch.to_le_bytes());
    for m in plan.load_order(&names)? {
        h.update(m.name.as_bytes());
        h.update(b"\0");
        h.update(m.path.as_bytes());
        h.update(b"\0");
        for d in &m.deps {
            h.update(d.as_bytes());
            h.update(b"\0");
        }
        if let Some(Kind::File(c)) = tree.get(&m.path).map(|e| &e.kind) {
            h.update(Sha256::digest(c.as_slice()));
        }
    }
    let key = crate::io::hash::hex(&h.finalize());
    let archive = dir.join(format!("{key}.cpio.zst"));
    let list = dir.join(format!("{key}.modules"));
    if let (Ok(bytes), Ok(names)) = (std::fs::read(&archive), std::fs::read_to_string(&list)) {
        let mut lines = names.lines();
        let module_bytes = lines.next().and_then(|l| l.parse().ok());
        // The archive is checked against the digest recorded beside it.
        let digest = lines.next().unwrap_or_default().to_string();
        if let Some(module_bytes) = module_bytes {
            if crate::io::hash::sha256_hex(&bytes) == digest {
                return Ok(Initramfs {
                    bytes,
                    modules: lines.map(str::to_string).collect(),
                    module_bytes,
                });
            }
        }
    }
    let built = build(tree, plan, features, init, epoch)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::io::atomic::write(&archive, &built.bytes)?;
    let mut text = format!(
        "{}\n{}\n",
        built.module_bytes,
        crate::io::hash::sha256_hex(&built.bytes)
    );
    for m in &built.modules {
        text.push_str(m);
        text.push('\n');
    }
    crate::io::atomic::write(&list, text.as_bytes())?;
    Ok(built)
}

/// Finds the static slipway-init binary: `$SLIPWAY_INIT`; next to the running
/// executable; `target/x86_64-unknown-linux-gnu/init/` under the source tree. A binary
/// with an ELF interpreter (not static) is refused: nothing in the initramfs could run it.
pub fn find_init() -> Result<PathBuf> {
    crate::tool::bundled_binary(INIT_NAME, "SLIPWAY_INIT")
}

/// Reads `path` and checks that it is a static ELF executable.
pub fn read_static(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    crate::tool::check_static_elf(path, &bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decompresses_by_suffix() {
        let plain = b"\x7fELF module".repeat(100);
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&plain[..], 6)
            .read_to_end(&mut xz)
            .unwrap();
        assert_eq!(decompress_module("a/b.ko.xz", &xz).unwrap(), plain);
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        assert_eq!(decompress_module("a/b.ko.zst", &zst).unwrap(), plain);
        assert_eq!(decompress_module("a/b.ko", &plain).unwrap(), plain);
        assert!(decompress_module("a/b.ko.xz", b"not xz").is_err());
        assert_eq!(plain_path("x/y.ko.zst"), "x/y.ko");
    }
}
