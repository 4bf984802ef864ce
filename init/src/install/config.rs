//! The installer's config: consumes the embed area `/slipway/config.area` of the medium
//! (header `SLIPWAY-EMBED-V1\n`, a u32 little-endian length at offset 17, the config
//! bytes at offset 21, zeros after) and produces the provisioning config text and its
//! `[install]` table, checked: `target = "/dev/disk/by-id/NAME"` or
//! `target-serial = "SERIAL"`, `wipe` (default false), `after` (`reboot` or `poweroff`,
//! the default). The rest of the config is the agent's (`slipway-agent check` validates
//! it when the config is embedded); the installer copies it whole.

/// The area's first bytes.
pub const HEADER: &[u8] = b"SLIPWAY-EMBED-V1\n";
/// The area's size.
pub const AREA_SIZE: usize = 65536;
/// Where the config starts.
const DATA: usize = HEADER.len() + 4;
/// The prefix of a by-id target.
pub const BY_ID: &str = "/dev/disk/by-id/";
/// The prefix of a by-path target.
pub const BY_PATH: &str = "/dev/disk/by-path/";

/// The config bytes in an embed area (empty when none was embedded).
pub fn from_area(area: &[u8]) -> Result<&[u8], String> {
    if area.len() != AREA_SIZE {
        return Err(format!(
            "{} bytes (expected exactly {AREA_SIZE})",
            area.len()
        ));
    }
    if !area.starts_with(HEADER) {
        return Err("no SLIPWAY-EMBED-V1 header at its start".into());
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&area[HEADER.len()..DATA]);
    let len = u32::from_le_bytes(n) as usize;
    if len > AREA_SIZE - DATA {
        return Err(format!(
            "says the config is {len} bytes; at most {} fit",
            AREA_SIZE - DATA
        ));
    }
    Ok(&area[DATA..DATA + len])
}

/// Which disk to install onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `/dev/disk/by-id/` name (without that prefix), computed as udev would.
    ById(String),
    /// A `/dev/disk/by-path/` name (without that prefix), computed as udev would.
    ByPath(String),
    /// A disk serial, as the disk reports it.
    Serial(String),
}

/// What to do once installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Reboot,
    Poweroff,
}

/// The `[install]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The target; `None`: list the disks and stop.
    pub target: Option<Target>,
    /// Write over a disk that holds a partition table or file system.
    pub wipe: bool,
    /// Reboot or power off at the end.
    pub after: After,
}

fn string(t: &toml::Table, key: &str) -> Result<Option<String>, String> {
    match t.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(v) => Err(format!(
            "install.{key}: expected a non-empty string, found {}",
            v.type_str()
        )),
    }
}

/// Parses the config text and checks its `[install]` table (absent: no target).
pub fn parse(text: &str) -> Result<Install, String> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        format!("not TOML: {}", e.message().trim_end().replace('\n', "; "))
    })?;
    let mut out = Install {
        target: None,
        wipe: false,
        after: After::Poweroff,
    };
    let Some(v) = doc.get("install") else {
        return Ok(out);
    };
    let t = v
        .as_table()
        .ok_or_else(|| format!("install: expected a table, found {}", v.type_str()))?;
    if let Some(k) = t
        .keys()
        .find(|k| !["target", "target-serial", "wipe", "after"].contains(&k.as_str()))
    {
        return Err(format!(
            "install.{k}: unknown key (expected target, target-serial, wipe, after)"
        ));
    }
    out.target = match (string(t, "target")?, string(t, "target-serial")?) {
        (Some(_), Some(_)) => {
            return Err("install: has both target and target-serial (expected one)".into())
        }
        (Some(p), None) => {
            let name = |prefix: &str| {
                p.strip_prefix(prefix)
                    .filter(|n| !n.is_empty() && !n.contains('/'))
                    .map(str::to_string)
            };
            match (name(BY_ID), name(BY_PATH)) {
                (Some(n), _) => Some(Target::ById(n)),
                (_, Some(n)) => Some(Target::ByPath(n)),
                _ => return Err(format!(
                    "install.target: {p:?} is not a {BY_ID}NAME or {BY_PATH}NAME path (kernel names such as /dev/sda change between boots)"
                )),
            }
        }
        (None, Some(s)) => Some(Target::Serial(s)),
        (None, None) => None,
    };
    out.wipe = match t.get("wipe") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(v) => {
            return Err(format!(
                "install.wipe: expected true or false, found {}",
                v.type_str()
            ))
        }
    };
    out.after = match string(t, "after")?.as_deref() {
        None | Some("poweroff") => After::Poweroff,
        Some("reboot") => After::Reboot,
        Some(o) => {
            return Err(format!(
                "install.after: {o:?} (expected reboot or poweroff)"
            ))
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(config: &[u8]) -> Vec<u8> {
        let mut a = vec![0u8; AREA_SIZE];
        a[..HEADER.len()].copy_from_slice(HEADER);
        a[17..21].copy_from_slice(&(config.len() as u32).to_le_bytes());
        a[21..21 + config.len()].copy_from_slice(config);
        a
    }

    #[test]
    fn reads_the_embed_area() {
        assert_eq!(
            from_area(&area(b"schema-version = 1\n")).unwrap(),
            b"schema-version = 1\n"
        );
        assert_eq!(from_area(&area(b"")).unwrap(), b"");
        let mut bad = area(b"x");
        bad[0] = b's';
        assert!(from_area(&bad).unwrap_err().contains("header"));
        bad = area(b"x");
        bad[17..21].copy_from_slice(&70000u32.to_le_bytes());
        assert!(from_area(&bad).unwrap_err().contains("70000"));
        assert!(from_area(&[0u8; 100]).is_err());
    }

    #[test]
    fn parses_the_install_table() {
        let c = parse("schema-version = 1\n[install]\ntarget = \"/dev/disk/by-id/virtio-DISK1\"\nwipe = true\nafter = \"reboot\"\n").unwrap();
        assert_eq!(
            c,
            Install {
                target: Some(Target::ById("virtio-DISK1".into())),
                wipe: true,
                after: After::Reboot
            }
        );
        let c = parse("[install]\ntarget = \"/dev/disk/by-path/pci-0000:00:04.0\"\n").unwrap();
        assert_eq!(c.target, Some(Target::ByPath("pci-0000:00:04.0".into())));
        let c = parse("[install]\ntarget-serial = \"S1\"\n").unwrap();
        assert_eq!(
            (c.target, c.wipe, c.after),
            (Some(Target::Serial("S1".into())), false, After::Poweroff)
        );
        assert_eq!(parse("schema-version = 1\n").unwrap().target, None);
        assert_eq!(parse("").unwrap().target, None);
    }

    #[test]
    fn refuses_bad_install_tables() {
        for (text, want) in [
            ("[install]\ntarget = \"/dev/sda\"", "install.target"),
            (
                "[install]\ntarget = \"/dev/disk/by-id/a\"\ntarget-serial = \"b\"",
                "both",
            ),
            ("[install]\nwipe = \"yes\"", "install.wipe"),
            ("[install]\nafter = \"halt\"", "install.after"),
            ("[install]\ndisk = \"x\"", "install.disk: unknown key"),
            ("install = 3", "expected a table"),
            ("[install", "not TOML"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
