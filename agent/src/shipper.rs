//! `slipway-agent journal-shipper`: sends the journal to an Elasticsearch/OpenSearch
//! `_bulk` endpoint, at least once. Consumes `journalctl -o json --follow` (from just
//! after the saved cursor, or from the start of the journal); produces NDJSON `_bulk`
//! requests of at most [`MAX_BATCH`] entries / [`MAX_BATCH_BYTES`] and, after each
//! acknowledged one, the cursor of its last entry in [`CURSOR`] (on /var).
//!
//! Delivery: a batch is acknowledged only by a 2xx answer whose JSON says
//! `"errors": false`. Until then it is sent again with exponential back-off (1 s to
//! 60 s) and nothing more is read: journalctl blocks on its full pipe, so memory stays
//! bounded by one batch plus a bounded queue while the endpoint is down, and the journal
//! on disk is the buffer. The cursor is written (atomically, fsynced) only after an
//! acknowledgement, so a crash re-sends at most the batch in flight (duplicates, never
//! loss); SIGTERM (a clean shutdown) lets the request in flight finish and its cursor be
//! written before exiting, so a reboot sends nothing twice. Each document's `_id` is
//! derived from the journal cursor, so an endpoint that honours `_id` even stores a
//! re-sent entry once.
//!
//! Security ([`Access`]): an `https://` endpoint is checked against the image's CA
//! bundle or a configured CA file (`ca-file`), and requests carry basic auth
//! (`username` + `password`) or an Elasticsearch API key (`api-key`), over https only.

use crate::http::tls::{Roots, Tls};
use crate::http::{Client, Credentials, Limits, Scheme, Url};
use crate::sha256;
use nix::sys::signal::{SigSet, Signal};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The saved journal cursor (the last entry the endpoint acknowledged).
pub const CURSOR: &str = "/var/lib/slipway/journal-shipper.cursor";
/// Entries per request, at most.
pub const MAX_BATCH: usize = 500;
/// Request body size, at most (a single larger entry is sent alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Journal lines queued between the reader and the sender, at most.
const QUEUE: usize = 256;
/// A journal line longer than this is cut (journalctl already omits fields over 4 KiB).
const MAX_LINE: u64 = 256 << 10;
/// How long a batch waits for more entries once it has one.
const LINGER: Duration = Duration::from_secs(1);
/// Back-off between failed sends: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// One `_bulk` request: the whole exchange, each read or write (Elasticsearch answers
/// a bulk request once it has indexed it), and the answer's size.
const LIMITS: Limits = Limits {
    deadline: Duration::from_secs(30),
    io_timeout: Duration::from_secs(20),
    max_body: 16 << 20,
};

/// Where to send.
pub struct Settings {
    /// The `_bulk` URL.
    pub url: Url,
    /// The `_index` of every document.
    pub index: String,
}

/// The environment variables that carry [`Access`] to the shipper's unit (from the env
/// file provisioning writes), beside `SLIPWAY_SHIPPER_URL` and `SLIPWAY_SHIPPER_INDEX`.
pub const ENV_CA_FILE: &str = "SLIPWAY_SHIPPER_CA_FILE";
/// See [`ENV_CA_FILE`].
pub const ENV_USERNAME: &str = "SLIPWAY_SHIPPER_USERNAME";
/// See [`ENV_CA_FILE`].
pub const ENV_PASSWORD: &str = "SLIPWAY_SHIPPER_PASSWORD";
/// See [`ENV_CA_FILE`].
pub const ENV_API_KEY: &str = "SLIPWAY_SHIPPER_API_KEY";

/// `[journal-shipper]`'s security keys as written, before [`Access::check`].
#[derive(Debug, Default)]
pub struct AccessKeys {
    /// `ca-file`.
    pub ca_file: Option<String>,
    /// `username`.
    pub username: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `api-key`.
    pub api_key: Option<String>,
}

/// How the shipper reaches a secured endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// For an https URL: trust only this PEM file's CAs (else the image's CA bundle).
    pub ca_file: Option<PathBuf>,
    /// Sent with every request (https only).
    pub credentials: Option<Credentials>,
}

