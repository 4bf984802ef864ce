//! Node agents in booted VMs: `recipes/containerd-host-metrics.toml` built with slipway
//! and booted under QEMU (TCG, one VM at a time: the tests of this file take a file lock).
//!
//! The metadata services and the `_bulk` endpoint are HTTP servers written here, on the
//! host's loopback, speaking the documented protocols (AWS IMDSv2 with session tokens,
//! GCE's `Metadata-Flavor: Google`, Azure IMDS's `Metadata: true` and `api-version`,
//! Elasticsearch's NDJSON `_bulk`). The guest reaches them through QEMU user-mode
//! `guestfwd`s on a `restrict=on` network whose range is 169.254.169.0/24, so that the
//! metadata address 169.254.169.254 is inside it (slirp forwards only addresses in its
//! range). A guestfwd carries every guest connection over one host connection, so the
//! servers read requests one after another from a stream and delimit every answer with
//! Content-Length.
//!
//! - `aws_metadata_and_journal_shipping`: host name and SSH key from IMDSv2, whose first
//!   token PUT fails, so the agent's tokenless GET is refused with 401 and it asks for a
//!   token again; the user-data config starts the test agent and the shipper. Journal
//!   lines are delivered; with the endpoint down (503) and back, none is lost; after a
//!   clean reboot none was sent twice; after a hard reset (QMP `system_reset`) with
//!   undelivered lines in the journal, none is lost. A document the endpoint refuses
//!   for good (400) is dropped and reported, and the lines after it still arrive;
//!   documents it is too busy for (429) are sent again.
//! - `gce_and_azure_metadata`: host name and SSH key from each; on GCE the user-data
//!   points the shipper at an address nothing answers: a console error, and the node is
//!   `running`.
//! - `no_source_metrics_and_a_bad_config`: no fw_cfg, no drive, no metadata: the node
//!   reaches multi-user.target and node-exporter answers on :9100 (through a host
//!   forward); then a fw_cfg config with a malformed shipper URL: a console error naming
//!   the key, and the node still boots and serves metrics.
//!
//! Console logs: `$CARGO_TARGET_TMPDIR/node-agents/`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use slipway::boot::agent::AgentClient;
use slipway::boot::qemu::{GuestForward, HostForward, Vm, VmSpec};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RECIPE: &str = "recipes/containerd-host-metrics.toml";
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// The user network's range: covers the metadata address.
const NET: &str = "169.254.169.0/24";
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Where the guest finds the `_bulk` endpoint.
const BULK: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 100);
const BULK_URL: &str = "http://169.254.169.100:9200/_bulk";
/// An address in the range that nothing answers.
const DEAD_URL: &str = "http://169.254.169.99:9200/_bulk";

// --- plumbing --------------------------------------------------------------------------

/// One VM at a time across the test processes nextest starts.
fn vm_lock() -> nix::fcntl::Flock<fs::File> {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-agents.lock");
    let f = fs::File::create(p).unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-agents");
    fs::create_dir_all(&d).unwrap();
    d
}

fn keep_log(vm: &Vm, name: &str) {
    fs::write(log_dir().join(format!("{name}.log")), vm.console()).unwrap();
}

/// Builds the metrics variant; returns disk.raw.
fn build(dir: &Path) -> PathBuf {
    let t = Instant::now();
    let out = dir.join("image");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join(RECIPE);
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "disk",
        ],
    ));
    eprintln!(
        "containerd-host-metrics built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    out.join("disk.raw")
}

fn assert_clean(vm: &Vm, what: &str) {
    assert_console_clean(&vm.console(), what, &[], &vm.tail(60));
}

/// Starts QEMU and waits for `text` on the console; returns the seconds it took.
fn start(spec: &VmSpec, dir: &Path, name: &str, text: &str) -> (Vm, f64) {
    let mut vm = Vm::start(spec, dir).unwrap();
    let at = vm.wait_console(BOOT_TIMEOUT, |c| c.contains(text)).unwrap();
    keep_log(&vm, name);
    let Some(secs) = at else {
        panic!(
            "{name}: no {text:?} within {BOOT_TIMEOUT:?}:\n{}",
            vm.tail(60)
        );
    };
    eprintln!("{name}: {text:?} after {secs:.1} s");
    (vm, secs)
}

fn agent(vm: &Vm, name: &str) -> AgentClient {
    let mut a = AgentClient::connect(&vm.work.agent(), Duration::from_secs(30)).unwrap();
    a.wait_ready(Duration::from_secs(240)).unwrap_or_else(|e| {
        panic!(
            "{name}: the test agent does not answer: {e:#}\n{}",
            vm.tail(60)
        )
    });
    a
}

