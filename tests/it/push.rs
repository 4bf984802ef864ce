//! `slipway push` against a real registry: Debian's docker-registry (distribution 2.8) on
//! 127.0.0.1, one per test, with anonymous, htpasswd (Basic) and token (Bearer) auth.
//! Layouts are written by hand here (not by slipway's OCI writer) and read back with skopeo.
#![allow(clippy::unwrap_used)]

use crate::common;

use crate::common::registry::Registry;
use crate::common::{bin, free_port, text};
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use slipway::io::hash::sha256_hex;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------- layouts by hand

/// An OCI image layout written by hand.
struct Layout {
    dir: PathBuf,
    entries: Vec<Value>,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    /// Stores `bytes` as a blob; returns its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let hex = sha256_hex(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    /// A gzip layer holding one file with `content`; returns (descriptor, diff_id).
    fn layer(&self, name: &str, content: &[u8]) -> (Value, String) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, content).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        (
            self.blob(LAYER_GZIP, &gz),
            format!("sha256:{}", sha256_hex(&tar)),
        )
    }

    /// An image manifest for `arch` with one layer; returns its descriptor.
    fn image(&self, arch: &str, content: &[u8]) -> Value {
        let (layer, diff_id) = self.layer("hello.txt", content);
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = self.blob(CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config, "layers": [layer],
        });
        self.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    /// An index over `children` (descriptors gain a platform from their config).
    fn index(&self, children: &[(Value, &str)]) -> Value {
        let manifests: Vec<Value> = children
            .iter()
            .map(|(d, arch)| {
                let mut d = d.clone();
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.blob(OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    }

    /// An SPDX artifact manifest whose subject is `subject`; returns its descriptor. A
    /// `valid: false` one lacks its mediaType field and claims to be a Docker manifest,
    /// which the registry refuses.
    fn sbom(&self, subject: &Value, valid: bool) -> Value {
        let empty = self.blob("application/vnd.oci.empty.v1+json", b"{}");
        let doc = json!({"spdxVersion": "SPDX-2.3", "name": "test", "packages": []});
        let layer = self.blob("application/spdx+json", &serde_json::to_vec(&doc).unwrap());
        let subject = json!({
            "mediaType": subject["mediaType"], "digest": subject["digest"], "size": subject["size"],
        });
        let mut manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": empty, "layers": [layer], "subject": subject,
        });
        let media_type = if valid {
            OCI_MANIFEST
        } else {
            manifest.as_object_mut().unwrap().remove("mediaType");
            DOCKER_MANIFEST
        };
        let mut d = self.blob(media_type, &serde_json::to_vec(&manifest).unwrap());
        d["artifactType"] = json!("application/spdx+json");
        d
    }

    /// Lists `desc` in index.json, named `name` when given.
    fn add(&mut self, desc: &Value, name: Option<&str>) {
        let mut d = desc.clone();
        if let Some(n) = name {
            d["annotations"] = json!({ REF_NAME: n });
        }
        self.entries.push(d);
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    fn read_blob(&self, desc: &Value) -> Vec<u8> {
        let hex = desc["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        std::fs::read(self.dir.join("blobs/sha256").join(hex)).unwrap()
    }
}

/// A single-platform layout named `name` in `dir`; returns its manifest descriptor.
fn simple_layout(dir: &Path, content: &[u8]) -> (Layout, Value) {
    let mut l = Layout::new(dir);
    let m = l.image("amd64", content);
    l.add(&m, Some("latest"));
    (l, m)
}

// ---------------------------------------------------------------- running slipway

/// Runs `slipway push` with an isolated credential environment plus `env`, feeding `stdin`.
fn push(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let empty_config = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin());
    c.arg("push")
        .args(args)
        .env("DOCKER_CONFIG", empty_config.path())
        .env_remove("SLIPWAY_REGISTRY_USERNAME")
        .env_remove("SLIPWAY_REGISTRY_PASSWORD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn push_ok(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = push(&a, env, stdin);
    assert!(
        o.status.success(),
        "push failed ({:?}):\n{}",
        o.status.code(),
        text(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn push_fails(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>, code: i32) -> String {
    let o = push(args, env, stdin);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "expected exit {code}:\n{t}");
    t
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (Debian: skopeo)");
    assert!(o.status.success(), "skopeo {args:?}: {}", text(&o));
    o.stdout
}

/// The raw manifest at `image` (`HOST/REPO:TAG` or `@digest`), read by skopeo.
fn raw_manifest(image: &str, creds: Option<&str>) -> Vec<u8> {
    let src = format!("docker://{image}");
    let mut a = vec!["inspect", "--raw", "--tls-verify=false", &src];
    let c;
    if let Some(cr) = creds {
        c = format!("--creds={cr}");
        a.push(&c);
    }
    skopeo(&a)
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Config and layer digests of a manifest document.
fn blob_digests(manifest: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(manifest).unwrap();
    std::iter::once(&v["config"])
        .chain(v["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn round_trip_then_second_push_uploads_nothing() {
    let reg = Registry::anonymous();
    let t = tempfile::tempdir().unwrap();
    let (l, m) = simple_layout(&t.path().join("layout"), b"hello from slipway\n");
    let dest = format!("{}/test/hello:v1", reg.host());
    let layout = l.dir.to_str().unwrap();

    let first = push_ok(&[layout, &dest], &[], None);
    assert_eq!(first["digest"], m["digest"]);
    assert_eq!(first["uploaded"], 2, "{first}");
    assert_eq!(first["skipped"], 0);
    assert_eq!(
        first["pushed"].as_str().unwrap(),
        format!(
            "{}/test/hello@{}",
            reg.host(),
            m["digest"].as_str().unwrap()
        )
    );
    let blob_total: u64 = blob_digests(&l.read_blob(&m))
        .iter()
        .map(|d| {
            std::fs::metadata(l.dir.join("blobs/sha256").join(&d[7..]))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(first["uploaded_bytes"].as_u64(), Some(blob_total));

    // The registry serves the exact manifest bytes; skopeo copies the image back out.
    let raw = raw_manifest(&dest, None);
    assert_eq!(digest_of(&raw), m["digest"].as_str().unwrap());
    let back = t.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{dest}"),
        &format!("oci:{}:v1", back.display()),
    ]);
    let idx: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], m["digest"]);
    let copied = std::fs::read(
        back.join("blobs/sha256")
            .join(&idx["manifests"][0]["digest"].as_str().unwrap()[7..]),
    )
    .unwrap();
    assert_eq!(blob_digests(&copied), blob_digests(&l.read_blob(&m)));

    // The text mode prints REGISTRY/REPO@DIGEST on stdout.
    let o = push(&[layout, &dest], &[], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!(
            "{}/test/hello@{}",
            reg.host(),
            m["digest"].as_str().unwrap()
        )
    );
    assert!(text(&o).contains("exists"), "{}", text(&o));

    let again = push_ok(&[layout, &dest], &[], None);
    assert_eq!(again["uploaded"], 0, "{again}");
    assert_eq!(again["uploaded_bytes"], 0);
    assert_eq!(again["skipped"], 2);
    assert_eq!(again["digest"], m["digest"]);
}

#[test]
fn two_platform_index_with_sbom_referrer() {
    let reg = Registry::anonymous();
    let t = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&t.path().join("layout"));
    let amd = l.image("amd64", b"amd64 payload\n");
    let arm = l.image("arm64", b"arm64 payload\n");
    let index = l.index(&[(amd.clone(), "amd64"), (arm.clone(), "arm64")]);
    l.add(&index, Some("multi"));
    let sbom = l.sbom(&index, true);
    l.add(&sbom, None);
    let dest = format!("{}/multi/app:1.0", reg.host());

    let r = push_ok(&[l.dir.to_str().unwrap(), &dest], &[], None);
    assert_eq!(r["digest"], index["digest"]);
    assert_eq!(r["media_type"], OCI_INDEX);
    // Two configs + two layers, then the SBOM's empty config and its SPDX layer.
    assert_eq!(r["uploaded"], 6, "{r}");
    let refs = r["referrers"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{r}");
    assert_eq!(refs[0]["digest"], sbom["digest"]);
    assert_eq!(refs[0]["artifact_type"], "application/spdx+json");
    // distribution 2.8 has no referrers API: the OCI 1.1 fallback tag is written.
    assert_eq!(refs[0]["status"], "pushed+fallback-tag", "{r}");
    let hex = &index["digest"].as_str().unwrap()[7..];
    assert_eq!(refs[0]["fallback_tag"], format!("sha256-{hex}"));

    let raw = raw_manifest(&dest, None);
    assert_eq!(digest_of(&raw), index["digest"].as_str().unwrap());
    for child in [&amd, &arm] {
        let m = raw_manifest(
            &format!(
                "{}/multi/app@{}",
                reg.host(),
                child["digest"].as_str().unwrap()
            ),
            None,
        );
        assert_eq!(digest_of(&m), child["digest"].as_str().unwrap());
        assert_eq!(blob_digests(&m), blob_digests(&l.read_blob(child)));
    }
    let back = t.path().join("back");
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:1.0", back.display()),
    ]);
    let idx: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], index["digest"]);

    // The fallback index lists the SBOM; the SBOM is fetchable by digest.
    let fallback = raw_manifest(&format!("{}/multi/app:sha256-{hex}", reg.host()), None);
    let fv: Value = serde_json::from_slice(&fallback).unwrap();
    assert_eq!(fv["mediaType"], OCI_INDEX);
    assert_eq!(fv["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(fv["manifests"][0]["digest"], sbom["digest"]);
    assert_eq!(fv["manifests"][0]["artifactType"], "application/spdx+json");
    let s = raw_manifest(
        &format!(
            "{}/multi/app@{}",
            reg.host(),
            sbom["digest"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(digest_of(&s), sbom["digest"].as_str().unwrap());

    // A second push keeps one entry in the fallback index and uploads nothing.
    let again = push_ok(&[l.dir.to_str().unwrap(), &dest], &[], None);
    assert_eq!(again["uploaded"], 0, "{again}");
    let fallback2 = raw_manifest(&format!("{}/multi/app:sha256-{hex}", reg.host()), None);
    assert_eq!(fallback2, fallback);
}

#[test]
fn several_images_need_ref() {
    let reg = Registry::anonymous();
    let t = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&t.path().join("layout"));
    let a = l.image("amd64", b"a\n");
    let b = l.image("amd64", b"b\n");
    l.add(&a, Some("first"));
    l.add(&b, Some("second"));
    let dest = format!("{}/pick/me", reg.host());
    let layout = l.dir.to_str().unwrap();
    let msg = push_fails(&[layout, &dest], &[], None, 2);
    assert!(
        msg.contains("--ref") && msg.contains("first") && msg.contains("second"),
        "{msg}"
    );
    let msg = push_fails(&[layout, &dest, "--ref", "third"], &[], None, 2);
    assert!(msg.contains("no image named \"third\""), "{msg}");
    let r = push_ok(&[layout, &dest, "--ref", "second"], &[], None);
    assert_eq!(r["digest"], b["digest"]);
    let raw = raw_manifest(&format!("{dest}:latest"), None);
    assert_eq!(digest_of(&raw), b["digest"].as_str().unwrap());
}

#[test]
fn basic_auth() {
    let t = tempfile::tempdir().unwrap();
    let o = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret-pw"])
        .output()
        .expect("htpasswd (Debian: apache2-utils)");
    assert!(o.status.success());
    let htpasswd = t.path().join("htpasswd");
    std::fs::write(&htpasswd, &o.stdout).unwrap();
    let reg = Registry::start(&format!(
        "auth:\n  htpasswd:\n    realm: slipway-test\n    path: {}\n",
        htpasswd.display()
    ));
    let (l, m) = simple_layout(&t.path().join("layout"), b"secret image\n");
    let layout = l.dir.to_str().unwrap();
    let dest = format!("{}/private/img:v1", reg.host());

    let msg = push_fails(&[layout, &dest], &[], None, 4);
    assert!(msg.contains("requires credentials"), "{msg}");
    assert!(msg.contains(&reg.host()), "{msg}");

    let msg = push_fails(
        &[layout, &dest, "--username", "alice", "--password-stdin"],
        &[],
        Some("wrong\n"),
        4,
    );
    assert!(msg.contains("rejected the credentials"), "{msg}");
    assert!(msg.contains("alice"), "{msg}");
    assert!(msg.contains("UNAUTHORIZED"), "{msg}");
    assert!(
        !msg.contains("wrong"),
        "the password leaked into the message: {msg}"
    );

    let r = push_ok(
        &[layout, &dest, "-u", "alice", "--password-stdin"],
        &[],
        Some("s3cret-pw\n"),
    );
    assert_eq!(r["digest"], m["digest"]);
    let raw = raw_manifest(&dest, Some("alice:s3cret-pw"));
    assert_eq!(digest_of(&raw), m["digest"].as_str().unwrap());

    // The same credentials from the environment and from Docker's config.json.
    let r = push_ok(
        &[layout, &dest],
        &[
            ("SLIPWAY_REGISTRY_USERNAME", "alice"),
            ("SLIPWAY_REGISTRY_PASSWORD", "s3cret-pw"),
        ],
        None,
    );
    assert_eq!(r["uploaded"], 0);
    let cfg = t.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        json!({"auths": {reg.host(): {"auth": slipway_common::base64::encode(b"alice:s3cret-pw")}}})
            .to_string(),
    )
    .unwrap();
    let r = push_ok(
        &[layout, &dest],
        &[("DOCKER_CONFIG", cfg.to_str().unwrap())],
        None,
    );
    assert_eq!(r["digest"], m["digest"]);
}

// ---------------------------------------------------------------- the token service

fn b64url(data: &[u8]) -> String {
    slipway_common::base64::encode(data)
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string()
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut c = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (Debian: openssl)");
    let mut input = c.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    o.stdout
}

struct TokenService {
    url: String,
    requests: Arc<AtomicUsize>,
}

/// Issues RS256 JWTs (x5c = the self-signed cert the registry trusts) to `user:pass`.
fn token_service(
    dir: &Path,
    user: &'static str,
    pass: &'static str,
    service: &str,
    issuer: &str,
) -> TokenService {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=slipway-test-token-issuer",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
        None,
    );
    let der = openssl(
        &["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"],
        None,
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let service = service.to_string();
    let issuer = issuer.to_string();
    let expected = format!(
        "Basic {}",
        slipway_common::base64::encode(format!("{user}:{pass}").as_bytes())
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut authz = String::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        authz = v.trim().to_string();
                    }
                }
            }
            let (status, body) = if authz != expected {
                (
                    "401 Unauthorized",
                    r#"{"details":"bad credentials"}"#.to_string(),
                )
            } else {
                let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                let mut scope = String::new();
                for kv in query.split('&') {
                    if let Some(v) = kv.strip_prefix("scope=") {
                        scope = v
                            .replace("%3A", ":")
                            .replace("%2C", ",")
                            .replace("%2F", "/");
                    }
                }
                // scope = repository:NAME:ACTIONS
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                );
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [slipway_common::base64::encode(&der)]});
                let claims = json!({
                    "iss": issuer, "sub": user, "aud": service,
                    "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("jti-{now}-{}", counter.load(Ordering::SeqCst)),
                    "access": [{"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}],
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let sig = openssl(
                    &["dgst", "-sha256", "-sign", key.to_str().unwrap()],
                    Some(signing_input.as_bytes()),
                );
                let token = format!("{signing_input}.{}", b64url(&sig));
                (
                    "200 OK",
                    json!({"token": token, "expires_in": 300}).to_string(),
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    TokenService { url, requests }
}

#[test]
fn bearer_token_flow() {
    let t = tempfile::tempdir().unwrap();
    let svc = token_service(
        t.path(),
        "bob",
        "tok-pass",
        "slipway-registry",
        "slipway-issuer",
    );
    let reg = Registry::start(&format!(
        "auth:\n  token:\n    realm: {}\n    service: slipway-registry\n    issuer: slipway-issuer\n    rootcertbundle: {}\n",
        svc.url,
        t.path().join("cert.pem").display()
    ));
    let (l, m) = simple_layout(&t.path().join("layout"), b"bearer image\n");
    let layout = l.dir.to_str().unwrap();
    let dest = format!("{}/tok/img:v1", reg.host());

    let msg = push_fails(
        &[layout, &dest, "-u", "bob", "--password-stdin"],
        &[],
        Some("nope"),
        4,
    );
    assert!(
        msg.contains("token service") && msg.contains("bob"),
        "{msg}"
    );
    assert!(msg.contains("401"), "{msg}");

    let before = svc.requests.load(Ordering::SeqCst);
    let r = push_ok(
        &[layout, &dest, "-u", "bob", "--password-stdin"],
        &[],
        Some("tok-pass"),
    );
    assert_eq!(r["digest"], m["digest"]);
    assert_eq!(r["uploaded"], 2);
    // One token for the whole run: it is cached per scope.
    assert_eq!(svc.requests.load(Ordering::SeqCst) - before, 1);

    let raw = raw_manifest(&dest, Some("bob:tok-pass"));
    assert_eq!(digest_of(&raw), m["digest"].as_str().unwrap());
}

#[test]
fn refused_registry_fails_fast_and_clearly() {
    let t = tempfile::tempdir().unwrap();
    let (l, _) = simple_layout(&t.path().join("layout"), b"nobody home\n");
    let port = free_port();
    let start = Instant::now();
    let msg = push_fails(
        &[l.dir.to_str().unwrap(), &format!("127.0.0.1:{port}/x/y:z")],
        &[],
        None,
        4,
    );
    let secs = start.elapsed().as_secs_f64();
    assert!(msg.contains(&format!("http://127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("4 attempts"), "{msg}");
    // 0.5 + 1 + 2 s of backoff: retried, yet bounded.
    assert!((3.0..15.0).contains(&secs), "took {secs:.1} s");
}

#[test]
fn corrupt_or_incomplete_layouts_push_nothing() {
    let reg = Registry::anonymous();
    let t = tempfile::tempdir().unwrap();
    let dest = format!("{}/broken/img:v1", reg.host());

    // A layer blob missing from blobs/.
    let (l, m) = simple_layout(&t.path().join("missing"), b"missing layer\n");
    let layer = blob_digests(&l.read_blob(&m))[1].clone();
    std::fs::remove_file(l.dir.join("blobs/sha256").join(&layer[7..])).unwrap();
    let msg = push_fails(&[l.dir.to_str().unwrap(), &dest], &[], None, 2);
    assert!(msg.contains(&layer) && msg.contains("missing"), "{msg}");

    // A layer whose bytes do not match its digest.
    let (l, m) = simple_layout(&t.path().join("corrupt"), b"corrupt layer\n");
    let layer = blob_digests(&l.read_blob(&m))[1].clone();
    let p = l.dir.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let msg = push_fails(&[l.dir.to_str().unwrap(), &dest], &[], None, 4);
    assert!(msg.contains(&layer) && msg.contains("corrupt"), "{msg}");

    assert!(
        reg.catalog().is_empty(),
        "something was pushed: {:?}",
        reg.catalog()
    );
}

#[test]
fn registry_rejections() {
    let reg = Registry::anonymous();
    let t = tempfile::tempdir().unwrap();

    // A layer with `urls` (a foreign layer) that the registry does not have: slipway
    // leaves it to the registry, which refuses the manifest with MANIFEST_BLOB_UNKNOWN.
    let mut l = Layout::new(&t.path().join("foreign"));
    let (mut layer, diff_id) = l.layer("f", b"x\n");
    std::fs::remove_file(
        l.dir
            .join("blobs/sha256")
            .join(&layer["digest"].as_str().unwrap()[7..]),
    )
    .unwrap();
    layer["urls"] = json!(["https://example.invalid/layer.tar.gz"]);
    let config = l.blob(
        CONFIG,
        json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
            .to_string()
            .as_bytes(),
    );
    let manifest =
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
    let m = l.blob(OCI_MANIFEST, manifest.to_string().as_bytes());
    l.add(&m, None);
    let msg = push_fails(
        &[
            l.dir.to_str().unwrap(),
            &format!("{}/bad/img:v1", reg.host()),
        ],
        &[],
        None,
        1,
    );
    assert!(msg.contains("MANIFEST_BLOB_UNKNOWN"), "{msg}");
    assert!(msg.contains(m["digest"].as_str().unwrap()), "{msg}");

    // A Docker v2 manifest without its mediaType field: the registry refuses it as invalid.
    let mut l = Layout::new(&t.path().join("docker"));
    let (layer, diff_id) = l.layer("f", b"y\n");
    let config = l.blob(
        "application/vnd.docker.container.image.v1+json",
        json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
            .to_string()
            .as_bytes(),
    );
    let manifest = json!({"schemaVersion": 2, "config": config, "layers": [layer]});
    let m = l.blob(DOCKER_MANIFEST, manifest.to_string().as_bytes());
    l.add(&m, None);
    let msg = push_fails(
        &[
            l.dir.to_str().unwrap(),
            &format!("{}/bad/docker:v1", reg.host()),
        ],
        &[],
        None,
        1,
    );
    assert!(msg.contains("MANIFEST_INVALID"), "{msg}");

    // An SBOM the registry refuses costs a warning, not the image push.
    let mut l = Layout::new(&t.path().join("sbom"));
    let img = l.image("amd64", b"image with a bad sbom\n");
    l.add(&img, Some("v1"));
    let sbom = l.sbom(&img, false);
    l.add(&sbom, None);
    let dest = format!("{}/sbom/img:v1", reg.host());
    let r = push_ok(&[l.dir.to_str().unwrap(), &dest], &[], None);
    assert_eq!(r["digest"], img["digest"]);
    assert_eq!(r["referrers"][0]["status"], "rejected", "{r}");
    let w = r["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("MANIFEST_INVALID") && w.contains(sbom["digest"].as_str().unwrap()),
        "{w}"
    );
    assert_eq!(
        digest_of(&raw_manifest(&dest, None)),
        img["digest"].as_str().unwrap()
    );
}

#[test]
fn bad_references_are_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let (l, _) = simple_layout(&t.path().join("layout"), b"x\n");
    let msg = push_fails(
        &[l.dir.to_str().unwrap(), "127.0.0.1:5000/Upper/Case:t"],
        &[],
        None,
        2,
    );
    assert!(msg.contains("upper-case"), "{msg}");
    let msg = push_fails(
        &[t.path().to_str().unwrap(), "127.0.0.1:5000/a:t"],
        &[],
        None,
        2,
    );
    assert!(msg.contains("not an OCI image layout"), "{msg}");
}

/// Answers every request with `status` and `headers`; counts the requests.
fn scripted_server(status: &'static str, headers: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            c.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"errors":[{"code":"SCRIPTED","message":"scripted answer"}]}"#;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, count)
}

#[test]
fn retry_policy() {
    let t = tempfile::tempdir().unwrap();
    let (l, _) = simple_layout(&t.path().join("layout"), b"retry\n");
    let layout = l.dir.to_str().unwrap();

    // 503 is retried: four requests, then a network-class failure quoting the answer.
    let (port, count) = scripted_server("503 Service Unavailable", "");
    let msg = push_fails(&[layout, &format!("127.0.0.1:{port}/r/x")], &[], None, 4);
    assert_eq!(count.load(Ordering::SeqCst), 4, "{msg}");
    assert!(msg.contains("503") && msg.contains("SCRIPTED"), "{msg}");

    // A refused login is never retried: one anonymous request, one with the credentials.
    let (port, count) = scripted_server(
        "401 Unauthorized",
        "WWW-Authenticate: Basic realm=\"scripted\"\r\n",
    );
    let msg = push_fails(
        &[
            layout,
            &format!("127.0.0.1:{port}/r/x"),
            "-u",
            "carol",
            "--password-stdin",
        ],
        &[],
        Some("pw"),
        4,
    );
    assert_eq!(count.load(Ordering::SeqCst), 2, "{msg}");
    assert!(msg.contains("carol") && msg.contains("SCRIPTED"), "{msg}");

    // Other 4xx answers are returned at once.
    let (port, count) = scripted_server("404 Not Found", "");
    let msg = push_fails(&[layout, &format!("127.0.0.1:{port}/r/x")], &[], None, 4);
    assert_eq!(count.load(Ordering::SeqCst), 1, "{msg}");
    assert!(msg.contains("not a registry"), "{msg}");
}

/// slipway's own images end to end: glibc, then python (which extends it) into the same
/// repository: python's push skips every glibc layer the registry already holds; skopeo
/// copies python back with the same digest; the SBOM referrer is pushed with it.
#[test]
fn slipway_images_push_and_share_layers() {
    let reg = Registry::anonymous();
    let t = tempfile::tempdir().unwrap();
    let build = |name: &str| -> (PathBuf, Value) {
        let out = common::fixtures::base_image(&format!("base/{name}"));
        let rep: Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        (out.join("oci"), rep)
    };
    let (glibc, grep) = build("glibc");
    let (python, prep) = build("python");
    let g = push_ok(
        &[
            glibc.to_str().unwrap(),
            &format!("{}/base/app:glibc", reg.host()),
        ],
        &[],
        None,
    );
    assert_eq!(g["digest"], grep["images"][0]["manifest"]);
    let p = push_ok(
        &[
            python.to_str().unwrap(),
            &format!("{}/base/app:python", reg.host()),
        ],
        &[],
        None,
    );
    assert_eq!(p["digest"], prep["images"][0]["manifest"]);
    let shared = prep["images"][0]["shared_bytes"].as_u64().unwrap();
    assert!(
        p["skipped_bytes"].as_u64().unwrap() >= shared,
        "python's push skips glibc's {shared} bytes of layers: {p}"
    );
    assert!(
        p["referrers"].as_array().is_some_and(|r| !r.is_empty()),
        "SBOM pushed: {p}"
    );
    let back = t.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/base/app:python", reg.host()),
        &format!("oci:{}:python", back.display()),
    ]);
    let idx: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], prep["images"][0]["manifest"]);
}
