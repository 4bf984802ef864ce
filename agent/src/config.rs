//! The provisioning config: TOML text in, a checked [`Config`] out.
//!
//! Parsing is two steps, as for slipway recipes: serde into raw structs
//! (`deny_unknown_fields`, kebab-case keys, `schema-version = 1` required), then
//! validation of every value into checked types. Nothing here touches the host, so
//! `slipway-agent check` runs the same code on a build machine; the lookups that need the
//! image (owners and users by name, in its /etc/passwd) happen in `provision::resolve`,
//! still before anything is applied. Every error names the key at fault:
//! `file[1].mode: "0999" is not an octal mode (expected e.g. "0644")`.
//! The format is described in docs/provisioning.md.

use serde::Deserialize;
use slipway_common::base64::decode as b64_decode;
use slipway_common::protocol::DEFAULT_PORT;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A config error: the key path (`file[0].mode`) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, with `[i]` for the i-th (0-based) entry of an array of tables.
    pub key: String,
    /// What is wrong and what was expected.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.msg)
    }
}

fn err(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        msg: msg.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    schema_version: i64,
    hostname: Option<String>,
    #[serde(default)]
    file: Vec<RawFile>,
    #[serde(default)]
    ssh_authorized_key: Vec<RawSshKey>,
    systemd: Option<RawSystemd>,
    #[serde(default)]
    sysctl: BTreeMap<String, toml::Value>,
    test_agent: Option<RawTestAgent>,
    kubernetes: Option<crate::kubernetes::RawKubernetes>,
    journal_shipper: Option<RawShipper>,
    install: Option<RawInstall>,
    update: Option<crate::update::settings::RawUpdate>,
}

/// `[install]`: read by the installer (slipway-init's install mode), checked here so
/// that `slipway-agent check` and `slipway iso embed-config` refuse a bad one; the
/// installed system ignores it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInstall {
    target: Option<String>,
    target_serial: Option<String>,
    #[serde(default)]
    wipe: bool,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawShipper {
    url: String,
    index: Option<String>,
    ca_file: Option<String>,
    username: Option<String>,
    password: Option<String>,
    api_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    path: String,
    mode: Option<String>,
    owner: Option<String>,
    content: Option<String>,
    content_base64: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSshKey {
    user: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSystemd {
    #[serde(default)]
    enable: Vec<String>,
    #[serde(default)]
    start: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTestAgent {
    port: Option<String>,
}

/// A checked config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// The static host name.
    pub hostname: Option<String>,
    /// Files to write, in config order.
    pub files: Vec<FileSpec>,
    /// authorized_keys lines, in config order.
    pub ssh_keys: Vec<SshKey>,
    /// Units to enable (persistently).
    pub enable: Vec<String>,
    /// Units to start at every boot while the config lists them.
    pub start: Vec<String>,
    /// sysctl settings, sorted by key.
    pub sysctl: Vec<Sysctl>,
    /// The test agent's virtio-serial port, when `[test-agent]` is present.
    pub test_agent: Option<String>,
    /// Where the journal shipper sends to, when `[journal-shipper]` is present.
    pub journal_shipper: Option<Shipper>,
    /// Where updates come from and when they reboot, when `[update]` is present.
    pub update: Option<crate::update::settings::Settings>,
    /// `[update]` alone, as a config of its own: provisioning writes it to
    /// `/etc/slipway/update.toml`, where `slipway-agent update` reads it.
    pub update_file: Option<String>,
}

/// The `[journal-shipper]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipper {
    /// The `_bulk` endpoint, an `http://` or `https://` URL as written.
    pub url: String,
    /// The index every document goes to (default `journal`).
    pub index: String,
    /// `ca-file`, and `username` + `password` or `api-key`.
    pub access: crate::shipper::Access,
}

/// The shipper's index when the config names none.
pub const DEFAULT_INDEX: &str = "journal";

/// One `[[file]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute, normalised, under /etc, /var or /run.
    pub path: PathBuf,
    /// Permission bits (at most 0o7777).
    pub mode: u32,
    /// Who owns it.
    pub owner: Owner,
    /// The bytes to write.
    pub content: Vec<u8>,
    /// The key path, for messages at apply time (`file[2]`).
    pub key: String,
}

/// A file owner as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `"uid:gid"` (and `"root"`, which is `0:0`).
    Ids(u32, u32),
    /// A user name, looked up in the image's /etc/passwd (its primary group).
    Name(String),
}

