//! Cloud metadata services, tried when neither fw_cfg nor a config drive had a config
//! (`slipway-agent provision --cloud`, run once the network is up). Consumes the link-
//! local metadata address 169.254.169.254 over plain HTTP; produces a [`Metadata`]: the
//! host name, SSH public keys and the user-data, which carries the same TOML
//! provisioning config as fw_cfg. Sources, in order, each with short time-outs:
//!
//! - AWS IMDSv2: `PUT /latest/api/token` (TTL header) for a session token, then GETs
//!   with `X-aws-ec2-metadata-token`. A token PUT that fails is followed by a tokenless
//!   (IMDSv1) GET; a 401 to that means tokens are required, so the token is asked for
//!   again and the GET repeated.
//! - GCE: `GET /computeMetadata/v1/...` with `Metadata-Flavor: Google`; the answer must
//!   carry the same header.
//! - Azure IMDS: `GET /metadata/instance/compute?api-version=...` with `Metadata: true`.
//! - OpenStack: `GET /openstack/latest/meta_data.json` and `.../user_data`.
//!
//! When nothing accepts a TCP connection on 169.254.169.254:80 within the connect
//! time-out, no source is tried further (they all share the address).
//!
//! OpenStack's config drive (label `config-2`) carries the same two files; `source`
//! reads them from the drive and hands them to [`openstack_meta_data`] and
//! [`config_text`] here, so both OpenStack paths parse one way.

use crate::http::{self, Reply, Url};
use std::time::Duration;

/// The metadata address all four clouds use.
pub const ADDRESS: &str = "169.254.169.254";
/// Connecting to the address: absent on a machine without a metadata service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connection attempts (the network may only just be up).
const CONNECT_TRIES: u32 = 2;
/// One request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (user-data is at most 16 KiB on AWS, 256 KiB on GCE).
const MAX_BODY: usize = 1 << 20;
/// Azure's IMDS API version (the first with `userData` in the compute document).
pub const AZURE_API_VERSION: &str = "2021-02-01";

/// Nova's metadata document, under `/openstack/` on the service and at the top of a
/// config drive.
pub const OPENSTACK_META_DATA: &str = "openstack/latest/meta_data.json";
/// Nova's user-data, beside it (absent when the server was created without any).
pub const OPENSTACK_USER_DATA: &str = "openstack/latest/user_data";

/// What a metadata service said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `aws imdsv2`, `gce`, `azure imds`, `openstack` (with the address).
    pub source: String,
    /// The instance's host name, first label only.
    pub hostname: Option<String>,
    /// OpenSSH public key lines.
    pub ssh_keys: Vec<String>,
    /// The user-data, if any.
    pub user_data: Option<Vec<u8>>,
    /// Things worth printing (a fallback taken, a key skipped).
    pub notes: Vec<String>,
}

impl Metadata {
    /// `host name NAME, 1 ssh key, user-data`: what the source gave, for the console.
    pub fn summary(&self) -> String {
        format!(
            "{}, {}, {}",
            self.hostname
                .as_deref()
                .map_or("no host name".to_string(), |h| format!("host name {h}")),
            match self.ssh_keys.len() {
                1 => "1 ssh key".to_string(),
                n => format!("{n} ssh keys"),
            },
            if self.user_data.is_some() {
                "user-data"
            } else {
                "no user-data"
            }
        )
    }
}

/// Tries the sources at `base` (normally `http://169.254.169.254`); `None` when no
/// source answered, with the reason in `notes`.
pub fn find(base: &Url, notes: &mut Vec<String>) -> Option<Metadata> {
    let mut last = String::new();
    let reachable = (0..CONNECT_TRIES).any(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        match http::connect(base, CONNECT_TIMEOUT) {
            Ok(_) => true,
            Err(e) => {
                last = e.msg;
                false
            }
        }
    });
    if !reachable {
        notes.push(format!(
            "no cloud metadata service at {}:{} ({last})",
            base.host, base.port
        ));
        return None;
    }
    let c = Client { base };
    type Source = fn(&Client) -> Result<Option<Metadata>, String>;
    let sources: [(&str, Source); 4] = [
        ("aws", aws),
        ("gce", gce),
        ("azure", azure),
        ("openstack", openstack),
    ];
    for (name, f) in sources {
        match f(&c) {
            Ok(Some(mut m)) => {
                m.source = format!("{} ({}:{})", m.source, base.host, base.port);
                return Some(m);
            }
            Ok(None) => {}
            Err(e) => notes.push(format!("warning: cloud metadata ({name}): {e}")),
        }
    }
    notes.push(format!(
        "{}:{} answers, but not as AWS, GCE, Azure or OpenStack metadata",
        base.host, base.port
    ));
    None
}

