//! The kernel command line (`/proc/cmdline`): splits it like the kernel does (spaces
//! separate words; double quotes group) and extracts what slipway-init uses:
//! `roothash=` (systemd's convention), `init=`, `rootwait=`, `slipway.verity=`, and the
//! bare-metal modes: `slipway.install=1 slipway.media=<ID>` (the installer, see
//! `install`), `slipway.root=initrd` and `slipway.var=tmpfs` (a netboot root, see
//! `netboot`).

/// What to do when dm-verity finds a corrupted block after the root is mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCorruption {
    /// Panic the kernel: the console shows the verity error and the machine stops
    /// (Debian kernels do not reboot after a panic unless `panic=N` is given).
    Panic,
    /// Reboot (dm-verity's `restart_on_corruption`).
    Restart,
    /// Fail the read with EIO and go on (dm-verity's default).
    Eio,
}

/// The parts of the command line slipway-init acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmdline {
    /// The dm-verity root hash, lower-case hex.
    pub roothash: Option<String>,
    /// The program to exec on the real root.
    pub init: String,
    /// Behaviour on corruption once the root is mounted.
    pub on_corruption: OnCorruption,
    /// Seconds to wait for the root disk (`rootwait=N`: the kernel's own parameter,
    /// which the kernel ignores when an initramfs runs /init).
    pub rootwait: u64,
    /// `slipway.install=1`: run the installer instead of booting.
    pub install: bool,
    /// `slipway.media=<ID>`: the installer's medium has the iso9660 Volume Set
    /// Identifier `SLIPWAY-<ID>` (32 lower-case hex digits).
    pub media: Option<String>,
    /// `slipway.root=initrd`: root.img and verity.img are files in the initramfs.
    pub root_initrd: bool,
    /// `slipway.var=tmpfs`: /var is a tmpfs (diskless node).
    pub var_tmpfs: bool,
}

/// Seconds to wait for the root disk unless `rootwait=N` says otherwise.
pub const DEFAULT_ROOTWAIT: u64 = 30;

/// The words of a command line: separated by white space, `"` groups and is dropped.
pub fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Parses a command line; errors name the bad parameter. The last occurrence wins.
pub fn parse(s: &str) -> Result<Cmdline, String> {
    let mut c = Cmdline {
        roothash: None,
        init: "/sbin/init".into(),
        on_corruption: OnCorruption::Panic,
        rootwait: DEFAULT_ROOTWAIT,
        install: false,
        media: None,
        root_initrd: false,
        var_tmpfs: false,
    };
    for w in words(s) {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "roothash" => {
                let v = v.to_ascii_lowercase();
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "roothash={v}: expected 64 hex digits (a sha256 root hash)"
                    ));
                }
                c.roothash = Some(v);
            }
            "init" => {
                if !v.starts_with('/') {
                    return Err(format!("init={v}: expected an absolute path"));
                }
                c.init = v.into();
            }
            "rootwait" => {
                c.rootwait = v
                    .parse()
                    .map_err(|_| format!("rootwait={v}: expected seconds"))?;
            }
            "slipway.verity" => {
                c.on_corruption = match v {
                    "panic" => OnCorruption::Panic,
                    "restart" => OnCorruption::Restart,
                    "eio" => OnCorruption::Eio,
                    _ => {
                        return Err(format!(
                            "slipway.verity={v}: expected panic, restart or eio"
                        ))
                    }
                }
            }
            "slipway.install" => {
                c.install = match v {
                    "1" => true,
                    "0" => false,
                    _ => return Err(format!("slipway.install={v}: expected 1 or 0")),
                }
            }
            "slipway.media" => {
                if v.len() != 32
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(format!(
                        "slipway.media={v}: expected 32 lower-case hex digits (the medium's id)"
                    ));
                }
                c.media = Some(v.into());
            }
            "slipway.root" => {
                c.root_initrd = match v {
                    "initrd" => true,
                    "disk" => false,
                    _ => return Err(format!("slipway.root={v}: expected initrd or disk")),
                }
            }
            "slipway.var" => {
                c.var_tmpfs = match v {
                    "tmpfs" => true,
                    "disk" => false,
                    _ => return Err(format!("slipway.var={v}: expected tmpfs or disk")),
                }
            }
            _ => {}
        }
    }
    if c.install && c.media.is_none() {
        return Err(
            "slipway.install=1 without slipway.media=<ID> (the installer medium's id)".into(),
        );
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(
            words("  console=ttyS0  a=\"b c\" \"d\"e  x\n"),
            ["console=ttyS0", "a=b c", "de", "x"]
        );
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("\"\""), [""]);
    }

    #[test]
    fn extracts_roothash_init_and_verity_mode() {
        let h = "AB".repeat(32);
        let c = parse(&format!(
            "BOOT_IMAGE=/vmlinuz ro roothash={h} init=/usr/lib/systemd/systemd slipway.verity=eio"
        ))
        .unwrap();
        assert_eq!(c.roothash.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(c.init, "/usr/lib/systemd/systemd");
        assert_eq!(c.on_corruption, OnCorruption::Eio);
        let d = parse("console=ttyS0").unwrap();
        assert_eq!(d.roothash, None);
        assert_eq!(d.init, "/sbin/init");
        assert_eq!(d.on_corruption, OnCorruption::Panic);
        assert_eq!(d.rootwait, 30);
        assert_eq!(parse("rootwait rootwait=3").unwrap().rootwait, 3);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse("roothash=abc").unwrap_err().contains("64 hex digits"));
        let nonhex = format!("roothash={}", "g".repeat(64));
        assert!(parse(&nonhex).is_err());
        assert!(parse("init=sbin/init").unwrap_err().contains("absolute"));
        assert!(parse("slipway.verity=maybe").is_err());
        assert!(parse("rootwait=soon").unwrap_err().contains("seconds"));
        assert!(parse("slipway.install=1")
            .unwrap_err()
            .contains("slipway.media"));
        assert!(parse("slipway.media=ABC").is_err());
        assert!(parse("slipway.root=nfs").is_err());
        assert!(parse("slipway.var=ram").is_err());
    }

    #[test]
    fn extracts_the_bare_metal_modes() {
        let id = "0123456789abcdef0123456789abcdef";
        let c = parse(&format!(
            "slipway.install=1 slipway.media={id} console=ttyS0"
        ))
        .unwrap();
        assert!(c.install && !c.root_initrd && !c.var_tmpfs);
        assert_eq!(c.media.as_deref(), Some(id));
        let n = parse("slipway.root=initrd slipway.var=tmpfs").unwrap();
        assert!(n.root_initrd && n.var_tmpfs && !n.install);
    }
}