/// One `[[ssh-authorized-key]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey {
    /// The account whose ~/.ssh/authorized_keys gets the key.
    pub user: String,
    /// One authorized_keys line.
    pub key: String,
    /// The key path (`ssh-authorized-key[0]`).
    pub key_path: String,
}

/// One sysctl setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// As written (`net.ipv4.ip_forward`).
    pub key: String,
    /// The path under /proc/sys (`net/ipv4/ip_forward`).
    pub proc_path: String,
    /// The value, as text.
    pub value: String,
}

/// Parses and validates a whole config; the first error wins.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start).unwrap_or(0);
        let line = text[..at.min(text.len())].matches('\n').count() + 1;
        let (table, key) = key_path_at(text, at);
        // A missing field is reported at its table, not at the line the span points to.
        let key = match key {
            Some(k) if !e.message().starts_with("missing field") => k,
            _ => table,
        };
        err(
            if key.is_empty() {
                "(top level)".into()
            } else {
                key
            },
            format!(
                "{} (line {line})",
                e.message().trim_end().replace('\n', "; ")
            ),
        )
    })?;
    let mut cfg = validate(raw)?;
    if cfg.update.is_some() {
        cfg.update_file = Some(update_file(text).map_err(|m| err("update", m))?);
    }
    Ok(cfg)
}

/// The `[update]` table of `text` as a config of its own (schema-version 1).
fn update_file(text: &str) -> Result<String, String> {
    let mut all: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let update = all.remove("update").ok_or("no [update] table")?;
    let mut out = toml::Table::new();
    out.insert("schema-version".into(), toml::Value::Integer(1));
    out.insert("update".into(), update);
    let body = toml::to_string(&out).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Written by slipway-provision from the provisioning config's [update] table.\n{body}"
    ))
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.schema_version != 1 {
        return Err(err(
            "schema-version",
            format!("{} is not supported (expected 1)", raw.schema_version),
        ));
    }
    let mut cfg = Config::default();
    if let Some(h) = raw.hostname {
        check_hostname(&h).map_err(|m| err("hostname", m))?;
        cfg.hostname = Some(h);
    }
    cfg.files = files(raw.file)?;
    cfg.ssh_keys = ssh_keys(raw.ssh_authorized_key)?;
    if let Some(s) = raw.systemd {
        for (list, units) in [("enable", &s.enable), ("start", &s.start)] {
            for (i, u) in units.iter().enumerate() {
                check_unit(u).map_err(|m| err(format!("systemd.{list}[{i}]"), m))?;
            }
        }
        cfg.enable = s.enable;
        cfg.start = s.start;
    }
    cfg.sysctl = sysctls(raw.sysctl)?;
    if let Some(k) = raw.kubernetes {
        let f = crate::kubernetes::join_file(k)?;
        if cfg.files.iter().any(|x| x.path == f.path) {
            return Err(err(
                "kubernetes",
                format!("writes {}, which a [[file]] writes too", f.path.display()),
            ));
        }
        cfg.files.push(f);
    }
    if let Some(t) = raw.test_agent {
        let port = t.port.unwrap_or_else(|| DEFAULT_PORT.to_string());
        check_port(&port).map_err(|m| err("test-agent.port", m))?;
        cfg.test_agent = Some(port);
    }
    cfg.journal_shipper = raw.journal_shipper.map(shipper).transpose()?;
    if let Some(i) = raw.install {
        check_install(&i)?;
    }
    cfg.update = raw
        .update
        .map(crate::update::settings::check)
        .transpose()
        .map_err(|(key, m)| err(format!("update.{key}"), m))?;
    Ok(cfg)
}