struct Client<'a> {
    base: &'a Url,
}

impl Client<'_> {
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        http::request(
            method,
            &self.base.with_path(path),
            headers,
            b"",
            REQUEST_TIMEOUT,
            MAX_BODY,
        )
        .map_err(|e| e.msg)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        self.call("GET", path, headers)
    }
}

/// 200 gives the body, 404 nothing, anything else an error.
fn optional(r: Reply, what: &str) -> Result<Option<Vec<u8>>, String> {
    match r.status {
        200 => Ok(Some(r.body)),
        404 => Ok(None),
        s => Err(format!("{what}: HTTP {s}")),
    }
}

/// The first label of a host name (`ip-10-0-0-5.ec2.internal` -> `ip-10-0-0-5`).
fn short_name(h: &str) -> Option<String> {
    let first = h.trim().split('.').next()?.to_string();
    (!first.is_empty()).then_some(first)
}

/// Splits text into trimmed, non-empty, non-comment lines.
fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

// --- AWS -------------------------------------------------------------------------------

struct Aws<'a> {
    c: &'a Client<'a>,
    token: Option<String>,
    notes: Vec<String>,
}

impl Aws<'_> {
    fn fetch_token(&mut self) -> Result<(), String> {
        let r = self.c.call(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
        )?;
        if r.status == 200 && !r.body.is_empty() {
            self.token = Some(r.text().trim().to_string());
            Ok(())
        } else {
            Err(format!("PUT /latest/api/token: HTTP {}", r.status))
        }
    }

    /// A GET with the token; without one (IMDSv1) when none could be had, and on a 401
    /// (tokens required, or the token expired) a new token and one more try.
    fn get(&mut self, path: &str) -> Result<Reply, String> {
        let send = |token: &Option<String>| match token {
            Some(t) => self.c.get(path, &[("X-aws-ec2-metadata-token", t)]),
            None => self.c.get(path, &[]),
        };
        let r = send(&self.token)?;
        if r.status != 401 {
            return Ok(r);
        }
        self.notes.push(format!(
            "aws: GET {path} {} was refused (401); asking for a new session token",
            if self.token.is_some() {
                "with a token"
            } else {
                "without a token"
            }
        ));
        let token = self.token.take();
        if let Err(e) = self.fetch_token() {
            self.token = token;
            return Err(e);
        }
        send(&self.token)
    }
}

fn aws(c: &Client) -> Result<Option<Metadata>, String> {
    let mut a = Aws {
        c,
        token: None,
        notes: Vec::new(),
    };
    let token_error = a.fetch_token().err();
    let id = a.get("/latest/meta-data/instance-id")?;
    if id.status != 200 {
        return Ok(None);
    }
    if let Some(e) = token_error {
        // Only worth saying once it is clear this is AWS.
        a.notes
            .insert(0, format!("aws: no session token at first ({e})"));
    }
    let mut m = Metadata {
        source: "aws imdsv2".into(),
        ..Metadata::default()
    };
    let r = a.get("/latest/meta-data/local-hostname")?;
    m.hostname =
        optional(r, "local-hostname")?.and_then(|b| short_name(&String::from_utf8_lossy(&b)));
    // `public-keys/` lists `0=name` lines; each key's OpenSSH form is under its index.
    let r = a.get("/latest/meta-data/public-keys/")?;
    if let Some(list) = optional(r, "public-keys/")? {
        for l in lines(&list) {
            let idx = l.split('=').next().unwrap_or("");
            if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let r = a.get(&format!("/latest/meta-data/public-keys/{idx}/openssh-key"))?;
            if let Some(k) = optional(r, "openssh-key")? {
                m.ssh_keys.extend(lines(&k));
            }
        }
    }
    let r = a.get("/latest/user-data")?;
    m.user_data = optional(r, "user-data")?;
    if a.token.is_none() {
        m.source = "aws imdsv1".into();
    }
    m.notes = a.notes;
    Ok(Some(m))
}

// --- GCE -------------------------------------------------------------------------------

