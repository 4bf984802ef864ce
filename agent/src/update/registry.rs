//! The registry client of the update engine: the OCI distribution API's two reads a
//! node needs, over the agent's own HTTP client ([`crate::http::Client`], TLS from
//! [`crate::http::tls`]). Consumes [`Settings`] (registry, repository, CA, credentials);
//! produces manifest bytes with their digest, and byte ranges of blobs.
//!
//! - `GET /v2/NAME/manifests/REF` with `Accept` for the OCI image manifest; the digest
//!   is computed from the bytes (and must equal `Docker-Content-Digest` when the registry
//!   sends one, and the reference when it is a digest).
//! - `GET /v2/NAME/blobs/DIGEST` with `Range: bytes=START-END`: 206 and a
//!   `Content-Range` that starts at START (a 200 with the whole blob is taken when it
//!   starts at 0), so a download resumes where it stopped.
//! - Auth (<https://distribution.github.io/distribution/spec/auth/token/>): a 401 with a
//!   `Bearer` challenge sends the node to the token service (with basic auth when the
//!   realm is https on the registry's own host, anonymous otherwise), and the request is
//!   sent again once with the token; a `Basic` challenge is answered with the
//!   credentials. Credentials only ever go over https (the client refuses otherwise).
//!
//! No redirects are followed (a registry that sends blobs to a storage URL needs a
//! proxy in front for now).

use super::settings::Settings;
use super::Failure;
use crate::http::tls::{Roots, Tls};
use crate::http::{Client, Credentials, Limits, Reply, Scheme, Url};
use std::time::Duration;

/// The OCI image manifest's media type (the payload is one, with `artifactType`).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The largest manifest accepted.
pub const MAX_MANIFEST: usize = 1 << 20;
/// One blob request: its deadline, read time-out and largest body (a range).
fn limits(max_body: usize) -> Limits {
    Limits {
        deadline: Duration::from_secs(120),
        io_timeout: Duration::from_secs(30),
        max_body,
    }
}

/// A registry and repository, with the token of the last challenge.
pub struct Registry {
    base: Url,
    name: String,
    tls: Option<Tls>,
    credentials: Option<Credentials>,
    token: Option<String>,
}

/// What a failed request says: the message, and whether the server was reached.
pub type Error = String;