/// The `[install]` table, as slipway-init's installer reads it (init/src/install/config.rs):
/// one of `target` (a /dev/disk/by-id/ or /dev/disk/by-path/ path) and `target-serial`, or neither (the
/// installer then lists the disks and stops); `after` is `reboot` or `poweroff`.
fn check_install(i: &RawInstall) -> Result<(), ConfigError> {
    const BY_ID: &str = "/dev/disk/by-id/";
    const BY_PATH: &str = "/dev/disk/by-path/";
    if i.target.is_some() && i.target_serial.is_some() {
        return Err(err(
            "install",
            "has both target and target-serial (expected one)",
        ));
    }
    if let Some(t) = &i.target {
        let ok = [BY_ID, BY_PATH].iter().any(|prefix| {
            t.trim()
                .strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && !n.contains('/'))
        });
        if !ok {
            return Err(err(
                "install.target",
                format!("{t:?} is not a {BY_ID}NAME or {BY_PATH}NAME path (kernel names such as /dev/sda change between boots)"),
            ));
        }
    }
    if i.target_serial
        .as_ref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return Err(err("install.target-serial", "expected a non-empty serial"));
    }
    match i.after.as_deref() {
        None | Some("reboot") | Some("poweroff") => {}
        Some(o) => {
            return Err(err(
                "install.after",
                format!("{o:?} (expected reboot or poweroff)"),
            ))
        }
    }
    // `wipe` is any boolean (serde checked its type); the installer acts on it.
    let _ = i.wipe;
    Ok(())
}

/// The `[[file]]` entries, each path written once.
fn files(raw: Vec<RawFile>) -> Result<Vec<FileSpec>, ConfigError> {
    let mut seen = BTreeSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, f)| file(format!("file[{i}]"), f, &mut seen))
        .collect()
}

/// One `[[file]]`: a path no earlier entry has, mode, owner and exactly one of content
/// and content-base64.
fn file(key: String, f: RawFile, seen: &mut BTreeSet<PathBuf>) -> Result<FileSpec, ConfigError> {
    let path = check_path(&f.path).map_err(|m| err(format!("{key}.path"), m))?;
    if !seen.insert(path.clone()) {
        return Err(err(
            format!("{key}.path"),
            format!("{:?} is already written by an earlier [[file]]", f.path),
        ));
    }
    let mode = match &f.mode {
        Some(m) => parse_mode(m).map_err(|e| err(format!("{key}.mode"), e))?,
        None => 0o644,
    };
    let owner = match &f.owner {
        Some(o) => parse_owner(o).map_err(|e| err(format!("{key}.owner"), e))?,
        None => Owner::Ids(0, 0),
    };
    let content = match (f.content, f.content_base64) {
        (Some(c), None) => c.into_bytes(),
        (None, Some(b)) => b64_decode(&b).map_err(|e| err(format!("{key}.content-base64"), e))?,
        (Some(_), Some(_)) => {
            return Err(err(
                key,
                "has both content and content-base64 (expected exactly one)",
            ))
        }
        (None, None) => {
            return Err(err(
                key,
                "has neither content nor content-base64 (expected exactly one; \
                 content = \"\" for an empty file)",
            ))
        }
    };
    Ok(FileSpec {
        path,
        mode,
        owner,
        content,
        key,
    })
}

/// The `[[ssh-authorized-key]]` entries.
fn ssh_keys(raw: Vec<RawSshKey>) -> Result<Vec<SshKey>, ConfigError> {
    let mut out = Vec::new();
    for (i, k) in raw.into_iter().enumerate() {
        let key_path = format!("ssh-authorized-key[{i}]");
        check_user_name(&k.user).map_err(|m| err(format!("{key_path}.user"), m))?;
        check_ssh_key(&k.key).map_err(|m| err(format!("{key_path}.key"), m))?;
        out.push(SshKey {
            user: k.user,
            key: k.key.trim().to_string(),
            key_path,
        });
    }
    Ok(out)
}

/// The `[sysctl]` table: known keys, single-line string, integer or boolean values.
fn sysctls(raw: BTreeMap<String, toml::Value>) -> Result<Vec<Sysctl>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in raw {
        let proc_path = check_sysctl_key(&k).map_err(|m| err(format!("sysctl.{k:?}"), m))?;
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => u8::from(b).to_string(),
            other => {
                return Err(err(
                    format!("sysctl.{k:?}"),
                    format!(
                        "a {} is not a sysctl value (expected a string or an integer)",
                        other.type_str()
                    ),
                ))
            }
        };
        if value.is_empty() || value.contains(['\n', '\r']) {
            return Err(err(
                format!("sysctl.{k:?}"),
                "expected a non-empty single-line value",
            ));
        }
        out.push(Sysctl {
            key: k,
            proc_path,
            value,
        });
    }
    Ok(out)
}

