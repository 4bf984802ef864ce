//! Applet links for a multi-call binary such as busybox (`[applets]` in a recipe).
//!
//! Consumes the tree after the recipe's path globs and the `[applets]` table; produces a
//! symlink for every applet path the binary lists with `--list-full`, except paths that
//! already exist in the tree (a package's, an overlay's or an entry's file is never
//! replaced) and paths the table skips. Debian's `busybox-static` ships only the binary;
//! its maintainer scripts create no links, so without this a busybox image has no `sh`.
//!
//! The binary is the target architecture's: it is copied out of the tree into a private
//! temporary directory and run directly when the recipe's architecture is the host's
//! (`dpkg --print-architecture`), else under `qemu-ARCH-static` (Debian: qemu-user-static).
//! Only the binary leaves the tree, so it must be statically linked; a dynamically linked
//! one is refused before it is run.

use crate::recipe::Recipe;
use crate::tool::{self, Tool};
use crate::tree::{merged_usr, normalize, Entry, Kind, Tree};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// What the applet stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// The binary, as a tree path.
    pub binary: String,
    /// Distinct applet paths the binary listed (merged-/usr form).
    pub listed: usize,
    /// Links created (tree paths).
    pub created: Vec<String>,
    /// Listed paths left alone because something was already there.
    pub present: Vec<String>,
    /// Listed paths the recipe skips.
    pub skipped: Vec<String>,
}

impl Linked {
    /// One line for the build report.
    pub fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                let shown: Vec<String> = v.iter().map(|p| format!("/{p}")).collect();
                format!(" ({})", shown.join(", "))
            }
        };
        format!(
            "applets: /{} --list-full lists {} paths: {} links created, {} already present{}, {} skipped{}",
            self.binary,
            self.listed,
            self.created.len(),
            self.present.len(),
            list(&self.present),
            self.skipped.len(),
            list(&self.skipped),
        )
    }
}

/// Adds the applet links `r` asks for; None when the recipe has no `[applets]` table.
pub fn add_links(tree: &mut Tree, r: &Recipe, epoch: u64) -> Result<Option<Linked>> {
    let Some(spec) = &r.applets else {
        return Ok(None);
    };
    let at = spec.at.sub("binary");
    let wanted = merged_usr(&normalize(&spec.binary).map_err(|e| at.wrap(e))?);
    let binary = tree.resolve(&wanted).ok_or_else(|| {
        at.err(format!(
            "{} is not in the image (is its package included, or did paths.drop remove it? keep it with paths.keep)",
            spec.binary
        ))
    })?;
    let bytes = match &tree.get(&binary).map(|e| &e.kind) {
        Some(Kind::File(c)) => c.as_slice().to_vec(),
        _ => {
            return Err(at.err(format!(
                "{} is not a regular file in the image",
                spec.binary
            )))
        }
    };
    if is_dynamic(&bytes).map_err(|e| at.wrap(e.context(spec.binary.clone())))? {
        return Err(at.err(format!(
            "{} is dynamically linked; slipway runs it outside the image, so it must be a static binary (e.g. busybox-static)",
            spec.binary
        )));
    }
    let listing = list_applets(&bytes, &binary, &r.debian.architecture)
        .with_context(|| format!("{}: listing the applets of {}", spec.at, spec.binary))?;
    let skip: Vec<String> = spec
        .skip
        .iter()
        .map(|s| normalize(s).map(|p| merged_usr(&p)))
        .collect::<Result<_>>()
        .map_err(|e| spec.at.sub("skip").wrap(e))?;
    let linked = link(tree, &binary, &listing, &skip, epoch).map_err(|e| {
        spec.at
            .wrap(e.context(format!("linking the applets of {}", spec.binary)))
    })?;
    if linked.listed == 0 {
        return Err(at.err(format!(
            "{} --list-full printed no applet paths",
            spec.binary
        )));
    }
    Ok(Some(linked))
}

/// Creates the links for `listing` (one applet path per line, as `--list-full` prints
/// them) to the tree file `binary`.
pub fn link(
    tree: &mut Tree,
    binary: &str,
    listing: &str,
    skip: &[String],
    epoch: u64,
) -> Result<Linked> {
    let mut paths = BTreeSet::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let p = normalize(line).with_context(|| format!("applet path {line:?}"))?;
        if p.is_empty() {
            bail!("applet path {line:?} names the root directory");
        }
        paths.insert(merged_usr(&p));
    }
    let package = tree.get(binary).and_then(|e| e.package.clone());
    let mut out = Linked {
        binary: binary.to_string(),
        listed: paths.len(),
        created: Vec::new(),
        present: Vec::new(),
        skipped: Vec::new(),
    };
    for p in paths {
        if skip.contains(&p) {
            out.skipped.push(p);
        } else if tree.get(&p).is_some() {
            out.present.push(p);
        } else {
            let mut e = Entry::symlink(&relative_target(&p, binary), epoch);
            e.package = package.clone();
            tree.put(&p, e)
                .with_context(|| format!("adding the link /{p}"))?;
            out.created.push(p);
        }
    }
    Ok(out)
}