impl Access {
    /// Checks `keys` for the endpoint `url`; the error names the key at fault (without
    /// the `journal-shipper.` prefix) and never shows a secret.
    pub fn check(url: &Url, keys: AccessKeys) -> Result<Access, (&'static str, String)> {
        let ca_file = match keys.ca_file {
            None => None,
            Some(_) if url.scheme == Scheme::Http => {
                return Err((
                    "ca-file",
                    "is set, but the url is http:// (expected an https:// url)".into(),
                ))
            }
            Some(p) if !p.starts_with('/') || p.chars().any(char::is_control) => {
                return Err((
                    "ca-file",
                    format!(
                        "{p:?} is not an absolute path (expected e.g. \"/etc/ssl/logs-ca.pem\")"
                    ),
                ))
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let credentials = match (keys.username, keys.password, keys.api_key) {
            (None, None, None) => None,
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err((
                    "api-key",
                    "is set with username and password (expected one way to authenticate)".into(),
                ))
            }
            (None, None, Some(k)) => {
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(("api-key", "is not an API key (expected the base64 \"encoded\" value Elasticsearch returns for a new key)".into()));
                }
                Some(Credentials::ApiKey(k))
            }
            (Some(_), None, None) => {
                return Err(("password", "is missing (username needs it)".into()))
            }
            (None, Some(_), None) => {
                return Err(("username", "is missing (password needs it)".into()))
            }
            (Some(user), Some(password), None) => {
                if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                    return Err(("username", format!("{user:?} is not a user name (expected no ':' and no control characters)")));
                }
                if password.is_empty() || password.chars().any(char::is_control) {
                    return Err(("password", "is empty or has control characters".into()));
                }
                Some(Credentials::Basic { user, password })
            }
        };
        if credentials.is_some() && url.scheme == Scheme::Http {
            return Err(("url", format!("{url} is http://, and credentials are sent over https only (over http they would cross the network in clear)")));
        }
        Ok(Access {
            ca_file,
            credentials,
        })
    }

    /// Reads and checks the settings the unit's environment carries (`get` looks one
    /// up); the error names the variable.
    pub fn from_env(url: &Url, get: impl Fn(&str) -> Option<String>) -> Result<Access, String> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let keys = AccessKeys {
            ca_file: get(ENV_CA_FILE),
            username: get(ENV_USERNAME),
            password: get(ENV_PASSWORD),
            api_key: get(ENV_API_KEY),
        };
        Access::check(url, keys).map_err(|(key, m)| {
            let var = match key {
                "ca-file" => ENV_CA_FILE,
                "username" => ENV_USERNAME,
                "password" => ENV_PASSWORD,
                "api-key" => ENV_API_KEY,
                _ => "SLIPWAY_SHIPPER_URL",
            };
            format!("{var}: {m}")
        })
    }
}

/// The shipper unit's environment file for `j` (systemd `EnvironmentFile=` syntax, each
/// value double-quoted); it holds credentials, so it is written mode 0600.
pub fn env_file(j: &crate::config::Shipper) -> String {
    let mut vars = vec![
        ("SLIPWAY_SHIPPER_URL", j.url.clone()),
        ("SLIPWAY_SHIPPER_INDEX", j.index.clone()),
    ];
    if let Some(p) = &j.access.ca_file {
        vars.push((ENV_CA_FILE, p.display().to_string()));
    }
    match &j.access.credentials {
        Some(Credentials::Basic { user, password }) => {
            vars.push((ENV_USERNAME, user.clone()));
            vars.push((ENV_PASSWORD, password.clone()));
        }
        Some(Credentials::ApiKey(k)) => vars.push((ENV_API_KEY, k.clone())),
        Some(Credentials::Bearer(_)) | None => {}
    }
    vars.iter()
        .map(|(k, v)| {
            // Inside double quotes systemd takes \" \\ \` \$ as escapes.
            let mut q = String::new();
            for c in v.chars() {
                if matches!(c, '"' | '\\' | '`' | '$') {
                    q.push('\\');
                }
                q.push(c);
            }
            format!("{k}=\"{q}\"\n")
        })
        .collect()
}

/// Where batches go, and how: the URL, a client (with TLS for https) and credentials.
pub struct Endpoint {
    url: Url,
    client: Client,
    credentials: Option<Credentials>,
}

impl Endpoint {
    /// Reads the trusted CAs for an https URL; the error names the file.
    pub fn new(url: Url, access: &Access) -> Result<Endpoint, String> {
        let client = Client::new(LIMITS);
        let client = match url.scheme {
            Scheme::Http => client,
            Scheme::Https => {
                let roots = access.ca_file.clone().map_or(Roots::System, Roots::File);
                client.with_tls(Tls::new(roots)?)
            }
        };
        Ok(Endpoint {
            url,
            client,
            credentials: access.credentials.clone(),
        })
    }

    /// `https://... (TLS trusting ..., with basic auth as ...)` for the console.
    fn describe(&self) -> String {
        let mut how = Vec::new();
        if let Some(t) = self.client.tls() {
            how.push(format!("TLS trusting {}", t.roots()));
        }
        if let Some(c) = &self.credentials {
            how.push(format!("with {}", c.describe()));
        }
        match how.is_empty() {
            true => self.url.to_string(),
            false => format!("{} ({})", self.url, how.join(", ")),
        }
    }
}

/// One journal entry, ready to send.
#[derive(Debug, PartialEq)]
pub struct Entry {
    /// `__CURSOR`.
    pub cursor: String,
    /// The two NDJSON lines (action, document), each ending in a newline.
    pub ndjson: String,
}