fn gce(c: &Client) -> Result<Option<Metadata>, String> {
    const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");
    let get = |p: &str| -> Result<Option<Vec<u8>>, String> {
        let r = c.get(&format!("/computeMetadata/v1/{p}"), &[FLAVOR])?;
        if r.status == 200 && r.header("metadata-flavor") != Some("Google") {
            return Err(format!("{p}: the answer lacks Metadata-Flavor: Google"));
        }
        optional(r, p)
    };
    let probe = c.get("/computeMetadata/v1/instance/hostname", &[FLAVOR])?;
    if probe.status != 200 || probe.header("metadata-flavor") != Some("Google") {
        return Ok(None);
    }
    let mut m = Metadata {
        source: "gce".into(),
        hostname: short_name(&probe.text()),
        ..Metadata::default()
    };
    // `user:key` lines, from the instance and (unless blocked) the project.
    let mut keys = lines(&get("instance/attributes/ssh-keys")?.unwrap_or_default());
    let block = get("instance/attributes/block-project-ssh-keys")?
        .is_some_and(|b| String::from_utf8_lossy(&b).trim() == "true");
    if !block {
        keys.extend(lines(
            &get("project/attributes/ssh-keys")?.unwrap_or_default(),
        ));
    }
    for k in keys {
        match k.split_once(':') {
            Some((user, key)) if !user.contains(' ') => {
                if user != "root" {
                    m.notes.push(format!(
                        "gce: the key for user {user:?} is installed for root (the image has no other login user)"
                    ));
                }
                m.ssh_keys.push(key.trim().to_string());
            }
            _ => m
                .notes
                .push("gce: ssh-keys line without \"user:\": skipped".to_string()),
        }
    }
    m.user_data = get("instance/attributes/user-data")?;
    Ok(Some(m))
}

// --- Azure -----------------------------------------------------------------------------

fn azure(c: &Client) -> Result<Option<Metadata>, String> {
    let r = c.get(
        &format!("/metadata/instance/compute?api-version={AZURE_API_VERSION}"),
        &[("Metadata", "true")],
    )?;
    if r.status != 200 {
        return Ok(None);
    }
    let v: serde_json::Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .filter(|x| !x.is_empty())
    };
    if s("/vmId").is_none() && s("/name").is_none() {
        return Ok(None);
    }
    let mut m = Metadata {
        source: "azure imds".into(),
        hostname: s("/osProfile/computerName")
            .or_else(|| s("/name"))
            .and_then(short_name),
        ..Metadata::default()
    };
    for k in v
        .get("publicKeys")
        .and_then(|k| k.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(d) = k.get("keyData").and_then(|d| d.as_str()) {
            m.ssh_keys.extend(lines(d.as_bytes()));
        }
    }
    if let Some(u) = s("/userData") {
        m.user_data =
            Some(slipway_common::base64::decode(u).map_err(|e| format!("compute.userData: {e}"))?);
    }
    Ok(Some(m))
}

// --- OpenStack -------------------------------------------------------------------------

fn openstack(c: &Client) -> Result<Option<Metadata>, String> {
    let path = format!("/{OPENSTACK_META_DATA}");
    let r = c.get(&path, &[])?;
    if r.status != 200 {
        return Ok(None);
    }
    // Anything but a JSON object is some other service answering on this path.
    let v = match serde_json::from_slice::<serde_json::Value>(&r.body) {
        Ok(v) if v.is_object() => v,
        _ => return Ok(None),
    };
    let mut m = openstack_fields(&v).map_err(|e| format!("GET {path}: {e}"))?;
    m.user_data = optional(c.get(&format!("/{OPENSTACK_USER_DATA}"), &[])?, "user_data")?;
    Ok(Some(m))
}

/// Parses Nova's `meta_data.json` (from the metadata service or a config drive): the
/// host name from `hostname` (Nova's `<name>.<dhcp_domain>`, e.g. `test.novalocal`), or
/// else `name` (the server's display name), first label only; the OpenSSH keys from
/// `public_keys`, an object of key-pair name to key. Other members (`uuid`, `meta`,
/// `keys`, `devices`, ...) are not used. Errors name the key and what was expected. See
/// <https://docs.openstack.org/nova/latest/user/metadata.html>.
pub fn openstack_meta_data(json: &[u8]) -> Result<Metadata, crate::config::ConfigError> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
        bad(
            "(top level)",
            format!("not JSON ({e}); expected Nova's metadata object"),
        )
    })?;
    openstack_fields(&v)
}

