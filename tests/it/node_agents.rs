//! Node agents in a booted VM: `recipes/containerd-host-metrics.toml`, built once per
//! run (`common::fixtures`), booted under QEMU (TCG) three times on one overlay.
//!
//! The metadata service and the `_bulk` endpoint are HTTP servers written here, on the
//! host's loopback, speaking the documented protocols (AWS IMDSv2 with session tokens,
//! Elasticsearch's NDJSON `_bulk`). The guest reaches them through QEMU user-mode
//! `guestfwd`s on a `restrict=on` network whose range is 169.254.169.0/24, so that the
//! metadata address 169.254.169.254 is inside it (slirp forwards only addresses in its
//! range). A guestfwd carries every guest connection over one host connection, so the
//! servers read requests one after another from a stream and delimit every answer with
//! Content-Length.
//!
//! `aws_metadata_journal_shipping_and_config_drive`, boot by boot:
//! 1. Host name and SSH key from IMDSv2, whose first token PUT fails, so the agent's
//!    tokenless GET is refused with 401 and it asks for a token again; the user-data
//!    config starts the test agent and the shipper. node-exporter serves metrics on
//!    :9100 (through a host forward). Journal lines are delivered; a document the
//!    endpoint refuses for good (400) is dropped and reported, and the lines after it
//!    still arrive; documents it is too busy for (429) are sent again; with the endpoint
//!    down (503) and back, none is lost. The test agent serves the same boot after the
//!    host disconnects and connects again (`reconnect`). Then `systemctl reboot`.
//!    Boot 1 is a first boot (`ConditionFirstBoot`) and writes a marker into /var.
//! 2. After the clean reboot, as an EC2 instance (QEMU's `-smbios` sets the DMI
//!    manufacturer `Amazon EC2`) with a tenant's `SLIPWAY`-labelled disk attached whose
//!    config would rename the node: the agent decides platform `aws`, ignores the disk
//!    and says so, and takes its config from IMDS only, applied already, not again. The
//!    host name (/etc), the marker (/var) and the machine-id persist (not a first boot),
//!    and no line is sent twice. With the endpoint down, more lines are logged; then a hard
//!    reset (QMP `system_reset`).
//! 3. The machine comes back with an OpenStack config drive attached (iso9660, label
//!    `config-2`, as Nova writes it): the drive's config wins over the metadata service,
//!    which sees no request, and applies (host name, key, the same shipper); the marker
//!    is still in /var and the lines logged before the reset are delivered (none lost).
//!
//! Every boot waits for the readiness marker (`slipway-ready (`, agent/src/ready.rs) and
//! ends with the kola-strict console check. What the protocols of the other clouds
//! (GCE, Azure, the OpenStack metadata service), an unreachable shipper endpoint, a
//! rejected config and "no config found" do is proven on the host, in the unit tests
//! of agent/src/metadata.rs, shipper.rs and provision.rs; a rejected config in a boot by
//! qemu/provisioning-broken.toml.
//!
//! Console logs: `$CARGO_TARGET_TMPDIR/node-agents/`.
#![allow(clippy::unwrap_used)]

use crate::common::*;
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

const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// The readiness marker's start (slipway-ready.service).
const READY: &str = "slipway-ready (";
/// The readiness check's line when a condition does not hold (the marker never comes).
const NOT_READY: &str = "slipway-health: NOT READY";
/// The user network's range: covers the metadata address.
const NET: &str = "169.254.169.0/24";
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Where the guest finds the `_bulk` endpoint.
const BULK: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 100);
const BULK_URL: &str = "http://169.254.169.100:9200/_bulk";

// --- plumbing --------------------------------------------------------------------------

fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-agents");
    fs::create_dir_all(&d).unwrap();
    d
}

fn keep_log(vm: &Vm, name: &str) {
    fs::write(log_dir().join(format!("{name}.log")), vm.console()).unwrap();
}

fn assert_clean(vm: &Vm, what: &str) {
    assert_console_clean(&vm.console(), what, &[], &vm.tail(60));
}

