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
use crate::io::stage_cache::{KeyBuilder, StageCache, StoredFile};
use crate::tool::Tool;
use crate::tree::{Entry, Kind, Tree};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
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
/// trixie userland is checked against one on bookworm by tests/it/squashfs.rs.
pub const HOST_DEPENDENT: &[&str] = &["modules.weakdep"];

/// The stage cache's kind for module indexes, and its format version.
const CACHE_KIND: &str = "depmod";
const CACHE_VERSION: u32 = 1;

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

/// One file of depmod's staging directory: its path there, its bytes, and whether it
/// is a program.
struct Staged<'t> {
    rel: String,
    bytes: &'t [u8],
    exec: bool,
}

/// Everything depmod reads: the staging directory's files (the kept modules, the
/// kernel package's inputs, the image's depmod.d files, and the image's kmod with its
/// loader and libraries), or the host's depmod when the image has none.
struct Inputs<'t> {
    files: Vec<Staged<'t>>,
    host_depmod: bool,
}

/// The image's kmod, its loader and the libraries it loads (staged as `kmod` and
/// `kmod-lib/NAME`), or None when the host's depmod is to be used: for an image without
/// kmod or of another architecture than the host's.
fn kmod_files<'t>(tree: &'t Tree, version: &str) -> Result<Option<Vec<Staged<'t>>>> {
    let multiarch = "usr/lib/x86_64-linux-gnu";
    let kmod = resolve(tree, "usr/bin/kmod");
    let (true, Some(kmod)) = (std::env::consts::ARCH == "x86_64", kmod) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for name in KMOD_LIBS {
        let path = format!("{multiarch}/{name}");
        match resolve(tree, &path).and_then(|p| file_bytes(tree, &p)) {
            Some(bytes) => out.push(Staged {
                rel: format!("kmod-lib/{name}"),
                bytes,
                exec: *name == "ld-linux-x86-64.so.2",
            }),
            // kmod loads its compression and crypto libraries only when present (trixie's
            // dlopens them); the loader, libc and libkmod it cannot do without.
            None if !matches!(*name, "ld-linux-x86-64.so.2" | "libc.so.6" | "libkmod.so.2") => {}
            None => bail!(
                "regenerating the module index of kernel {version}: the image has \
                 /usr/bin/kmod but not /{path}, which it needs"
            ),
        }
    }
    out.push(Staged {
        rel: "kmod".into(),
        bytes: file_bytes(tree, &kmod).unwrap_or_default(),
        exec: true,
    });
    Ok(Some(out))
}