fn bad(key: impl Into<String>, msg: impl Into<String>) -> crate::config::ConfigError {
    crate::config::ConfigError {
        key: key.into(),
        msg: msg.into(),
    }
}

/// The JSON type of `v`, for messages.
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn openstack_fields(v: &serde_json::Value) -> Result<Metadata, crate::config::ConfigError> {
    let Some(obj) = v.as_object() else {
        return Err(bad(
            "(top level)",
            format!("expected a JSON object, found {}", kind(v)),
        ));
    };
    let text = |key: &str| -> Result<Option<&str>, crate::config::ConfigError> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(bad(
                key,
                format!("expected a string, found {}", kind(other)),
            )),
        }
    };
    let hostname = text("hostname")?;
    let name = text("name")?;
    let mut m = Metadata {
        source: "openstack".into(),
        hostname: hostname
            .and_then(short_name)
            .or_else(|| name.and_then(short_name)),
        ..Metadata::default()
    };
    match obj.get("public_keys") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(keys)) => {
            for (name, k) in keys {
                let Some(k) = k.as_str() else {
                    return Err(bad(
                        format!("public_keys.{name:?}"),
                        format!(
                            "expected a string (an OpenSSH public key line), found {}",
                            kind(k)
                        ),
                    ));
                };
                m.ssh_keys.extend(lines(k.as_bytes()));
            }
        }
        Some(other) => {
            return Err(bad(
                "public_keys",
                format!(
                    "expected an object of key-pair names to OpenSSH keys, found {}",
                    kind(other)
                ),
            ))
        }
    }
    Ok(m)
}