impl Registry {
    /// A client for `s`'s registry; reads the CA file (or the system bundle) for https.
    pub fn new(s: &Settings) -> Result<Registry, Error> {
        let tls = match s.registry.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let roots = s.access.ca_file.clone().map_or(Roots::System, Roots::File);
                Some(Tls::new(roots)?)
            }
        };
        Ok(Registry {
            base: s.registry.clone(),
            name: s.name.clone(),
            tls,
            credentials: s.access.credentials.clone(),
            token: None,
        })
    }

    fn client(&self, max_body: usize) -> Client {
        let c = Client::new(limits(max_body));
        match &self.tls {
            Some(t) => c.with_tls(t.clone()),
            None => c,
        }
    }

    /// GET `path` with `headers`, answering one auth challenge.
    fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        max_body: usize,
    ) -> Result<Reply, Error> {
        let url = self.base.with_path(path);
        let mut retried = false;
        loop {
            let bearer = self.token.clone().map(Credentials::Bearer);
            let creds = bearer
                .as_ref()
                .or(self.credentials.as_ref().filter(|_| retried));
            let r = self
                .client(max_body)
                .send("GET", &url, headers, creds, b"")
                .map_err(|e| e.msg)?;
            if r.status != 401 || retried {
                return Ok(r);
            }
            let challenge = r.header("www-authenticate").unwrap_or("").to_string();
            match challenge
                .split_whitespace()
                .next()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("bearer") => self.token = Some(self.fetch_token(&challenge, &url)?),
                Some("basic") if self.credentials.is_some() => {}
                _ => {
                    return Err(format!(
                        "GET {url}: 401 Unauthorized ({}; set username and password in [update])",
                        if challenge.is_empty() {
                            "no challenge"
                        } else {
                            challenge.as_str()
                        }
                    ))
                }
            }
            retried = true;
        }
    }

    /// Asks the token service of a `Bearer` challenge for a token.
    fn fetch_token(&self, challenge: &str, url: &Url) -> Result<String, Error> {
        let params = challenge_params(challenge);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm =
            get("realm").ok_or_else(|| format!("GET {url}: a Bearer challenge without a realm"))?;
        let mut token_url =
            Url::parse(realm).map_err(|e| format!("GET {url}: the token realm: {e}"))?;
        let mut query = Vec::new();
        for k in ["service", "scope"] {
            if let Some(v) = get(k) {
                query.push(format!("{k}={}", percent(v)));
            }
        }
        if !query.is_empty() {
            let sep = if token_url.path.contains('?') {
                '&'
            } else {
                '?'
            };
            token_url.path = format!("{}{sep}{}", token_url.path, query.join("&"));
        }
        // Credentials go to the registry's own host over https only; anyone else gets an
        // anonymous request.
        let own = token_url.host == self.base.host && token_url.scheme == Scheme::Https;
        let creds = self.credentials.as_ref().filter(|_| own);
        let r = self
            .client(64 << 10)
            .send("GET", &token_url, &[], creds, b"")
            .map_err(|e| e.msg)?;
        if r.status != 200 {
            return Err(format!(
                "GET {token_url}: the token service answered {}",
                r.status
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("GET {token_url}: the answer is not JSON ({e})"))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .ok_or_else(|| format!("GET {token_url}: the answer has no token"))
    }

    /// The manifest `reference` (a tag or a digest): its bytes and `sha256:` digest.
    pub fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String), Failure> {
        let path = format!("/v2/{}/manifests/{reference}", self.name);
        let r = self.get(&path, &[("Accept", OCI_MANIFEST)], MAX_MANIFEST)?;
        let url = self.base.with_path(&path);
        if r.status != 200 {
            let hint = if r.status == 404 {
                " (no such tag or repository)"
            } else {
                ""
            };
            return Err(Failure::Other(format!(
                "GET {url}: {}{hint}: {}",
                r.status,
                snippet(&r.text())
            )));
        }
        let digest = format!("sha256:{}", crate::sha256::hex(&r.body));
        if let Some(said) = r.header("docker-content-digest") {
            if said != digest {
                return Err(Failure::Digest(format!(
                    "GET {url}: digest error: the manifest's bytes are {digest}, the registry says {said}"
                )));
            }
        }
        if reference.starts_with("sha256:") && reference != digest {
            return Err(Failure::Digest(format!(
                "GET {url}: digest error: the manifest's bytes are {digest}, not the pinned {reference}"
            )));
        }
        Ok((r.body, digest))
    }

    /// Bytes `start..start+len` of the blob `digest` (whose size is `total`).
    pub fn range(
        &mut self,
        digest: &str,
        start: u64,
        len: u64,
        total: u64,
    ) -> Result<Vec<u8>, Error> {
        let path = format!("/v2/{}/blobs/{digest}", self.name);
        let end = start + len - 1;
        let range = format!("bytes={start}-{end}");
        let cap = usize::try_from(len).map_err(|_| "a range larger than memory".to_string())?;
        let r = self.get(&path, &[("Range", &range)], cap)?;
        let url = self.base.with_path(&path);
        match r.status {
            206 => {
                let want = format!("bytes {start}-{end}/{total}");
                let got = r.header("content-range").unwrap_or("(none)");
                if got != want {
                    return Err(format!(
                        "GET {url} ({range}): Content-Range is {got:?}, expected {want:?}"
                    ));
                }
            }
            200 if start == 0 && r.body.len() as u64 == total => {}
            200 => {
                return Err(format!(
                    "GET {url}: the registry ignored the Range header (200 with {} bytes)",
                    r.body.len()
                ))
            }
            s => return Err(format!("GET {url} ({range}): {s}: {}", snippet(&r.text()))),
        }
        if r.body.len() as u64 != len.min(total - start) {
            return Err(format!(
                "GET {url} ({range}): {} bytes, expected {len}",
                r.body.len()
            ));
        }
        Ok(r.body)
    }
}

/// The first line of an error body, at most 200 characters.
fn snippet(t: &str) -> String {
    t.lines().next().unwrap_or("").chars().take(200).collect()
}

