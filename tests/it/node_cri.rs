//! slipway-node against a real containerd on this host (Debian's containerd 1.6 and runc,
//! installed by scripts/setup-host.sh): a private daemon per test (own root, state,
//! socket and config under a temporary directory; the host's Docker containerd is never
//! touched), images built by slipway (fixtures, once per run) and imported with `ctr`, and the static
//! `slipway-node` binary exactly as `make build` makes it.
//!
//! kubelet itself does not run here: the CRI calls are made by slipway-node the way
//! kubelet makes them.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{fixtures, ok, run, static_binary, text};

fn node_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| static_binary("slipway-node", "SLIPWAY_NODE"))
        .clone()
}

fn node(args: &[&str]) -> Output {
    Command::new(node_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// busybox (recipes/base/busybox.toml) and the sandbox image (recipes/base/pause.toml:
/// catatonit -P, what k8s-node preloads as containerd's sandbox_image): their OCI
/// archives, from the fixture cache (built once per run).
fn images() -> (PathBuf, PathBuf) {
    let archive = |name: &str| {
        let tar = fixtures::base_image(name).join("image.tar");
        assert!(tar.is_file(), "no {}", tar.display());
        tar
    };
    (archive("base/busybox"), archive("base/pause"))
}

/// A private containerd; stopped and cleaned up on drop. Its config also sets
/// `restrict_oom_score_adj` (see below): on a normal node that is not needed.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    sock: PathBuf,
    bridge: Option<String>,
}

impl Containerd {
    /// Starts containerd with the CRI plugin (SystemdCgroup = false: no systemd here)
    /// and `sandbox_image`; with `cni`, a bridge network from Debian's CNI plugins.
    fn start(sandbox_image: &str, cni: bool) -> Containerd {
        // Unix socket paths are limited to 108 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("sn-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let sock = d.join("c.sock");
        let bridge = format!("snbr{}", std::process::id() % 100_000);
        std::fs::create_dir_all(d.join("cni")).unwrap();
        if cni {
            std::fs::write(
                d.join("cni/10-test.conflist"),
                format!(
                    r#"{{"cniVersion": "0.4.0", "name": "slipway-test", "plugins": [
  {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "dataDir": "{}/ipam",
              "ranges": [[{{"subnet": "10.213.{}.0/24"}}]]}}}}
]}}"#,
                    d.display(),
                    std::process::id() % 250
                ),
            )
            .unwrap();
        }
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # Sandboxes ask for oom_score_adj -998; this host's root lacks CAP_SYS_RESOURCE, so
  # runc could not lower it (containerd then keeps its own value as the floor).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#,
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian: containerd) is installed by scripts/setup-host.sh");
        let c = Containerd {
            child,
            dir,
            sock,
            bridge: cni.then_some(bridge),
        };
        let start = Instant::now();
        while !c.sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not start:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn sock(&self) -> &str {
        self.sock.to_str().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr images import` into the k8s.io namespace, where the CRI plugin looks.
    fn import(&self, tar: &Path, base: &str) {
        run(Command::new("ctr")
            .args([
                "-a",
                self.sock(),
                "-n",
                "k8s.io",
                "images",
                "import",
                "--base-name",
            ])
            .arg(base)
            .arg(tar));
    }

    fn cri(&self, args: &[&str]) -> Output {
        let mut a = vec!["cri", "--cri-socket", self.sock()];
        a.extend_from_slice(args);
        node(&a)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        // Whatever the daemon left mounted below its directory (a failed test may leave
        // a sandbox behind), deepest first.
        let d = self.dir.path().to_str().unwrap().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut mine: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&d))
            .collect();
        mine.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mine {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        if let Some(b) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", b]).status();
        }
    }
}

/// The ref an imported archive got in the runtime, from `cri images`.
fn image_ref(c: &Containerd, base: &str) -> String {
    let out = ok(c.cri(&["images"]));
    out.lines()
        .find(|l| l.starts_with(base))
        .unwrap_or_else(|| panic!("{base} not in `cri images`:\n{out}"))
        .to_string()
}

/// A containerd with busybox and pause imported, pause as its sandbox image; returns it
/// and busybox's ref. The ref an archive gets is `BASE:TAG` with the tag from the
/// archive, so a throwaway daemon imports pause first to learn it (containerd reads
/// sandbox_image only at start).
fn setup(cni: bool) -> (Containerd, String) {
    let (busybox, pause) = images();
    let probe = Containerd::start("unused", false);
    probe.import(&pause, "docker.io/slipway/pause");
    let pause_ref = image_ref(&probe, "docker.io/slipway/pause");
    drop(probe);
    let c = Containerd::start(&pause_ref, cni);
    c.import(&pause, "docker.io/slipway/pause");
    c.import(&busybox, "docker.io/slipway/busybox");
    let busybox_ref = image_ref(&c, "docker.io/slipway/busybox");
    (c, busybox_ref)
}

#[test]
fn cri_calls_and_run_on_host_network() {
    let (c, busybox) = setup(false);

    let v = ok(c.cri(&["version"]));
    assert!(v.contains("RuntimeName:  containerd"), "{v}");
    assert!(v.contains("RuntimeApiVersion:  v1"), "{v}");
    // The version containerd reports is the one dpkg installed.
    let dpkg = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "containerd"]));
    // (containerd reports the upstream part, dpkg adds the Debian revision).
    let reported = v
        .lines()
        .find_map(|l| l.strip_prefix("RuntimeVersion:  "))
        .unwrap();
    assert!(
        !reported.is_empty() && dpkg.starts_with(&format!("{reported}-")),
        "{v} vs {dpkg}"
    );

    // No CNI config: the runtime is ready, its network is not, and says why.
    let s = ok(c.cri(&["status"]));
    assert!(s.contains("RuntimeReady true"), "{s}");
    assert!(
        s.contains("NetworkReady false NetworkPluginNotReady"),
        "{s}"
    );

    // echo hello in a pod on the node's network.
    let o = c.cri(&[
        "run", "--image", &busybox, "--name", "hello", "--", "echo", "hello",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o), c.log());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");

    // Non-zero exit, stdout and stderr kept apart.
    let o = c.cri(&[
        "run",
        "--image",
        &busybox,
        "--name",
        "fails",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("err\n"),
        "{}",
        text(&o)
    );

    // A 100 kB argument: the CreateContainer request spans several DATA frames and more
    // than HTTP/2's default 64 KiB window (so it waits for containerd's WINDOW_UPDATE);
    // containerd splits the output line into 16 KiB partial (P) log entries, which must
    // print as one line again.
    let long: String = (0..100_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let o = c.cri(&[
        "run", "--image", &busybox, "--name", "long", "--", "echo", &long,
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout) == format!("{long}\n"),
        "long line differs"
    );

    // Host network: the pod sees the node's hostname.
    let host = run(&mut Command::new("hostname"));
    let o = c.cri(&[
        "run", "--image", &busybox, "--name", "net", "--", "hostname",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        host.trim(),
        "{}",
        text(&o)
    );

    // An image the runtime does not have: a tool failure (125), named.
    let o = c.cri(&["run", "--image", "docker.io/slipway/nope:1", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(text(&o).contains("docker.io/slipway/nope:1 is not in the runtime"));

    // Every sandbox was stopped and removed.
    let pods =
        run(Command::new("ctr").args(["-a", c.sock(), "-n", "k8s.io", "containers", "ls", "-q"]));
    assert_eq!(pods.trim(), "", "containers left behind");
}

#[test]
fn cri_run_with_pod_network() {
    let (c, busybox) = setup(true);
    // With a CNI config the network becomes ready (the plugin reloads it).
    let start = Instant::now();
    loop {
        let s = ok(c.cri(&["status"]));
        if s.contains("NetworkReady true") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = c.cri(&[
        "run",
        "--image",
        &busybox,
        "--name",
        "podnet",
        "--pod-network",
        "--",
        "sh",
        "-c",
        "hostname; ip -4 addr show eth0",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o), c.log());
    assert!(out.starts_with("podnet\n"), "{out}");
    assert!(
        out.contains(&format!("inet 10.213.{}.", std::process::id() % 250)),
        "{out}"
    );
    // Now the runtime is ready on both counts, so the CRI check passes.
    let o = node(&["check", "--cri-socket", c.sock()]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.lines()
            .any(|l| l.starts_with("ok cri: containerd ")
                && l.ends_with(": RuntimeReady, NetworkReady")),
        "{t}"
    );
}

/// `check` on this host: every check's verdict matches what the test finds out on its
/// own, and the CRI check follows the runtime's network state.
#[test]
fn check_on_this_host() {
    let (c, _busybox) = setup(false);
    let o = node(&["check", "--cri-socket", c.sock()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = |name: &str| -> (bool, String) {
        let l = out
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} line:\n{out}"));
        (l.starts_with("ok "), l.to_string())
    };
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();

    let swaps = read("/proc/swaps").lines().skip(1).count();
    assert_eq!(line("swap").0, swaps == 0, "{out}");
    assert_eq!(
        line("ip_forward").0,
        read("/proc/sys/net/ipv4/ip_forward").trim() == "1"
    );
    assert_eq!(
        line("bridge-nf-call-iptables").0,
        read("/proc/sys/net/bridge/bridge-nf-call-iptables").trim() == "1"
    );
    let stat = run(Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/cgroup"]));
    let v2 = stat.trim() == "cgroup2fs";
    assert_eq!(line("cgroup2").0, v2, "stat says {stat}: {out}");
    if !v2 {
        assert!(line("cgroup2")
            .1
            .contains(&format!("is {}", stat.trim().trim_end_matches("fs"))));
        assert!(!line("cgroup-controllers").0);
    }
    assert_eq!(
        line("overlay").0,
        Path::new("/sys/module/overlay").exists()
            || read("/proc/filesystems").contains("\toverlay\n")
    );
    // containerd without a CNI config: the CRI check fails and names the reason.
    let (cri_ok, cri_line) = line("cri");
    assert!(
        !cri_ok && cri_line.contains("NetworkReady=false (NetworkPluginNotReady"),
        "{out}"
    );
    assert!(
        cri_line.contains("RuntimeReady") || cri_line.contains("containerd"),
        "{out}"
    );
    // Binaries: what `command -v` finds, through a shell with the same PATH.
    for b in [
        "kubelet",
        "kubeadm",
        "containerd",
        "runc",
        "conntrack",
        "iptables",
        "socat",
        "ethtool",
        "ebtables",
        "ip",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .unwrap()
            .status
            .success();
        let (bin_ok, bin_line) = line("binaries");
        let named = bin_line
            .split(": ")
            .last()
            .unwrap()
            .split(", ")
            .any(|m| m == b);
        assert_eq!(named, !found && !bin_ok, "{b}: {bin_line}");
    }
    // Port 10250: free exactly when this test can bind it.
    let free = TcpListener::bind("0.0.0.0:10250").is_ok();
    assert_eq!(line("port-10250").0, free, "{out}");
    // And while we hold it, the check must say so.
    let held = TcpListener::bind("127.0.0.1:10250");
    if held.is_ok() || !free {
        let o = node(&["check", "--cri-socket", c.sock()]);
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(t.contains("FAIL port-10250: in use"), "{t}");
    }
    drop(held);
    // Exit status: 0 only when every line is ok.
    assert_eq!(
        o.status.code(),
        Some(if out.contains("FAIL ") { 1 } else { 0 })
    );
    // --json carries the same verdicts.
    let j = node(&["check", "--json", "--cri-socket", c.sock()]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["checks"].as_array().unwrap().len(), out.lines().count());
    assert_eq!(v["checks"][0]["name"], "swap");
}
