//! The syntax of every recipe string that lands in a system file, checked while the
//! recipe loads so that no value can add a line or a field to the file it is written
//! into. Each check returns what was expected, for the error message.
//!
//! - passwd(5) and group(5): `:`-separated fields, one entry per line;
//! - sources.list(5): whitespace-separated words, one source per line;
//! - systemd.unit(5) names; os-release(5) values; update-alternatives(1) names;
//! - the kernel command line (one line, inside the UKI).

/// Upper bound of any size a recipe names (16 TiB).
pub const MAX_SIZE: u64 = 16 << 40;
/// Upper bound of `disk.esp-size` (4 GiB: far above any UKI, and FAT32's sweet spot).
pub const MAX_ESP: u64 = 4 << 30;
/// Upper bound of `disk.var-size`, the /var partition as built (it grows to fill the
/// disk at first boot, so the built size only needs room for what the image puts there).
pub const MAX_VAR: u64 = 256 << 30;
/// Lower bound of `disk.var-size`: the smallest /var the disk stage makes (ext4 with a
/// journal).
pub const MIN_VAR: u64 = 8 << 20;
/// Lower bound of `disk.esp-size`: the smallest ESP (FAT with room for its tables).
pub const MIN_ESP: u64 = 2 << 20;

type Expect = Result<(), String>;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A user or group name (useradd(8), Debian's NAME_REGEX relaxed to upper case and
/// dots): letters, digits, `_ - .`, not starting with `-`, an optional trailing `$`,
/// at most 32 characters.
pub fn account_name(s: &str) -> Expect {
    let body = s.strip_suffix('$').unwrap_or(s);
    let ok = !body.is_empty()
        && s.len() <= 32
        && !body.starts_with('-')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && !body.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(()).ok_or_else(|| {
        "is not an account name (letters, digits, _ - . ; not starting with -, not all digits, at most 32 characters)".into()
    })
}

/// A passwd(5) GECOS field: no `:` and no control characters (a newline would start
/// another entry), at most 256 characters.
pub fn gecos(s: &str) -> Expect {
    if s.contains(':') || has_control(s) || s.len() > 256 {
        return Err(
            "is not a GECOS field (no ':', newline or control characters; at most 256 characters)"
                .into(),
        );
    }
    Ok(())
}

/// A passwd(5) home directory or shell: an absolute path without `:`, whitespace or
/// control characters.
pub fn passwd_path(s: &str) -> Expect {
    let ok = s.starts_with('/')
        && s.len() <= 4096
        && !s.contains(':')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(()).ok_or_else(|| {
        "is not a passwd path (absolute, no ':', whitespace or control characters)".into()
    })
}

/// An apt suite (sources.list(5) word): letters, digits, `. _ + -` and `/`.
pub fn suite(s: &str) -> Expect {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-/".contains(&b))
        && !s.starts_with(['/', '-']);
    ok.then_some(()).ok_or_else(|| {
        "is not an apt suite (letters, digits, . _ + - /; no spaces or newlines)".into()
    })
}

/// An archive component ("main", "non-free-firmware").
pub fn component(s: &str) -> Expect {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._+-/".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    ok.then_some(()).ok_or_else(|| {
        "is not an archive component (lower-case letters, digits, . _ + - /, like \"main\")".into()
    })
}

/// A mirror URI for sources.list(5): http, https or file, no whitespace or control
/// characters (a word of its own: it cannot add options or lines).
pub fn mirror_uri(s: &str) -> Expect {
    let ok = ["http://", "https://", "file:/"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.len() <= 2048
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(()).ok_or_else(|| {
        "is not a mirror URI (http://, https:// or file:/, no spaces or newlines)".into()
    })
}

/// A systemd unit file name (systemd.unit(5)): letters, digits and `:-_.@\\`, one of the
/// unit-type suffixes, at most 255 characters.
pub fn unit_name(u: &str) -> Expect {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".timer",
        ".path",
        ".mount",
        ".automount",
        ".swap",
        ".slice",
        ".scope",
        ".device",
    ];
    let ok = SUFFIXES.iter().any(|s| u.len() > s.len() && u.ends_with(s))
        && u.len() <= 255
        && !u.starts_with('.')
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        "is not a unit name (like \"getty@.service\" or \"ldconfig.service\")".into()
    })
}

/// An update-alternatives(1) link group name: a file name in /etc/alternatives.
pub fn alternative_name(s: &str) -> Expect {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        "is not an alternatives link group name (letters, digits, . _ + -, like \"iptables\")"
            .into()
    })
}