/// `key="value"` pairs of a challenge (after the scheme word).
fn challenge_params(c: &str) -> Vec<(String, String)> {
    let rest = c.trim().split_once(' ').map_or("", |(_, r)| r);
    let mut out = Vec::new();
    let mut s = rest;
    while let Some((k, after)) = s.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(i) => (&q[..i], &q[i + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.push((k, v.to_string()));
        s = next;
    }
    out
}

/// Percent-encoding of a query value (RFC 3986 unreserved characters kept).
fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::TestPki;
    use std::io::{Read, Write};
    use std::sync::mpsc::Receiver;

    /// An https server on the loopback for `n` connections, each answered by `answer`
    /// (given the request head) with a whole HTTP response; the heads come back through
    /// the receiver.
    fn scripted(
        pki: &TestPki,
        n: usize,
        answer: impl Fn(&str) -> String + Send + 'static,
    ) -> (u16, Receiver<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let config = pki.server_config();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..n {
                let (tcp, _) = l.accept().unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let _ = s.write_all(answer(&head).as_bytes());
                s.conn.send_close_notify();
                let _ = s.flush();
                let _ = tx.send(head);
            }
        });
        (port, rx)
    }

    /// A `Bearer` challenge sends the node to the realm (with basic auth: https, the
    /// registry's own host), and the manifest is asked for again with the token.
    #[test]
    fn a_bearer_challenge_is_answered_with_a_token_from_the_realm() {
        let pki = TestPki::new(&["127.0.0.1"]);
        let dir = crate::provision::tests::tempfile_lite::Dir::new();
        let manifest = b"{\"schemaVersion\":2}";
        let digest = format!("sha256:{}", crate::sha256::hex(manifest));
        let port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
        let p = port.clone();
        let d = digest.clone();
        let (got_port, heads) = scripted(&pki, 3, move |head| {
            let port = p.load(std::sync::atomic::Ordering::SeqCst);
            let ok = |ct: &str, body: &str, extra: &str| {
                format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
            };
            if head.starts_with("GET /token?") {
                ok("application/json", "{\"token\":\"t0k\"}", "")
            } else if head.contains("Authorization: Bearer t0k") {
                ok(
                    OCI_MANIFEST,
                    "{\"schemaVersion\":2}",
                    &format!("Docker-Content-Digest: {d}\r\n"),
                )
            } else {
                format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"https://127.0.0.1:{port}/token\",service=\"reg\",scope=\"repository:fleet/host:pull\"\r\nContent-Length: 0\r\n\r\n")
            }
        });
        port.store(got_port, std::sync::atomic::Ordering::SeqCst);
        let settings = Settings {
            registry: Url::parse(&format!("https://127.0.0.1:{got_port}/")).unwrap(),
            name: "fleet/host".into(),
            follow: super::super::settings::Follow::Tag("stable".into()),
            interval: super::super::settings::DEFAULT_INTERVAL,
            health_timeout: super::super::settings::DEFAULT_HEALTH_TIMEOUT,
            reboot: super::super::settings::Reboot::Never,
            access: crate::shipper::Access {
                ca_file: Some(pki.ca_file(&dir.0)),
                credentials: Some(Credentials::Basic {
                    user: "node".into(),
                    password: "pw".into(),
                }),
            },
        };
        let mut r = Registry::new(&settings).unwrap();
        let (bytes, got) = r.manifest("stable").unwrap();
        assert_eq!(
            (bytes.as_slice(), got.as_str()),
            (&manifest[..], digest.as_str())
        );
        let heads: Vec<String> = heads.iter().take(3).collect();
        assert!(!heads[0].contains("Authorization"), "{heads:?}");
        assert!(
            heads[1].starts_with("GET /token?service=reg&scope=repository%3Afleet%2Fhost%3Apull ")
                && heads[1].contains("Authorization: Basic bm9kZTpwdw=="),
            "{heads:?}"
        );
        assert!(heads[2].contains("Authorization: Bearer t0k"), "{heads:?}");
    }

    #[test]
    fn challenges_are_read_with_quotes_and_commas() {
        let p = challenge_params(
            "Bearer realm=\"https://auth.example/token\",service=\"registry, one\",scope=\"repository:fleet/host:pull\"",
        );
        assert_eq!(
            p,
            [
                (
                    "realm".to_string(),
                    "https://auth.example/token".to_string()
                ),
                ("service".to_string(), "registry, one".to_string()),
                (
                    "scope".to_string(),
                    "repository:fleet/host:pull".to_string()
                ),
            ]
        );
        assert_eq!(percent("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
