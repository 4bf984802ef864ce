//! slipway-agent, the static binary that goes into host images: `check` on good and bad
//! configs (exit 0 / exit 2 naming the key), `probe` on config-drive file systems made
//! by mkfs.vfat, and the test agent served over a pty end to end with the library's
//! AgentClient (the pty stands in for the virtio-serial port; a unix socket bridged to
//! its master stands in for QEMU's chardev socket).
#![allow(clippy::unwrap_used)]

use crate::common::*;
use slipway::boot::agent::AgentClient;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(static_binary("slipway-agent", "SLIPWAY_AGENT"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn agent_check_accepts_a_good_config_and_names_the_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    fs::write(
        &good,
        r#"schema-version = 1
hostname = "node-1"
[[file]]
path = "/etc/systemd/system/hello.service"
content = """
[Service]
ExecStart=/bin/true
"""
[[file]]
path = "/var/lib/app/key"
mode = "0600"
owner = "app"
content-base64 = "c2VjcmV0"
[systemd]
enable = ["hello.service"]
[sysctl]
"net.ipv4.ip_forward" = 1
[test-agent]
"#,
    )
    .unwrap();
    let o = agent(&["check", good.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("good.toml: ok (sha256 "), "{t}");

    let cases = [
        (
            "schema-version = 1\n[[file]]\npath = \"/usr/local/bin/x\"\ncontent = \"\"\n",
            "file[0].path: \"/usr/local/bin/x\" is not under /etc, /var or /run",
        ),
        (
            "schema-version = 1\n[systemd]\nenable = [\"sshd\"]\n",
            "systemd.enable[0]: \"sshd\" is not a unit name",
        ),
        (
            "schema-version = 1\n[test-agent]\nport = 5\n",
            "test-agent.port: invalid type: integer `5`, expected a string (line 3)",
        ),
        (
            "schema-version = 3\n",
            "schema-version: 3 is not supported (expected 1)",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.toml"));
        fs::write(&f, body).unwrap();
        let o = agent(&["check", f.to_str().unwrap()]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{body}: {t}");
        assert!(t.contains(&format!("bad{i}.toml: {want}")), "{body}:\n{t}");
    }
    let o = agent(&["check", "/nonexistent.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let o = agent(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("usage: slipway-agent"));
}

#[test]
fn agent_probe_reads_labels_of_vfat_config_drives() {
    let dir = tempfile::tempdir().unwrap();
    for (args, label) in [
        (&["-n", "SLIPWAY"][..], "SLIPWAY"),
        (&["-F", "32", "-n", "cidata"][..], "cidata"),
    ] {
        let img = dir.path().join(format!("{label}.img"));
        File::create(&img).unwrap().set_len(40 << 20).unwrap();
        let o = Command::new("mkfs.vfat")
            .args(args)
            .arg(&img)
            .stdin(Stdio::null())
            .output()
            .expect("mkfs.vfat (Debian: dosfstools; scripts/setup-host.sh installs it)");
        assert!(o.status.success(), "{}", text(&o));
        let o = agent(&["probe", img.to_str().unwrap()]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("vfat {label}\n")
        );
    }
    let zero = dir.path().join("zero.img");
    File::create(&zero).unwrap().set_len(1 << 20).unwrap();
    let o = agent(&["probe", zero.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

/// Kills the agent when the test ends, however it ends.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies bytes from `from` to `to` until either side closes.
fn pump(mut from: impl Read + Send + 'static, mut to: impl Write + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}

#[test]
fn agent_test_agent_serves_the_client_over_a_pty() {
    use nix::pty::openpty;
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

    let dir = tempfile::tempdir().unwrap();
    let pty = openpty(None, None).unwrap();
    // Raw before any byte flows: a cooked pty would echo requests back as "answers".
    let mut t = tcgetattr(&pty.slave).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
    let slave_path = fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        pty.slave.as_raw_fd()
    }))
    .unwrap();
    let _agent = Killed(
        Command::new(static_binary("slipway-agent", "SLIPWAY_AGENT"))
            .args(["test-agent", "--device", slave_path.to_str().unwrap()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // QEMU's role: a listening unix socket whose bytes go to and from the port.
    let sock = dir.path().join("ta.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let master = File::from(pty.master);
    std::thread::spawn(move || {
        // Each host connection is bridged in turn, like QEMU's server=on chardev.
        for conn in listener.incoming() {
            let conn = conn.unwrap();
            pump(conn.try_clone().unwrap(), master.try_clone().unwrap());
            pump(master.try_clone().unwrap(), conn);
        }
    });

    let mut c = AgentClient::connect(&sock, Duration::from_secs(5)).unwrap();
    let ping = c.wait_ready(Duration::from_secs(20)).unwrap();
    assert_eq!(ping.boot_id.len(), 36, "{ping:?}");

    let r = c
        .exec(
            &["sh", "-c", "echo hi; echo oops >&2; exit 4"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!((r.exit, r.signal), (Some(4), None));
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice()),
        (&b"hi\n"[..], &b"oops\n"[..])
    );

    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let target = dir.path().join("sub/blob");
    c.write_file(target.to_str().unwrap(), 0o600, &big).unwrap();
    assert_eq!(fs::read(&target).unwrap(), big);
    assert_eq!(c.read_file(target.to_str().unwrap()).unwrap(), big);
    let r = c
        .exec_with_stdin(&["wc", "-c"], Some(&big), Duration::from_secs(10))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "300000");

    let e = c.read_file("/nonexistent/file").unwrap_err();
    assert!(
        format!("{e:#}").contains("reading /nonexistent/file"),
        "{e:#}"
    );
    let e = c
        .exec(&["sleep", "5"], Duration::from_millis(200))
        .unwrap_err();
    assert!(format!("{e:#}").contains("timed out after 200 ms"), "{e:#}");
    assert!(c.ping().is_ok());
}