/// Turns one `journalctl -o json` line into an entry; `None` for lines that are not a
/// JSON object with a cursor.
pub fn entry(line: &str, index: &str) -> Option<Entry> {
    let v: Value = serde_json::from_str(line).ok()?;
    let cursor = v.get("__CURSOR")?.as_str()?.to_string();
    let text = |k: &str| -> Value {
        match v.get(k) {
            Some(Value::String(s)) => Value::String(s.clone()),
            // Binary fields come as arrays of byte values.
            Some(Value::Array(a)) => {
                let bytes: Vec<u8> = a
                    .iter()
                    .filter_map(|b| b.as_u64())
                    .map(|b| b as u8)
                    .collect();
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => Value::Null,
        }
    };
    let ts = v
        .get("__REALTIME_TIMESTAMP")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<u64>().ok())
        .map(rfc3339_micros);
    let priority = v
        .get("PRIORITY")
        .and_then(|p| p.as_str())
        .and_then(|p| p.parse::<u8>().ok());
    let doc = json!({
        "@timestamp": ts,
        "host": text("_HOSTNAME"),
        "unit": text("_SYSTEMD_UNIT"),
        "syslog_identifier": text("SYSLOG_IDENTIFIER"),
        "priority": priority,
        "message": text("MESSAGE"),
        "boot_id": text("_BOOT_ID"),
        "cursor": cursor,
    });
    let action = json!({"index": {"_index": index, "_id": sha256::hex(cursor.as_bytes())}});
    Some(Entry {
        cursor,
        ndjson: format!("{action}\n{doc}\n"),
    })
}

/// Microseconds since the epoch as RFC 3339 UTC (`2026-11-27T23:15:25.123456Z`).
pub use slipway_common::date::rfc3339_micros;

/// What a `_bulk` answer says of a batch of `n` documents, item by item (the answer's
/// `items` are in request order).
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Items to send again: the endpoint was busy or failed (429, 5xx).
    pub retry: Vec<usize>,
    /// Items the endpoint refused for good (another 4xx: a mapping conflict, a
    /// document too large), with its reason. Sending them again would fail again and
    /// hold back everything after them, so they are reported and dropped, as Filebeat
    /// drops events its output rejects as non-retryable.
    pub rejected: Vec<(usize, String)>,
}

/// Reads a `_bulk` answer to a batch of `n` documents: `Err` when the batch as a whole
/// is not acknowledged (not 2xx, not JSON, no `errors` flag, or `errors: true` with
/// items that do not match the batch), else which items to send again and which were
/// refused for good.
pub fn verdict(status: u16, body: &[u8], n: usize) -> Result<Verdict, String> {
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("HTTP {status}, but the answer is not JSON ({e})"))?;
    match v.get("errors") {
        Some(Value::Bool(false)) => Ok(Verdict::default()),
        Some(Value::Bool(true)) => {
            let items = v.get("items").and_then(|i| i.as_array());
            let items = match items {
                Some(i) if i.len() == n => i,
                _ => {
                    return Err(format!(
                        "the endpoint reports errors, and its items do not match the {n} documents sent"
                    ))
                }
            };
            let mut out = Verdict::default();
            for (i, item) in items.iter().enumerate() {
                // {"index": {"status": 201, "error": {...}}}: one action per item.
                let r = item.as_object().and_then(|o| o.values().next());
                let st = r
                    .and_then(|r| r.get("status"))
                    .and_then(|s| s.as_u64())
                    .unwrap_or(0);
                let why = || {
                    r.and_then(|r| r.get("error"))
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| format!("status {st}"))
                };
                match st {
                    200..=299 => {}
                    429 | 500..=599 | 0 => out.retry.push(i),
                    _ => out.rejected.push((i, why())),
                }
            }
            Ok(out)
        }
        _ => Err(format!(
            "HTTP {status}, but the answer has no \"errors\" flag"
        )),
    }
}

/// The persistent journal directory: with journald's default `Storage=auto`, the journal
/// lives in /run (lost at a crash) unless this exists.
const JOURNAL_DIR: &str = "/var/log/journal";

/// Makes the journal persistent when it is not: creates [`JOURNAL_DIR`] (2755,
/// group systemd-journal as systemd's packaging makes it) and has journald flush into
/// it. Otherwise entries not yet delivered at a crash would be lost with /run.
fn persistent_journal(say: &mut Say) {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(JOURNAL_DIR);
    if dir.exists() {
        return;
    }
    let gid = std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"systemd-journal")).then(|| f.get(2)?.parse::<u32>().ok())?
        });
    let made = std::fs::create_dir_all(dir)
        .and_then(|()| std::os::unix::fs::chown(dir, Some(0), gid))
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2755)));
    if let Err(e) = made {
        say.line(&format!(
            "warning: creating {JOURNAL_DIR}: {e}; the journal stays in /run, so entries not yet delivered at a crash are lost"
        ));
        return;
    }
    let flushed = Command::new("journalctl")
        .arg("--flush")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .status();
    match flushed {
        Ok(s) if s.success() => say.line(&format!(
            "created {JOURNAL_DIR}: the journal is persistent now, so entries not yet delivered survive a crash"
        )),
        Ok(s) => say.line(&format!("warning: journalctl --flush failed ({s})")),
        Err(e) => say.line(&format!("warning: running journalctl --flush: {e}")),
    }
}

/// Reads the saved cursor, if any.
fn saved_cursor(path: &Path) -> Option<String> {
    let c = std::fs::read_to_string(path).ok()?;
    let c = c.trim().to_string();
    (!c.is_empty()).then_some(c)
}