/// The `[journal-shipper]` table: endpoint, index and how to authenticate.
fn shipper(j: RawShipper) -> Result<Shipper, ConfigError> {
    let url = crate::http::Url::parse(&j.url).map_err(|m| err("journal-shipper.url", m))?;
    let index = j.index.unwrap_or_else(|| DEFAULT_INDEX.to_string());
    check_index(&index).map_err(|m| err("journal-shipper.index", m))?;
    let keys = crate::shipper::AccessKeys {
        ca_file: j.ca_file,
        username: j.username,
        password: j.password,
        api_key: j.api_key,
    };
    let access = crate::shipper::Access::check(&url, keys)
        .map_err(|(key, m)| err(format!("journal-shipper.{key}"), m))?;
    Ok(Shipper {
        url: j.url,
        index,
        access,
    })
}

/// An Elasticsearch/OpenSearch index name: lower case, no `\ / * ? " < > | , #` or
/// spaces, not starting with `-`, `_` or `+`, at most 255 bytes.
pub(crate) fn check_index(i: &str) -> Result<(), String> {
    let ok = !i.is_empty()
        && i.len() <= 255
        && i != "."
        && i != ".."
        && !i.starts_with(['-', '_', '+'])
        && i.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{i:?} is not an index name (expected lower-case letters, digits, '-', '_', '.', e.g. \"{DEFAULT_INDEX}\")"
        ))
    }
}

/// The key path of the TOML construct at byte `at`: the enclosing table header (with
/// `[i]` for arrays of tables) and the key on that line. Multi-line strings are skipped,
/// so a `[` line inside file content is not taken for a header. Returns the table and,
/// when the line holds a key, the full key path.
fn key_path_at(text: &str, at: usize) -> (String, Option<String>) {
    let mut table = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_multiline: Option<&str> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        let t = line.trim();
        let was_in_string = in_multiline.is_some();
        for delim in ["\"\"\"", "'''"] {
            if in_multiline.is_none_or(|d| d == delim) && t.matches(delim).count() % 2 == 1 {
                in_multiline = if in_multiline.is_some() {
                    None
                } else {
                    Some(delim)
                };
            }
        }
        let is_header = !was_in_string && t.starts_with('[');
        if is_header {
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split(']').next()) {
                let name = name.trim().to_string();
                let n = counts.entry(name.clone()).or_insert(0);
                table = format!("{name}[{n}]");
                *n += 1;
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                table = name.trim().to_string();
            }
        }
        if at < offset || offset == text.len() {
            let key = t.split('=').next().unwrap_or("").trim();
            if is_header || was_in_string || key.is_empty() || t.starts_with('#') {
                return (table, None);
            }
            let path = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            return (table, Some(path));
        }
    }
    (table, None)
}

/// RFC 1123 host name: dot-separated labels of letters, digits and `-`, 1-63 each, not
/// starting or ending with `-`; at most 253 in all (Linux takes at most 64).
pub(crate) fn check_hostname(h: &str) -> Result<(), String> {
    let bad =
        || format!("{h:?} is not a host name (expected letters, digits, '-' and '.', at most 64)");
    if h.is_empty() || h.len() > 64 {
        return Err(bad());
    }
    for label in h.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// An absolute, normalised path strictly under /etc, /var or /run (the root file system
/// is a read-only dm-verity image; only these are writable and persistent or per-boot).
fn check_path(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(format!("{p:?} is not an absolute path"));
    }
    let normal = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal || p.contains("//") || p.ends_with('/') || p.contains('\0') {
        return Err(format!(
            "{p:?} is not a normalised path (no '.', '..', '//' or trailing '/')"
        ));
    }
    let under = ["/etc", "/var", "/run"]
        .iter()
        .any(|d| path.starts_with(d) && path != Path::new(d));
    if !under {
        return Err(format!(
            "{p:?} is not under /etc, /var or /run (the rest of the root file system is read-only)"
        ));
    }
    Ok(path.to_path_buf())
}

/// An octal mode string: 3 or 4 octal digits, e.g. "0644" or "755".
fn parse_mode(m: &str) -> Result<u32, String> {
    if !(3..=4).contains(&m.len()) || !m.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
        return Err(format!(
            "{m:?} is not an octal mode (expected 3 or 4 octal digits, e.g. \"0644\")"
        ));
    }
    u32::from_str_radix(m, 8).map_err(|e| e.to_string())
}