fn succeed(a: &mut AgentClient, argv: &[&str], stdin: Option<&[u8]>) -> String {
    let r = a
        .exec_with_stdin(argv, stdin, Duration::from_secs(180))
        .unwrap();
    assert!(
        r.success(),
        "{argv:?} exited {:?}:\n{}{}",
        r.exit,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

fn read(a: &mut AgentClient, path: &str) -> String {
    String::from_utf8_lossy(&a.read_file(path).unwrap()).into_owned()
}

fn assert_running(a: &mut AgentClient, vm: &Vm, name: &str) {
    let r = a
        .exec(
            &["systemctl", "is-system-running", "--wait"],
            Duration::from_secs(240),
        )
        .unwrap();
    let state = String::from_utf8_lossy(&r.stdout).trim().to_string();
    if state != "running" {
        let failed = succeed(
            a,
            &["systemctl", "--failed", "--no-legend", "--plain"],
            None,
        );
        panic!(
            "{name}: system state {state:?}; failed units:\n{failed}\n{}",
            vm.tail(40)
        );
    }
}

/// Polls `f` every half second until it holds or `timeout` passes.
fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

// --- HTTP servers on the loopback ------------------------------------------------------

/// A request as the servers see it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn answer(status: u16, body: impl Into<Vec<u8>>) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

type Handler = Arc<dyn Fn(&Req) -> Answer + Send + Sync>;

/// Serves `handler` on 127.0.0.1; every request and its status go to the log.
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<(Req, u16)>>>,
}

impl Server {
    fn start(handler: Handler) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (h, log) = (Arc::clone(&handler), Arc::clone(&log2));
                std::thread::spawn(move || serve(c, &h, &log));
            }
        });
        Server { port, log }
    }

    fn requests(&self) -> Vec<(Req, u16)> {
        self.log.lock().unwrap().clone()
    }

    fn forward(&self, guest: Ipv4Addr, guest_port: u16) -> GuestForward {
        GuestForward {
            guest,
            guest_port,
            host_port: self.port,
        }
    }
}

/// Requests one after another from one stream (QEMU's guestfwd connection).
fn serve(c: TcpStream, h: &Handler, log: &Mutex<Vec<(Req, u16)>>) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split(' ');
        let (method, path) = (
            words.next().unwrap_or("").to_string(),
            words.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let req = Req {
            method,
            path,
            headers,
            body,
        };
        let a = h(&req);
        log.lock().unwrap().push((req, a.status));
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            a.status,
            a.body.len()
        );
        for (k, v) in &a.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(&a.body);
        if w.write_all(&msg).is_err() {
            return;
        }
    }
}

fn test_key(comment: &str) -> String {
    // A syntactically valid ed25519 public key (32 bytes of key after the type string).
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(
        comment
            .as_bytes()
            .iter()
            .cycle()
            .take(32)
            .copied()
            .collect::<Vec<u8>>()
            .as_slice(),
    );
    format!(
        "ssh-ed25519 {} {comment}",
        slipway::boot::agent::protocol::b64_encode(&blob)
    )
}

/// AWS IMDSv2 with tokens required: PUT /latest/api/token (TTL header required) gives a
/// token, every other request without a valid token gets 401. The first token PUT
/// answers 503, so a client has to cope without a token at first.
fn aws(hostname: &str, key: &str, user_data: &str) -> Server {
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let puts = Arc::new(Mutex::new(0u32));
    let (hostname, key, user_data) = (hostname.to_string(), key.to_string(), user_data.to_string());
    Server::start(Arc::new(move |r: &Req| {
        if r.method == "PUT" && r.path == "/latest/api/token" {
            if r.header("X-aws-ec2-metadata-token-ttl-seconds").is_none() {
                return answer(400, "missing TTL");
            }
            let mut n = puts.lock().unwrap();
            *n += 1;
            if *n == 1 {
                return answer(503, "try again");
            }
            let t = format!("AQAEA-token-{n}");
            tokens.lock().unwrap().push(t.clone());
            return answer(200, t);
        }
        let valid = r
            .header("X-aws-ec2-metadata-token")
            .is_some_and(|t| tokens.lock().unwrap().iter().any(|x| x == t));
        if !valid {
            return answer(401, "");
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/latest/meta-data/instance-id") => answer(200, "i-0123456789abcdef0"),
            ("GET", "/latest/meta-data/local-hostname") => {
                answer(200, format!("{hostname}.ec2.internal"))
            }
            ("GET", "/latest/meta-data/public-keys/") => answer(200, "0=test-key"),
            ("GET", "/latest/meta-data/public-keys/0/openssh-key") => {
                answer(200, format!("{key}\n"))
            }
            ("GET", "/latest/user-data") => answer(200, user_data.clone()),
            _ => answer(404, "Not Found"),
        }
    }))
}

