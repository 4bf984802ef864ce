//! Loads the kernel modules the initramfs carries: `/etc/slipway/modules` lists one
//! uncompressed `.ko` per line, relative to /, in dependency order (the image builder
//! resolves the order with depmod's data). Blank lines and `#` comments are skipped.

use crate::console::{fail, At, Res};
use nix::kmod::{finit_module, ModuleInitFlags};
use std::fs::{self, File};

/// The list's path.
pub const LIST: &str = "/etc/slipway/modules";

/// The module paths of a list, absolute.
pub fn parse(list: &str) -> Vec<String> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| format!("/{}", l.trim_start_matches('/')))
        .collect()
}

/// Loads every module of the list. A module already loaded (EEXIST) is fine, and so is
/// one whose hardware is absent (ENODEV: e.g. `crc32c-intel` on a CPU without SSE4.2,
/// which the generic implementation then serves). Returns how many were loaded.
pub fn load_all() -> Res<usize> {
    let list = match fs::read_to_string(LIST) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(fail("load-modules", LIST, e)),
    };
    let mut n = 0;
    for path in parse(&list) {
        let f = File::open(&path).at("load-modules", &path)?;
        match finit_module(&f, c"", ModuleInitFlags::empty()) {
            Ok(()) => n += 1,
            Err(nix::errno::Errno::EEXIST) => {}
            Err(nix::errno::Errno::ENODEV) => {
                crate::console::info(&format!("{path}: no such device here; skipped"))
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
    #[test]
    fn parses_the_list() {
        assert_eq!(
            super::parse("# deps first\nusr/lib/modules/6.12/a.ko\n\n /lib/b.ko \n"),
            ["/usr/lib/modules/6.12/a.ko", "/lib/b.ko"]
        );
    }
}
