//! A/B updates (issue 23), host side: the update payload (`slipway build --format
//! update`) and the agent's update engine run on the build host against a real registry
//! (Debian's docker-registry on loopback), with files standing in for the slots. No
//! boots (test-host phase); the two-slot disk and the boot tests come with the layout.
//!
//! - `the_payload_is_reproducible_and_holds_the_disk`: a second build gives every file
//!   of `update/` byte for byte; the manifest lists root, verity tree and UKI in write
//!   order, which are the disk's root and verity partitions and `uki.efi`; its
//!   annotations carry the recipe's version, the manifest.json's root hash and the sizes.
//! - `the_agent_installs_from_a_registry_and_refuses_what_it_must`: `slipway push` puts
//!   the payload into the registry as `fleet/host:stable`; the node (a directory: its
//!   `/proc/cmdline`, boot id, os-release, slots file and config) runs version 0. Then,
//!   with the real `slipway-agent` binary:
//!   1. one byte of the root blob changed in the registry's storage: `update` fails with
//!      a digest error naming the blob, and no slot file, UKI or state change appears;
//!   2. through a proxy that cuts the connection after 6 MiB: `update` fails, 4 MiB
//!      (one whole range) stay in the partial file; the next run says it resumes there
//!      and moves fewer bytes than the payload holds; the slot files hold the payload's
//!      blobs and the UKI is in the ESP directory; `status --json` names current
//!      (version 0, slot a) and pending (the payload's version, slot b);
//!   3. the node restarts (a new boot id) still on slot a: `status` names the version
//!      as failed (rolled back), and `update` refuses it as bad, writing nothing;
//!   4. a newer version appears on the channel (the same blobs under a manifest whose
//!      version and root hash annotations say 2: one image build costs more than this
//!      test's budget, and the engine identifies a version by those annotations):
//!      `update --check` names it and writes nothing; with Secure Boot on (the node's
//!      efivars: `SecureBoot` = 1, a `db` holding OVMF's snakeoil certificate) `update`
//!      refuses its unsigned UKI, changing no slot, ESP or state; the same version with
//!      its UKI signed by `osslsigncode` with the snakeoil key is installed into slot b,
//!      whose old UKI is gone;
//!   5. the node runs 2 from slot b, not blessed yet: version 3 is refused, because
//!      slot a holds the only blessed version; after `bless` it goes into slot a, with
//!      Secure Boot off: the run says the signature was not checked.
//!
//! The payload's build is a fixture (`common::fixtures::build`), shared by both tests.
#![allow(clippy::unwrap_used)]

use crate::common::registry::Registry;
use crate::common::*;
use serde_json::{json, Value};
use slipway::io::hash::sha256_hex;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const RECIPE: &str = "recipes/containerd-host.toml";
const FORMATS: &str = "disk,update";
const ROOT_TYPE: &str = slipway_common::update::ROOT_TYPE;

fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RECIPE)
}

/// The shared build (disk.raw, uki.efi, manifest.json, update/).
fn shared_build() -> PathBuf {
    fixtures::build(&recipe_path().display().to_string(), &["--format", FORMATS])
}