/// The target of a relative symlink at `link` pointing to `target` (both tree paths):
/// `usr/sbin/ip` -> `usr/bin/busybox` gives `../bin/busybox`.
pub fn relative_target(link: &str, target: &str) -> String {
    let dir: Vec<&str> = link.split('/').collect();
    let dir = &dir[..dir.len() - 1];
    let to: Vec<&str> = target.split('/').collect();
    let common = dir
        .iter()
        .zip(&to[..to.len() - 1])
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; dir.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

/// True when the ELF file `bytes` asks for a program interpreter (PT_INTERP), i.e. is
/// dynamically linked. An error when it is not an ELF file.
pub fn is_dynamic(bytes: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        bail!("not an ELF executable");
    }
    let big = match bytes[5] {
        1 => false,
        2 => true,
        d => bail!("ELF header: unknown data encoding {d}"),
    };
    let uint = |off: usize, len: usize| -> Result<u64> {
        let b = bytes
            .get(off..off + len)
            .context("ELF header: truncated file")?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if big { b[i] } else { b[len - 1 - i] };
            v = (v << 8) | u64::from(byte);
        }
        Ok(v)
    };
    // (e_phoff, e_phentsize, e_phnum) offsets for ELFCLASS32 and ELFCLASS64.
    let (phoff, phentsize, phnum) = match bytes[4] {
        1 => (uint(0x1c, 4)?, uint(0x2a, 2)?, uint(0x2c, 2)?),
        2 => (uint(0x20, 8)?, uint(0x36, 2)?, uint(0x38, 2)?),
        c => bail!("ELF header: unknown class {c}"),
    };
    for i in 0..phnum {
        let off = phoff
            .checked_add(i * phentsize)
            .and_then(|o| usize::try_from(o).ok())
            .context("ELF header: program header offset overflows")?;
        if uint(off, 4)? == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The qemu-user binary that runs programs of Debian architecture `arch`.
pub fn qemu_for(arch: &str) -> Result<String> {
    let cpu = match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "armhf" | "armel" => "arm",
        "i386" => "i386",
        "ppc64el" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64el" => "mips64el",
        other => bail!("no qemu-user emulator known for the Debian architecture {other}"),
    };
    Ok(format!("qemu-{cpu}-static"))
}

/// The host's Debian architecture.
pub fn host_architecture() -> Result<String> {
    let out = Tool::new("finding the host's Debian architecture", "dpkg")
        .arg("--print-architecture")
        .run()?;
    Ok(out.stdout.trim().to_string())
}

