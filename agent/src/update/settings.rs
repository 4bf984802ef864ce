//! The provisioning config's `[update]` section: the raw keys as written in, checked
//! [`Settings`] out, each error naming its key (without the `update.` prefix, which
//! `config.rs` adds). Nothing here touches the host, so `slipway-agent check` runs it on
//! a build machine.
//!
//! ```toml
//! [update]
//! repository = "registry.example:5000/fleet/containerd-host"   # HOST[:PORT]/NAME
//! tag = "stable"              # a channel (or digest = "sha256:...", a pinned payload)
//! interval = "6h"             # how often the timer checks (s, m, h, d; at least 1m)
//! health-timeout = "10m"      # a new version's boot reaches its health gate in this time
//! reboot = "window"           # "now", "window" or "never" (the default)
//! window = "02:00-04:00"      # UTC, with reboot = "window"
//! insecure = false            # plain HTTP (a registry on a private network or loopback)
//! ca-file = "/etc/ssl/registry-ca.pem"   # trust only this CA (https)
//! username = "node"           # with password: basic auth, and the token service's
//! password = "..."
//! ```

use crate::http::Url;
use serde::Deserialize;
use std::time::Duration;

/// `[update]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUpdate {
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
    interval: Option<String>,
    health_timeout: Option<String>,
    reboot: Option<String>,
    window: Option<String>,
    #[serde(default)]
    insecure: bool,
    ca_file: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Which payload the node follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// A tag that moves (a channel: `stable`, `beta`).
    Tag(String),
    /// One payload, by its manifest's digest (`sha256:<hex>`).
    Digest(String),
}

impl Follow {
    /// The manifest reference: the tag or the digest.
    pub fn reference(&self) -> &str {
        match self {
            Follow::Tag(t) => t,
            Follow::Digest(d) => d,
        }
    }
}

/// When a node that installed an update restarts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// Right after the install.
    Now,
    /// Once the clock (UTC) is inside the window: minutes after midnight, start and end
    /// (the end may be past midnight: `22:00-02:00`).
    Window(u16, u16),
    /// Never by itself: `slipway-agent update --reboot` does it.
    Never,
}

/// A checked `[update]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The registry's base URL (`https://HOST[:PORT]`, or `http://` when insecure or on
    /// loopback).
    pub registry: Url,
    /// The repository name in it (`fleet/containerd-host`).
    pub name: String,
    /// The tag or digest followed.
    pub follow: Follow,
    /// Between two checks of the timer.
    pub interval: Duration,
    /// How long a trial boot of a new version may take to reach `boot-complete.target`
    /// before the health gate reboots it ([`super::gate`]).
    pub health_timeout: Duration,
    /// When to restart into an installed update.
    pub reboot: Reboot,
    /// `ca-file` and the credentials (the journal shipper's checks).
    pub access: crate::shipper::Access,
}

impl Settings {
    /// `HOST[:PORT]/NAME:TAG` or `...@sha256:...`, for messages.
    pub fn describe(&self) -> String {
        let host = match self.registry.port {
            80 | 443 => self.registry.host.clone(),
            p => format!("{}:{p}", self.registry.host),
        };
        match &self.follow {
            Follow::Tag(t) => format!("{host}/{}:{t}", self.name),
            Follow::Digest(d) => format!("{host}/{}@{d}", self.name),
        }
    }
}

