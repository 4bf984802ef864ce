//! Regenerates a pruned kernel's module index files with the image's own `depmod` (the
//! host's only when the image has no kmod). Consumes
//! the tree and a [`ModulePlan`]; produces `modules.dep`, `modules.alias`,
//! `modules.softdep`, `modules.symbols`, `modules.devname`, `modules.builtin.bin` and the
//! other files depmod(8) writes, as tree entries.
//!
//! depmod runs on a staging directory holding only the kept modules plus
//! `modules.builtin`, `modules.builtin.modinfo` and `modules.order`, with a private
//! configuration directory (the image's own depmod.d files), so nothing of the host's
//! `/lib/modules` or `/etc/depmod.d` leaks in. The kmod binary index formats
//! (`*.bin`) are depmod's to write; slipway does not reimplement them.

use super::closure::ModulePlan;
use super::KernelInfo;
use crate::tool::Tool;
use crate::tree::{Entry, Kind, Tree};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Files of the modules directory that come from the kernel package and are inputs to
/// depmod, not outputs.
pub const INPUTS: &[&str] = &[
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
];

/// Index files that only some depmods write, left out so that the image's bytes do not
/// depend on the host's kmod: kmod 33 and later (trixie) write `modules.weakdep`,
/// bookworm's kmod 30 does not. Weak dependencies only guide initramfs generators
/// (modprobe never loads them), and slipway builds its initramfs itself; a build in a
/// trixie userland is checked against one on bookworm by tests/squashfs.rs.
pub const HOST_DEPENDENT: &[&str] = &["modules.weakdep"];

/// True for the files depmod writes (`modules.*` other than the inputs).
pub fn is_index_file(file_name: &str) -> bool {
    file_name.starts_with("modules.") && !INPUTS.contains(&file_name)
}

fn file_bytes<'t>(tree: &'t Tree, path: &str) -> Option<&'t [u8]> {
    match tree.get(path).map(|e| &e.kind) {
        Some(Kind::File(c)) => Some(c.as_slice()),
        _ => None,
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The image's own shared libraries depmod (kmod) loads, in its multiarch directory.
const KMOD_LIBS: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libkmod.so.2",
    "liblzma.so.5",
    "libzstd.so.1",
    "libcrypto.so.3",
    "libz.so.1",
];

/// The depmod that writes the index: the image's own (its kmod run through its own
/// dynamic loader and libraries, staged in `staging`), so the index's bytes depend on the
/// lock and not on the host's kmod, whose versions write different binary indexes
/// (tests/squashfs.rs builds in a trixie userland and compares). The host's depmod is the
/// fallback for an image without kmod or of another architecture than the host's.
fn depmod_of(tree: &Tree, staging: &Path, version: &str) -> Result<Tool> {
    let what = format!("regenerating the module index of kernel {version}");
    let multiarch = "usr/lib/x86_64-linux-gnu";
    let kmod = resolve(tree, "usr/bin/kmod");
    if std::env::consts::ARCH != "x86_64" || kmod.is_none() {
        crate::tool::require(&["depmod"])?;
        return Ok(Tool::new(what, "depmod"));
    }
    let lib = staging.join("kmod-lib");
    for name in KMOD_LIBS {
        let path = format!("{multiarch}/{name}");
        match resolve(tree, &path).and_then(|p| file_bytes(tree, &p)) {
            Some(bytes) => write(&lib.join(name), bytes)?,
            // kmod loads its compression and crypto libraries only when present (trixie's
            // dlopens them); the loader, libc and libkmod it cannot do without.
            None if !matches!(*name, "ld-linux-x86-64.so.2" | "libc.so.6" | "libkmod.so.2") => {}
            None => bail!("{what}: the image has /usr/bin/kmod but not /{path}, which it needs"),
        }
    }
    let bin = staging.join("kmod");
    let bytes = kmod.and_then(|p| file_bytes(tree, &p)).unwrap_or_default();
    write(&bin, bytes)?;
    let loader = lib.join("ld-linux-x86-64.so.2");
    for p in [&bin, &loader] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", p.display()))?;
    }
    Ok(Tool::new(what, loader)
        .arg("--library-path")
        .arg(&lib)
        .arg("--argv0")
        .arg("depmod")
        .arg(&bin))
}