/// Runs the binary `bytes` (tree path `binary`) with `--list-full` and returns stdout.
fn list_applets(bytes: &[u8], binary: &str, arch: &str) -> Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("slipway-applets-")
        .tempdir()
        .context("creating a temporary directory")?;
    // busybox picks the applet from argv[0]: keep the binary's own name.
    let name = binary.rsplit('/').next().unwrap_or(binary);
    let exe = dir.path().join(name);
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&exe)
            .with_context(|| format!("writing {}", exe.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", exe.display()))?;
    }
    let what = format!("listing the applets of /{binary}");
    let host = host_architecture()?;
    let tool = if host == arch {
        Tool::new(what, &exe)
    } else {
        let qemu = qemu_for(arch)?;
        if tool::which(&qemu).is_none() {
            bail!(
                "{qemu} not found (Debian: qemu-user-static): it runs the {arch} binary /{binary} on this {host} host"
            );
        }
        Tool::new(what, qemu).arg(&exe)
    };
    Ok(tool.arg("--list-full").run()?.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_targets() {
        assert_eq!(relative_target("usr/bin/ls", "usr/bin/busybox"), "busybox");
        assert_eq!(
            relative_target("usr/sbin/ip", "usr/bin/busybox"),
            "../bin/busybox"
        );
        assert_eq!(
            relative_target("linuxrc", "usr/bin/busybox"),
            "usr/bin/busybox"
        );
        assert_eq!(
            relative_target("usr/lib/x/y", "usr/bin/busybox"),
            "../../bin/busybox"
        );
    }

    #[test]
    fn links_only_missing_paths_in_merged_usr_form() {
        let mut t = Tree::new();
        let mut bb = Entry::file(b"bb".to_vec(), 0o755, 1);
        bb.package = Some("busybox-static".into());
        t.put("usr/bin/busybox", bb).unwrap();
        t.put("usr/bin/env", Entry::file(b"real env".to_vec(), 0o755, 1))
            .unwrap();
        let listing = "bin/busybox\nbin/sh\nusr/bin/env\nsbin/ip\nusr/sbin/ip\nlinuxrc\n\n";
        let l = link(&mut t, "usr/bin/busybox", listing, &["linuxrc".into()], 7).unwrap();
        assert_eq!(
            l.listed, 5,
            "bin/busybox, bin/sh, usr/bin/env, sbin/ip, linuxrc"
        );
        assert_eq!(l.created, ["usr/bin/sh", "usr/sbin/ip"]);
        assert_eq!(l.present, ["usr/bin/busybox", "usr/bin/env"]);
        assert_eq!(l.skipped, ["linuxrc"]);
        match &t.get("usr/sbin/ip").unwrap().kind {
            Kind::Symlink(s) => assert_eq!(s, "../bin/busybox"),
            k => panic!("{k:?}"),
        }
        assert_eq!(
            t.get("usr/bin/sh").unwrap().package.as_deref(),
            Some("busybox-static")
        );
        match &t.get("usr/bin/env").unwrap().kind {
            Kind::File(c) => assert_eq!(c.as_slice(), b"real env"),
            k => panic!("package file replaced: {k:?}"),
        }
        assert!(t.get("linuxrc").is_none());
        assert!(l.summary().contains("2 links created, 2 already present"));
        assert!(link(&mut t, "usr/bin/busybox", "../etc/x\n", &[], 7).is_err());
    }

    fn elf(class: u8, big: bool, interp: bool) -> Vec<u8> {
        // A minimal ELF header followed by two program headers.
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = class;
        b[5] = if big { 2 } else { 1 };
        let put = |b: &mut Vec<u8>, off: usize, len: usize, v: u64| {
            for i in 0..len {
                let byte = ((v >> (8 * i)) & 0xff) as u8;
                let at = if big { off + len - 1 - i } else { off + i };
                b[at] = byte;
            }
        };
        let (phoff, entsize) = if class == 2 { (0x40, 56) } else { (0x34, 32) };
        if class == 2 {
            put(&mut b, 0x20, 8, phoff);
            put(&mut b, 0x36, 2, entsize);
            put(&mut b, 0x38, 2, 2);
        } else {
            put(&mut b, 0x1c, 4, phoff);
            put(&mut b, 0x2a, 2, entsize);
            put(&mut b, 0x2c, 2, 2);
        }
        put(&mut b, phoff as usize, 4, 1); // PT_LOAD
        let second = phoff as usize + entsize as usize;
        put(&mut b, second, 4, if interp { 3 } else { 4 }); // PT_INTERP or PT_NOTE
        b
    }

    #[test]
    fn elf_interpreter_detection() {
        for class in [1, 2] {
            for big in [false, true] {
                assert!(is_dynamic(&elf(class, big, true)).unwrap());
                assert!(!is_dynamic(&elf(class, big, false)).unwrap());
            }
        }
        assert!(is_dynamic(b"#!/bin/sh\nexit 0\n").is_err());
        let mut truncated = elf(2, false, true);
        truncated.truncate(0x50);
        assert!(is_dynamic(&truncated).is_err());
    }

    #[test]
    fn qemu_names() {
        assert_eq!(qemu_for("arm64").unwrap(), "qemu-aarch64-static");
        assert_eq!(qemu_for("armhf").unwrap(), "qemu-arm-static");
        assert_eq!(qemu_for("ppc64el").unwrap(), "qemu-ppc64le-static");
        assert!(qemu_for("m68k").is_err());
    }

    #[test]
    fn a_missing_binary_is_bad_input_with_file_key_and_line() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("r.toml");
        std::fs::write(
            &path,
            "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[applets]\nbinary = \"/bin/busybox\"\n",
        )
        .unwrap();
        let r = Recipe::load(&path).unwrap();
        let e = add_links(&mut Tree::new(), &r, 1).unwrap_err();
        let m = format!("{e:#}");
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
        assert!(
            m.contains("r.toml: applets.binary: /bin/busybox is not in the image"),
            "{m}"
        );
        assert!(m.contains("(line 5)"), "{m}");
    }
}