/// The interval when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// The health gate's time when none is given.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Checks `[update]`; the error is (key, what was expected).
pub fn check(raw: RawUpdate) -> Result<Settings, (String, String)> {
    let e = |k: &str, m: String| (k.to_string(), m);
    let (host, name) = split_repository(&raw.repository).map_err(|m| e("repository", m))?;
    let loopback =
        host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
    let scheme = if raw.insecure || loopback {
        "http"
    } else {
        "https"
    };
    let registry = Url::parse(&format!("{scheme}://{host}/"))
        .map_err(|m| e("repository", format!("{:?}: {m}", raw.repository)))?;
    let follow = match (raw.tag, raw.digest) {
        (Some(_), Some(_)) => {
            return Err(e(
                "digest",
                "is set with tag (expected one: a channel tag, or a pinned digest)".into(),
            ))
        }
        (None, None) => return Err(e(
            "tag",
            "is missing (expected a channel tag such as \"stable\", or digest = \"sha256:...\")"
                .into(),
        )),
        (Some(t), None) => Follow::Tag(check_tag(&t).map_err(|m| e("tag", m))?),
        (None, Some(d)) => Follow::Digest(check_digest(&d).map_err(|m| e("digest", m))?),
    };
    let interval = match raw.interval {
        None => DEFAULT_INTERVAL,
        Some(i) => parse_interval(&i).map_err(|m| e("interval", m))?,
    };
    let health_timeout = match raw.health_timeout {
        None => DEFAULT_HEALTH_TIMEOUT,
        Some(i) => parse_interval(&i).map_err(|m| e("health-timeout", m))?,
    };
    let reboot = match raw.reboot.as_deref().unwrap_or("never") {
        "never" | "now" if raw.window.is_some() => {
            return Err(e("window", "is set, but reboot is not \"window\"".into()))
        }
        "never" => Reboot::Never,
        "now" => Reboot::Now,
        "window" => {
            let w = raw.window.ok_or_else(|| {
                e(
                    "window",
                    "is missing (reboot = \"window\" needs e.g. window = \"02:00-04:00\", UTC)"
                        .into(),
                )
            })?;
            let (a, b) = parse_window(&w).map_err(|m| e("window", m))?;
            Reboot::Window(a, b)
        }
        other => {
            return Err(e(
                "reboot",
                format!("{other:?} (expected \"now\", \"window\" or \"never\")"),
            ))
        }
    };
    let keys = crate::shipper::AccessKeys {
        ca_file: raw.ca_file,
        username: raw.username,
        password: raw.password,
        api_key: None,
    };
    let access = crate::shipper::Access::check(&registry, keys).map_err(|(k, m)| {
        // The shipper's "url" is this section's repository (and its scheme, insecure).
        let k = if k == "url" { "insecure" } else { k };
        e(k, m)
    })?;
    Ok(Settings {
        registry,
        name,
        follow,
        interval,
        health_timeout,
        reboot,
        access,
    })
}

/// `HOST[:PORT]/NAME` into the host (with port) and the repository name, checked as the
/// OCI distribution spec names repositories (lower-case path components).
fn split_repository(s: &str) -> Result<(String, String), String> {
    let expected =
        "expected HOST[:PORT]/NAME, e.g. \"registry.example:5000/fleet/containerd-host\"";
    if s.contains("://") {
        return Err(format!(
            "{s:?} has a scheme ({expected}; plain HTTP is insecure = true)"
        ));
    }
    let Some((host, name)) = s.split_once('/') else {
        return Err(format!("{s:?} has no repository name ({expected})"));
    };
    if s.contains(['@', ' '])
        || name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
    {
        return Err(format!(
            "{s:?} is not a repository (the tag or digest are keys of their own; {expected})"
        ));
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if name.len() > 255 || !name.split('/').all(component_ok) {
        return Err(format!(
            "{name:?} is not a repository name (lower-case letters, digits, '.', '_', '-' between '/'; {expected})"
        ));
    }
    if host.is_empty() {
        return Err(format!("{s:?} has no registry host ({expected})"));
    }
    Ok((host.to_string(), name.to_string()))
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(t: &str) -> Result<String, String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(t.to_string())
    } else {
        Err(format!(
            "{t:?} is not a tag (letters, digits, '.', '_', '-'; at most 128; e.g. \"stable\")"
        ))
    }
}

/// `sha256:` and 64 lower-case hex digits.
pub fn check_digest(d: &str) -> Result<String, String> {
    let ok = d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(d.to_string())
    } else {
        Err(format!(
            "{d:?} is not a digest (expected sha256: and 64 lower-case hex digits)"
        ))
    }
}

/// `90s`, `30m`, `6h`, `1d`: at least a minute, at most 30 days.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{s:?} is not an interval (expected a number and s, m, h or d: \"30m\", \"6h\"; at least 1m, at most 30d)")
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let num = &s[..s.len() - unit.len_utf8()];
    let n: u64 = num
        .parse()
        .ok()
        .filter(|_| !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86400),
        _ => None,
    }
    .ok_or_else(bad)?;
    if !(60..=30 * 86400).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// `HH:MM-HH:MM` (UTC) into minutes after midnight; the two ends differ.
fn parse_window(s: &str) -> Result<(u16, u16), String> {
    let bad =
        || format!("{s:?} is not a window (expected \"HH:MM-HH:MM\" in UTC, e.g. \"02:00-04:00\")");
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
    if a == b {
        return Err(format!(
            "{s:?} is an empty window (the two ends are the same)"
        ));
    }
    Ok((a, b))
}