/// GCE: requests need `Metadata-Flavor: Google` (403 otherwise) and no
/// `X-Forwarded-For`; answers carry `Metadata-Flavor: Google`.
fn gce(hostname: &str, key: &str, user_data: &str) -> Server {
    let (hostname, key, user_data) = (hostname.to_string(), key.to_string(), user_data.to_string());
    Server::start(Arc::new(move |r: &Req| {
        if r.header("Metadata-Flavor") != Some("Google") || r.header("X-Forwarded-For").is_some() {
            return answer(403, "Missing Metadata-Flavor:Google header.");
        }
        let mut a = match r.path.as_str() {
            "/computeMetadata/v1/instance/hostname" => {
                answer(200, format!("{hostname}.c.slipway-test.internal"))
            }
            "/computeMetadata/v1/instance/attributes/ssh-keys" => {
                answer(200, format!("admin:{key}\n"))
            }
            "/computeMetadata/v1/instance/attributes/user-data" => answer(200, user_data.clone()),
            _ => answer(404, "Not Found"),
        };
        a.headers.push(("Metadata-Flavor", "Google".into()));
        a
    }))
}

/// Azure IMDS: `Metadata: true` and an `api-version` are required (400 otherwise).
fn azure(hostname: &str, key: &str, user_data: &str) -> Server {
    let doc = serde_json::json!({
        "name": hostname,
        "vmId": "6a3b8e4f-0000-4000-8000-000000000001",
        "osProfile": {"computerName": hostname, "adminUsername": "azureuser"},
        "publicKeys": [{"keyData": key, "path": "/home/azureuser/.ssh/authorized_keys"}],
        "userData": slipway::boot::agent::protocol::b64_encode(user_data.as_bytes()),
    })
    .to_string();
    Server::start(Arc::new(move |r: &Req| {
        if r.header("Metadata") != Some("true") {
            return answer(
                400,
                r#"{"error":"Bad request. Required metadata header not specified"}"#,
            );
        }
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        if !query.split('&').any(|q| q.starts_with("api-version=")) {
            return answer(
                400,
                r#"{"error":"Bad request. api-version was not specified"}"#,
            );
        }
        match path {
            "/metadata/instance/compute" => answer(200, doc.clone()),
            _ => answer(404, r#"{"error":"Not found"}"#),
        }
    }))
}

/// A `_bulk` endpoint: records every document; answers 503 while `down`.
struct Bulk {
    server: Server,
    down: Arc<AtomicBool>,
    /// (_id, message, syslog identifier) per document received in an acknowledged batch.
    docs: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Bulk {
    fn start() -> Bulk {
        let down = Arc::new(AtomicBool::new(false));
        let docs = Arc::new(Mutex::new(Vec::new()));
        let (d, docs2) = (Arc::clone(&down), Arc::clone(&docs));
        let busy_seen = Mutex::new(std::collections::BTreeSet::new());
        let server = Server::start(Arc::new(move |r: &Req| {
            if r.method != "POST" || r.path != "/_bulk" {
                return answer(404, "{}");
            }
            if d.load(Ordering::SeqCst) {
                return answer(503, r#"{"error":"unavailable"}"#);
            }
            let text = String::from_utf8_lossy(&r.body).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            let mut items = Vec::new();
            let mut got = Vec::new();
            for pair in lines.chunks(2) {
                let parse = |l: Option<&&str>| {
                    serde_json::from_str::<serde_json::Value>(l.copied().unwrap_or(""))
                        .unwrap_or_default()
                };
                let (action, doc) = (parse(pair.first()), parse(pair.get(1)));
                let id = action["index"]["_id"].as_str().unwrap_or("").to_string();
                // No assertion here: a panic would end this connection, and QEMU's
                // guestfwd with it. Test lines without a field are not counted.
                let complete = ["@timestamp", "host", "boot_id", "priority"]
                    .iter()
                    .all(|f| !doc[f].is_null());
                let ident = doc["syslog_identifier"].as_str().unwrap_or("");
                let message = doc["message"].as_str().unwrap_or("").to_string();
                // What an Elasticsearch cluster does item by item: a document it can
                // never take (400, a mapping error), and one it is too busy for the
                // first time it comes (429).
                let refuse = if message.starts_with("ship_400") {
                    Some((400, "mapper_parsing_exception"))
                } else if message.starts_with("ship_429")
                    && busy_seen.lock().unwrap().insert(id.clone())
                {
                    Some((429, "es_rejected_execution_exception"))
                } else {
                    None
                };
                if let Some((status, kind)) = refuse {
                    items.push(serde_json::json!({"index": {"_id": id, "status": status, "error": {"type": kind}}}));
                    continue;
                }
                got.push((
                    id.clone(),
                    message,
                    if complete { ident } else { "(incomplete)" }.to_string(),
                ));
                items.push(serde_json::json!({"index": {"_id": id, "status": 201}}));
            }
            let errors = got.len() < items.len();
            docs2.lock().unwrap().extend(got);
            answer(
                200,
                serde_json::json!({"took": 1, "errors": errors, "items": items}).to_string(),
            )
        }));
        Bulk { server, down, docs }
    }

    /// How many times each test line (identifier `shiptest`) arrived, by message.
    fn lines(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, msg, ident) in self.docs.lock().unwrap().iter() {
            if ident == "shiptest" {
                *m.entry(msg.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Document ids received more than once.
    fn duplicates(&self) -> usize {
        let mut seen = BTreeMap::new();
        for (id, _, _) in self.docs.lock().unwrap().iter() {
            *seen.entry(id.clone()).or_insert(0) += 1;
        }
        seen.values().filter(|&&n| n > 1).count()
    }

    fn failed_posts(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|(_, s)| *s == 503)
            .count()
    }
}

/// Logs `n` lines `PREFIX_i` in the guest with identifier `shiptest`. The image has no
/// cat, echo or logger: systemd-cat runs `systemd-escape --unescape`, which turns the
/// `\x0a`s of one argument into newlines, and journals each line of its output.
fn log_lines(a: &mut AgentClient, prefix: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = (0..n).map(|i| format!("{prefix}_{i}")).collect();
    let escaped = lines.join("\\x0a");
    succeed(
        a,
        &[
            "systemd-cat",
            "-t",
            "shiptest",
            "systemd-escape",
            "--unescape",
            &escaped,
        ],
        None,
    );
    lines
}

/// Waits until every line arrived; on a time-out shows what the guest's shipper said.
fn wait_delivered(bulk: &Bulk, lines: &[String], what: &str, a: &mut AgentClient, vm: &Vm) {
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let got = bulk.lines();
        let missing: Vec<&String> = lines.iter().filter(|l| !got.contains_key(*l)).collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() > end {
            let show = |a: &mut AgentClient, argv: &[&str]| {
                a.exec(argv, Duration::from_secs(60))
                    .map(|r| String::from_utf8_lossy(&r.stdout).into_owned())
                    .unwrap_or_else(|e| format!("{e:#}"))
            };
            let shipper = show(
                a,
                &[
                    "journalctl",
                    "--no-pager",
                    "-u",
                    "slipway-journal-shipper",
                    "-n",
                    "30",
                ],
            );
            let test_lines = show(
                a,
                &[
                    "journalctl",
                    "--no-pager",
                    "-t",
                    "shiptest",
                    "-o",
                    "short-monotonic",
                ],
            );
            let cursor = show(a, &["journalctl", "--no-pager", "--header", "-n", "0"]);
            let reqs: Vec<String> = bulk
                .server
                .requests()
                .iter()
                .rev()
                .take(6)
                .map(|(r, st)| format!("{} {} body {} -> {st}", r.method, r.path, r.body.len()))
                .collect();
            panic!(
                "{what}: {} of {} lines missing after 180 s (first {:?}); {} documents received; last requests {reqs:?}\n\
                 shipper:\n{shipper}\nshiptest lines in the journal:\n{test_lines}\njournal files:\n{cursor}\n{}",
                missing.len(),
                lines.len(),
                missing[0],
                bulk.docs.lock().unwrap().len(),
                vm.tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn user_data(shipper_url: &str) -> String {
    format!("schema-version = 1\n[test-agent]\n[journal-shipper]\nurl = \"{shipper_url}\"\nindex = \"node-logs\"\n")
}

fn metadata_spec(disk: &Path, fwds: Vec<GuestForward>) -> VmSpec {
    let mut spec = VmSpec::new(disk);
    spec.agent = true;
    spec.network_range = Some(NET.into());
    spec.guest_forwards = fwds;
    spec
}

/// Checks the host name and the SSH key a metadata source gave.
fn assert_identity(a: &mut AgentClient, vm: &Vm, host: &str, key: &str, source: &str) {
    assert_eq!(read(a, "/proc/sys/kernel/hostname").trim(), host);
    assert_eq!(read(a, "/etc/hostname").trim(), host);
    assert_eq!(read(a, "/etc/ssh/authorized_keys/root"), format!("{key}\n"));
    let c = vm.console();
    assert!(
        c.contains(&format!("slipway-provision: cloud metadata from {source}")),
        "no 'cloud metadata from {source}' on the console:\n{}",
        vm.tail(40)
    );
    assert!(
        c.contains("slipway-provision: applied config from"),
        "{}",
        vm.tail(40)
    );
}

// --- the tests -------------------------------------------------------------------------

#[test]
fn aws_metadata_and_journal_shipping() {
    let d = tempfile::tempdir().unwrap();
    let disk = build(d.path());
    let _lock = vm_lock();
    let key = test_key("aws-key");
    let meta = aws("aws-node-7", &key, &user_data(BULK_URL));
    let bulk = Bulk::start();
    let spec = metadata_spec(
        &disk,
        vec![meta.forward(METADATA, 80), bulk.server.forward(BULK, 9200)],
    );
    let work = d.path().join("vm");

    // Boot 1: identity from IMDSv2.
    let (mut vm, _) = start(
        &spec,
        &work,
        "aws-boot1",
        "Reached target multi-user.target",
    );
    let mut a = agent(&vm, "aws-boot1");
    assert_identity(&mut a, &vm, "aws-node-7", &key, "aws imdsv2");
    let reqs = meta.requests();
    let refused = reqs
        .iter()
        .find(|(r, s)| *s == 401 && r.header("X-aws-ec2-metadata-token").is_none())
        .unwrap_or_else(|| panic!("no tokenless request refused with 401: {reqs:?}"));
    assert!(refused.0.path.starts_with("/latest/"), "{refused:?}");
    assert!(
        reqs.iter().any(|(r, s)| *s == 200
            && r.path == "/latest/user-data"
            && r.header("X-aws-ec2-metadata-token").is_some()),
        "{reqs:?}"
    );
    assert_running(&mut a, &vm, "aws-boot1");

    // Delivery.
    let first = log_lines(&mut a, "ship_a", 20);
    wait_delivered(&bulk, &first, "the first lines", &mut a, &vm);
    let c = vm.console();
    assert!(
        c.contains(
            "slipway-journal-shipper: shipping the journal to http://169.254.169.100:9200/_bulk"
        ),
        "{}",
        vm.tail(30)
    );

    // Item by item: a document the endpoint never takes (400) is reported and dropped
    // instead of holding back what follows; documents it is too busy for (429) are
    // sent again.
    let poison = log_lines(&mut a, "ship_400", 1);
    let busy = log_lines(&mut a, "ship_429", 5);
    let after_poison = log_lines(&mut a, "ship_after_400", 5);
    let mut both = busy.clone();
    both.extend(after_poison);
    wait_delivered(&bulk, &both, "the lines after a refused one", &mut a, &vm);
    assert!(
        !bulk.lines().contains_key(&poison[0]),
        "the refused line was recorded"
    );
    assert!(
        vm.console()
            .contains("refused an entry for good, dropped it")
            && vm.console().contains("mapper_parsing_exception"),
        "{}",
        vm.tail(30)
    );

    // The endpoint down for a while, then back: nothing lost.
    bulk.down.store(true, Ordering::SeqCst);
    let during = log_lines(&mut a, "ship_b", 20);
    wait_until(Duration::from_secs(120), "failed POSTs while down", || {
        bulk.failed_posts() >= 3
    });
    assert!(
        !bulk.lines().keys().any(|l| l.starts_with("ship_b")),
        "lines arrived while the endpoint was down"
    );
    bulk.down.store(false, Ordering::SeqCst);
    wait_delivered(
        &bulk,
        &during,
        "the lines logged while the endpoint was down",
        &mut a,
        &vm,
    );
    assert!(
        vm.console()
            .contains("slipway-journal-shipper: ERROR: sending"),
        "{}",
        vm.tail(30)
    );
    assert!(
        vm.console()
            .contains("slipway-journal-shipper: delivered to"),
        "{}",
        vm.tail(30)
    );
    assert_eq!(bulk.duplicates(), 0, "duplicates before any reboot");

    // A clean reboot: nothing sent twice.
    let _ = a.exec(&["systemctl", "reboot"], Duration::from_secs(10));
    assert!(
        vm.wait_exit(Duration::from_secs(180)),
        "no exit after reboot:\n{}",
        vm.tail(40)
    );
    keep_log(&vm, "aws-boot1");
    assert_clean(&vm, "aws-boot1");
    drop(vm);
    let before = bulk.docs.lock().unwrap().len();
    let (mut vm, _) = start(
        &spec,
        &work,
        "aws-boot2",
        "Reached target multi-user.target",
    );
    let mut a = agent(&vm, "aws-boot2");
    assert_eq!(
        read(&mut a, "/proc/sys/kernel/hostname").trim(),
        "aws-node-7"
    );
    let after_reboot = log_lines(&mut a, "ship_c", 10);
    wait_delivered(
        &bulk,
        &after_reboot,
        "the lines after the reboot",
        &mut a,
        &vm,
    );
    let total = bulk.docs.lock().unwrap().len();
    assert!(total > before, "nothing new after the reboot");
    assert_eq!(
        bulk.duplicates(),
        0,
        "entries sent twice across a clean reboot"
    );
    eprintln!("aws: {total} documents delivered, none twice across the clean reboot");

    // A crash with undelivered lines in the journal: none lost.
    bulk.down.store(true, Ordering::SeqCst);
    let before_crash = log_lines(&mut a, "ship_d", 20);
    succeed(&mut a, &["journalctl", "--sync"], None);
    let failed = bulk.failed_posts();
    wait_until(
        Duration::from_secs(60),
        "a failed POST of the new lines",
        || bulk.failed_posts() > failed,
    );
    let old_boot = a.ping().unwrap().boot_id;
    // QEMU runs with -no-reboot, so the reset ends it (no shutdown, no sync in the
    // guest); the same machine is started again.
    vm.qmp("system_reset").unwrap();
    assert!(
        vm.wait_exit(Duration::from_secs(60)),
        "QEMU did not stop after the reset"
    );
    keep_log(&vm, "aws-boot2");
    drop(vm);
    bulk.down.store(false, Ordering::SeqCst);
    let (vm, _) = start(
        &spec,
        &work,
        "aws-boot3",
        "Reached target multi-user.target",
    );
    let mut a = agent(&vm, "aws-boot3");
    let new_boot = a.ping().unwrap().boot_id;
    assert_ne!(old_boot, new_boot, "the crash did not start a new boot");
    wait_delivered(
        &bulk,
        &before_crash,
        "the lines logged before the crash",
        &mut a,
        &vm,
    );
    let counts = bulk.lines();
    for l in first
        .iter()
        .chain(&during)
        .chain(&after_reboot)
        .chain(&before_crash)
    {
        assert!(counts.get(l).copied().unwrap_or(0) >= 1, "{l} lost");
    }
    // One lock at a time: `docs` is not reentrant.
    let docs = bulk.docs.lock().unwrap().len();
    let twice = bulk.duplicates();
    eprintln!(
        "aws: after the crash, {docs} documents, {twice} ids more than once (allowed after a crash)"
    );
    keep_log(&vm, "aws-boot3");
    assert_clean(&vm, "aws-boot3");
}

#[test]
fn gce_and_azure_metadata() {
    let d = tempfile::tempdir().unwrap();
    let disk = build(d.path());
    let _lock = vm_lock();

    // GCE, with a shipper endpoint that nothing answers.
    let key = test_key("gce-key");
    let meta = gce("gce-node-3", &key, &user_data(DEAD_URL));
    let spec = metadata_spec(&disk, vec![meta.forward(METADATA, 80)]);
    let (mut vm, _) = start(
        &spec,
        &d.path().join("gce"),
        "gce",
        "Reached target multi-user.target",
    );
    let mut a = agent(&vm, "gce");
    assert_identity(&mut a, &vm, "gce-node-3", &key, "gce");
    assert!(meta
        .requests()
        .iter()
        .any(|(r, s)| *s == 200 && r.path == "/computeMetadata/v1/instance/attributes/ssh-keys"));
    vm.wait_console(Duration::from_secs(120), |c| {
        c.contains("slipway-journal-shipper: ERROR: sending")
    })
    .unwrap()
    .unwrap_or_else(|| panic!("no shipper error on the console:\n{}", vm.tail(40)));
    let c = vm.console();
    let line = c
        .lines()
        .find(|l| l.contains("slipway-journal-shipper: ERROR: sending"))
        .unwrap();
    assert!(
        line.contains(DEAD_URL) && line.contains("unreachable"),
        "{line}"
    );
    assert_running(&mut a, &vm, "gce");
    assert_eq!(
        succeed(
            &mut a,
            &["systemctl", "is-active", "slipway-journal-shipper"],
            None
        )
        .trim(),
        "active"
    );
    keep_log(&vm, "gce");
    assert_clean(&vm, "gce");
    vm.kill();

    // Azure.
    let key = test_key("azure-key");
    let meta = azure("azure-node-5", &key, &user_data(BULK_URL));
    let spec = metadata_spec(&disk, vec![meta.forward(METADATA, 80)]);
    let (mut vm, _) = start(
        &spec,
        &d.path().join("azure"),
        "azure",
        "Reached target multi-user.target",
    );
    let mut a = agent(&vm, "azure");
    assert_identity(&mut a, &vm, "azure-node-5", &key, "azure imds");
    assert!(meta.requests().iter().any(|(r, s)| *s == 200
        && r.path
            .starts_with("/metadata/instance/compute?api-version=")));
    assert_running(&mut a, &vm, "azure");
    keep_log(&vm, "azure");
    assert_clean(&vm, "azure");
    vm.kill();
}

/// GET http://127.0.0.1:PORT/metrics through the host forward; the body.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: node\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.0 200").then_some(out)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assert_metrics(vm: &Vm, port: u16, name: &str) {
    let mut body = None;
    wait_until(Duration::from_secs(120), "node-exporter on :9100", || {
        body = scrape(port);
        body.is_some()
    });
    let body = body.unwrap();
    for metric in [
        "node_boot_time_seconds",
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
    ] {
        assert!(
            body.contains(metric),
            "{name}: no {metric} in the metrics:\n{}\n{}",
            &body[..body.len().min(2000)],
            vm.tail(20)
        );
    }
}

#[test]
fn no_source_metrics_and_a_bad_config() {
    let d = tempfile::tempdir().unwrap();
    let disk = build(d.path());
    let _lock = vm_lock();

    // No fw_cfg, no drive, no metadata service (QEMU's default range, nothing forwarded).
    let port = free_port();
    let mut spec = VmSpec::new(&disk);
    spec.host_forwards = vec![HostForward {
        host_port: port,
        guest_port: 9100,
    }];
    let (mut vm, secs) = start(
        &spec,
        &d.path().join("none"),
        "none",
        "Reached target multi-user.target",
    );
    vm.wait_console(Duration::from_secs(120), |c| {
        c.contains("slipway-provision: no config found")
    })
    .unwrap()
    .unwrap_or_else(|| panic!("no 'no config found' line:\n{}", vm.tail(40)));
    let c = vm.console();
    assert!(
        c.contains("slipway-provision: no config in fw_cfg or on a config drive"),
        "{}",
        vm.tail(40)
    );
    assert!(
        c.contains("slipway-provision: no cloud metadata service at 169.254.169.254:80"),
        "{}",
        vm.tail(40)
    );
    assert!(secs < BOOT_TIMEOUT.as_secs_f64());
    assert_metrics(&vm, port, "none");
    keep_log(&vm, "none");
    assert_clean(&vm, "none");
    vm.kill();

    // A malformed shipper URL in fw_cfg: a console error naming the key; the node boots.
    let cfg = d.path().join("bad.toml");
    fs::write(&cfg, "schema-version = 1\nhostname = \"bad-1\"\n[test-agent]\n[journal-shipper]\nurl = \"http//logs.example:9200/_bulk\"\n").unwrap();
    let port = free_port();
    let mut spec = VmSpec::new(&disk);
    spec.fw_cfg_config = Some(cfg);
    spec.host_forwards = vec![HostForward {
        host_port: port,
        guest_port: 9100,
    }];
    let (vm, _) = start(
        &spec,
        &d.path().join("bad"),
        "bad-config",
        "Reached target multi-user.target",
    );
    let c = vm.console();
    assert!(
        c.contains("slipway-provision: ERROR: fw_cfg: journal-shipper.url: \"http//logs.example:9200/_bulk\" is not an http:// URL"),
        "{}",
        vm.tail(40)
    );
    assert!(
        c.contains("not applied; nothing of it was changed"),
        "{}",
        vm.tail(40)
    );
    assert_metrics(&vm, port, "bad-config");
    keep_log(&vm, "bad-config");
    assert_clean(&vm, "bad-config");
}

/// Nova's `meta_data.json` for a server named `name` (host name `NAME.novalocal`, the
/// default `dhcp_domain`) with one key pair, as documented in
/// <https://docs.openstack.org/nova/latest/user/metadata.html>; members the agent does
/// not use are there as a real document has them.
fn nova_meta_data(name: &str, key: &str) -> String {
    serde_json::json!({
        "uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38",
        "availability_zone": "nova",
        "hostname": format!("{name}.novalocal"),
        "launch_index": 0,
        "meta": {"role": "container-host"},
        "project_id": "f7ac731cc11f40efbc03a9f9e1d1d21f",
        "public_keys": {"test-key": format!("{key}\n")},
        "keys": [{"name": "test-key", "type": "ssh", "data": format!("{key}\n")}],
        "name": name,
    })
    .to_string()
}

/// The OpenStack metadata service (Nova's `/openstack/` tree): `latest` and dated
/// versions of `meta_data.json` and `user_data`; 404 for everything else, as Nova
/// answers AWS-, GCE- and Azure-style paths it does not have.
fn openstack(name: &str, key: &str, user_data: &str) -> Server {
    let (meta, user_data) = (nova_meta_data(name, key), user_data.to_string());
    Server::start(Arc::new(move |r: &Req| {
        let file = r
            .path
            .strip_prefix("/openstack/")
            .and_then(|p| p.split_once('/'))
            .filter(|(v, _)| *v == "latest" || *v == "2012-08-10")
            .map(|(_, f)| f);
        match (r.method.as_str(), file) {
            ("GET", Some("meta_data.json")) => answer(200, meta.clone()),
            ("GET", Some("user_data")) => answer(200, user_data.clone()),
            _ => answer(404, "Not Found"),
        }
    }))
}

/// The files of an OpenStack config drive for server `name` in `dir`:
/// `openstack/latest/meta_data.json` and `openstack/latest/user_data`.
fn config_drive_tree(dir: &Path, name: &str, key: &str, user_data: &str) -> PathBuf {
    let latest = dir.join("openstack/latest");
    fs::create_dir_all(&latest).unwrap();
    fs::write(latest.join("meta_data.json"), nova_meta_data(name, key)).unwrap();
    fs::write(latest.join("user_data"), user_data).unwrap();
    dir.to_path_buf()
}

/// Boots with `img` attached as an OpenStack config drive; checks host name, key and
/// the console's source lines, and that no network metadata was tried. Returns the
/// seconds to multi-user.target.
fn config_drive_boot(disk: &Path, work: &Path, img: &Path, name: &str, key: &str) -> f64 {
    let mut spec = VmSpec::new(disk);
    spec.agent = true;
    spec.drives = vec![img.to_path_buf()];
    let (mut vm, secs) = start(&spec, work, name, "Reached target multi-user.target");
    let mut a = agent(&vm, name);
    assert_eq!(read(&mut a, "/proc/sys/kernel/hostname").trim(), name);
    assert_eq!(read(&mut a, "/etc/hostname").trim(), name);
    assert_eq!(
        read(&mut a, "/etc/ssh/authorized_keys/root"),
        format!("{key}\n")
    );
    let c = vm.console();
    let summary = format!(": host name {name}, 1 ssh key, user-data");
    let source = c
        .lines()
        .find_map(|l| {
            let rest = l.split("slipway-provision: metadata from ").nth(1)?;
            rest.strip_suffix(summary.as_str()).map(str::to_string)
        })
        .unwrap_or_else(|| panic!("{name}: no config-drive metadata line:\n{}", vm.tail(40)));
    assert!(
        source.starts_with("config drive /dev/vd")
            && source.to_lowercase().ends_with(" (config-2, openstack)"),
        "{source}"
    );
    assert!(
        c.contains(&format!(
            "slipway-provision: applied config from {source} (sha256 "
        )),
        "{}",
        vm.tail(40)
    );
    assert!(
        !c.contains("cloud metadata is tried") && !c.contains("no cloud metadata service"),
        "{name}: the metadata service was tried despite the config drive:\n{}",
        vm.tail(40)
    );
    assert_running(&mut a, &vm, name);
    keep_log(&vm, name);
    assert_clean(&vm, name);
    vm.kill();
    secs
}

/// OpenStack, every way: config drives (label `config-2`) with Nova's `meta_data.json`
/// and a slipway `user_data`, as iso9660 (Nova's default, made with the
/// genisoimage options Nova's config drive builder uses), each applied by the early unit
/// with no network metadata tried; then the metadata service at 169.254.169.254
/// answering only `/openstack/...`, reached after AWS, GCE and Azure fall through. Host
/// name, SSH key and the console's source line each time.
#[test]
fn openstack_config_drive_and_metadata() {
    let d = tempfile::tempdir().unwrap();
    let disk = build(d.path());
    let _lock = vm_lock();
    let ud = "schema-version = 1\n[test-agent]\n";

    // A vfat config-2 drive (Nova's config_drive_format = vfat) takes the same path
    // once found (the label scan is unit-tested in agent/src/source.rs, and a vfat
    // drive is booted in qemu/provisioning-drive.toml): one boot fewer in CI.
    // Boot 1: iso9660 with Rock Ridge and Joliet, as Nova writes it by default.
    let key = test_key("os-iso-key");
    let tree = config_drive_tree(&d.path().join("iso"), "os-iso-1", &key, ud);
    let iso = d.path().join("config-2.iso");
    run(std::process::Command::new("genisoimage")
        .arg("-o")
        .arg(&iso)
        .args([
            "-ldots",
            "-allow-lowercase",
            "-allow-multidot",
            "-l",
            "-quiet",
        ])
        .args(["-J", "-r", "-V", "config-2"])
        .arg(&tree));
    let secs = config_drive_boot(&disk, &d.path().join("os-iso"), &iso, "os-iso-1", &key);
    eprintln!("openstack: iso9660 config drive boot reached multi-user.target after {secs:.1} s");

    // Boot 2: the OpenStack metadata service at 169.254.169.254, which answers AWS's,
    // GCE's and Azure's requests with 404, so the agent falls through to it.
    let key = test_key("os-meta-key");
    let meta = openstack("os-meta-2", &key, ud);
    let spec = metadata_spec(&disk, vec![meta.forward(METADATA, 80)]);
    let (mut vm, secs) = start(
        &spec,
        &d.path().join("os-meta"),
        "openstack-metadata",
        "Reached target multi-user.target",
    );
    let mut a = agent(&vm, "openstack-metadata");
    assert_identity(
        &mut a,
        &vm,
        "os-meta-2",
        &key,
        "openstack (169.254.169.254:80)",
    );
    let reqs = meta.requests();
    for (path, status) in [
        ("/latest/meta-data/instance-id", 404),
        ("/computeMetadata/v1/instance/hostname", 404),
        ("/openstack/latest/meta_data.json", 200),
        ("/openstack/latest/user_data", 200),
    ] {
        assert!(
            reqs.iter().any(|(r, s)| r.path == path && *s == status),
            "no {path} answered {status}: {reqs:?}"
        );
    }
    assert!(
        reqs.iter()
            .any(|(r, s)| r.path.starts_with("/metadata/instance/compute") && *s == 404),
        "{reqs:?}"
    );
    assert!(
        vm.console().contains(
            "slipway-provision: cloud metadata from openstack (169.254.169.254:80): host name os-meta-2, 1 ssh key, user-data"
        ),
        "{}",
        vm.tail(40)
    );
    assert_running(&mut a, &vm, "openstack-metadata");
    keep_log(&vm, "openstack-metadata");
    assert_clean(&vm, "openstack-metadata");
    vm.kill();
    eprintln!("openstack: metadata service boot reached multi-user.target after {secs:.1} s");
}