/// The depmod that writes the index: the image's own (its kmod run through its own
/// dynamic loader and libraries, staged in `staging` by [`kmod_files`]), so the index's
/// bytes depend on the lock and not on the host's kmod, whose versions write different
/// binary indexes (tests/it/squashfs.rs builds in a trixie userland and compares). The
/// host's depmod is the fallback for an image without kmod.
fn depmod_of(host: bool, staging: &Path, version: &str) -> Result<Tool> {
    let what = format!("regenerating the module index of kernel {version}");
    if host {
        crate::tool::require(&["depmod"])?;
        return Ok(Tool::new(what, "depmod"));
    }
    let lib = staging.join("kmod-lib");
    Ok(Tool::new(what, lib.join("ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(&lib)
        .arg("--argv0")
        .arg("depmod")
        .arg(staging.join("kmod")))
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

/// What depmod reads for `plan`, in the layout of its staging directory: `depmod -b
/// root` reads `root/lib/modules/KVER` (kmod's default module directory), `-C depmod.d`
/// the image's configuration (etc/ overrides usr/lib/ file by file, as depmod.d(5)
/// says), and nothing of the host's.
fn inputs<'t>(tree: &'t Tree, kernel: &KernelInfo, plan: &ModulePlan) -> Result<Inputs<'t>> {
    let mdir = format!("root/lib/modules/{}", kernel.version);
    let mut files = Vec::new();
    for m in &plan.keep {
        let bytes = file_bytes(tree, &m.path)
            .with_context(|| format!("{}: not a file in the tree", m.path))?;
        files.push(Staged {
            rel: format!("{mdir}/{}", m.rel),
            bytes,
            exec: false,
        });
    }
    for name in INPUTS {
        if let Some(bytes) = file_bytes(tree, &format!("{}/{name}", kernel.modules_dir)) {
            let rel = format!("{mdir}/{name}");
            files.push(Staged {
                rel,
                bytes,
                exec: false,
            });
        }
    }
    for dir in ["usr/lib/depmod.d", "etc/depmod.d"] {
        for (path, e) in tree.under(dir) {
            if let (Kind::File(c), Some(name)) = (&e.kind, path.rsplit('/').next()) {
                if name.ends_with(".conf") && !path[dir.len() + 1..].contains('/') {
                    let rel = format!("depmod.d/{name}");
                    files.push(Staged {
                        rel,
                        bytes: c.as_slice(),
                        exec: false,
                    });
                }
            }
        }
    }
    let kmod = kmod_files(tree, &kernel.version)?;
    let host_depmod = kmod.is_none();
    files.extend(kmod.into_iter().flatten());
    Ok(Inputs { files, host_depmod })
}

/// The stage cache's key of the index depmod writes from `inputs`.
fn key(inputs: &Inputs, version: &str) -> Result<String> {
    let mut k = KeyBuilder::new(CACHE_KIND, CACHE_VERSION);
    k.text("slipway", crate::io::stage_cache::self_digest()?)
        .text("kernel", version);
    for f in &inputs.files {
        k.text("path", &f.rel)
            .bytes("exec", &[u8::from(f.exec)])
            .bytes("content", &Sha256::digest(f.bytes));
    }
    if inputs.host_depmod {
        crate::io::stage_cache::tool_into(&mut k, "depmod")?;
    }
    Ok(k.finish())
}

/// Runs depmod for the kept modules of `plan` and returns the index files it wrote
/// (file name -> bytes), sorted by name.
pub fn index_files(
    tree: &Tree,
    kernel: &KernelInfo,
    plan: &ModulePlan,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let inputs = inputs(tree, kernel, plan)?;
    let (_staging, files) = run(&inputs, &kernel.version, |_, _| Ok(()))?;
    Ok(files)
}

/// [`index_files`] through the stage cache `stages`: the index of an earlier build with
/// the same inputs when there is one, else depmod's, stored for the next build. A
/// damaged entry is reported in `warnings` and written again.
pub fn index_files_cached(
    stages: &StageCache,
    tree: &Tree,
    kernel: &KernelInfo,
    plan: &ModulePlan,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let inputs = inputs(tree, kernel, plan)?;
    let key = key(&inputs, &kernel.version)?;
    if let Some(e) = stages.get(CACHE_KIND, &key, warnings) {
        let mut files = BTreeMap::new();
        for f in &e.files {
            let p = e.path(&f.name);
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            files.insert(f.name.clone(), bytes);
        }
        return Ok(files);
    }
    let store = |mdir: &Path, files: &BTreeMap<String, Vec<u8>>| {
        let stored: Vec<StoredFile> = files
            .keys()
            .map(|n| StoredFile::new(n, mdir.join(n)))
            .collect();
        if let Err(e) = stages.put(CACHE_KIND, &key, &stored, serde_json::Value::Null) {
            warnings.push(format!("stage cache: the module index is not kept: {e:#}"));
        }
        Ok(())
    };
    let (_staging, files) = run(&inputs, &kernel.version, store)?;
    Ok(files)
}

/// Stages `inputs`, runs depmod on them, and returns the index files it wrote, after
/// `then` has seen them in place (the modules directory, and the files by name). The
/// staging directory lives as long as the returned guard.
fn run(
    inputs: &Inputs,
    version: &str,
    mut then: impl FnMut(&Path, &BTreeMap<String, Vec<u8>>) -> Result<()>,
) -> Result<(tempfile::TempDir, BTreeMap<String, Vec<u8>>)> {
    let staging = tempfile::Builder::new()
        .prefix("slipway-depmod-")
        .tempdir()
        .context("creating a staging directory for depmod")?;
    for f in &inputs.files {
        let path = staging.path().join(&f.rel);
        write(&path, f.bytes)?;
        if f.exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", path.display()))?;
        }
    }
    let conf = staging.path().join("depmod.d");
    std::fs::create_dir_all(&conf).with_context(|| format!("creating {}", conf.display()))?;
    let base = staging.path().join("root");
    let mdir = base.join("lib/modules").join(version);
    // No `-e -F System.map`: Debian's kernel packages ship a placeholder System.map
    // (the real one is in the -dbg package), against which every symbol is unknown.
    // The closure follows each module's depends=, which modpost computed from the
    // symbols; the boot test checks the kernel's own verdict.
    let out = depmod_of(inputs.host_depmod, staging.path(), version)?
        .arg("-b")
        .arg(&base)
        .arg("-C")
        .arg(&conf)
        .arg(version)
        .run()?;
    if !out.stderr.trim().is_empty() {
        bail!(
            "depmod for kernel {version} warned (an inconsistent module set?):\n{}",
            out.stderr.trim_end()
        );
    }
    let files = read_index(&mdir, version)?;
    then(&mdir, &files)?;
    Ok((staging, files))
}

/// The index files depmod wrote into `mdir`, but those that only some depmods write.
fn read_index(mdir: &Path, version: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(mdir).with_context(|| format!("reading {}", mdir.display()))? {
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
            "depmod wrote no modules.dep for kernel {version} (in {})",
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