/// Whether `minute` (after midnight, UTC) is inside the window `a`-`b`.
pub fn in_window(minute: u16, a: u16, b: u16) -> bool {
    if a < b {
        (a..b).contains(&minute)
    } else {
        minute >= a || minute < b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        let raw: RawUpdate = toml::from_str(text).map_err(|e| e.to_string())?;
        check(raw).map_err(|(k, m)| format!("{k}: {m}"))
    }

    #[test]
    fn a_channel_and_a_pinned_digest() {
        let s = parse("repository = \"reg.example:5000/fleet/host\"\ntag = \"stable\"\nreboot = \"window\"\nwindow = \"22:30-02:00\"\n").unwrap();
        assert_eq!(s.registry.to_string(), "https://reg.example:5000/");
        assert_eq!(s.name, "fleet/host");
        assert_eq!(s.follow, Follow::Tag("stable".into()));
        assert_eq!(s.reboot, Reboot::Window(22 * 60 + 30, 120));
        assert_eq!(s.interval, DEFAULT_INTERVAL);
        assert_eq!(s.describe(), "reg.example:5000/fleet/host:stable");
        let d = format!("sha256:{}", "a".repeat(64));
        let s = parse(&format!("repository = \"127.0.0.1:5000/h\"\ndigest = \"{d}\"\ninterval = \"30m\"\nreboot = \"now\"\n")).unwrap();
        assert_eq!(s.registry.to_string(), "http://127.0.0.1:5000/");
        assert_eq!(s.follow, Follow::Digest(d));
        assert_eq!(s.interval, Duration::from_secs(1800));
        assert_eq!(s.reboot, Reboot::Now);
    }

    #[test]
    fn each_error_names_its_key() {
        let r = "repository = \"reg.example/h\"\n";
        for (text, want) in [
            (
                "repository = \"https://reg/h\"\ntag = \"a\"",
                "repository: \"https://reg/h\" has a scheme",
            ),
            (
                "repository = \"reg\"\ntag = \"a\"",
                "repository: \"reg\" has no repository name",
            ),
            (
                "repository = \"reg/Fleet\"\ntag = \"a\"",
                "repository: \"Fleet\" is not a repository name",
            ),
            (
                "repository = \"reg/h:stable\"\ntag = \"a\"",
                "repository: \"reg/h:stable\" is not a repository",
            ),
            (r, "tag: is missing"),
            (
                &format!("{r}tag = \"a\"\ndigest = \"sha256:{}\"", "a".repeat(64)),
                "digest: is set with tag",
            ),
            (&format!("{r}tag = \"-a\""), "tag: \"-a\" is not a tag"),
            (
                &format!("{r}digest = \"sha256:AB\""),
                "digest: \"sha256:AB\" is not a digest",
            ),
            (
                &format!("{r}tag = \"a\"\ninterval = \"10s\""),
                "interval: \"10s\" is not an interval",
            ),
            (
                &format!("{r}tag = \"a\"\ninterval = \"6x\""),
                "interval: \"6x\"",
            ),
            (
                &format!("{r}tag = \"a\"\nreboot = \"later\""),
                "reboot: \"later\" (expected",
            ),
            (
                &format!("{r}tag = \"a\"\nreboot = \"window\""),
                "window: is missing",
            ),
            (
                &format!("{r}tag = \"a\"\nreboot = \"window\"\nwindow = \"2:00-4:00\""),
                "window: \"2:00-4:00\" is not a window",
            ),
            (
                &format!("{r}tag = \"a\"\nreboot = \"window\"\nwindow = \"02:00-02:00\""),
                "window: \"02:00-02:00\" is an empty window",
            ),
            (
                &format!("{r}tag = \"a\"\nwindow = \"02:00-04:00\""),
                "window: is set, but reboot",
            ),
            (
                &format!("{r}tag = \"a\"\ninsecure = true\nusername = \"u\"\npassword = \"p\""),
                "insecure: http://reg.example:80/ is http://",
            ),
            (
                &format!("{r}tag = \"a\"\nusername = \"u\""),
                "password: is missing",
            ),
            (
                &format!("{r}tag = \"a\"\nca-file = \"ca.pem\""),
                "ca-file: \"ca.pem\" is not an absolute path",
            ),
        ] {
            let got = parse(text).unwrap_err();
            assert!(
                got.starts_with(want),
                "{text:?}:\n got  {got}\n want {want}..."
            );
        }
    }

    #[test]
    fn windows_may_cross_midnight() {
        assert!(in_window(23 * 60, 22 * 60, 120));
        assert!(in_window(60, 22 * 60, 120));
        assert!(!in_window(180, 22 * 60, 120));
        assert!(in_window(150, 120, 240));
        assert!(!in_window(240, 120, 240));
    }
}