/// Starts QEMU and waits for the readiness marker (or the check's failure, which
/// fails at once).
fn start(spec: &VmSpec, dir: &Path, name: &str) -> Vm {
    let mut vm = Vm::start(spec, dir).unwrap();
    let at = vm
        .wait_console(BOOT_TIMEOUT, |c| {
            // A guest kernel that oopsed or panicked never gets there: stop at once.
            [READY, NOT_READY, "Kernel panic", "Oops: "]
                .iter()
                .any(|m| c.contains(m))
        })
        .unwrap();
    keep_log(&vm, name);
    match at {
        Some(secs) if vm.console().contains(READY) => {
            eprintln!("{name}: {READY:?} after {secs:.1} s")
        }
        _ => panic!(
            "{name}: no {READY:?} within {BOOT_TIMEOUT:?}:\n{}",
            vm.tail(60)
        ),
    }
    vm
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

/// The test agent on a real virtio-serial port: the host disconnects and connects again,
/// and `slipway-agent test-agent` serves the same boot. The port reports hang-up while no
/// host is connected and reads return end-of-file, which the agent waits through and
/// reopens after (agent/src/testagent.rs); only QEMU's port behaves so (tests/it/agent.rs
/// serves the protocol over a pty, which does neither). Returns the new connection.
fn reconnect(mut a: AgentClient, vm: &Vm) -> AgentClient {
    let first = a.wait_ready(Duration::from_secs(30)).unwrap();
    drop(a);
    std::thread::sleep(Duration::from_secs(1));
    let mut a = AgentClient::connect(&vm.work.agent(), Duration::from_secs(10)).unwrap();
    let again = a
        .wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no answer after reconnecting: {e:#}\n{}", vm.tail(60)));
    assert_eq!(again.boot_id, first.boot_id, "not the same boot");
    assert!(again.uptime >= first.uptime, "{again:?} before {first:?}");
    a.write_file("/run/slipway-test-x", 0o644, b"written")
        .unwrap();
    assert_eq!(a.read_file("/run/slipway-test-x").unwrap(), b"written");
    // The image has no shell or coreutils: systemd-escape is a program it has.
    let r = a
        .exec(&["systemd-escape", "a b"], Duration::from_secs(30))
        .unwrap();
    assert_eq!((r.exit, r.stdout.as_slice()), (Some(0), &b"a\\x20b\n"[..]));
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

/// The marker file boot 1 writes into /var, read back after the clean reboot and after
/// the hard reset (was qemu/smoke.toml's persistence part).
const MARKER: &str = "/var/lib/slipway-marker.txt";
const MARKER_TEXT: &[u8] = b"written in the first boot\n";

/// `ConditionFirstBoot` as systemd decided it this boot: "yes" on the first boot only,
/// "no" once the machine-id persisted on /etc's overlay.
fn first_boot_condition(a: &mut AgentClient) -> String {
    let out = succeed(
        a,
        &[
            "systemctl",
            "show",
            "--property=ConditionResult",
            "first-boot-complete.target",
        ],
        None,
    );
    out.trim()
        .trim_start_matches("ConditionResult=")
        .to_string()
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
        slipway_common::base64::encode(&blob)
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

// --- node-exporter ---------------------------------------------------------------------

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

// --- the OpenStack config drive --------------------------------------------------------

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

/// An OpenStack config drive for server `name` in `dir`: `openstack/latest/
/// meta_data.json` and `openstack/latest/user_data` in an iso9660 image with Rock Ridge
/// and Joliet, label `config-2`, made with the genisoimage options Nova's config drive
/// builder uses (Nova's default `config_drive_format`). Returns the image.
fn config_drive(dir: &Path, name: &str, key: &str, user_data: &str) -> PathBuf {
    let tree = dir.join("config-2");
    let latest = tree.join("openstack/latest");
    fs::create_dir_all(&latest).unwrap();
    fs::write(latest.join("meta_data.json"), nova_meta_data(name, key)).unwrap();
    fs::write(latest.join("user_data"), user_data).unwrap();
    let iso = dir.join("config-2.iso");
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
    iso
}

/// Checks that the config drive's host name, key and config were applied and said on
/// the console, and that no cloud metadata was asked for.
fn assert_config_drive(a: &mut AgentClient, vm: &Vm, host: &str, key: &str) {
    assert_eq!(read(a, "/proc/sys/kernel/hostname").trim(), host);
    assert_eq!(read(a, "/etc/hostname").trim(), host);
    assert_eq!(read(a, "/etc/ssh/authorized_keys/root"), format!("{key}\n"));
    let c = vm.console();
    let summary = format!(": host name {host}, 1 ssh key, user-data");
    let source = c
        .lines()
        .find_map(|l| {
            let rest = l.split("slipway-provision: metadata from ").nth(1)?;
            rest.strip_suffix(summary.as_str()).map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no config-drive metadata line:\n{}", vm.tail(40)));
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
        !c.contains("cloud metadata is tried") && !c.contains("cloud metadata from"),
        "the metadata service was tried despite the config drive:\n{}",
        vm.tail(40)
    );
}

// --- a tenant's disk on EC2 ----------------------------------------------------------

/// The config on the tenant's disk: it would rename the node.
const TENANT_CONFIG: &str = "schema-version = 1\nhostname = \"tenant-disk\"\n[test-agent]\n";

/// A disk a tenant formatted and left attached: iso9660 labelled `SLIPWAY` with a
/// `slipway.toml`, what a config drive looks like (agent/src/source.rs). Returns the
/// image.
fn tenant_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("tenant-disk");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("slipway.toml"), TENANT_CONFIG).unwrap();
    let iso = dir.join("tenant-disk.iso");
    run(std::process::Command::new("genisoimage")
        .arg("-o")
        .arg(&iso)
        .args(["-quiet", "-J", "-r", "-V", "SLIPWAY"])
        .arg(&tree));
    iso
}

/// The agent decided `aws` from DMI, passed over the tenant's disk (said on the
/// console), and took nothing from it.
fn assert_ignores_the_tenant_disk(vm: &Vm) {
    let c = vm.console();
    let platform = "slipway-provision: platform aws (DMI sys_vendor \"Amazon EC2\"): its metadata service only";
    assert!(c.contains(platform), "no {platform:?}:\n{}", vm.tail(40));
    let ignored = c.lines().find(|l| {
        l.contains("slipway-provision: ignoring the drive /dev/vd")
            && l.ends_with(" labelled SLIPWAY: platform aws reads its metadata service only")
    });
    assert!(
        ignored.is_some(),
        "the tenant's disk was not said to be ignored:\n{}",
        vm.tail(40)
    );
    assert!(
        !c.contains("from config drive") && !c.contains("tenant-disk"),
        "the tenant's disk was used:\n{}",
        vm.tail(40)
    );
    assert!(
        c.contains("slipway-provision: cloud metadata from aws imdsv2"),
        "{}",
        vm.tail(40)
    );
    // The same user-data as boot 1: applied once, not again.
    assert!(
        c.lines()
            .any(|l| l.contains("slipway-provision: config from aws imdsv2 ")
                && l.contains("...) already applied; this boot: ")),
        "the config was not said to be applied already:\n{}",
        vm.tail(40)
    );
}

// --- the test --------------------------------------------------------------------------

/// What the three boots share.
struct Node {
    spec: VmSpec,
    /// The work directory (overlay, firmware variables) every boot continues on.
    work: PathBuf,
    meta: Server,
    bulk: Bulk,
    key: String,
    /// The host port forwarded to node-exporter's :9100.
    metrics: u16,
}

/// What boot 2 leaves for boot 3: every line delivered so far, the lines logged while
/// the endpoint was down just before the reset, and the boot id that was reset.
struct BeforeReset {
    delivered: Vec<String>,
    undelivered: Vec<String>,
    boot_id: String,
}

#[test]
fn aws_metadata_journal_shipping_and_config_drive() {
    let disk = fixtures::host_image("containerd-host-metrics").join("disk.raw");
    let d = tempfile::tempdir().unwrap();
    let key = test_key("aws-key");
    let meta = aws("aws-node-7", &key, &user_data(BULK_URL));
    let bulk = Bulk::start();
    let metrics = free_port();
    let mut spec = metadata_spec(
        &disk,
        vec![meta.forward(METADATA, 80), bulk.server.forward(BULK, 9200)],
    );
    spec.host_forwards = vec![HostForward {
        host_port: metrics,
        guest_port: 9100,
    }];
    let node = Node {
        spec,
        work: d.path().join("vm"),
        meta,
        bulk,
        key,
        metrics,
    };
    let delivered = first_boot(&node);
    let before = clean_reboot(&node, d.path(), delivered);
    after_reset_with_a_config_drive(&node, d.path(), &before);
}

/// Boot 1: identity from IMDSv2, metrics, delivery through refusals and an outage; ends
/// with a clean reboot. Returns the lines delivered.
fn first_boot(node: &Node) -> Vec<String> {
    let mut vm = start(&node.spec, &node.work, "aws-boot1");
    let mut a = agent(&vm, "aws-boot1");
    assert_identity(&mut a, &vm, "aws-node-7", &node.key, "aws imdsv2");
    let reqs = node.meta.requests();
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
    let c = vm.console();
    let platform = "slipway-provision: platform qemu (DMI sys_vendor \"QEMU\"): fw_cfg, \
                    drives labelled SLIPWAY, cidata or config-2, any metadata service";
    assert!(c.contains(platform), "no {platform:?}:\n{}", vm.tail(40));
    assert!(
        c.contains(
            "slipway-provision: no config in fw_cfg or on a config drive; cloud metadata is tried once the network is up"
        ),
        "{}",
        vm.tail(40)
    );
    assert_running(&mut a, &vm, "aws-boot1");
    assert_eq!(
        first_boot_condition(&mut a),
        "yes",
        "boot 1 is a first boot"
    );
    a.write_file(MARKER, 0o644, MARKER_TEXT).unwrap();
    assert_metrics(&vm, node.metrics, "aws-boot1");
    let mut a = reconnect(a, &vm);
    let delivered = ship(&node.bulk, &mut a, &vm);

    // A clean reboot (QEMU runs with -no-reboot, so it ends and is started again).
    let _ = a.exec(&["systemctl", "reboot"], Duration::from_secs(10));
    assert!(
        vm.wait_exit(Duration::from_secs(180)),
        "no exit after reboot:\n{}",
        vm.tail(40)
    );
    keep_log(&vm, "aws-boot1");
    assert_clean(&vm, "aws-boot1");
    delivered
}

/// Journal lines delivered; a refused one (400) dropped and reported, busy ones (429)
/// sent again; the endpoint down (503) and back without loss. Returns the lines
/// delivered.
fn ship(bulk: &Bulk, a: &mut AgentClient, vm: &Vm) -> Vec<String> {
    let first = log_lines(a, "ship_a", 20);
    wait_delivered(bulk, &first, "the first lines", a, vm);
    assert!(
        vm.console().contains(&format!(
            "slipway-journal-shipper: shipping the journal to {BULK_URL}"
        )),
        "{}",
        vm.tail(30)
    );

    // Item by item: a document the endpoint never takes (400) is reported and dropped
    // instead of holding back what follows; documents it is too busy for (429) are
    // sent again.
    let poison = log_lines(a, "ship_400", 1);
    let mut both = log_lines(a, "ship_429", 5);
    both.extend(log_lines(a, "ship_after_400", 5));
    wait_delivered(bulk, &both, "the lines after a refused one", a, vm);
    assert!(
        !bulk.lines().contains_key(&poison[0]),
        "the refused line was recorded"
    );
    let c = vm.console();
    assert!(
        c.contains("refused an entry for good, dropped it")
            && c.contains("mapper_parsing_exception"),
        "{}",
        vm.tail(30)
    );

    // The endpoint down for a while, then back: nothing lost, the failure said.
    bulk.down.store(true, Ordering::SeqCst);
    let during = log_lines(a, "ship_b", 20);
    wait_until(Duration::from_secs(120), "failed POSTs while down", || {
        bulk.failed_posts() >= 3
    });
    assert!(
        !bulk.lines().keys().any(|l| l.starts_with("ship_b")),
        "lines arrived while the endpoint was down"
    );
    bulk.down.store(false, Ordering::SeqCst);
    let what = "the lines logged while the endpoint was down";
    wait_delivered(bulk, &during, what, a, vm);
    let c = vm.console();
    assert!(
        c.lines()
            .any(|l| l.contains("slipway-journal-shipper: ERROR: sending")
                && l.contains(&format!(" entries to {BULK_URL}: HTTP 503: "))),
        "no shipper error naming the endpoint and its 503:\n{}",
        vm.tail(30)
    );
    assert!(
        c.contains(&format!(
            "slipway-journal-shipper: delivered to {BULK_URL} again after "
        )),
        "{}",
        vm.tail(30)
    );
    assert_eq!(bulk.duplicates(), 0, "duplicates before any reboot");
    [first, both, during].concat()
}

/// Boot 2: after the clean reboot, on "EC2" with a tenant's SLIPWAY disk attached: the
/// disk is ignored, and said so; nothing is sent twice. Then lines logged with the
/// endpoint down, and a hard reset.
fn clean_reboot(node: &Node, dir: &Path, mut delivered: Vec<String>) -> BeforeReset {
    let bulk = &node.bulk;
    let before = bulk.docs.lock().unwrap().len();
    let asked = node.meta.requests().len();
    let mut spec = node.spec.clone();
    spec.drives = vec![tenant_disk(dir)];
    // The DMI identity of an EC2 (Nitro) instance: /sys/class/dmi/id/sys_vendor.
    spec.smbios = vec!["type=1,manufacturer=Amazon EC2,product=t3.medium".into()];
    let mut vm = start(&spec, &node.work, "aws-boot2");
    let mut a = agent(&vm, "aws-boot2");
    assert_eq!(
        read(&mut a, "/proc/sys/kernel/hostname").trim(),
        "aws-node-7"
    );
    assert_eq!(read(&mut a, "/etc/hostname").trim(), "aws-node-7");
    assert_eq!(
        read(&mut a, MARKER).as_bytes(),
        MARKER_TEXT,
        "{MARKER} after the reboot"
    );
    assert_eq!(
        first_boot_condition(&mut a),
        "no",
        "the machine-id did not persist: boot 2 is a first boot again"
    );
    assert_ignores_the_tenant_disk(&vm);
    assert!(
        node.meta.requests()[asked..]
            .iter()
            .any(|(r, s)| *s == 200 && r.path == "/latest/user-data"),
        "IMDS was not asked on aws"
    );
    let after_reboot = log_lines(&mut a, "ship_c", 10);
    let what = "the lines after the reboot";
    wait_delivered(bulk, &after_reboot, what, &mut a, &vm);
    let total = bulk.docs.lock().unwrap().len();
    assert!(total > before, "nothing new after the reboot");
    assert_eq!(
        bulk.duplicates(),
        0,
        "entries sent twice across a clean reboot"
    );
    eprintln!("aws: {total} documents delivered, none twice across the clean reboot");
    delivered.extend(after_reboot);

    // Lines the endpoint has not taken when the machine is reset.
    bulk.down.store(true, Ordering::SeqCst);
    let undelivered = log_lines(&mut a, "ship_d", 20);
    succeed(&mut a, &["journalctl", "--sync"], None);
    let failed = bulk.failed_posts();
    wait_until(
        Duration::from_secs(60),
        "a failed POST of the new lines",
        || bulk.failed_posts() > failed,
    );
    let boot_id = a.ping().unwrap().boot_id;
    // QEMU runs with -no-reboot, so the reset ends it (no shutdown, no sync in the
    // guest); the same machine is started again.
    vm.qmp("system_reset").unwrap();
    assert!(
        vm.wait_exit(Duration::from_secs(60)),
        "QEMU did not stop after the reset"
    );
    keep_log(&vm, "aws-boot2");
    assert_clean(&vm, "aws-boot2");
    BeforeReset {
        delivered,
        undelivered,
        boot_id,
    }
}

/// Boot 3: the machine comes back with an OpenStack config drive: its config wins over
/// the metadata service (not asked at all) and applies; nothing logged before the
/// reset is lost.
fn after_reset_with_a_config_drive(node: &Node, dir: &Path, before: &BeforeReset) {
    let bulk = &node.bulk;
    let key = test_key("os-iso-key");
    let mut spec = node.spec.clone();
    spec.drives = vec![config_drive(dir, "os-iso-1", &key, &user_data(BULK_URL))];
    let asked = node.meta.requests().len();
    bulk.down.store(false, Ordering::SeqCst);
    let vm = start(&spec, &node.work, "aws-boot3");
    let mut a = agent(&vm, "aws-boot3");
    assert_ne!(
        before.boot_id,
        a.ping().unwrap().boot_id,
        "the reset did not start a new boot"
    );
    assert_config_drive(&mut a, &vm, "os-iso-1", &key);
    assert_eq!(
        read(&mut a, MARKER).as_bytes(),
        MARKER_TEXT,
        "{MARKER} after the reset"
    );
    let reqs = node.meta.requests();
    assert_eq!(
        reqs.len(),
        asked,
        "the metadata service was asked despite the config drive: {:?}",
        &reqs[asked..]
    );
    let what = "the lines logged before the reset";
    wait_delivered(bulk, &before.undelivered, what, &mut a, &vm);
    let counts = bulk.lines();
    for l in before.delivered.iter().chain(&before.undelivered) {
        assert!(counts.get(l).copied().unwrap_or(0) >= 1, "{l} lost");
    }
    // One lock at a time: `docs` is not reentrant.
    let docs = bulk.docs.lock().unwrap().len();
    let twice = bulk.duplicates();
    eprintln!(
        "aws: after the reset, {docs} documents, {twice} ids more than once (allowed after a crash)"
    );
    assert_running(&mut a, &vm, "aws-boot3");
    keep_log(&vm, "aws-boot3");
    assert_clean(&vm, "aws-boot3");
}