/// `path` with its symbolic links followed inside `tree` (at most 16), if it ends at a
/// file.
fn resolve(tree: &Tree, path: &str) -> Option<String> {
    let mut p = path.trim_start_matches('/').to_string();
    for _ in 0..16 {
        match &tree.get(&p)?.kind {
            Kind::File(_) => return Some(p),
            Kind::Symlink(target) => {
                let joined = if target.starts_with('/') {
                    target.clone()
                } else {
                    let dir = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    format!("{dir}/{target}")
                };
                p = crate::tree::normalize(&joined).ok()?;
            }
            _ => return None,
        }
    }
    None
}

/// Runs depmod for the kept modules of `plan` and returns the index files it wrote
/// (file name -> bytes), sorted by name.
pub fn index_files(
    tree: &Tree,
    kernel: &KernelInfo,
    plan: &ModulePlan,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let staging = tempfile::Builder::new()
        .prefix("slipway-depmod-")
        .tempdir()
        .context("creating a staging directory for depmod")?;
    let base = staging.path().join("root");
    // depmod -b BASE reads BASE/lib/modules/KVER (kmod's default module directory).
    let mdir = base.join("lib/modules").join(&kernel.version);
    for m in &plan.keep {
        let bytes = file_bytes(tree, &m.path)
            .with_context(|| format!("{}: not a file in the tree", m.path))?;
        write(&mdir.join(&m.rel), bytes)?;
    }
    for name in INPUTS {
        let path = format!("{}/{name}", kernel.modules_dir);
        if let Some(bytes) = file_bytes(tree, &path) {
            write(&mdir.join(name), bytes)?;
        }
    }
    // The image's depmod configuration (etc/ overrides usr/lib/ file by file, as
    // depmod.d(5) says), and nothing of the host's.
    let conf = staging.path().join("depmod.d");
    std::fs::create_dir_all(&conf).with_context(|| format!("creating {}", conf.display()))?;
    for dir in ["usr/lib/depmod.d", "etc/depmod.d"] {
        for (path, e) in tree.under(dir) {
            if let (Kind::File(c), Some(name)) = (&e.kind, path.rsplit('/').next()) {
                if name.ends_with(".conf") && !path[dir.len() + 1..].contains('/') {
                    write(&conf.join(name), c.as_slice())?;
                }
            }
        }
    }
    // No `-e -F System.map`: Debian's kernel packages ship a placeholder System.map
    // (the real one is in the -dbg package), against which every symbol is unknown.
    // The closure follows each module's depends=, which modpost computed from the
    // symbols; the boot test checks the kernel's own verdict.
    let out = depmod_of(tree, staging.path(), &kernel.version)?
        .arg("-b")
        .arg(&base)
        .arg("-C")
        .arg(&conf)
        .arg(&kernel.version)
        .run()?;
    if !out.stderr.trim().is_empty() {
        bail!(
            "depmod for kernel {} warned (an inconsistent module set?):\n{}",
            kernel.version,
            out.stderr.trim_end()
        );
    }
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(&mdir).with_context(|| format!("reading {}", mdir.display()))? {
        let e = e.with_context(|| format!("reading {}", mdir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_index_file(&name)
            && !HOST_DEPENDENT.contains(&name.as_str())
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            let bytes = std::fs::read(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            files.insert(name, bytes);
        }
    }
    if !files.contains_key("modules.dep") {
        bail!(
            "depmod wrote no modules.dep for kernel {} (in {})",
            kernel.version,
            mdir.display()
        );
    }
    Ok(files)
}

/// Replaces the index files of `kernel` in `tree` with `files`, mode 0644, root-owned,
/// mtime `epoch`. Index files depmod did not write this time are removed.
pub fn install(
    tree: &mut Tree,
    kernel: &KernelInfo,
    files: &BTreeMap<String, Vec<u8>>,
    epoch: u64,
) -> Result<()> {
    let stale: Vec<String> = tree
        .under(&kernel.modules_dir)
        .filter(|(p, e)| {
            !e.is_dir()
                && p[kernel.modules_dir.len() + 1..].split_once('/').is_none()
                && p.rsplit('/').next().is_some_and(is_index_file)
        })
        .map(|(p, _)| p.clone())
        .collect();
    for p in stale {
        tree.remove(&p);
    }
    for (name, bytes) in files {
        tree.put(
            &format!("{}/{name}", kernel.modules_dir),
            Entry::file(bytes.clone(), 0o644, epoch),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_not_index_files() {
        assert!(is_index_file("modules.dep"));
        assert!(is_index_file("modules.alias.bin"));
        assert!(!is_index_file("modules.builtin"));
        assert!(!is_index_file("modules.order"));
        assert!(!is_index_file("kernel"));
    }
}
