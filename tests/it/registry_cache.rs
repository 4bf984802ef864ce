//! The registry cache (`--cache-from`, `--cache-to`; docs/cache.md) between two
//! "machines" (two cache directories) through a real registry: Debian's docker-registry
//! on 127.0.0.1 (tests/it/common/registry.rs). Host only, no boot.
//!
//! - Machine A (the tests' shared cache) builds containerd-host (`--format disk`, the
//!   fixture's output) and base/python with `--cache-to` and the fleet's key.
//! - Machine B (an empty cache directory, the Debian mirror overridden to a closed port)
//!   builds both from `--cache-from` alone: byte-identical outputs.
//! - Rotten mirror: B's base/python build runs against a stand-in mirror that serves none
//!   of the locked .debs (nor anything else) and sees no request; without the registry
//!   the same fetch fails.
//! - Concurrency: two `slipway fetch --cache-to` of one recipe at once both succeed.
//! - Derived entries: the signed stage entry copied into another repository without its
//!   signature, or with one blob changed in the registry's storage, is ignored with a
//!   warning by a machine that has nothing else.
//! - Poison: one .deb changed in the registry's storage: a machine with the package lists
//!   warns, fetches that one from the mirror, and builds the image A built.
//!
//! Measured: 25 s on a shared 2-core machine at load 7 (debug binary, fixtures already
//! built); most of it A's push of the 272 MB disk and the base/python builds.
#![allow(clippy::unwrap_used)]

use crate::common::registry::Registry;
use crate::common::{bin, fixtures, free_port, shared_cache, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Runs slipway with the cache `cache` and the environment `env`.
fn slipway(cache: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env("SLIPWAY_CACHE", cache)
        .env_remove("SLIPWAY_MIRROR")
        .env_remove("SLIPWAY_CACHE_FROM")
        .env_remove("SLIPWAY_CACHE_TO")
        .env("SLIPWAY_CACHE_CONFIG", "/dev/null");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: Output, what: &str) -> String {
    let t = text(&o);
    assert!(o.status.success(), "{what} failed ({:?}):\n{t}", o.status);
    t
}

/// The fleet's key pair, made by openssl as docs/cache.md says.
fn fleet_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("fleet.pem");
    let public = dir.join("fleet.pub.pem");
    let gen = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(gen.status.success(), "openssl genpkey: {}", text(&gen));
    let publ = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(publ.status.success(), "openssl pkey: {}", text(&publ));
    (key, public)
}

/// sha256 of every file under `dir` that a build writes the same every time.
fn digests(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        // report.json holds times and counts; dot files are the fixture cache's notes.
        if e.file_type().is_file() && rel != "report.json" && !rel.starts_with('.') {
            let (sha, _) = slipway::io::hash::sha256_file(e.path()).unwrap();
            out.insert(rel, sha);
        }
    }
    out
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// A stand-in Debian mirror that has dropped everything: it answers 404 to every
/// request and counts them.
fn dropped_mirror() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (format!("http://127.0.0.1:{port}/debian"), seen)
}

/// `path` of the registry's API, as JSON.
fn get_json(reg: &Registry, path: &str, accept: &str) -> Value {
    let url = format!("http://{}{path}", reg.host());
    let body = ureq::get(&url)
        .set("Accept", accept)
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The stage manifest (the only `stage-` tag) in `repo`: its tag and document.
fn stage_manifest(reg: &Registry, repo: &str) -> (String, Value) {
    let tags = get_json(reg, &format!("/v2/{repo}/tags/list"), "application/json");
    let tag = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .find(|t| t.starts_with("stage-build-"))
        .unwrap_or_else(|| panic!("no stage entry was pushed: {tags}"))
        .to_string();
    let m = get_json(reg, &format!("/v2/{repo}/manifests/{tag}"), OCI_MANIFEST);
    (tag, m)
}

/// Copies the stage manifest of `from` into the repository `to` (blobs mounted across
/// repositories), without its signature unless `signed`.
fn copy_stage_entry(reg: &Registry, from: &str, to: &str, signed: bool) {
    let (tag, mut m) = stage_manifest(reg, from);
    let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in digests {
        let url = format!(
            "http://{}/v2/{to}/blobs/uploads/?mount={d}&from={from}",
            reg.host()
        );
        let r = ureq::post(&url).call().unwrap();
        assert_eq!(r.status(), 201, "mount {d}");
    }
    if !signed {
        m.as_object_mut().unwrap().remove("annotations");
    }
    let url = format!("http://{}/v2/{to}/manifests/{tag}", reg.host());
    ureq::put(&url)
        .set("Content-Type", OCI_MANIFEST)
        .send_bytes(&serde_json::to_vec(&m).unwrap())
        .unwrap();
}

/// Flips one byte in the middle of the blob `digest` in the registry's storage.
fn poison_blob(reg: &Registry, digest: &str) {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let data = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&data, bytes).unwrap();
}