/// "root", "uid:gid" (numbers), or a user name.
fn parse_owner(o: &str) -> Result<Owner, String> {
    if o == "root" {
        return Ok(Owner::Ids(0, 0));
    }
    if let Some((u, g)) = o.split_once(':') {
        let num = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|_| s.bytes().all(|c| c.is_ascii_digit()))
        };
        return match (num(u), num(g)) {
            (Some(u), Some(g)) => Ok(Owner::Ids(u, g)),
            _ => Err(format!(
                "{o:?} is not an owner (expected \"root\", a user name, or numeric \"uid:gid\")"
            )),
        };
    }
    check_user_name(o)?;
    Ok(Owner::Name(o.to_string()))
}

/// A user name as Debian's adduser accepts it (the conservative form).
fn check_user_name(u: &str) -> Result<(), String> {
    let ok = !u.is_empty()
        && u.len() <= 32
        && u.bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && u.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{u:?} is not a user name (expected lowercase letters, digits, '_' and '-')"
        ))
    }
}

/// One authorized_keys line: options are not allowed, the key type must be a known one.
pub(crate) fn check_ssh_key(k: &str) -> Result<(), String> {
    let k = k.trim();
    let known = ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"];
    let mut words = k.split_whitespace();
    let ty = words.next().unwrap_or("");
    let blob = words.next().unwrap_or("");
    if k.contains(['\n', '\r'])
        || !known.iter().any(|p| ty.starts_with(p))
        || blob.is_empty()
        || b64_decode(blob).is_err()
    {
        return Err(
            "expected one public key line: \"<type> <base64> [comment]\" (e.g. ssh-ed25519 AAAA... me@host)"
                .into(),
        );
    }
    Ok(())
}

/// A full unit name with a known suffix; templates need an instance.
fn check_unit(u: &str) -> Result<(), String> {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".path",
        ".mount",
        ".automount",
        ".swap",
        ".slice",
    ];
    let Some(suffix) = SUFFIXES.iter().find(|s| u.ends_with(*s)) else {
        return Err(format!(
            "{u:?} is not a unit name (expected a full name such as \"foo.service\" or \"bar.timer\")"
        ));
    };
    let stem = &u[..u.len() - suffix.len()];
    let chars_ok = stem
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b":-_.\\@".contains(&c));
    if stem.is_empty() || u.len() > 255 || !chars_ok || stem.starts_with('@') {
        return Err(format!(
            "{u:?} is not a unit name (letters, digits and \":-_.\\@\", then a suffix)"
        ));
    }
    if stem.ends_with('@') {
        return Err(format!(
            "{u:?} is a template (expected an instance, e.g. \"{stem}name{suffix}\")"
        ));
    }
    Ok(())
}

/// `net.ipv4.ip_forward` or `net/ipv4/conf/eth0.100/forwarding` (sysctl.d(5) syntax);
/// returns the path under /proc/sys.
fn check_sysctl_key(k: &str) -> Result<String, String> {
    let (sep, dots_ok) = if k.contains('/') {
        ('/', true)
    } else {
        ('.', false)
    };
    let ok = !k.is_empty()
        && k.split(sep).all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots_ok && b == b'.')
                })
        });
    if !ok {
        return Err(
            "is not a sysctl key (expected dot- or slash-separated names, e.g. \"net.ipv4.ip_forward\")"
                .into(),
        );
    }
    Ok(k.split(sep).collect::<Vec<_>>().join("/"))
}