fn json_of(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// The payload manifest of the layout in `dir` (its digest and document).
fn payload_manifest(layout: &Path) -> (String, Value) {
    let index = json_of(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    (
        digest.clone(),
        json_of(&layout.join("blobs/sha256").join(hex)),
    )
}

fn blob_path(layout: &Path, d: &Value) -> PathBuf {
    let hex = d["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    layout.join("blobs/sha256").join(hex)
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

#[test]
fn the_payload_is_reproducible_and_holds_the_disk() {
    let a = shared_build();
    let tmp = tempfile::Builder::new()
        .prefix("updates-again-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let b = tmp.path().join("two");
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            &recipe_path().display().to_string(),
            "-o",
            &b.display().to_string(),
            "--format",
            "update",
        ],
    ));
    let (la, lb) = (a.join("update"), b.join("update"));
    let names = files_under(&la);
    assert_eq!(names, files_under(&lb));
    assert_eq!(names.len(), 7, "{names:?}");
    for n in &names {
        let (x, y) = (fs::read(la.join(n)).unwrap(), fs::read(lb.join(n)).unwrap());
        assert!(x == y, "update/{} differs between two builds", n.display());
    }
    let (_, m) = payload_manifest(&la);
    assert_eq!(m["artifactType"], slipway_common::update::ARTIFACT_TYPE);
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(types, slipway_common::update::WRITE_ORDER);
    let disk = json_of(&a.join("manifest.json"));
    let ann = &m["annotations"];
    assert_eq!(ann["org.opencontainers.image.version"], disk["version"]);
    assert_eq!(ann["dev.slipway.update.root-hash"], disk["root_hash"]);
    let raw = fs::read(a.join("disk.raw")).unwrap();
    let parts = disk["partitions"].as_array().unwrap();
    for (layer, name, key) in [
        (0, "root-x86-64", "root-size"),
        (1, "root-x86-64-verity", "verity-size"),
    ] {
        let p = parts.iter().find(|p| p["name"] == name).unwrap();
        let (off, len) = (
            p["offset"].as_u64().unwrap() as usize,
            p["content"].as_u64().unwrap() as usize,
        );
        let blob = fs::read(blob_path(&la, &m["layers"][layer])).unwrap();
        assert!(
            blob == raw[off..off + len],
            "layer {layer} is not partition {name}"
        );
        assert_eq!(ann[format!("dev.slipway.update.{key}")], len.to_string());
    }
    let uki = fs::read(a.join("uki.efi")).unwrap();
    assert!(fs::read(blob_path(&la, &m["layers"][2])).unwrap() == uki);
    assert_eq!(ann["dev.slipway.update.uki-size"], uki.len().to_string());
}

/// A TCP proxy to `upstream` that closes every connection once `limit` bytes in all
/// went from the server to the client; `sent` counts those bytes.
struct Proxy {
    port: u16,
    limit: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let limit = Arc::new(AtomicU64::new(u64::MAX));
        let sent = Arc::new(AtomicU64::new(0));
        let (lim, cnt) = (limit.clone(), sent.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { return };
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(Shutdown::Write);
                });
                let (lim, cnt) = (lim.clone(), cnt.clone());
                std::thread::spawn(move || down(server, client, &lim, &cnt));
            }
        });
        Proxy { port, limit, sent }
    }
}

