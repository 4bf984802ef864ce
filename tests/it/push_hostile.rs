//! `slipway push` against hostile registries, played by small HTTP servers in the test on
//! loopback addresses: one that names a token realm on another host (a collector on
//! 127.0.0.2 that must receive nothing), one that answers 200 with random bytes to every
//! request, one that accepts connections and never answers, and honest ones that keep
//! what they are sent (one without digest headers, one whose blob links are stale).
#![allow(clippy::unwrap_used)]

use crate::common::{bin, text};
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use slipway::io::hash::sha256_hex;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

// ---------------------------------------------------------------- a layout and a runner

/// Stores `bytes` as a blob of the layout at `dir`; returns its descriptor.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let hex = sha256_hex(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// A one-layer OCI image layout at `dir`, written by hand.
fn layout(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hello", &b"hello\n"[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = blob(
        dir,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gz.finish().unwrap(),
    );
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))]}});
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer]});
    let m = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [m]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    dir.to_str().unwrap().to_string()
}

/// Runs `slipway push ARGS` with no credentials from the environment, `stdin` fed in.
fn push(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (Output, f64) {
    let empty_config = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin());
    c.arg("push")
        .args(args)
        .env("DOCKER_CONFIG", empty_config.path())
        .env_remove("SLIPWAY_REGISTRY_USERNAME")
        .env_remove("SLIPWAY_REGISTRY_PASSWORD")
        .env_remove("SLIPWAY_PUSH_TIMEOUT")
        .env_remove("SLIPWAY_PUSH_READ_TIMEOUT")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    (o, start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------- servers

/// One request as a server in the test saw it.
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn method(&self) -> &str {
        self.head.split_whitespace().next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Reads one request: the head, then a `Content-Length` body.
fn read_request(s: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut req = Request {
        head,
        body: Vec::new(),
    };
    let len: usize = req
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    req.body.resize(len, 0);
    r.read_exact(&mut req.body).ok()?;
    Some(req)
}

/// Serves on `addr` (port 0: any), one request per connection, answering with `answer`;
/// returns the address and every request seen.
fn serve(
    addr: &str,
    answer: impl Fn(&Request) -> Vec<u8> + Send + 'static,
) -> (String, Arc<Mutex<Vec<Request>>>) {
    let l = TcpListener::bind(addr).unwrap();
    let at = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let Some(req) = read_request(&s) else {
                continue;
            };
            let _ = s.write_all(&answer(&req));
            log.lock().unwrap().push(req);
        }
    });
    (at, seen)
}

fn http(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `n` bytes from xorshift64, seeded by the clock.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = Instant::now().elapsed().as_nanos() as u64 | 1;
    x ^= std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------- tests

/// A registry on 127.0.0.1 that names a Bearer realm on 127.0.0.2: the collector there
/// receives nothing, the refusal names the realm and the flag; `--trust-realm` allows it.
#[test]
fn realm_on_another_host_gets_no_credentials() {
    let t = tempfile::tempdir().unwrap();
    let layout = layout(&t.path().join("layout"));
    let (collector, collected) = serve("127.0.0.2:0", |_| {
        http(
            "200 OK",
            "",
            json!({"token": "collected"}).to_string().as_bytes(),
        )
    });
    let realm = format!("http://{collector}/token");
    let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"hostile\"\r\n");
    let (registry, _) = serve("127.0.0.1:0", move |_| {
        http("401 Unauthorized", &challenge, b"")
    });
    let dest = format!("{registry}/r/img:v1");
    let creds = ["-u", "alice", "--password-stdin"];

    let (o, _) = push(
        &[&[layout.as_str(), &dest][..], &creds].concat(),
        &[],
        Some("s3cret"),
    );
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(4), "{msg}");
    assert!(
        collected.lock().unwrap().is_empty(),
        "the realm got a request: {msg}"
    );
    assert!(msg.contains(&realm), "{msg}");
    assert!(msg.contains("--trust-realm 127.0.0.2"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");

    // Anonymous pushes do not reach it either.
    let (o, _) = push(&[layout.as_str(), &dest], &[], None);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(collected.lock().unwrap().is_empty());

    // Trusted, it gets the credentials (the registry then refuses its token: exit 4).
    let args = [
        &[layout.as_str(), &dest, "--trust-realm", "127.0.0.2"][..],
        &creds,
    ]
    .concat();
    let (o, _) = push(&args, &[], Some("s3cret"));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let seen = collected.lock().unwrap();
    let basic = format!("Basic {}", slipway_common::base64::encode(b"alice:s3cret"));
    assert!(!seen.is_empty(), "{}", text(&o));
    assert!(seen
        .iter()
        .all(|r| r.header("Authorization") == Some(basic.as_str())));
}

/// A server that answers 200 with random bytes to everything: nothing it claims is
/// confirmed by digest, so the push fails with exit 4 and says which blob.
#[test]
fn random_200_registry_fails_with_exit_4() {
    let t = tempfile::tempdir().unwrap();
    let layout = layout(&t.path().join("layout"));
    let (registry, seen) = serve("127.0.0.1:0", |req| {
        let body = random_bytes(1 + random_bytes(2).iter().map(|b| *b as usize).sum::<usize>());
        let location = if req.method() == "POST" {
            "Location: /v2/r/img/blobs/uploads/x\r\n"
        } else {
            ""
        };
        http("200 OK", location, &body)
    });
    let (o, _) = push(&[&layout, &format!("{registry}/r/img:v1")], &[], None);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(4), "{msg}");
    assert!(msg.contains("did not confirm"), "{msg}");
    assert!(!seen.lock().unwrap().is_empty());
}