/// A virtio-serial port name (it becomes /dev/virtio-ports/NAME).
fn check_port(p: &str) -> Result<(), String> {
    if p.is_empty()
        || p.len() > 64
        || p.starts_with('.')
        || !p
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
    {
        return Err(format!(
            "{p:?} is not a port name (expected letters, digits, '.', '_' and '-', e.g. \"{DEFAULT_PORT}\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
schema-version = 1
hostname = "node-1"

[[file]]
path = "/etc/motd"
content = """
[not a header]
hello
"""

[[file]]
path = "/var/lib/app/blob"
mode = "0600"
owner = "1000:1000"
content-base64 = "aGk="

[[ssh-authorized-key]]
user = "root"
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host"

[systemd]
enable = ["app.service"]
start = ["app.timer"]

[sysctl]
"net.ipv4.ip_forward" = 1
"vm.swappiness" = "10"

[test-agent]

[journal-shipper]
url = "http://10.0.2.100:9200/_bulk"
"#;

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("node-1"));
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.files[0].content, b"[not a header]\nhello\n");
        assert_eq!(c.files[0].mode, 0o644);
        assert_eq!(c.files[0].owner, Owner::Ids(0, 0));
        assert_eq!(c.files[1].mode, 0o600);
        assert_eq!(c.files[1].owner, Owner::Ids(1000, 1000));
        assert_eq!(c.files[1].content, b"hi");
        assert_eq!(c.ssh_keys[0].user, "root");
        assert_eq!(c.enable, ["app.service"]);
        assert_eq!(c.start, ["app.timer"]);
        assert_eq!(c.sysctl[0].proc_path, "net/ipv4/ip_forward");
        assert_eq!(c.sysctl[0].value, "1");
        assert_eq!(c.sysctl[1].value, "10");
        assert_eq!(c.test_agent.as_deref(), Some(DEFAULT_PORT));
        let j = c.journal_shipper.as_ref().unwrap();
        assert_eq!(
            (j.url.as_str(), j.index.as_str()),
            ("http://10.0.2.100:9200/_bulk", "journal")
        );
        assert_eq!(parse("schema-version = 1").unwrap(), Config::default());
    }

    #[test]
    fn the_update_table_is_checked_into_settings() {
        let c = parse(
            "schema-version = 1\n[update]\nrepository = \"reg.example/fleet/host\"\ntag = \"stable\"\nreboot = \"now\"\nca-file = \"/etc/ssl/reg.pem\"\n",
        )
        .unwrap();
        let back = parse(c.update_file.as_deref().unwrap()).unwrap();
        assert_eq!(back.update, c.update);
        let u = c.update.unwrap();
        assert_eq!(u.describe(), "reg.example/fleet/host:stable");
        assert_eq!(u.reboot, crate::update::settings::Reboot::Now);
        assert_eq!(
            u.access.ca_file.as_deref(),
            Some(Path::new("/etc/ssl/reg.pem"))
        );
        for (text, want) in [
            (
                "[update]\nrepository = \"reg/h\"\ntag = \"s\"\nreboot = \"soon\"",
                "update.reboot: \"soon\" (expected",
            ),
            (
                "[update]\ntag = \"s\"",
                "update: missing field `repository`",
            ),
            (
                "[update]\nrepository = \"reg/h\"\nchannel = \"s\"",
                "update.channel: unknown field `channel`",
            ),
        ] {
            let e = error_of(&format!("schema-version = 1\n{text}"));
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_install_table_is_checked_and_otherwise_ignored() {
        let ok = "schema-version = 1\n[install]\ntarget = \"/dev/disk/by-id/virtio-D1\"\nwipe = true\nafter = \"reboot\"\n";
        assert_eq!(parse(ok).unwrap(), Config::default());
        let by_path =
            "schema-version = 1\n[install]\ntarget = \"/dev/disk/by-path/pci-0000:00:04.0\"\n";
        assert_eq!(parse(by_path).unwrap(), Config::default());
        let serial = "schema-version = 1\n[install]\ntarget-serial = \"S1\"\n";
        assert_eq!(parse(serial).unwrap(), Config::default());
        for (text, want) in [
            (
                "[install]\ntarget = \"/dev/sda\"",
                "install.target: \"/dev/sda\" is not a /dev/disk/by-id/NAME or /dev/disk/by-path/NAME path",
            ),
            (
                "[install]\ntarget = \"/dev/disk/by-id/a\"\ntarget-serial = \"b\"",
                "install: has both",
            ),
            ("[install]\nafter = \"halt\"", "install.after: \"halt\""),
            ("[install]\ntarget-serial = \" \"", "install.target-serial"),
            ("[install]\ndisk = \"x\"", "unknown field `disk`"),
        ] {
            let e = error_of(&format!("schema-version = 1\n{text}"));
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn each_error_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("hostname = \"x\"", "(top level): missing field `schema-version`"),
            ("schema-version = 2", "schema-version: 2 is not supported"),
            ("schema-version = 1\nhostnme = \"a\"", "hostnme: unknown field `hostnme`"),
            ("schema-version = 1\nhostname = \"-a\"", "hostname: \"-a\" is not a host name"),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\ncontent = \"\"\n[[file]]\npath = \"/usr/local/x\"\ncontent = \"\"",
                "file[1].path: \"/usr/local/x\" is not under /etc, /var or /run",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"etc/a\"\ncontent = \"\"",
                "file[0].path: \"etc/a\" is not an absolute path",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/../usr/a\"\ncontent = \"\"",
                "file[0].path: \"/etc/../usr/a\" is not a normalised path",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc\"\ncontent = \"\"",
                "file[0].path: \"/etc\" is not under",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\ncontent = \"\"\n[[file]]\npath = \"/etc/a\"\ncontent = \"\"",
                "file[1].path: \"/etc/a\" is already written",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\nmode = \"0999\"\ncontent = \"\"",
                "file[0].mode: \"0999\" is not an octal mode",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\nmode = 420\ncontent = \"\"",
                "file[0].mode: invalid type: integer `420`, expected a string (line 4)",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\nowner = \"1000:x\"\ncontent = \"\"",
                "file[0].owner: \"1000:x\" is not an owner",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\nowner = \"Bob\"\ncontent = \"\"",
                "file[0].owner: \"Bob\" is not a user name",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"",
                "file[0]: has neither content nor content-base64",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\ncontent = \"\"\ncontent-base64 = \"\"",
                "file[0]: has both content and content-base64",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\ncontent-base64 = \"a*==\"",
                "file[0].content-base64: '*' is not a base64 character",
            ),
            (
                "schema-version = 1\n[[file]]\npath = \"/etc/a\"\ncontent = \"\"\nmodee = \"1\"",
                "file[0].modee: unknown field `modee`",
            ),
            (
                "schema-version = 1\n[[ssh-authorized-key]]\nuser = \"root\"\nkey = \"hello\"",
                "ssh-authorized-key[0].key: expected one public key line",
            ),
            (
                "schema-version = 1\n[systemd]\nenable = [\"a.service\", \"b\"]",
                "systemd.enable[1]: \"b\" is not a unit name",
            ),
            (
                "schema-version = 1\n[systemd]\nstart = [\"getty@.service\"]",
                "systemd.start[0]: \"getty@.service\" is a template",
            ),
            (
                "schema-version = 1\n[systemd]\nrestart = []",
                "systemd.restart: unknown field `restart`",
            ),
            (
                "schema-version = 1\n[sysctl]\n\"net..x\" = 1",
                "sysctl.\"net..x\": is not a sysctl key",
            ),
            (
                "schema-version = 1\n[sysctl]\n\"vm.x\" = [1]",
                "sysctl.\"vm.x\": a array is not a sysctl value",
            ),
            (
                "schema-version = 1\n[test-agent]\nport = \"../x\"",
                "test-agent.port: \"../x\" is not a port name",
            ),
            (
                "schema-version = 1\n[test-agent]\nenabled = true",
                "test-agent.enabled: unknown field `enabled`",
            ),
            (
                "schema-version = 1\n[journal-shipper]\nurl = \"http//logs:9200/_bulk\"",
                "journal-shipper.url: \"http//logs:9200/_bulk\" is not an http:// URL",
            ),
            (
                "schema-version = 1\n[journal-shipper]\nurl = \"http://logs:99999/_bulk\"",
                "journal-shipper.url: \"http://logs:99999/_bulk\": \"99999\" is not a port",
            ),
            (
                "schema-version = 1\n[journal-shipper]\nurl = \"http://logs/_bulk\"\nindex = \"Logs\"",
                "journal-shipper.index: \"Logs\" is not an index name",
            ),
            (
                "schema-version = 1\n[journal-shipper]\nindex = \"x\"",
                "journal-shipper: missing field `url`",
            ),
            (
                "schema-version = 1\n[[file]\n",
                "file[0]: invalid table header; expected `.`, `]]` (line 2)",
            ),
        ];
        for (text, want) in cases {
            let got = error_of(text);
            assert!(
                got.starts_with(want),
                "{text:?}:\n got  {got}\n want {want}..."
            );
        }
    }

    #[test]
    fn sysctl_keys_in_both_syntaxes() {
        assert_eq!(
            check_sysctl_key("kernel.pid_max").unwrap(),
            "kernel/pid_max"
        );
        assert_eq!(
            check_sysctl_key("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            "net/ipv4/conf/eth0.100/forwarding"
        );
        assert!(check_sysctl_key("net/../x").is_err());
        assert!(check_sysctl_key("net.ipv4 x").is_err());
    }
}
