//! The HTTP side of a push: one registry, one repository, retries and authentication.
//!
//! Consumes a [`Reference`], transport settings and optional [`Credentials`]; produces
//! [`Reply`]s to requests on the distribution API
//! (<https://github.com/opencontainers/distribution-spec/blob/main/spec.md>). Requests go
//! out anonymously first; a 401 is answered from its `WWW-Authenticate` challenge with
//! Basic credentials or a Bearer token from the challenge's realm (cached per scope for
//! the run), if [`super::trust`] lets the realm have them. Connection errors and
//! 429/502/503/504 are retried with exponential backoff; other 4xx answers are returned
//! at once. Every request, backoff and read ends by the push's [`Deadline`], and every
//! read by the per-read time-out.

use super::auth::{self, Challenge, Credentials};
use super::deadline::{secs, Deadline, DeadlineReader, Timeouts, CONNECT};
use super::reference::Reference;
use super::trust::RealmPolicy;
use crate::exit::{self, Code};
use crate::io::hash::sha256_reader;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// The first backoff; it doubles after each failed attempt.
    pub first_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            first_delay: Duration::from_millis(500),
        }
    }
}

impl Retry {
    fn delay(&self, failed: u32) -> Duration {
        self.first_delay * 2u32.saturating_pow(failed.saturating_sub(1))
    }
}

/// A request body; files are streamed, never read into memory.
pub enum Body<'a> {
    /// No body.
    Empty,
    /// Bytes with a Content-Type.
    Bytes(&'a [u8], &'a str),
    /// A file of `size` bytes, as `application/octet-stream`; `progress` gets each chunk's length.
    File {
        /// The file.
        path: &'a Path,
        /// Its size (sent as Content-Length).
        size: u64,
        /// Called with the length of every chunk read.
        progress: &'a mut dyn FnMut(u64),
    },
}

/// A registry's answer: status, headers and the (small) body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body (empty when it was hashed instead).
    pub body: Vec<u8>,
    /// `sha256:<hex>` and length of a body read with [`ReadBody::Hash`] (the length stops
    /// one past the limit).
    pub hashed: Option<(String, u64)>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The registry's error document (`errors[].code: message`), or the body's start.
    pub fn error_text(&self) -> String {
        registry_errors(&String::from_utf8_lossy(&self.body))
    }
}

/// Formats a distribution-spec error body: `CODE: message (detail)` joined by `; `.
pub fn registry_errors(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("?");
                    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    match e.get("detail").filter(|d| !d.is_null()) {
                        Some(d) => format!("{code}: {msg} (detail: {d})"),
                        None => format!("{code}: {msg}"),
                    }
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
    }
    let t = body.trim();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t.chars().take(400).collect()
    }
}

/// A failure that may go away when the whole operation is started again (a broken
/// connection, 429, 502-504). Only returned by requests made without retries.
#[derive(Debug)]
pub struct Transient(pub String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transient {}

enum Auth {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        tokens: HashMap<String, String>,
    },
}

/// Transport settings of a push.
#[derive(Debug, Clone, Default)]
pub struct Net {
    /// Registries (`HOST:PORT` or `HOST`) reached over plain HTTP although not loopback.
    pub insecure: Vec<String>,
    /// Token realm hosts (`HOST` or `HOST:PORT`) trusted although on another site.
    pub trust_realm: Vec<String>,
    /// The retry policy.
    pub retry: Retry,
    /// The overall deadline and the per-read time-out.
    pub timeouts: Timeouts,
}

/// What to do with a reply's body.
#[derive(Debug, Clone, Copy)]
pub enum ReadBody<'a> {
    /// Keep it (at most [`MAX_REPLY`] bytes).
    Keep,
    /// For a 200 answer, hash it instead of keeping it, reading at most `limit` + 1 bytes
    /// (a blob read back to confirm its digest).
    Hash {
        /// The expected size.
        limit: u64,
    },
    /// For a 200 answer, write the body to the new file `to` (created `O_EXCL|O_NOFOLLOW`,
    /// 0600), hashing it, reading at most `limit` + 1 bytes (a blob pulled from a
    /// registry cache). A file a failed attempt left is removed before the next one.
    Save {
        /// The expected size.
        limit: u64,
        /// The file to create.
        to: &'a Path,
    },
}