/// A registry that accepts connections and never answers: the push ends at its
/// deadline (`--timeout`, or SLIPWAY_PUSH_TIMEOUT), and a short `--read-timeout` names
/// itself in the error.
#[test]
fn silent_registry_fails_within_the_deadline() {
    let t = tempfile::tempdir().unwrap();
    let layout = layout(&t.path().join("layout"));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = format!("{}/r/img:v1", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });

    let (o, secs) = push(&[&layout, &dest, "--timeout", "2"], &[], None);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(4), "{msg}");
    assert!(
        msg.contains("2 s deadline") && msg.contains("--timeout"),
        "{msg}"
    );
    assert!((1.9..4.0).contains(&secs), "took {secs:.1} s: {msg}");

    let env = [("SLIPWAY_PUSH_TIMEOUT", "1.5")];
    let (o, secs) = push(&[&layout, &dest, "--read-timeout", "0.3"], &env, None);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(4), "{msg}");
    assert!(msg.contains("1.5 s deadline"), "{msg}");
    assert!(msg.contains("--read-timeout"), "{msg}");
    assert!((1.4..3.5).contains(&secs), "took {secs:.1} s: {msg}");
}

/// An honest registry in the test that never sends `Docker-Content-Digest`: uploads and
/// blobs it already has are confirmed by reading them back, and the push succeeds.
#[test]
fn registry_without_digest_headers_is_confirmed_by_reading_back() {
    let t = tempfile::tempdir().unwrap();
    let layout = layout(&t.path().join("layout"));
    let (registry, seen) = honest_registry(0);
    let dest = format!("{registry}/r/img:v1");
    for uploaded in [2, 0] {
        let (o, _) = push(&["--json", &layout, &dest], &[], None);
        assert!(o.status.success(), "{}", text(&o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["uploaded"], uploaded, "{r}");
        assert_eq!(r["skipped"], 2 - uploaded, "{r}");
    }
    let seen = seen.lock().unwrap();
    let reads = |p: &str| {
        seen.iter()
            .filter(|r| r.method() == "GET" && r.head.contains(p))
            .count()
    };
    // Each blob read back once per push; the manifest once per push.
    assert_eq!(reads("/blobs/sha256:"), 4);
    assert_eq!(reads("/manifests/v1"), 2);
}

/// A registry whose blob links are stale for a moment (as docker-registry's are while
/// another client commits the same blob) answers the manifest PUT with
/// `MANIFEST_BLOB_UNKNOWN`: two such answers are retried and the push succeeds; a
/// registry that keeps answering so fails the push after four PUTs, naming the code.
#[test]
fn manifest_blob_unknown_is_retried_a_few_times() {
    let t = tempfile::tempdir().unwrap();
    let layout = layout(&t.path().join("layout"));
    let puts = |seen: &Mutex<Vec<Request>>| {
        let seen = seen.lock().unwrap();
        seen.iter()
            .filter(|r| r.method() == "PUT" && r.head.contains("/manifests/"))
            .count()
    };
    let (registry, seen) = honest_registry(2);
    let (o, _) = push(&[&layout, &format!("{registry}/r/img:v1")], &[], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(puts(&seen), 3);

    let (registry, seen) = honest_registry(usize::MAX);
    let (o, _) = push(&[&layout, &format!("{registry}/r/img:v1")], &[], None);
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(msg.contains("MANIFEST_BLOB_UNKNOWN"), "{msg}");
    assert_eq!(puts(&seen), 4);
}

/// A registry in the test that keeps what it is sent and never sends
/// `Docker-Content-Digest`. Its first `flaky` manifest PUTs are answered with
/// `MANIFEST_BLOB_UNKNOWN`.
fn honest_registry(flaky: usize) -> (String, Arc<Mutex<Vec<Request>>>) {
    let flaky = AtomicUsize::new(flaky);
    let store = Arc::new(Mutex::new(
        std::collections::HashMap::<String, Vec<u8>>::new(),
    ));
    serve("127.0.0.1:0", move |req| {
        let target = req.head.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut store = store.lock().unwrap();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match req.method() {
            "POST" => http(
                "202 Accepted",
                "Location: /v2/r/img/blobs/uploads/u1\r\n",
                b"",
            ),
            "PUT" if path.ends_with("/uploads/u1") => {
                let digest = query.strip_prefix("digest=").unwrap().replace("%3A", ":");
                store.insert(format!("/v2/r/img/blobs/{digest}"), req.body.clone());
                http("201 Created", "", b"")
            }
            "PUT" if flaky.load(Ordering::SeqCst) > 0 => {
                let _ = flaky.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(1))
                });
                http(
                    "400 Bad Request",
                    "Content-Type: application/json\r\n",
                    br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
                )
            }
            "PUT" => {
                store.insert(path.to_string(), req.body.clone());
                http("201 Created", "", b"")
            }
            _ if path == "/v2/" => http("200 OK", "", b"{}"),
            "HEAD" | "GET" => match store.get(path) {
                Some(b) if req.method() == "GET" => http("200 OK", "", b),
                Some(_) => http("200 OK", "", b""),
                None => http("404 Not Found", "", b""),
            },
            _ => http("405 Method Not Allowed", "", b""),
        }
    })
}