/// `journalctl -o json --all ARGS`, its output piped.
fn journalctl(args: &[&str]) -> Result<Child, String> {
    Command::new("journalctl")
        .args(["-o", "json", "--all"])
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting journalctl: {e}"))
}

/// Lines of `r` into a bounded queue (the sender's pace holds the reader back).
fn reader(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut line = Vec::new();
            match (&mut r).take(MAX_LINE).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        // Cut: skip the rest of this line.
                        let mut rest = Vec::new();
                        let _ = r.read_until(b'\n', &mut rest);
                    }
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Prints on stderr (the journal) and /dev/console.
struct Say {
    console: Option<File>,
}

impl Say {
    fn line(&mut self, l: &str) {
        let l = format!("slipway-journal-shipper: {l}\n");
        if let Some(c) = &mut self.console {
            let _ = c.write_all(l.as_bytes());
        }
        let _ = std::io::stderr().write_all(l.as_bytes());
    }
}

/// Runs until SIGTERM/SIGINT (exit 0) or until journalctl ends (an error). The TLS and
/// credential settings come from the environment ([`ENV_CA_FILE`] ...); a bad one, or
/// a CA file that cannot be read, is an error at once.
pub fn run(s: &Settings, console: Option<File>) -> Result<(), String> {
    let access = Access::from_env(&s.url, |k| std::env::var(k).ok())?;
    let endpoint = Endpoint::new(s.url.clone(), &access)?;
    // Block the stop signals in every thread and wait for them in one: no handler, no
    // unsafe code; the flag is checked between steps.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            if signals.wait().is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let mut p = Pump {
        s,
        endpoint: &endpoint,
        stop: &stop,
        say: Say { console },
        failures: 0,
        sent: 0,
        rejected: 0,
        cursor: saved_cursor(Path::new(CURSOR)),
    };
    persistent_journal(&mut p.say);
    p.say.line(&format!(
        "shipping the journal to {} (index {}), {}",
        endpoint.describe(),
        s.index,
        match &p.cursor {
            Some(_) => format!("after the cursor in {CURSOR}"),
            None => "from the start of the journal".into(),
        }
    ));
    // The rest of the saved cursor's boot first, found by its boot id (the journal's
    // per-field index) rather than by seeking the cursor in the journal's global
    // order: after a crash, the last file of that boot was not closed and its global
    // entry array may end in a torn write, and journalctl's seek then skips the whole
    // rest of the file (entries that are on disk and not yet delivered).
    let result = match p.cursor.clone() {
        Some(c) => match field(&c, "b") {
            Some(boot) => {
                let mut j = journalctl(&["--no-pager", &format!("_BOOT_ID={boot}")])?;
                let r = p.pump(&mut j, Some(&c));
                let _ = j.kill();
                let _ = j.wait();
                r
            }
            None => Ok(Flow::Ended),
        },
        None => Ok(Flow::Ended),
    };
    let result = match result {
        Ok(Flow::Ended) => {
            let after = p.cursor.as_ref().map(|c| format!("--after-cursor={c}"));
            let mut args = vec!["--follow", "--no-pager"];
            // Without a cursor: everything the journal still holds.
            args.push(after.as_deref().unwrap_or("--no-tail"));
            let mut j = journalctl(&args)?;
            let r = p.pump(&mut j, None);
            let _ = j.kill();
            let _ = j.wait();
            match r {
                Ok(Flow::Ended) => Err("journalctl ended".to_string()),
                Ok(Flow::Stopped) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Ok(Flow::Stopped) => Ok(()),
        Err(e) => Err(e),
    };
    p.say.line(&format!(
        "stopped; {} entries delivered in this run, {} refused by the endpoint",
        p.sent - p.rejected,
        p.rejected
    ));
    result
}

/// How a pass over journalctl's output ended.
enum Flow {
    /// journalctl ended (all of a non-follow query was delivered).
    Ended,
    /// SIGTERM/SIGINT.
    Stopped,
}

/// The sender's state.
struct Pump<'a> {
    s: &'a Settings,
    endpoint: &'a Endpoint,
    stop: &'a AtomicBool,
    say: Say,
    failures: u32,
    sent: u64,
    /// Entries the endpoint refused for good in this run.
    rejected: u64,
    /// The last acknowledged entry's cursor (saved in [`CURSOR`]).
    cursor: Option<String>,
}