/// An os-release(5) IMAGE_VERSION: letters, digits, `. _ - ~ +`, at most 64 characters.
pub fn os_release_value(s: &str) -> Expect {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-~+".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        "is not an os-release value (letters, digits, . _ - ~ +; no spaces or quotes; at most 64 characters)".into()
    })
}

/// A one-line free text (descriptions, labels): no control characters.
pub fn one_line(s: &str) -> Expect {
    (!has_control(s) && s.len() <= 4096)
        .then_some(())
        .ok_or_else(|| "must be one line without control characters".into())
}

/// One kernel command-line argument: printable, no quotes or control characters.
pub fn cmdline_arg(s: &str) -> Expect {
    let ok = !s.is_empty() && s.len() <= 1024 && !s.chars().any(|c| c.is_control() || c == '"');
    ok.then_some(()).ok_or_else(|| {
        "is not a kernel command-line argument (no quotes, newlines or control characters)".into()
    })
}

/// An OCI port ("8080", "8080/tcp", "53/udp").
pub fn port(p: &str) -> Expect {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok = num.parse::<u16>().is_ok_and(|n| n != 0) && ["tcp", "udp", "sctp"].contains(&proto);
    ok.then_some(())
        .ok_or_else(|| "is not a port (expected e.g. \"8080/tcp\")".into())
}

/// An environment variable name for an OCI config: no `=`, no control characters.
pub fn env_name(s: &str) -> Expect {
    let ok = !s.is_empty() && !s.contains('=') && !has_control(s) && !s.contains(' ');
    ok.then_some(()).ok_or_else(|| {
        "is not an environment variable name (no '=', spaces or control characters)".into()
    })
}

/// An OCI tag (distribution-spec): `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn oci_tag(s: &str) -> Expect {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(())
        .ok_or_else(|| "is not an OCI tag (letters, digits, . _ -; at most 128)".into())
}

/// An OCI repository name, optionally with a registry (`registry.example:5000/a/b`):
/// lower-case path components of letters, digits and `. _ -` between `/`.
pub fn oci_repository(s: &str) -> Expect {
    let (host, path) = match s.split_once('/') {
        Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => (Some(h), p),
        _ => (None, s),
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
    });
    let path_ok = !path.is_empty()
        && s.len() <= 255
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    (host_ok && path_ok).then_some(()).ok_or_else(|| {
        "is not an OCI repository name (lower-case components of letters, digits, . _ - between /, like \"slipway/python\")".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injections_are_refused() {
        assert!(gecos("x\nbackdoor::0:0::/:/bin/sh").is_err());
        assert!(gecos("a:b").is_err());
        assert!(gecos("Nonroot User,,,").is_ok());
        assert!(suite("trixie\ndeb [trusted=yes] http://evil/ x main").is_err());
        assert!(suite("trixie-security").is_ok());
        assert!(component("main contrib").is_err());
        assert!(component("non-free-firmware").is_ok());
        assert!(passwd_path("/home/x:y").is_err());
        assert!(passwd_path("/usr/sbin/nologin").is_ok());
        assert!(account_name("nonroot").is_ok());
        assert!(account_name("_apt").is_ok());
        assert!(account_name("a:b").is_err());
        assert!(account_name("123").is_err());
        assert!(unit_name("a.service\nb.service").is_err());
        assert!(unit_name("getty@tty1.service").is_ok());
        assert!(alternative_name("../x").is_err());
        assert!(alternative_name("iptables").is_ok());
        assert!(os_release_value("1\nID=evil").is_err());
        assert!(os_release_value("1.2~rc1").is_ok());
        assert!(mirror_uri("http://deb.debian.org/debian").is_ok());
        assert!(mirror_uri("http://x/ y").is_err());
        assert!(cmdline_arg("console=ttyS0").is_ok());
        assert!(cmdline_arg("a\nb").is_err());
        assert!(port("8080/tcp").is_ok() && port("0").is_err() && port("80/icmp").is_err());
        assert!(env_name("A=B").is_err() && env_name("PATH").is_ok());
        assert!(oci_tag("v1.2").is_ok() && oci_tag("a:b").is_err() && oci_tag("-x").is_err());
        assert!(oci_repository("slipway/python").is_ok());
        assert!(oci_repository("localhost:5000/a/b").is_ok());
        assert!(oci_repository("A/b").is_err() && oci_repository("a//b").is_err());
        assert!(oci_repository("a b").is_err() && oci_repository("a\nb").is_err());
    }
}
