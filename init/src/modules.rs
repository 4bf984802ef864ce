//! Loads the kernel modules the initramfs carries: `/etc/slipway/modules` lists one
//! uncompressed `.ko` per line, relative to /, in dependency order (the image builder
//! resolves the order with depmod's data), optionally followed by the paths of the
//! earlier modules it depends on. Blank lines and `#` comments are skipped.
//!
//! A module whose hardware is absent (ENODEV: `hv_vmbus` outside Hyper-V,
//! `crc32c-intel` on a CPU without SSE4.2) is skipped, and so is every module that
//! depends on a skipped one (`hv_storvsc` needs `hv_vmbus`'s symbols): one image boots
//! on several clouds.

use crate::console::{fail, At, Res};
use nix::kmod::{finit_module, ModuleInitFlags};
use std::collections::BTreeSet;
use std::fs::{self, File};

/// The list's path.
pub const LIST: &str = "/etc/slipway/modules";

/// One line of the list: the module's absolute path and its dependencies' paths.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub path: String,
    pub deps: Vec<String>,
}

fn absolute(p: &str) -> String {
    format!("/{}", p.trim_start_matches('/'))
}

/// The lines of a list.
pub fn parse(list: &str) -> Vec<Line> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace().map(absolute);
            Line {
                path: words.next().unwrap_or_default(),
                deps: words.collect(),
            }
        })
        .collect()
}

/// Loads every module of the list. A module already loaded (EEXIST) is fine; one whose
/// hardware is absent (ENODEV), or that needs such a module, is skipped with a note.
/// Returns how many were loaded.
pub fn load_all() -> Res<usize> {
    let list = match fs::read_to_string(LIST) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(fail("load-modules", LIST, e)),
    };
    let mut n = 0;
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    for line in parse(&list) {
        let path = line.path;
        if let Some(d) = line.deps.iter().find(|d| skipped.contains(*d)) {
            crate::console::info(&format!("{path}: needs {d}, which was skipped; skipped"));
            skipped.insert(path);
            continue;
        }
        let f = File::open(&path).at("load-modules", &path)?;
        match finit_module(&f, c"", ModuleInitFlags::empty()) {
            Ok(()) => n += 1,
            Err(nix::errno::Errno::EEXIST) => {}
            Err(nix::errno::Errno::ENODEV) => {
                crate::console::info(&format!("{path}: no such device here; skipped"));
                skipped.insert(path);
            }
            Err(e) => {
                return Err(fail(
                    "load-modules",
                    &path,
                    format!("finit_module: {e} (the kernel messages above say why)"),
                ))
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_list() {
        assert_eq!(
            parse("# deps first\nusr/lib/modules/6.12/a.ko\n\n /lib/b.ko usr/lib/modules/6.12/a.ko \n"),
            [
                Line {
                    path: "/usr/lib/modules/6.12/a.ko".into(),
                    deps: vec![]
                },
                Line {
                    path: "/lib/b.ko".into(),
                    deps: vec!["/usr/lib/modules/6.12/a.ko".into()]
                }
            ]
        );
    }
}