impl Pump<'_> {
    /// Sends `journal`'s entries in acknowledged batches, saving the cursor after each;
    /// with `after`, only entries that come after that cursor.
    fn pump(&mut self, journal: &mut Child, after: Option<&str>) -> Result<Flow, String> {
        let out = journal
            .stdout
            .take()
            .ok_or("journalctl's output is not captured")?;
        let lines = reader(out);
        loop {
            let mut batch = match collect(&lines, &self.s.index, self.stop) {
                Collected::Batch(b) => b,
                Collected::Stopped => return Ok(Flow::Stopped),
                Collected::Ended => return Ok(Flow::Ended),
            };
            if let Some(c) = after {
                batch.retain(|e| comes_after(&e.cursor, c));
            }
            if batch.is_empty() {
                continue;
            }
            if !self.deliver(&batch) {
                return Ok(Flow::Stopped);
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Flow::Stopped);
            }
        }
    }

    /// Sends one batch until every entry is acknowledged or refused for good (true), or
    /// the stop flag is raised (false). Items the endpoint asks to retry (429, 5xx) are
    /// sent again alone.
    fn deliver(&mut self, batch: &[Entry]) -> bool {
        let mut pending: Vec<&Entry> = batch.iter().collect();
        let mut delay = BACKOFF.0;
        loop {
            let failure = match post(self.endpoint, &pending) {
                Ok(v) => {
                    for (i, why) in &v.rejected {
                        self.rejected += 1;
                        self.say.line(&format!(
                            "ERROR: {} refused an entry for good, dropped it (cursor {}): {why}",
                            self.endpoint.url, pending[*i].cursor
                        ));
                    }
                    if v.retry.is_empty() {
                        break;
                    }
                    let reason = format!(
                        "{} of {} entries not accepted (busy or failing), sending them again",
                        v.retry.len(),
                        pending.len()
                    );
                    pending = v.retry.iter().map(|&i| pending[i]).collect();
                    reason
                }
                Err(e) => e,
            };
            self.failures += 1;
            // The first failure, then one line a minute at most (the retries go on):
            // enough to see the problem without flooding the console.
            if self.failures == 1 || delay == BACKOFF.1 {
                self.say.line(&retry_line(
                    pending.len(),
                    &self.endpoint.url,
                    &failure,
                    delay,
                ));
            }
            if sleep_unless_stopped(delay, self.stop) {
                return false;
            }
            delay = (delay * 2).min(BACKOFF.1);
        }
        let last = &batch[batch.len() - 1].cursor;
        if let Err(e) = crate::provision::write_atomic(
            Path::new(CURSOR),
            format!("{last}\n").as_bytes(),
            0o644,
            (0, 0),
        ) {
            self.say.line(&format!("ERROR: saving the cursor: {e}"));
        }
        self.cursor = Some(last.clone());
        self.sent += batch.len() as u64;
        if self.failures > 0 {
            self.say.line(&format!(
                "delivered to {} again after {} failed attempts",
                self.endpoint.url, self.failures
            ));
            self.failures = 0;
        }
        true
    }
}

/// Sends `pending` as one `_bulk` request to `to` and reads the verdict; `Err` says why
/// the batch as a whole was not acknowledged (nothing answering is said as such).
fn post(to: &Endpoint, pending: &[&Entry]) -> Result<Verdict, String> {
    let body: String = pending.iter().map(|e| e.ndjson.as_str()).collect();
    to.client
        .send(
            "POST",
            &to.url,
            &[("Content-Type", "application/x-ndjson")],
            to.credentials.as_ref(),
            body.as_bytes(),
        )
        .map_err(|e| {
            if e.unreachable {
                format!("the endpoint is unreachable ({e})")
            } else {
                e.msg
            }
        })
        .and_then(|reply| verdict(reply.status, &reply.body, pending.len()))
}

/// The console line for a failed send of `n` entries (without the program's prefix).
fn retry_line(n: usize, url: &Url, failure: &str, delay: Duration) -> String {
    format!(
        "ERROR: sending {n} entries to {url}: {failure}; retrying in {} s (nothing is lost: the journal keeps them)",
        delay.as_secs()
    )
}

/// One `key=value` field of a journal cursor (`s=...;i=...;b=...;m=...;t=...;x=...`).
fn field<'a>(cursor: &'a str, key: &str) -> Option<&'a str> {
    cursor
        .split(';')
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

/// Whether entry cursor `e` comes after cursor `c`: by sequence number within one
/// sequence-number id, else by wall-clock time.
fn comes_after(e: &str, c: &str) -> bool {
    let hex = |cur: &str, k: &str| field(cur, k).and_then(|v| u64::from_str_radix(v, 16).ok());
    match (field(e, "s"), field(c, "s")) {
        (Some(a), Some(b)) if a == b => hex(e, "i") > hex(c, "i"),
        _ => hex(e, "t") > hex(c, "t"),
    }
}

enum Collected {
    Batch(Vec<Entry>),
    Stopped,
    Ended,
}

/// Waits for the first entry (checking the stop flag every second), then takes more
/// for up to [`LINGER`] or until the batch is full.
fn collect(lines: &Receiver<String>, index: &str, stop: &AtomicBool) -> Collected {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut first: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Collected::Stopped;
        }
        let wait = match first {
            None => Duration::from_secs(1),
            Some(t) => match LINGER.checked_sub(t.elapsed()) {
                Some(w) => w,
                None => return Collected::Batch(batch),
            },
        };
        match lines.recv_timeout(wait) {
            Ok(line) => {
                if let Some(e) = entry(&line, index) {
                    bytes += e.ndjson.len();
                    batch.push(e);
                    first.get_or_insert_with(Instant::now);
                    if batch.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                        return Collected::Batch(batch);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if first.is_some() {
                    return Collected::Batch(batch);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return if batch.is_empty() {
                    Collected::Ended
                } else {
                    Collected::Batch(batch)
                };
            }
        }
    }
}

