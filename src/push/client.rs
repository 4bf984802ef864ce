//! The HTTP side of a push: one registry, one repository, retries and authentication.
//!
//! Consumes a [`Reference`], transport settings and optional [`Credentials`]; produces
//! [`Reply`]s to requests on the distribution API
//! (<https://github.com/opencontainers/distribution-spec/blob/main/spec.md>). Requests go
//! out anonymously first; a 401 is answered from its `WWW-Authenticate` challenge with
//! Basic credentials or a Bearer token from the challenge's realm (cached per scope for
//! the run). Connection errors and 429/502/503/504 are retried with exponential backoff;
//! other 4xx answers are returned at once.

use super::auth::{self, Challenge, Credentials};
use super::reference::Reference;
use crate::exit::{self, Code};
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
    /// The body as text.
    pub body: String,
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
        registry_errors(&self.body)
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

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    repo: String,
    creds: Option<Credentials>,
    auth: Auth,
    retry: Retry,
}

/// True when `host` is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

impl Client {
    /// A client for `r`: plain HTTP for loopback hosts and those in `insecure`
    /// (`HOST:PORT` or `HOST`), HTTPS otherwise.
    pub fn new(
        r: &Reference,
        insecure: &[String],
        creds: Option<Credentials>,
        retry: Retry,
    ) -> Self {
        let plain = is_loopback(r.host())
            || insecure
                .iter()
                .any(|i| i == &r.registry || i == r.host() || i == r.api_host());
        let scheme = if plain { "http" } else { "https" };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            base: format!("{scheme}://{}", r.api_host()),
            registry: r.registry.clone(),
            repo: r.repo.clone(),
            creds,
            auth: Auth::Anonymous,
            retry,
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
        self.retry
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

    /// Sends one request, answering auth challenges; with `retry`, retries connection
    /// errors and 429/502/503/504 with backoff. Any other status is returned as a [`Reply`].
    pub fn send(
        &mut self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
        mut body: Body<'_>,
        retry: bool,
    ) -> Result<Reply> {
        let url = self.url(path_or_url);
        let mut failed = 0u32;
        let mut refreshed = false;
        let mut challenged = 0u32;
        loop {
            let sent_auth = self.authorization(&url);
            let mut req = self.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = &sent_auth {
                req = req.set("Authorization", a);
            }
            let result = match &mut body {
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
                        .send(reader)
                }
            };
            let problem = match result {
                Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                    let reply = read_reply(resp)?;
                    if reply.status == 401 {
                        challenged += 1;
                        if challenged > 3 {
                            return Err(self.auth_error(&format!(
                                "still HTTP 401 after answering {} challenges: {}",
                                challenged - 1,
                                reply.error_text()
                            )));
                        }
                        self.answer_challenge(&reply, sent_auth.is_some(), &mut refreshed)?;
                        continue;
                    }
                    if !retryable(reply.status) {
                        return Ok(reply);
                    }
                    format!(
                        "{method} {url}: HTTP {}: {}",
                        reply.status,
                        reply.error_text()
                    )
                }
                Err(e) => format!("{method} {url}: {e}"),
            };
            failed += 1;
            if !retry {
                return Err(anyhow::Error::new(Transient(problem)));
            }
            if failed >= self.retry.attempts {
                return Err(exit::err(
                    Code::Fetch,
                    format!(
                        "registry {} is unreachable or failing after {failed} attempts: {problem}",
                        self.base
                    ),
                ));
            }
            std::thread::sleep(self.retry.delay(failed));
        }
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
        let answered = if reply.body.trim().is_empty() {
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

    /// Gets a token for the push scope from the challenge's realm.
    fn fetch_token(&mut self, ch: &Challenge) -> Result<()> {
        let Some(realm) = ch.param("realm").map(str::to_string) else {
            return Err(self.auth_error("the Bearer challenge names no realm"));
        };
        let service = ch.param("service").map(str::to_string);
        let scope = self.scope();
        let mut failed = 0u32;
        let reply = loop {
            let mut req = self.agent.get(&realm).query("scope", &scope);
            if let Some(s) = &service {
                req = req.query("service", s);
            }
            if let Some(c) = &self.creds {
                req = req.set("Authorization", &c.basic_header());
            }
            let problem = match req.call() {
                Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                    let reply = read_reply(resp)?;
                    if !retryable(reply.status) {
                        break reply;
                    }
                    format!("HTTP {}", reply.status)
                }
                Err(e) => e.to_string(),
            };
            failed += 1;
            if failed >= self.retry.attempts {
                return Err(self.auth_error(&format!(
                    "token service {realm} unreachable after {failed} attempts: {problem}"
                )));
            }
            std::thread::sleep(self.retry.delay(failed));
        };
        if reply.status != 200 {
            return Err(self.auth_error(&format!(
                "token service {realm} refused scope {scope:?}: HTTP {}: {}",
                reply.status,
                reply.error_text()
            )));
        }
        let v: serde_json::Value = serde_json::from_str(&reply.body)
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
}

fn read_reply(resp: ureq::Response) -> Result<Reply> {
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let body = resp
        .into_string()
        .context("reading the registry's answer")?;
    Ok(Reply {
        status,
        headers,
        body,
    })
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
        let c = Client::new(&r, &[], None, Retry::default());
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
        assert!(Client::new(&r, &[], None, Retry::default())
            .base()
            .starts_with("https://"));
        let c = Client::new(
            &r,
            &["registry.example:5000".into()],
            None,
            Retry::default(),
        );
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