/// `slipway build RECIPE -o OUT --format FORMAT EXTRA...` with the cache `cache`.
fn build(
    cache: &Path,
    env: &[(&str, &str)],
    (recipe, format): (&str, &str),
    out: &Path,
    extra: &[&str],
) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec!["build", recipe, "-o", out, "--format", format];
    args.extend(extra);
    slipway(cache, env, &args)
}

#[test]
fn two_machines_share_one_cache_through_a_registry() {
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (key, public) = fleet_keys(w);
    let reg = Registry::anonymous();
    let repo = format!("{}/fleet/cache", reg.host());
    // The recipes' locks (and A's local stage entry, as any earlier build leaves it).
    let fixture = fixtures::host_image("containerd-host");
    fixtures::base_image("base/python");
    let host = fixtures::recipes_dir().join("containerd-host.toml");
    let python = fixtures::recipes_dir().join("base/python.toml");
    let host = (host.to_str().unwrap(), "disk");
    let python = (python.to_str().unwrap(), "tar");
    let (key, public) = (key.to_str().unwrap(), public.to_str().unwrap());

    // Machine A: the shared cache, pushing with the fleet's key.
    let a = shared_cache();
    let push = ["--cache-to", &repo, "--cache-signing-key", key];
    let t = Instant::now();
    let a_host = w.join("a-host");
    let a_python = w.join("a-python");
    ok(build(&a, &[], host, &a_host, &push), "A: containerd-host");
    ok(build(&a, &[], python, &a_python, &push), "A: base/python");
    let a_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "A {a_secs:.1} s, since start {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let ra = report(&a_host)["registry_cache"].clone();
    assert!(ra["manifests"].as_u64().unwrap() >= 2, "A pushed: {ra}");
    assert_eq!(
        digests(&a_host),
        digests(&fixture),
        "A's disk is not the fixture's"
    );

    // Machine B: an empty cache, no mirror, the registry alone.
    let closed = format!("http://127.0.0.1:{}/debian", free_port());
    let (mirror, seen) = dropped_mirror();
    let from = ["--cache-from", &repo, "--cache-trusted-key", public];
    let b = w.join("b-cache");
    let (b_host, b_python) = (w.join("b-host"), w.join("b-python"));
    let t = Instant::now();
    let o = build(&b, &[("SLIPWAY_MIRROR", &closed)], host, &b_host, &from);
    let log = ok(o, "B: containerd-host");
    let b_host_secs = t.elapsed().as_secs_f64();
    assert!(log.contains("taken from the registry cache"), "{log}");
    let env = [("SLIPWAY_MIRROR", mirror.as_str())];
    ok(build(&b, &env, python, &b_python, &from), "B: base/python");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "B asked the mirror");
    assert_eq!(digests(&b_host), digests(&fixture));
    assert_eq!(digests(&b_python), digests(&a_python));
    let rb = report(&b_python);
    assert_eq!(
        rb["fetch"]["from_registry"], rb["packages"],
        "not every package came from the registry: {}",
        rb["fetch"]
    );
    // The control: without the registry, the rotten mirror fails the same fetch.
    let o = slipway(&w.join("bare-cache"), &env, &["fetch", python.0]);
    assert!(
        !o.status.success(),
        "fetched without the registry:\n{}",
        text(&o)
    );
    assert!(seen.load(Ordering::SeqCst) > 0);
    eprintln!("B done, since start {:.1} s", t0.elapsed().as_secs_f64());

    // Before the poisoning: a changed blob in storage is changed for every repository.
    let t = Instant::now();
    concurrent_pushes(&reg, python.0);
    eprintln!("concurrent {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    // The stand-in mirror: apt gives up at once on its 404s (a closed port costs apt's
    // retries, 7 s).
    derived_entries_need_the_signature_and_their_digests(&reg, w, (host.0, public), &mirror);
    eprintln!(
        "unsigned and poisoned entries {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    poisoned_package_is_refetched(&reg, w, python.0, &from, &a_python);
    eprintln!("poisoned .deb {:.1} s", t.elapsed().as_secs_f64());
    eprintln!(
        "A (warm local cache, pushing) {a_secs:.1} s, B containerd-host from the registry {b_host_secs:.1} s; test {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A machine with an empty cache and a mirror that serves nothing, whose registry holds
/// only the stage entry (copied from `fleet/cache` into `repo`): it must ignore the
/// entry (and then fail: the packages are nowhere), saying `why`. Taken, the entry
/// would have been the whole build, as it was for machine B.
fn entry_alone_is_ignored(
    reg: &Registry,
    w: &Path,
    (host, public): (&str, &str),
    mirror: &str,
    (repo, why): (&str, &[&str]),
) {
    let from = format!("{}/{repo}", reg.host());
    let c = w.join(repo.replace('/', "-"));
    let args = ["--cache-from", &from, "--cache-trusted-key", public];
    let o = build(
        &c.join("cache"),
        &[("SLIPWAY_MIRROR", mirror)],
        (host, "disk"),
        &c.join("out"),
        &args,
    );
    let log = text(&o);
    assert!(!o.status.success(), "built from {repo}:\n{log}");
    for w in why {
        assert!(log.contains(w), "no {w:?} in:\n{log}");
    }
    assert!(!log.contains("taken from the registry cache"), "{log}");
}

/// The fleet's stage entry without its signature, and with one blob changed: both
/// ignored by a machine that has nothing else.
fn derived_entries_need_the_signature_and_their_digests(
    reg: &Registry,
    w: &Path,
    host_public: (&str, &str),
    mirror: &str,
) {
    copy_stage_entry(reg, "fleet/cache", "fleet/unsigned", false);
    let why: &[&str] = &["not signed by the fleet's key"];
    entry_alone_is_ignored(reg, w, host_public, mirror, ("fleet/unsigned", why));
    copy_stage_entry(reg, "fleet/cache", "fleet/poisoned", true);
    let (_, m) = stage_manifest(reg, "fleet/poisoned");
    let uki = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.opencontainers.image.title"] == "uki.efi")
        .unwrap_or_else(|| panic!("no uki.efi in {m}"));
    poison_blob(reg, uki["digest"].as_str().unwrap());
    let why: &[&str] = &["uki.efi", "the registry serves"];
    entry_alone_is_ignored(reg, w, host_public, mirror, ("fleet/poisoned", why));
}

/// One .deb of base/python changed in the registry: a machine with the package lists
/// and the real mirror warns, fetches that one from the mirror, and builds the same
/// image as A.
fn poisoned_package_is_refetched(
    reg: &Registry,
    w: &Path,
    python: &str,
    from: &[&str],
    a_python: &Path,
) {
    let tags = get_json(reg, "/v2/fleet/cache/tags/list", "application/json");
    let tag = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .find(|t| t.starts_with("inputs-python-"))
        .unwrap_or_else(|| panic!("no inputs of python: {tags}"))
        .to_string();
    let m = get_json(
        reg,
        &format!("/v2/fleet/cache/manifests/{tag}"),
        OCI_MANIFEST,
    );
    // The smallest: it comes from the mirror again.
    let deb = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .min_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap();
    poison_blob(reg, deb["digest"].as_str().unwrap());
    let d = w.join("d-cache");
    let lists = shared_cache().join("apt");
    std::fs::create_dir_all(&d).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&lists)
        .arg(d.join("apt"))
        .output()
        .unwrap();
    assert!(cp.status.success(), "{}", text(&cp));
    let out = w.join("d-python");
    let log = ok(
        build(&d, &[], (python, "tar"), &out, from),
        "D: poisoned .deb",
    );
    let title = deb["annotations"]["org.opencontainers.image.title"]
        .as_str()
        .unwrap();
    let name = title.split('_').next().unwrap();
    assert!(log.contains(name), "no warning naming {name}:\n{log}");
    let r = report(&out);
    assert!(
        r["warnings"].to_string().contains("the registry serves"),
        "{}",
        r["warnings"]
    );
    assert_eq!(r["registry_cache"]["refused"], 1, "{}", r["registry_cache"]);
    assert_eq!(r["fetch"]["downloaded"], 1, "{}", r["fetch"]);
    assert!(!log.contains("updating package lists"), "{log}");
    assert_eq!(digests(&out), digests(a_python));
}

/// Two machines push one recipe's inputs at once: both succeed.
fn concurrent_pushes(reg: &Registry, python: &str) {
    let repo = format!("{}/fleet/race", reg.host());
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (repo, python) = (repo.clone(), python.to_string());
            std::thread::spawn(move || {
                slipway(
                    &shared_cache(),
                    &[],
                    &["fetch", &python, "--cache-to", &repo],
                )
            })
        })
        .collect();
    for r in runs {
        ok(r.join().unwrap(), "a concurrent push");
    }
    let tags = get_json(reg, "/v2/fleet/race/tags/list", "application/json");
    assert!(tags.to_string().contains("inputs-python-"), "{tags}");
}