/// The largest reply body kept in memory: 4 MiB, the manifest limit registries apply.
pub const MAX_REPLY: u64 = 4 << 20;

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    host: String,
    repo: String,
    creds: Option<Credentials>,
    auth: Auth,
    net: Net,
    deadline: Deadline,
}

/// True when `host` is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// What one answered request means for the request loop.
enum Outcome {
    Done(Reply),
    Again,
    Problem(String),
}

/// A transport error, saying which limit a time-out hit: the read time-out `read`, or
/// the deadline when that was the request's limit (`read` is `None`).
fn describe(e: &ureq::Error, read: Option<Duration>) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return match read {
                    Some(r) => format!(
                        "{e} (nothing for {}, the read time-out: --read-timeout)",
                        secs(r)
                    ),
                    None => format!("{e} (cut at the deadline)"),
                };
            }
        }
        cause = c.source();
    }
    e.to_string()
}

impl Client {
    /// A client for `r`: plain HTTP for loopback hosts and those in `net.insecure`
    /// (`HOST:PORT` or `HOST`), HTTPS otherwise; every request ends by `deadline`.
    pub fn new(r: &Reference, net: &Net, creds: Option<Credentials>, deadline: Deadline) -> Self {
        let plain = is_loopback(r.host())
            || net
                .insecure
                .iter()
                .any(|i| i == &r.registry || i == r.host() || i == r.api_host());
        let scheme = if plain { "http" } else { "https" };
        // Per-read and per-write limits are the socket's; ureq never forwards
        // Authorization on a redirect (RedirectAuthHeaders::Never, its default).
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT)
            .timeout_read(net.timeouts.read)
            .timeout_write(net.timeouts.read)
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            base: format!("{scheme}://{}", r.api_host()),
            registry: r.registry.clone(),
            host: super::reference::host_of(r.api_host()).to_ascii_lowercase(),
            repo: r.repo.clone(),
            creds,
            auth: Auth::Anonymous,
            net: net.clone(),
            deadline,
        }
    }

    /// `scheme://host[:port]`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The repository.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The retry policy.
    pub fn retry(&self) -> Retry {
        self.net.retry
    }

    /// Checks that the registry speaks the distribution API (`GET /v2/`), answering its
    /// auth challenge once for the whole run.
    pub fn ping(&mut self) -> Result<()> {
        let r = self.send("GET", "/v2/", &[], Body::Empty, true)?;
        match r.status {
            200 => Ok(()),
            s => Err(exit::err(
                Code::Fetch,
                format!(
                    "{}/v2/ answered HTTP {s}, not a registry speaking the OCI distribution API: {}",
                    self.base,
                    r.error_text()
                ),
            )),
        }
    }

    /// The scope a push needs.
    fn scope(&self) -> String {
        format!("repository:{}:pull,push", self.repo)
    }

    fn who(&self) -> String {
        match &self.creds {
            Some(c) => format!("user {:?} (from {})", c.username, c.source),
            None => "no credentials".into(),
        }
    }

    /// A URL for `path_or_url`: absolute URLs stay, `/v2/...` paths join the base.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else if path_or_url.starts_with('/') {
            format!("{}{path_or_url}", self.base)
        } else {
            format!("{}/{path_or_url}", self.base)
        }
    }

    fn authorization(&self, url: &str) -> Option<String> {
        // Credentials go only to the registry itself, never to a Location elsewhere.
        if !(url == self.base || url.starts_with(&format!("{}/", self.base))) {
            return None;
        }
        match &self.auth {
            Auth::Anonymous => None,
            Auth::Basic => self.creds.as_ref().map(Credentials::basic_header),
            Auth::Bearer { tokens, .. } => tokens.get(&self.scope()).map(|t| format!("Bearer {t}")),
        }
    }

    /// The error once the overall deadline has passed; `last` is the latest problem.
    fn deadline_error(&self, last: &str) -> anyhow::Error {
        let last = if last.is_empty() {
            String::new()
        } else {
            format!("; last: {last}")
        };
        exit::err(
            Code::Fetch,
            format!(
                "push to registry {} ({}) did not finish within its {} deadline (--timeout or SLIPWAY_PUSH_TIMEOUT){last}",
                self.registry,
                self.base,
                secs(self.deadline.total())
            ),
        )
    }

    /// Sleeps the backoff after `failed` failures, never past the deadline.
    pub fn backoff(&self, failed: u32) {
        std::thread::sleep(self.net.retry.delay(failed).min(self.deadline.remaining()));
    }

    /// A request that ends by the deadline: one starting with less time left than a read
    /// time-out gets the time left as its own limit. Also returns the read time-out when
    /// that is what limits each read, `None` when the deadline does.
    fn request(&self, method: &str, url: &str) -> (ureq::Request, Option<Duration>) {
        let req = self.agent.request(method, url);
        let left = self.deadline.remaining();
        if left <= self.net.timeouts.read {
            (req.timeout(left), None)
        } else {
            (req, Some(self.net.timeouts.read))
        }
    }

    /// Sends one request, answering auth challenges; with `retry`, retries connection
    /// errors and 429/502/503/504 with backoff. Any other status is returned as a [`Reply`].
    pub fn send(
        &mut self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        retry: bool,
    ) -> Result<Reply> {
        self.send_with(method, path_or_url, headers, body, retry, ReadBody::Keep)
    }

    /// [`Client::send`], reading the body as `read` says.
    pub fn send_with(
        &mut self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
        mut body: Body<'_>,
        retry: bool,
        read: ReadBody<'_>,
    ) -> Result<Reply> {
        let url = self.url(path_or_url);
        let mut failed = 0u32;
        let mut refreshed = false;
        let mut challenged = 0u32;
        let mut last = String::new();
        loop {
            if self.deadline.passed() {
                return Err(self.deadline_error(&last));
            }
            let sent_auth = self.authorization(&url);
            let (result, limit) =
                self.attempt(method, &url, headers, &mut body, sent_auth.as_deref())?;
            let problem = match result {
                Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                    match read_reply(resp, read, self.deadline) {
                        Err(e) => format!("{method} {url}: reading the answer: {e}"),
                        Ok(reply) => {
                            let sent = sent_auth.is_some();
                            match self.on_reply(reply, sent, &mut challenged, &mut refreshed)? {
                                Outcome::Done(r) => return Ok(r),
                                Outcome::Again => continue,
                                Outcome::Problem(p) => format!("{method} {url}: {p}"),
                            }
                        }
                    }
                }
                Err(e) => format!("{method} {url}: {}", describe(&e, limit)),
            };
            failed += 1;
            if self.deadline.passed() {
                return Err(self.deadline_error(&problem));
            }
            last = problem;
            if !retry {
                return Err(anyhow::Error::new(Transient(last)));
            }
            if failed >= self.net.retry.attempts {
                return Err(exit::err(
                    Code::Fetch,
                    format!(
                        "registry {} is unreachable or failing after {failed} attempts: {last}",
                        self.base
                    ),
                ));
            }
            self.backoff(failed);
        }
    }

    /// One request, its body streamed; `Err` only for a local failure (the file).
    fn attempt(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &mut Body<'_>,
        auth: Option<&str>,
    ) -> Result<(
        std::result::Result<ureq::Response, ureq::Error>,
        Option<Duration>,
    )> {
        let (mut req, limit) = self.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(a) = auth {
            req = req.set("Authorization", a);
        }
        let result = match body {
            Body::Empty => req.call(),
            Body::Bytes(b, ct) => req.set("Content-Type", ct).send_bytes(b),
            Body::File {
                path,
                size,
                progress,
            } => {
                let f = std::fs::File::open(&**path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let reader = Counting {
                    inner: std::io::BufReader::with_capacity(1 << 20, f),
                    progress: &mut **progress,
                };
                req.set("Content-Type", "application/octet-stream")
                    .set("Content-Length", &size.to_string())
                    .send(DeadlineReader::new(reader, self.deadline))
            }
        };
        Ok((result, limit))
    }

    /// Sorts an answer: done, answered a 401 (send again), or a retryable problem.
    fn on_reply(
        &mut self,
        reply: Reply,
        sent_auth: bool,
        challenged: &mut u32,
        refreshed: &mut bool,
    ) -> Result<Outcome> {
        if reply.status == 401 {
            *challenged += 1;
            if *challenged > 3 {
                return Err(self.auth_error(&format!(
                    "still HTTP 401 after answering {} challenges: {}",
                    *challenged - 1,
                    reply.error_text()
                )));
            }
            self.answer_challenge(&reply, sent_auth, refreshed)?;
            return Ok(Outcome::Again);
        }
        if !retryable(reply.status) {
            return Ok(Outcome::Done(reply));
        }
        Ok(Outcome::Problem(format!(
            "HTTP {}: {}",
            reply.status,
            reply.error_text()
        )))
    }

    /// Handles a 401: switches to Basic or fetches a Bearer token, or fails clearly.
    fn answer_challenge(
        &mut self,
        reply: &Reply,
        sent_auth: bool,
        refreshed: &mut bool,
    ) -> Result<()> {
        let header = reply.header("WWW-Authenticate").unwrap_or("");
        let challenges = auth::parse_challenges(header);
        let pick = |s: &str| challenges.iter().find(|c| c.scheme == s).cloned();
        let answered = if reply.body.trim_ascii().is_empty() {
            format!("HTTP 401, WWW-Authenticate: {header}")
        } else {
            format!("HTTP 401: {}", reply.error_text())
        };
        if let Some(bearer) = pick("bearer") {
            if sent_auth && matches!(self.auth, Auth::Bearer { .. }) {
                if *refreshed {
                    return Err(self.auth_error(&format!(
                        "the registry rejected the token from its token service ({answered})"
                    )));
                }
                *refreshed = true;
            }
            return self.fetch_token(&bearer);
        }
        if pick("basic").is_some() {
            if self.creds.is_none() {
                return Err(self.auth_error(&format!(
                    "the registry requires credentials and none were given ({answered}); use --username with --password-stdin, SLIPWAY_REGISTRY_USERNAME/SLIPWAY_REGISTRY_PASSWORD, or an auths entry in $DOCKER_CONFIG/config.json"
                )));
            }
            if sent_auth {
                return Err(self.auth_error(&format!(
                    "the registry rejected the credentials ({answered})"
                )));
            }
            self.auth = Auth::Basic;
            return Ok(());
        }
        Err(self.auth_error(&format!(
            "the registry answered 401 without a Basic or Bearer challenge (WWW-Authenticate: {header:?}; {answered})"
        )))
    }

    fn auth_error(&self, what: &str) -> anyhow::Error {
        exit::err(
            Code::Fetch,
            format!(
                "authentication to registry {} ({}) failed for {}: {what}",
                self.registry,
                self.base,
                self.who()
            ),
        )
    }

    /// Gets a token for the push scope from the challenge's realm, if the realm may have
    /// the credentials (see [`super::trust`]); a refused realm gets no request at all.
    fn fetch_token(&mut self, ch: &Challenge) -> Result<()> {
        let Some(realm) = ch.param("realm").map(str::to_string) else {
            return Err(self.auth_error("the Bearer challenge names no realm"));
        };
        let policy = RealmPolicy {
            registry_host: &self.host,
            trusted: &self.net.trust_realm,
            insecure: &self.net.insecure,
        };
        policy.check(&realm).map_err(|why| self.auth_error(&why))?;
        let service = ch.param("service").map(str::to_string);
        let scope = self.scope();
        let reply = self.token_request(&realm, service.as_deref(), &scope)?;
        if reply.status != 200 {
            return Err(self.auth_error(&format!(
                "token service {realm} refused scope {scope:?}: HTTP {}: {}",
                reply.status,
                reply.error_text()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| self.auth_error(&format!("token service {realm} sent no JSON: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.auth_error(&format!(
                    "token service {realm} answered without token or access_token"
                ))
            })?
            .to_string();
        match &mut self.auth {
            Auth::Bearer {
                realm: r,
                service: s,
                tokens,
            } if *r == realm && *s == service => {
                tokens.insert(scope, token);
            }
            _ => {
                self.auth = Auth::Bearer {
                    realm,
                    service,
                    tokens: HashMap::from([(scope, token)]),
                };
            }
        }
        Ok(())
    }

    /// `GET realm?scope=..&service=..` with the credentials, retried like any request.
    fn token_request(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<Reply> {
        let mut failed = 0u32;
        loop {
            if self.deadline.passed() {
                return Err(self.deadline_error(&format!("token service {realm}")));
            }
            let (req, limit) = self.request("GET", realm);
            let mut req = req.query("scope", scope);
            if let Some(s) = service {
                req = req.query("service", s);
            }
            if let Some(c) = &self.creds {
                req = req.set("Authorization", &c.basic_header());
            }
            let problem = match req.call() {
                Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                    match read_reply(resp, ReadBody::Keep, self.deadline) {
                        Ok(reply) if !retryable(reply.status) => return Ok(reply),
                        Ok(reply) => format!("HTTP {}", reply.status),
                        Err(e) => format!("reading the answer: {e}"),
                    }
                }
                Err(e) => describe(&e, limit),
            };
            failed += 1;
            if self.deadline.passed() {
                return Err(self.deadline_error(&format!("token service {realm}: {problem}")));
            }
            if failed >= self.net.retry.attempts {
                return Err(self.auth_error(&format!(
                    "token service {realm} unreachable after {failed} attempts: {problem}"
                )));
            }
            self.backoff(failed);
        }
    }
}

/// Reads an answer: headers, then the body as `mode` says, never past the deadline.
fn read_reply(
    resp: ureq::Response,
    mode: ReadBody<'_>,
    deadline: Deadline,
) -> std::io::Result<Reply> {
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let reader = DeadlineReader::new(resp.into_reader(), deadline);
    let mut body = Vec::new();
    let mut hashed = None;
    match mode {
        ReadBody::Hash { limit } if status == 200 => {
            let (hex, n) = sha256_reader(reader.take(limit.saturating_add(1)))?;
            hashed = Some((format!("sha256:{hex}"), n));
        }
        ReadBody::Save { limit, to } if status == 200 => {
            let (hex, n) = save(reader.take(limit.saturating_add(1)), to)?;
            hashed = Some((format!("sha256:{hex}"), n));
        }
        _ => {
            reader.take(MAX_REPLY + 1).read_to_end(&mut body)?;
            if body.len() as u64 > MAX_REPLY {
                return Err(std::io::Error::other(format!(
                    "the answer is larger than {} MiB",
                    MAX_REPLY >> 20
                )));
            }
        }
    }
    Ok(Reply {
        status,
        headers,
        body,
        hashed,
    })
}

/// Writes `from` into the new private file `to` (a failed earlier attempt's file is
/// replaced), hashing while writing; returns (sha256 hex, size).
fn save(mut from: impl Read, to: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(to)?;
    let mut w =
        crate::io::hash::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    std::io::copy(&mut from, &mut w)?;
    w.flush()?;
    let (buf, digest, n) = w.finish();
    buf.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok((digest, n))
}

/// A reader that reports how many bytes passed through it.
struct Counting<'a, R> {
    inner: R,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.3.2.1", "::1"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["example.org", "10.0.0.1", "::2", "localhost.example"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn schemes_and_urls() {
        let r: Reference = "127.0.0.1:5000/a/b:t".parse().unwrap();
        let dl = Deadline::after(Duration::from_secs(60));
        let c = Client::new(&r, &Net::default(), None, dl);
        assert_eq!(c.base(), "http://127.0.0.1:5000");
        assert_eq!(
            c.url("/v2/a/b/blobs/uploads/x?y=1"),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/x?y=1"
        );
        assert_eq!(
            c.url("https://s3.example/up?sig=1"),
            "https://s3.example/up?sig=1"
        );
        let r: Reference = "registry.example:5000/a".parse().unwrap();
        assert!(Client::new(&r, &Net::default(), None, dl)
            .base()
            .starts_with("https://"));
        let net = Net {
            insecure: vec!["registry.example:5000".into()],
            ..Net::default()
        };
        let c = Client::new(&r, &net, None, dl);
        assert_eq!(c.base(), "http://registry.example:5000");
    }

    #[test]
    fn backoff_doubles() {
        let r = Retry::default();
        assert_eq!(r.delay(1), Duration::from_millis(500));
        assert_eq!(r.delay(2), Duration::from_millis(1000));
        assert_eq!(r.delay(3), Duration::from_millis(2000));
    }

    #[test]
    fn error_documents() {
        let body = r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"bad"}]}"#;
        assert_eq!(
            registry_errors(body),
            r#"MANIFEST_INVALID: manifest invalid (detail: "bad")"#
        );
        assert_eq!(registry_errors("oops\n"), "oops");
        assert_eq!(registry_errors(""), "(empty body)");
    }
}