/// Sleeps `d` in short steps; true if the stop flag was raised meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
    stop.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            rfc3339_micros(1_795_821_325_123_456),
            "2026-11-27T23:15:25.123456Z"
        );
    }

    #[test]
    fn journal_json_becomes_two_ndjson_lines() {
        let line = r#"{"__CURSOR":"s=ab;i=1","__REALTIME_TIMESTAMP":"1795821325123456","_HOSTNAME":"n1","_SYSTEMD_UNIT":"x.service","SYSLOG_IDENTIFIER":"x","PRIORITY":"6","MESSAGE":[104,105],"_BOOT_ID":"b1"}"#;
        let e = entry(line, "journal").unwrap();
        let mut l = e.ndjson.lines();
        let action: Value = serde_json::from_str(l.next().unwrap()).unwrap();
        let doc: Value = serde_json::from_str(l.next().unwrap()).unwrap();
        assert_eq!(action["index"]["_index"], "journal");
        assert_eq!(action["index"]["_id"], sha256::hex(b"s=ab;i=1"));
        assert_eq!(doc["message"], "hi");
        assert_eq!(doc["priority"], 6);
        assert_eq!(doc["host"], "n1");
        assert_eq!(doc["unit"], "x.service");
        assert_eq!(doc["syslog_identifier"], "x");
        assert_eq!(doc["boot_id"], "b1");
        assert_eq!(doc["@timestamp"], "2026-11-27T23:15:25.123456Z");
        assert!(e.ndjson.ends_with('\n') && l.next().is_none());
        assert!(entry("not json", "j").is_none());
        assert!(entry(r#"{"MESSAGE":"no cursor"}"#, "j").is_none());
    }

    #[test]
    fn cursor_fields_and_order() {
        let c = "s=aa;i=1f;b=b1;m=10;t=6614af9167980;x=9";
        assert_eq!(field(c, "b"), Some("b1"));
        assert_eq!(field(c, "i"), Some("1f"));
        assert_eq!(field(c, "z"), None);
        assert!(comes_after("s=aa;i=20;b=b1;m=11;t=6614af9167981;x=1", c));
        assert!(!comes_after(c, c));
        assert!(!comes_after("s=aa;i=1e;b=b1;m=9;t=6614af9167990;x=1", c));
        // Another sequence-number id: by time.
        assert!(comes_after("s=bb;i=1;b=b2;m=1;t=6614af9167990;x=1", c));
        assert!(!comes_after("s=bb;i=99;b=b2;m=1;t=6614af9167000;x=1", c));
    }

    #[test]
    fn bulk_answers_item_by_item() {
        assert_eq!(
            verdict(200, br#"{"took":1,"errors":false,"items":[]}"#, 3),
            Ok(Verdict::default())
        );
        assert!(verdict(503, b"down", 1).unwrap_err().contains("HTTP 503"));
        assert!(verdict(200, b"ok", 1).is_err());
        assert!(verdict(200, b"{}", 1).is_err());
        let mixed = br#"{"errors":true,"items":[
            {"index":{"status":201}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}},
            {"index":{"status":503}}]}"#;
        let v = verdict(200, mixed, 4).unwrap();
        assert_eq!(v.retry, vec![1, 3]);
        assert_eq!(v.rejected.len(), 1);
        assert_eq!(v.rejected[0].0, 2);
        assert!(v.rejected[0].1.contains("mapper_parsing_exception"));
        // Items that do not match what was sent: the whole batch again.
        let e = verdict(200, mixed, 5).unwrap_err();
        assert!(e.contains("do not match the 5 documents"), "{e}");
        assert!(verdict(200, br#"{"errors":true}"#, 1).is_err());
    }

    /// Journal entries `a`, `b`, ... as `journalctl -o json` gives them.
    fn entries(n: u8) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                let line = format!(
                    r#"{{"__CURSOR":"s=ab;i={i}","__REALTIME_TIMESTAMP":"1","MESSAGE":"{}"}}"#,
                    char::from(b'a' + i)
                );
                entry(&line, "node-logs").unwrap()
            })
            .collect()
    }

    /// An http endpoint without TLS or credentials.
    fn plain(url: &Url) -> Endpoint {
        Endpoint::new(url.clone(), &Access::default()).unwrap()
    }

    /// A `_bulk` endpoint on the loopback that answers one request with `status` and
    /// `body`; the request it got comes back through the handle.
    fn endpoint(status: u16, body: &'static str) -> (Url, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/_bulk", l.local_addr().unwrap())).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            // Head, then as much body as Content-Length says.
            loop {
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break;
                    }
                }
                let n = c.read(&mut b).unwrap();
                assert!(n > 0, "the client closed early");
                got.extend_from_slice(&b[..n]);
            }
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            String::from_utf8(got).unwrap()
        });
        (url, t)
    }

    #[test]
    fn a_batch_is_posted_as_ndjson_and_judged_item_by_item() {
        let batch = entries(3);
        let pending: Vec<&Entry> = batch.iter().collect();
        let (url, seen) = endpoint(
            200,
            r#"{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":429}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#,
        );
        let v = post(&plain(&url), &pending).unwrap();
        assert_eq!(v.retry, [1]);
        assert_eq!(v.rejected[0].0, 2);
        let req = seen.join().unwrap();
        assert!(req.starts_with("POST /_bulk HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains("Content-Type: application/x-ndjson\r\n"),
            "{req}"
        );
        let body: String = batch.iter().map(|e| e.ndjson.as_str()).collect();
        assert!(req.ends_with(&format!("\r\n\r\n{body}")), "{req}");

        let (url, seen) = endpoint(503, r#"{"error":"unavailable"}"#);
        let e = post(&plain(&url), &pending).unwrap_err();
        assert_eq!(e, r#"HTTP 503: {"error":"unavailable"}"#);
        seen.join().unwrap();
    }

    /// An endpoint nothing answers: the failure says so, names the address, and the
    /// console line names the URL (a boot once showed this with a dead address).
    #[test]
    fn a_dead_endpoint_is_reported_unreachable() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let url = Url::parse(&format!("http://{addr}/_bulk")).unwrap();
        let batch = entries(2);
        let pending: Vec<&Entry> = batch.iter().collect();
        let e = post(&plain(&url), &pending).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "the endpoint is unreachable (connecting to {addr}: "
            )),
            "{e}"
        );
        let line = retry_line(pending.len(), &url, &e, BACKOFF.0);
        assert!(
            line.starts_with(&format!(
                "ERROR: sending 2 entries to http://{addr}/_bulk: the endpoint is unreachable ("
            )),
            "{line}"
        );
        assert!(line.ends_with("; retrying in 1 s (nothing is lost: the journal keeps them)"));
    }

    /// The values of an environment file as systemd reads them (double-quoted values:
    /// `\"`, `\\`, `\``, `\$` are escapes; another backslash stays).
    fn systemd_env(text: &str) -> std::collections::HashMap<String, String> {
        let mut vars = std::collections::HashMap::new();
        for line in text.lines() {
            let (k, v) = line.split_once('=').unwrap();
            let v = v.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
            let mut out = String::new();
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                match (c, chars.clone().next()) {
                    ('\\', Some(n)) if "\"\\`$".contains(n) => {
                        out.push(n);
                        chars.next();
                    }
                    (c, _) => out.push(c),
                }
            }
            vars.insert(k.to_string(), out);
        }
        vars
    }

    /// `[journal-shipper]` as provisioning reads it, through the unit's environment file,
    /// to the endpoint the shipper sends to.
    fn endpoint_from_config(table: &str) -> Result<Endpoint, String> {
        let text = format!("schema-version = 1\n[journal-shipper]\n{table}");
        let cfg = crate::config::parse(&text).map_err(|e| e.to_string())?;
        let j = cfg.journal_shipper.unwrap();
        let env = systemd_env(&env_file(&j));
        let url = Url::parse(&env["SLIPWAY_SHIPPER_URL"]).unwrap();
        assert_eq!(env["SLIPWAY_SHIPPER_INDEX"], j.index);
        let access = Access::from_env(&url, |k| env.get(k).cloned())?;
        assert_eq!(access, j.access);
        Endpoint::new(url, &access)
    }

    /// Issue 17: the shipper delivers over https to a server with a test CA, with
    /// basic auth and then with an API key; the settings go config -> env file -> shipper.
    #[test]
    fn delivers_over_https_with_basic_auth_then_an_api_key() {
        let pki = crate::http::tests::TestPki::new(&["127.0.0.1"]);
        let dir = crate::provision::tests::tempfile_lite::Dir::new();
        let ca = pki.ca_file(&dir.0);
        let ok = r#"{"errors":false,"items":[]}"#;
        let (port, seen) = pki.serve(2, 200, ok);
        let batch = entries(2);
        let pending: Vec<&Entry> = batch.iter().collect();
        let body: String = batch.iter().map(|e| e.ndjson.as_str()).collect();
        let password = r#"p"a$s`s\w:rd é"#;
        let basic = endpoint_from_config(&format!(
            "url = \"https://127.0.0.1:{port}/_bulk\"\nindex = \"node-logs\"\nca-file = \"{}\"\nusername = \"shipper\"\npassword = '{password}'\n",
            ca.display()
        ))
        .unwrap();
        assert_eq!(
            basic.describe(),
            format!(
                "https://127.0.0.1:{port}/_bulk (TLS trusting the CA file {}, with basic auth as shipper)",
                ca.display()
            )
        );
        assert_eq!(post(&basic, &pending).unwrap(), Verdict::default());
        let req = seen.recv().unwrap().unwrap();
        let want = slipway_common::base64::encode(format!("shipper:{password}").as_bytes());
        assert!(req.starts_with("POST /_bulk HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains(&format!("\r\nAuthorization: Basic {want}\r\n")),
            "{req}"
        );
        assert!(req.ends_with(&format!("\r\n\r\n{body}")), "{req}");

        let key = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";
        let api = endpoint_from_config(&format!(
            "url = \"https://127.0.0.1:{port}/_bulk\"\nca-file = \"{}\"\napi-key = \"{key}\"\n",
            ca.display()
        ))
        .unwrap();
        assert!(
            api.describe().ends_with(", with an API key)"),
            "{}",
            api.describe()
        );
        assert_eq!(post(&api, &pending).unwrap(), Verdict::default());
        let req = seen.recv().unwrap().unwrap();
        assert!(
            req.contains(&format!("\r\nAuthorization: ApiKey {key}\r\n")),
            "{req}"
        );
    }

    /// Without the test CA the handshake fails, the error says why, and the server never
    /// sees the request (nor its credentials).
    #[test]
    fn without_the_ca_the_shipper_refuses_and_says_why() {
        let pki = crate::http::tests::TestPki::new(&["127.0.0.1"]);
        let other = crate::http::tests::TestPki::new(&["127.0.0.1"]);
        let dir = crate::provision::tests::tempfile_lite::Dir::new();
        let wrong_ca = other.ca_file(&dir.0);
        let (port, seen) = pki.serve(2, 200, r#"{"errors":false}"#);
        let batch = entries(1);
        let pending: Vec<&Entry> = batch.iter().collect();
        let url = format!("url = \"https://127.0.0.1:{port}/_bulk\"\napi-key = \"k\"\n");

        let e = endpoint_from_config(&format!("{url}ca-file = \"{}\"\n", wrong_ca.display()))
            .and_then(|to| post(&to, &pending))
            .unwrap_err();
        assert_eq!(
            e,
            format!(
                "TLS handshake with 127.0.0.1:{port} failed: the server's certificate is not signed by a CA this node trusts (it trusts the CA file {}; set the endpoint's CA file) (invalid peer certificate: UnknownIssuer)",
                wrong_ca.display()
            )
        );
        assert!(seen.recv().unwrap().is_err(), "the server read a request");

        // No ca-file: the system bundle, which does not hold the test CA.
        let system = Path::new(crate::http::tls::SYSTEM_ROOTS);
        match endpoint_from_config(&url) {
            Ok(to) => {
                let e = post(&to, &pending).unwrap_err();
                assert!(e.contains("the server's certificate is not signed by a CA this node trusts (it trusts the system CA bundle /etc/ssl/certs/ca-certificates.crt;"), "{e}");
                assert!(seen.recv().unwrap().is_err(), "the server read a request");
            }
            Err(e) => {
                // A host without ca-certificates: the shipper says that instead.
                eprintln!(
                    "note: {} is missing here, so the refusal is at start: {e}",
                    system.display()
                );
                assert!(!system.exists());
                assert!(
                    e.starts_with(
                        "reading the system CA bundle /etc/ssl/certs/ca-certificates.crt: "
                    ),
                    "{e}"
                );
                assert!(e.ends_with("(the image needs the ca-certificates package, or the endpoint's CA as a file of its own)"), "{e}");
            }
        }
    }

    #[test]
    fn security_keys_are_checked_without_showing_secrets() {
        let https = "url = \"https://logs.example/_bulk\"\n";
        for (table, want) in [
            (
                "url = \"http://logs:9200/_bulk\"\napi-key = \"s3cret\"\n".to_string(),
                "journal-shipper.url: http://logs:9200/_bulk is http://, and credentials are sent over https only",
            ),
            (
                "url = \"http://logs:9200/_bulk\"\nca-file = \"/etc/ca.pem\"\n".into(),
                "journal-shipper.ca-file: is set, but the url is http:// (expected an https:// url)",
            ),
            (
                format!("{https}ca-file = \"ca.pem\"\n"),
                "journal-shipper.ca-file: \"ca.pem\" is not an absolute path",
            ),
            (
                format!("{https}username = \"u\"\n"),
                "journal-shipper.password: is missing (username needs it)",
            ),
            (
                format!("{https}password = \"s3cret\"\n"),
                "journal-shipper.username: is missing (password needs it)",
            ),
            (
                format!("{https}username = \"a:b\"\npassword = \"s3cret\"\n"),
                "journal-shipper.username: \"a:b\" is not a user name",
            ),
            (
                format!("{https}username = \"u\"\npassword = \"s3cret\\n\"\n"),
                "journal-shipper.password: is empty or has control characters",
            ),
            (
                format!("{https}username = \"u\"\npassword = \"s3cret\"\napi-key = \"s3cret\"\n"),
                "journal-shipper.api-key: is set with username and password",
            ),
            (
                format!("{https}api-key = \"s3cret s3cret\"\n"),
                "journal-shipper.api-key: is not an API key",
            ),
            (
                format!("{https}token = \"s3cret\"\n"),
                "journal-shipper.token: unknown field `token`",
            ),
        ] {
            let e = endpoint_from_config(&table).err().unwrap();
            assert!(e.contains(want), "{table}: {e}");
            assert!(!e.contains("s3cret"), "{table}: {e}");
        }
        let e = Access::from_env(&Url::parse("http://x/").unwrap(), |k| {
            (k == ENV_API_KEY).then(|| "k".to_string())
        })
        .unwrap_err();
        assert!(
            e.starts_with("SLIPWAY_SHIPPER_URL: http://x:80/ is http://"),
            "{e}"
        );
    }
}