/// Server to client, counting, until the limit is passed.
fn down(mut server: TcpStream, mut client: TcpStream, limit: &AtomicU64, sent: &AtomicU64) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let before = sent.fetch_add(n as u64, Ordering::SeqCst);
        let left = limit.load(Ordering::SeqCst).saturating_sub(before);
        let pass = (n as u64).min(left) as usize;
        if client.write_all(&buf[..pass]).is_err() || pass < n {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// A node as the agent sees it: a root directory with the running boot's facts, the
/// slots (files) and the update config.
struct Node {
    root: PathBuf,
}

impl Node {
    fn new(dir: &Path) -> Node {
        let root = dir.join("node");
        for d in [
            "proc/sys/kernel/random",
            "etc/slipway",
            "run/slipway",
            "slots/a",
            "slots/b",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(
            root.join("proc/cmdline"),
            format!("roothash={} console=ttyS0\n", sha256_hex(b"version 0")),
        )
        .unwrap();
        fs::write(root.join("etc/os-release"), "ID=debian\nIMAGE_VERSION=0\n").unwrap();
        let slot = |n: &str| {
            json!({
                "root": root.join("slots").join(n).join("root"),
                "verity": root.join("slots").join(n).join("verity"),
                "esp-dir": root.join("esp/EFI/Linux"),
            })
        };
        fs::write(
            root.join("run/slipway/update-slots.json"),
            json!({"a": slot("a"), "b": slot("b")}).to_string(),
        )
        .unwrap();
        let n = Node { root };
        n.boot("boot-1");
        n
    }

    fn boot(&self, id: &str) {
        fs::write(
            self.root.join("proc/sys/kernel/random/boot_id"),
            format!("{id}\n"),
        )
        .unwrap();
    }

    /// `[update]` following `fleet/host:stable` on `port`.
    fn configure(&self, port: u16) {
        fs::write(
            self.root.join("etc/slipway/update.toml"),
            format!("schema-version = 1\n[update]\nrepository = \"127.0.0.1:{port}/fleet/host\"\ntag = \"stable\"\nreboot = \"now\"\n"),
        )
        .unwrap();
    }

    fn agent(&self, args: &[&str]) -> Output {
        Command::new(static_binary("slipway-agent", "SLIPWAY_AGENT"))
            .args(args)
            .env("SLIPWAY_UPDATE_ROOT", &self.root)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn status(&self) -> Value {
        let o = self.agent(&["status", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn store(&self) -> PathBuf {
        self.root.join("var/lib/slipway/update/blobs")
    }

    fn esp(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("esp/EFI/Linux"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn push(layout: &Path, dest: &str) {
    ok(slipway(
        &shared_cache(),
        &["push", &layout.display().to_string(), dest],
    ));
}

/// A layout in `dir` with `layout`'s blobs and a manifest whose version and root hash
/// annotations say `version`.
fn relabelled(layout: &Path, dir: &Path, version: &str) -> PathBuf {
    relabelled_with(
        layout,
        &dir.join(format!("update-{version}")),
        version,
        |_, _| {},
    )
}

/// [`relabelled`] into `out`, `edit` changing the manifest (and adding blobs to `out`).
fn relabelled_with(
    layout: &Path,
    out: &Path,
    version: &str,
    edit: impl FnOnce(&Path, &mut Value),
) -> PathBuf {
    fs::create_dir_all(out.join("blobs/sha256")).unwrap();
    for n in files_under(&layout.join("blobs/sha256")) {
        let (from, to) = (
            layout.join("blobs/sha256").join(&n),
            out.join("blobs/sha256").join(&n),
        );
        fs::hard_link(&from, &to)
            .or_else(|_| fs::copy(&from, &to).map(|_| ()))
            .unwrap();
    }
    fs::copy(layout.join("oci-layout"), out.join("oci-layout")).unwrap();
    let (_, mut m) = payload_manifest(layout);
    m["annotations"]["org.opencontainers.image.version"] = json!(version);
    m["annotations"]["dev.slipway.update.root-hash"] =
        json!(sha256_hex(format!("version {version}").as_bytes()));
    edit(out, &mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let hex = sha256_hex(&bytes);
    fs::write(out.join("blobs/sha256").join(&hex), &bytes).unwrap();
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{hex}"), "size": bytes.len(),
            "artifactType": slipway_common::update::ARTIFACT_TYPE}]});
    fs::write(out.join("index.json"), index.to_string()).unwrap();
    out.to_path_buf()
}

const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

/// [`relabelled`] with its UKI signed by `osslsigncode` with OVMF's snakeoil key.
fn relabelled_signed(layout: &Path, dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(format!("update-{version}-signed"));
    relabelled_with(layout, &out, version, |out, m| {
        let unsigned = blob_path(layout, &m["layers"][2]);
        let signed = dir.join("signed.efi");
        run(Command::new("osslsigncode")
            .args([
                "sign",
                "-h",
                "sha256",
                "-certs",
                SNAKEOIL_CERT,
                "-key",
                SNAKEOIL_KEY,
            ])
            .args(["-pass", "snakeoil", "-in"])
            .arg(&unsigned)
            .arg("-out")
            .arg(&signed));
        let bytes = fs::read(&signed).unwrap();
        let hex = sha256_hex(&bytes);
        fs::write(out.join("blobs/sha256").join(&hex), &bytes).unwrap();
        m["layers"][2]["digest"] = json!(format!("sha256:{hex}"));
        m["layers"][2]["size"] = json!(bytes.len());
        m["annotations"]["dev.slipway.update.uki-size"] = json!(bytes.len().to_string());
    })
}

/// The node's efivarfs: `SecureBoot` set to `on` (absent: `None`) and a `db` holding
/// the snakeoil certificate (one EFI_SIGNATURE_LIST of EFI_CERT_X509_GUID).
fn secure_boot(node: &Node, dir: &Path, on: Option<u8>) {
    let vars = node.root.join("sys/firmware/efi/efivars");
    fs::create_dir_all(&vars).unwrap();
    let sb = vars.join("SecureBoot-8be4df61-93ca-11d0-aa0d-00e098032b8c");
    match on {
        Some(b) => fs::write(&sb, [6, 0, 0, 0, b]).unwrap(),
        None => {
            let _ = fs::remove_file(&sb);
        }
    }
    let der = dir.join("snakeoil.der");
    run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in", SNAKEOIL_CERT, "-out"])
        .arg(&der));
    let cert = fs::read(&der).unwrap();
    let mut db = 0x27u32.to_le_bytes().to_vec();
    db.extend([
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ]);
    let n = u32::try_from(cert.len()).unwrap();
    db.extend((28 + 16 + n).to_le_bytes());
    db.extend(0u32.to_le_bytes());
    db.extend((16 + n).to_le_bytes());
    db.extend([0x11u8; 16]);
    db.extend(&cert);
    fs::write(vars.join("db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"), db).unwrap();
}

/// What the steps of the agent test share: the payload as built, the registry and the
/// node.
struct Scene {
    build: PathBuf,
    layout: PathBuf,
    layers: Vec<Value>,
    version: String,
    reg: Registry,
    node: Node,
    dir: tempfile::TempDir,
}

impl Scene {
    fn root_hex(&self) -> String {
        let d = self.layers[0]["digest"].as_str().unwrap();
        d.strip_prefix("sha256:").unwrap().to_string()
    }

    /// `update` as the node runs it; its exit code and output.
    fn update(&self) -> (Option<i32>, String) {
        let o = self.node.agent(&["update"]);
        (o.status.code(), text(&o))
    }
}

#[test]
fn the_agent_installs_from_a_registry_and_refuses_what_it_must() {
    let build = shared_build();
    let layout = build.join("update");
    let (_, m) = payload_manifest(&layout);
    let reg = Registry::anonymous();
    push(&layout, &format!("{}/fleet/host:stable", reg.host()));
    // Beside the fixture (one file system: the relabelled layout hard-links its blobs).
    let dir = tempfile::Builder::new()
        .prefix("updates-node-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let node = Node::new(dir.path());
    node.configure(reg.port);
    let s = node.status();
    assert_eq!(s["current"]["version"], "0");
    assert_eq!(s["current"]["slot"], "a");
    assert!(s["pending"].is_null(), "{s}");
    let scene = Scene {
        version: m["annotations"]["org.opencontainers.image.version"]
            .as_str()
            .unwrap()
            .to_string(),
        layers: m["layers"].as_array().unwrap().clone(),
        build,
        layout,
        reg,
        node,
        dir,
    };
    assert_eq!(scene.layers[0]["mediaType"], ROOT_TYPE);
    tampered_blob_is_refused(&scene);
    interrupted_download_resumes(&scene);
    rolled_back_version_is_not_installed_again(&scene);
    newer_version_is_installed(&scene);
    only_blessed_slot_is_kept_until_blessed(&scene);
}

/// Step 1: A changed byte in the registry's copy of the root blob.
fn tampered_blob_is_refused(sc: &Scene) {
    let hex = sc.root_hex();
    let data = sc
        .reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let good = fs::read(&data).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 1;
    fs::write(&data, &bad).unwrap();
    let (code, t) = sc.update();
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("digest error") && t.contains(&hex), "{t}");
    assert!(files_under(&sc.node.root.join("slots")).is_empty(), "{t}");
    assert!(sc.node.esp().is_empty());
    assert!(!sc.node.store().join(format!("{hex}.partial")).exists());
    assert!(sc.node.status()["slots"]["b"]["status"] == "empty");
    fs::write(&data, &good).unwrap();
}

/// Step 2: Cut after 6 MiB, then resumed; the slot holds the payload.
fn interrupted_download_resumes(sc: &Scene) {
    let (node, hex) = (&sc.node, sc.root_hex());
    let total: u64 = sc.layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    let proxy = Proxy::start(sc.reg.port);
    node.configure(proxy.port);
    proxy.limit.store(6 << 20, Ordering::SeqCst);
    let (code, t) = sc.update();
    assert_eq!(code, Some(1), "{t}");
    let partial = node.store().join(format!("{hex}.partial"));
    assert_eq!(fs::metadata(&partial).unwrap().len(), 4 << 20, "{t}");
    assert!(files_under(&node.root.join("slots")).is_empty(), "{t}");
    proxy.limit.store(u64::MAX, Ordering::SeqCst);
    proxy.sent.store(0, Ordering::SeqCst);
    let (code, t) = sc.update();
    assert_eq!(code, Some(0), "{t}");
    let resumed = format!("resuming at byte {} of {}", 4 << 20, sc.layers[0]["size"]);
    assert!(t.contains(&resumed), "{t}");
    let moved = proxy.sent.load(Ordering::SeqCst);
    assert!(
        moved < total,
        "the resumed run moved {moved} bytes of {total}"
    );
    assert!(t.contains("reboot: due, not done"), "{t}");
    node.configure(sc.reg.port);
    for (layer, file) in [(0, "root"), (1, "verity")] {
        let want = fs::read(blob_path(&sc.layout, &sc.layers[layer])).unwrap();
        let got = fs::read(node.root.join("slots/b").join(file)).unwrap();
        assert!(got == want, "slot b {file}");
    }
    let uki = format!("slipway-{}+3.efi", sc.version);
    assert_eq!(node.esp(), [uki.as_str()]);
    let got = fs::read(node.root.join("esp/EFI/Linux").join(&uki)).unwrap();
    assert!(got == fs::read(sc.build.join("uki.efi")).unwrap());
    let s = node.status();
    assert_eq!(s["current"]["version"], "0", "{s}");
    assert_eq!(s["pending"]["version"], sc.version.as_str(), "{s}");
    assert_eq!(s["pending"]["slot"], "b", "{s}");
}

/// Step 3: Restarted on slot a: rolled back, bad, not installed again.
fn rolled_back_version_is_not_installed_again(sc: &Scene) {
    let node = &sc.node;
    node.boot("boot-2");
    let s = node.status();
    assert_eq!(s["failed"][0]["version"], sc.version.as_str(), "{s}");
    let reason = s["failed"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("rolled back"), "{s}");
    assert!(s["pending"].is_null(), "{s}");
    let mtime = || {
        fs::metadata(node.root.join("slots/b/root"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = mtime();
    let (code, t) = sc.update();
    assert_eq!(code, Some(0), "{t}");
    let refused = format!("not installed: version {} is marked bad", sc.version);
    assert!(t.contains(&refused), "{t}");
    assert_eq!(mtime(), before);
}

/// Step 4: A newer version on the channel is installed; the slot's old UKI is gone.
fn newer_version_is_installed(sc: &Scene) {
    let two = relabelled(&sc.layout, sc.dir.path(), "2");
    push(&two, &format!("{}/fleet/host:stable", sc.reg.host()));
    let o = sc.node.agent(&["update", "--check"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("update available: version 2 would go into slot b"),
        "{t}"
    );
    assert_eq!(sc.node.esp(), [format!("slipway-{}+3.efi", sc.version)]);
    // Secure Boot on: the build's unsigned UKI is refused before any slot write.
    secure_boot(&sc.node, sc.dir.path(), Some(1));
    let (before, slot_b) = (sc.node.status(), sc.node.root.join("slots/b/root"));
    let mtime = fs::metadata(&slot_b).unwrap().modified().unwrap();
    let (code, t) = sc.update();
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("version 2 refused (Secure Boot is on): its UKI is not signed"),
        "{t}"
    );
    assert_eq!(sc.node.esp(), [format!("slipway-{}+3.efi", sc.version)]);
    assert_eq!(fs::metadata(&slot_b).unwrap().modified().unwrap(), mtime);
    assert_eq!(sc.node.status(), before);
    // The same version with its UKI signed by the db key is installed.
    let two = relabelled_signed(&sc.layout, sc.dir.path(), "2");
    push(&two, &format!("{}/fleet/host:stable", sc.reg.host()));
    let (code, t) = sc.update();
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("the UKI of version 2 is signed by O=SnakeOil, a certificate in the node's db"),
        "{t}"
    );
    assert!(t.contains("installed version 2 into slot b"), "{t}");
    secure_boot(&sc.node, sc.dir.path(), None);
    assert_eq!(sc.node.esp(), ["slipway-2+3.efi"]);
    let s = sc.node.status();
    assert_eq!(s["pending"]["version"], "2", "{s}");
    assert_eq!(s["failed"][0]["version"], sc.version.as_str(), "{s}");
    let t = text(&sc.node.agent(&["status"]));
    assert!(t.contains("pending: version 2 (slot b"), "{t}");
}

/// Step 5: Booted into 2, not blessed: 3 must not overwrite slot a, the only blessed
/// version; once 2 is blessed it may.
fn only_blessed_slot_is_kept_until_blessed(sc: &Scene) {
    let node = &sc.node;
    fs::write(
        node.root.join("proc/cmdline"),
        format!("roothash={}\n", sha256_hex(b"version 2")),
    )
    .unwrap();
    fs::write(node.root.join("etc/os-release"), "IMAGE_VERSION=2\n").unwrap();
    node.boot("boot-3");
    let s = node.status();
    assert_eq!(s["current"]["slot"], "b", "{s}");
    assert_eq!(s["current"]["status"], "trying", "{s}");
    let three = relabelled(&sc.layout, sc.dir.path(), "3");
    push(&three, &format!("{}/fleet/host:stable", sc.reg.host()));
    let (code, t) = sc.update();
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("slot a holds version 0, the only blessed version"),
        "{t}"
    );
    let o = node.agent(&["bless"]);
    assert!(
        text(&o).contains("slot b: version 2 blessed"),
        "{}",
        text(&o)
    );
    let (code, t) = sc.update();
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("installed version 3 into slot a"), "{t}");
    assert!(
        t.contains("Secure Boot is off") && t.contains("version 3's UKI was not checked"),
        "{t}"
    );
    // Named with the payload's tries (the recipe's default 3); on a node systemd-boot
    // counts them down and systemd-bless-boot drops the counter (tests/it/ab_updates.rs).
    assert_eq!(node.esp(), ["slipway-2+3.efi", "slipway-3+3.efi"]);
}