/// The provisioning config for `m`: its user-data when that is a slipway config (TOML
/// with `schema-version`), with the metadata's host name (unless the user-data sets one)
/// and its SSH keys (for root) added. User-data that is not a slipway config, or does
/// not validate, is reported in `notes` and left out: the host name and keys still apply.
pub fn config_text(m: &Metadata, notes: &mut Vec<String>) -> String {
    let mut table = toml::Table::new();
    if let Some(ud) = &m.user_data {
        let checked = std::str::from_utf8(ud)
            .map_err(|_| "it is not UTF-8 text".to_string())
            .and_then(|t| {
                let tbl: toml::Table = t.parse().map_err(|_| {
                    "it is not TOML (expected a slipway provisioning config)".to_string()
                })?;
                if !tbl.contains_key("schema-version") {
                    return Err(
                        "it has no schema-version (expected a slipway provisioning config)".into(),
                    );
                }
                crate::config::parse(t).map_err(|e| e.to_string())?;
                Ok(tbl)
            });
        match checked {
            Ok(t) => table = t,
            Err(e) => notes.push(format!(
                "ERROR: {} user-data: {e}; only the metadata's host name and ssh keys are applied",
                m.source
            )),
        }
    }
    table.insert("schema-version".into(), toml::Value::Integer(1));
    if let Some(h) = &m.hostname {
        if table.contains_key("hostname") {
        } else if crate::config::check_hostname(h).is_ok() {
            table.insert("hostname".into(), toml::Value::String(h.clone()));
        } else {
            notes.push(format!(
                "warning: {}: host name {h:?} is not usable; not set",
                m.source
            ));
        }
    }
    let mut keys = match table.remove("ssh-authorized-key") {
        Some(toml::Value::Array(a)) => a,
        _ => Vec::new(),
    };
    for k in &m.ssh_keys {
        if crate::config::check_ssh_key(k).is_err() {
            notes.push(format!(
                "warning: {}: skipped a key that is not an OpenSSH public key line",
                m.source
            ));
            continue;
        }
        let mut e = toml::Table::new();
        e.insert("user".into(), toml::Value::String("root".into()));
        e.insert("key".into(), toml::Value::String(k.clone()));
        keys.push(toml::Value::Table(e));
    }
    if !keys.is_empty() {
        table.insert("ssh-authorized-key".into(), toml::Value::Array(keys));
    }
    toml::to_string(&table).unwrap_or_else(|_| "schema-version = 1\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_key_lines() {
        assert_eq!(
            short_name("ip-10-0-0-5.ec2.internal\n").as_deref(),
            Some("ip-10-0-0-5")
        );
        assert_eq!(short_name("node"), Some("node".into()));
        assert_eq!(short_name(""), None);
        assert_eq!(
            lines(b"# c\n\nssh-ed25519 AAAA a\r\n  x \n"),
            ["ssh-ed25519 AAAA a", "x"]
        );
    }

    /// A loopback server answering each request (one per connection) with `f`.
    fn serve(f: impl Fn(&str, &str) -> (u16, &'static str, String) + Send + 'static) -> Url {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let first = head.lines().next().unwrap_or("").to_string();
                let (status, extra, body) = f(&first, &head);
                let mut c = c;
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    /// What a logged server saw: each request line with the status it answered.
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>;

    /// [`serve`], recording every request line and its status.
    fn serve_logged(
        f: impl Fn(&str, &str) -> (u16, &'static str, String) + Send + 'static,
    ) -> (Url, Log) {
        let log = Log::default();
        let log2 = std::sync::Arc::clone(&log);
        let url = serve(move |first, head| {
            let a = f(first, head);
            // `find` first connects once without a request, to see whether anything
            // listens: that is no request.
            if !first.is_empty() {
                log2.lock().unwrap().push((first.to_string(), a.0));
            }
            a
        });
        (url, log)
    }

    /// The value of header `name` in a request head (case-insensitive name).
    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// A valid ed25519 public key line (32 key bytes after the type string).
    fn key_line(comment: &str) -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend(comment.bytes().cycle().take(32));
        format!(
            "ssh-ed25519 {} {comment}",
            slipway_common::base64::encode(&blob)
        )
    }

    /// User-data as the boot tests give it: the test agent and a journal shipper.
    const USER_DATA: &str = "schema-version = 1\n[test-agent]\n[journal-shipper]\nurl = \"http://169.254.169.100:9200/_bulk\"\nindex = \"node-logs\"\n";

    /// Applies what a source gave, as `provision --cloud` does (config_text, then
    /// provision::run), to an image without sshd (like the host images) and checks the
    /// result: host name, root's key, the shipper's settings, the test agent and the
    /// shipper started, and the console's last line naming the source.
    fn assert_applied(m: &Metadata, host: &str, key: &str) {
        use crate::provision::{self, tests as p};
        let img = p::image();
        let root = &img.0;
        std::fs::remove_file(root.join("usr/sbin/sshd")).unwrap();
        let mut notes = Vec::new();
        let text = config_text(m, &mut notes);
        let mut sys = p::Fake::default();
        let out = provision::run(root, Some((m.source.clone(), text.into_bytes())), &mut sys);
        let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
        assert_eq!(read("etc/hostname"), format!("{host}\n"), "{out:?}");
        assert_eq!(read("etc/ssh/authorized_keys/root"), format!("{key}\n"));
        assert!(
            read(provision::SHIPPER_ENV)
                .starts_with("SLIPWAY_SHIPPER_URL=\"http://169.254.169.100:9200/_bulk\"\n"),
            "{out:?}"
        );
        for unit in [provision::TEST_AGENT_UNIT, provision::SHIPPER_UNIT] {
            assert!(
                sys.calls
                    .iter()
                    .any(|c| c.contains("start") && c.ends_with(unit)),
                "{unit} not started: {:?}",
                sys.calls
            );
        }
        let last = out.lines.last().unwrap();
        assert!(
            last.starts_with(&format!("applied config from {} (sha256 ", m.source)),
            "{out:?}"
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn aws_without_a_token_at_first_then_with_one() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let puts = AtomicU32::new(0);
        let key = key_line("aws-key");
        let key2 = key.clone();
        let base = serve(move |first, head| {
            if first.starts_with("PUT /latest/api/token") {
                return match puts.fetch_add(1, Ordering::SeqCst) {
                    0 => (503, "", String::new()),
                    _ => (200, "", "tok".into()),
                };
            }
            if !head.contains("X-aws-ec2-metadata-token: tok") {
                return (401, "", String::new());
            }
            let path = first.split(' ').nth(1).unwrap_or("");
            match path {
                "/latest/meta-data/instance-id" => (200, "", "i-1".into()),
                "/latest/meta-data/local-hostname" => (200, "", "ip-10-0-0-5.ec2.internal".into()),
                "/latest/meta-data/public-keys/" => (200, "", "0=k".into()),
                "/latest/meta-data/public-keys/0/openssh-key" => (200, "", format!("{key}\n")),
                "/latest/user-data" => (200, "", USER_DATA.into()),
                _ => (404, "", String::new()),
            }
        });
        let mut notes = Vec::new();
        let m = find(&base, &mut notes).unwrap();
        assert!(m.source.starts_with("aws imdsv2 (127.0.0.1:"), "{m:?}");
        assert_eq!(m.hostname.as_deref(), Some("ip-10-0-0-5"));
        assert_eq!(m.ssh_keys, [key2.as_str()]);
        assert_eq!(m.user_data.as_deref(), Some(USER_DATA.as_bytes()));
        assert!(
            m.notes[0].contains("no session token at first (PUT /latest/api/token: HTTP 503)"),
            "{m:?}"
        );
        assert!(
            m.notes[1].contains("without a token was refused (401)"),
            "{m:?}"
        );
        assert_applied(&m, "ip-10-0-0-5", &key2);
    }

    /// GCE as a boot test once served it: a request without `Metadata-Flavor: Google`,
    /// or with `X-Forwarded-For`, is refused (403); every answer carries the header. The
    /// key of user `admin` goes to root (noted); host name, key and user-data apply.
    #[test]
    fn gce_metadata_is_applied() {
        let key = key_line("gce-key");
        let served = key.clone();
        let (base, log) = serve_logged(move |first, head| {
            if header(head, "Metadata-Flavor") != Some("Google")
                || header(head, "X-Forwarded-For").is_some()
            {
                return (403, "", "Missing Metadata-Flavor:Google header.".into());
            }
            let flavor = "Metadata-Flavor: Google\r\n";
            match first.split(' ').nth(1).unwrap_or("") {
                "/computeMetadata/v1/instance/hostname" => {
                    (200, flavor, "gce-node-3.c.slipway-test.internal".into())
                }
                "/computeMetadata/v1/instance/attributes/ssh-keys" => {
                    (200, flavor, format!("admin:{served}\n"))
                }
                "/computeMetadata/v1/instance/attributes/user-data" => {
                    (200, flavor, USER_DATA.into())
                }
                _ => (404, flavor, String::new()),
            }
        });
        let mut notes = Vec::new();
        let m = find(&base, &mut notes).unwrap();
        assert!(m.source.starts_with("gce (127.0.0.1:"), "{m:?}");
        assert_eq!(m.summary(), "host name gce-node-3, 1 ssh key, user-data");
        assert_eq!(
            m.notes,
            ["gce: the key for user \"admin\" is installed for root (the image has no other login user)"]
        );
        assert!(notes.is_empty(), "{notes:?}");
        let log = log.lock().unwrap().clone();
        assert!(
            log.iter().any(|(l, s)| *s == 200
                && l.starts_with("GET /computeMetadata/v1/instance/attributes/ssh-keys ")),
            "{log:?}"
        );
        assert_applied(&m, "gce-node-3", &key);
    }

    /// Azure IMDS as a boot test once served it: without `Metadata: true`, or without an
    /// `api-version`, every request is refused with 400 (so AWS's and GCE's requests
    /// are, and the agent goes on to Azure); the compute document gives the host name
    /// (`osProfile.computerName`), the keys (`publicKeys[].keyData`) and base64
    /// `userData`, which apply.
    #[test]
    fn azure_metadata_needs_its_header_and_an_api_version() {
        let key = key_line("azure-key");
        let doc = |user_data: &str| {
            serde_json::json!({
                "name": "azure-node-5",
                "vmId": "6a3b8e4f-0000-4000-8000-000000000001",
                "osProfile": {"computerName": "azure-node-5", "adminUsername": "azureuser"},
                "publicKeys": [{"keyData": key, "path": "/home/azureuser/.ssh/authorized_keys"}],
                "userData": user_data,
            })
            .to_string()
        };
        let imds = |doc: String| {
            serve_logged(move |first, head| {
                let target = first.split(' ').nth(1).unwrap_or("");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                if header(head, "Metadata") != Some("true") {
                    return (
                        400,
                        "",
                        r#"{"error":"Bad request. Required metadata header not specified"}"#.into(),
                    );
                }
                if !query.split('&').any(|q| q.starts_with("api-version=")) {
                    return (
                        400,
                        "",
                        r#"{"error":"Bad request. api-version was not specified"}"#.into(),
                    );
                }
                match path {
                    "/metadata/instance/compute" => (200, "", doc.clone()),
                    _ => (404, "", r#"{"error":"Not found"}"#.into()),
                }
            })
        };
        let (base, log) = imds(doc(&slipway_common::base64::encode(USER_DATA.as_bytes())));
        let mut notes = Vec::new();
        let m = find(&base, &mut notes).unwrap();
        assert!(m.source.starts_with("azure imds (127.0.0.1:"), "{m:?}");
        assert_eq!(m.summary(), "host name azure-node-5, 1 ssh key, user-data");
        assert!(notes.is_empty() && m.notes.is_empty(), "{notes:?} {m:?}");
        let log = log.lock().unwrap().clone();
        let at = |req: &str, status: u16| {
            log.iter()
                .position(|(l, s)| l.starts_with(req) && *s == status)
                .unwrap_or_else(|| panic!("no {req} answered {status}: {log:?}"))
        };
        let azure = at(
            &format!("GET /metadata/instance/compute?api-version={AZURE_API_VERSION} "),
            200,
        );
        for refused in [
            "PUT /latest/api/token ",
            "GET /latest/meta-data/instance-id ",
            "GET /computeMetadata/v1/instance/hostname ",
        ] {
            assert!(at(refused, 400) < azure, "{log:?}");
        }
        assert_applied(&m, "azure-node-5", &key);

        // userData that is not base64: the source is reported, nothing of it applies.
        let (base, _) = imds(doc("not base64!"));
        let mut notes = Vec::new();
        assert!(find(&base, &mut notes).is_none());
        assert!(
            notes[0].starts_with("warning: cloud metadata (azure): compute.userData: "),
            "{notes:?}"
        );
    }

    #[test]
    fn gce_needs_its_flavor_header_and_nothing_listening_is_quick() {
        let base = serve(|first, head| {
            if !head.contains("Metadata-Flavor: Google") {
                return (403, "", String::new());
            }
            match first.split(' ').nth(1).unwrap_or("") {
                "/computeMetadata/v1/instance/hostname" => {
                    (200, "Metadata-Flavor: Google\r\n", "g1.c.p.internal".into())
                }
                "/computeMetadata/v1/instance/attributes/ssh-keys" => (
                    200,
                    "Metadata-Flavor: Google\r\n",
                    "alice:ssh-rsa AAAA a\nroot:ssh-ed25519 BBBB b\n".into(),
                ),
                _ => (404, "Metadata-Flavor: Google\r\n", String::new()),
            }
        });
        let m = find(&base, &mut Vec::new()).unwrap();
        assert!(m.source.starts_with("gce "), "{m:?}");
        assert_eq!(m.hostname.as_deref(), Some("g1"));
        assert_eq!(m.ssh_keys, ["ssh-rsa AAAA a", "ssh-ed25519 BBBB b"]);
        assert_eq!(m.notes.len(), 1, "{m:?}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let mut notes = Vec::new();
        assert!(find(&base, &mut notes).is_none());
        assert!(
            notes[0].starts_with("no cloud metadata service at 127.0.0.1:"),
            "{notes:?}"
        );
    }

    /// Nova's example document (docs.openstack.org/nova/latest/user/metadata.html),
    /// shortened; the key carries Nova's trailing newline.
    const NOVA_META_DATA: &str = r#"{
        "uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38",
        "availability_zone": "nova",
        "hostname": "test.novalocal",
        "launch_index": 0,
        "meta": {"role": "webserver"},
        "project_id": "f7ac731cc11f40efbc03a9f9e1d1d21f",
        "public_keys": {"mykey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 Generated-by-Nova\n"},
        "name": "test"
    }"#;

    #[test]
    fn openstack_meta_data_good() {
        let m = openstack_meta_data(NOVA_META_DATA.as_bytes()).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("test"));
        assert_eq!(
            m.ssh_keys,
            ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 Generated-by-Nova"]
        );
        assert_eq!(m.summary(), "host name test, 1 ssh key, no user-data");

        // `name` when there is no `hostname`; no keys at all is fine.
        let m = openstack_meta_data(br#"{"name": "web-1", "public_keys": null}"#).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("web-1"));
        assert!(m.ssh_keys.is_empty());
        let m = openstack_meta_data(b"{}").unwrap();
        assert_eq!((m.hostname, m.ssh_keys.len()), (None, 0));
    }

    #[test]
    fn openstack_meta_data_bad_names_the_key() {
        let e = |json: &str| {
            openstack_meta_data(json.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(
            e("{\"hostname\": ").starts_with("(top level): not JSON ("),
            "{}",
            e("{\"hostname\": ")
        );
        assert_eq!(
            e("[]"),
            "(top level): expected a JSON object, found an array"
        );
        assert_eq!(
            e(r#"{"hostname": 7}"#),
            "hostname: expected a string, found a number"
        );
        assert_eq!(
            e(r#"{"name": ["a"]}"#),
            "name: expected a string, found an array"
        );
        assert_eq!(
            e(r#"{"public_keys": ["ssh-ed25519 AAAA"]}"#),
            "public_keys: expected an object of key-pair names to OpenSSH keys, found an array"
        );
        assert_eq!(
            e(r#"{"public_keys": {"ok": "ssh-ed25519 AAAA", "my key": {"data": "x"}}}"#),
            "public_keys.\"my key\": expected a string (an OpenSSH public key line), found an object"
        );
    }

    #[test]
    fn openstack_metadata_service_after_the_others() {
        // Nova answers the other clouds' paths with 404.
        let (base, log) = serve_logged(|first, _| match first.split(' ').nth(1).unwrap_or("") {
            "/openstack/latest/meta_data.json" => (200, "", NOVA_META_DATA.to_string()),
            "/openstack/latest/user_data" => (200, "", USER_DATA.into()),
            _ => (404, "", String::new()),
        });
        let mut notes = Vec::new();
        let m = find(&base, &mut notes).unwrap();
        assert!(m.source.starts_with("openstack (127.0.0.1:"), "{m:?}");
        assert_eq!(m.summary(), "host name test, 1 ssh key, user-data");
        assert_eq!(m.user_data.as_deref(), Some(USER_DATA.as_bytes()));
        assert!(notes.is_empty(), "{notes:?}");
        let log = log.lock().unwrap().clone();
        let at = |req: &str, status: u16| {
            log.iter()
                .position(|(l, s)| l.starts_with(req) && *s == status)
                .unwrap_or_else(|| panic!("no {req} answered {status}: {log:?}"))
        };
        let meta = at("GET /openstack/latest/meta_data.json ", 200);
        assert!(at("GET /openstack/latest/user_data ", 200) > meta);
        for other in [
            "GET /latest/meta-data/instance-id ",
            "GET /computeMetadata/v1/instance/hostname ",
            "GET /metadata/instance/compute?",
        ] {
            assert!(at(other, 404) < meta, "{log:?}");
        }
        assert_applied(
            &m,
            "test",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 Generated-by-Nova",
        );

        // A malformed document is reported with the path and the key.
        let base = serve(|first, _| match first.split(' ').nth(1).unwrap_or("") {
            "/openstack/latest/meta_data.json" => (200, "", r#"{"public_keys": 1}"#.into()),
            _ => (404, "", String::new()),
        });
        let mut notes = Vec::new();
        assert!(find(&base, &mut notes).is_none());
        assert!(
            notes[0].starts_with(
                "warning: cloud metadata (openstack): GET /openstack/latest/meta_data.json: public_keys: expected an object"
            ),
            "{notes:?}"
        );
    }

    #[test]
    fn user_data_hostname_and_keys_make_one_config() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host";
        let mut m = Metadata {
            source: "gce".into(),
            hostname: Some("meta-1".into()),
            ssh_keys: vec![key.into(), "bogus".into()],
            user_data: Some(b"schema-version = 1\n[test-agent]\n".to_vec()),
            ..Metadata::default()
        };
        let mut notes = Vec::new();
        let c = crate::config::parse(&config_text(&m, &mut notes)).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("meta-1"));
        assert_eq!(c.ssh_keys.len(), 1);
        assert_eq!(
            (c.ssh_keys[0].user.as_str(), c.ssh_keys[0].key.as_str()),
            ("root", key)
        );
        assert!(c.test_agent.is_some());
        assert_eq!(notes.len(), 1, "{notes:?}");

        // User-data that sets its own host name wins; bad user-data is left out.
        m.user_data = Some(b"schema-version = 1\nhostname = \"ud\"\n".to_vec());
        let c = crate::config::parse(&config_text(&m, &mut notes)).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("ud"));
        let mut notes = Vec::new();
        m.user_data = Some(b"schema-version = 1\n[journal-shipper]\nurl = \"nope\"\n".to_vec());
        let c = crate::config::parse(&config_text(&m, &mut notes)).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("meta-1"));
        assert!(c.journal_shipper.is_none());
        assert!(
            notes[0].starts_with("ERROR: gce user-data: journal-shipper.url:"),
            "{notes:?}"
        );
        m.user_data = Some(b"#cloud-config\nusers: []\n".to_vec());
        let mut notes = Vec::new();
        config_text(&m, &mut notes);
        assert!(notes[0].contains("not TOML"), "{notes:?}");
    }
}
