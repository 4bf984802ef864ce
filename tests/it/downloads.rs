//! Issue 17, downloads: every artifact download ends within its limits. A server that
//! drips one byte at a time hits the overall deadline, a silent one the read time-out,
//! an endless one (and `file:///dev/zero`) the size cap or the locked size; each fails
//! with exit 4 and a message naming the limit and how to raise it, and leaves no work
//! directory in the cache. A download killed half-way leaves its work directory, and the
//! next run removes it. The servers are threads of the test on 127.0.0.1; limits are
//! small, set by flag or environment variable. Every run has a watchdog: a download that
//! does not end within a few seconds fails the test instead of hanging it.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any one slipway run may take before the watchdog kills it.
const WATCHDOG: Duration = Duration::from_secs(5);

/// Serves every connection on a loopback port with `reply` (in a thread of its own);
/// returns the URL of `/file.tar.gz` there.
fn serve(reply: fn(TcpStream)) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                reply(s);
            });
        }
    });
    format!("http://127.0.0.1:{port}/file.tar.gz")
}

/// Headers announcing a large file, then one byte every 200 ms.
fn drip(mut s: TcpStream) {
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
    while s.write_all(b"x").is_ok() {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Headers announcing a large file, then nothing.
fn silent(mut s: TcpStream) {
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
    std::thread::sleep(Duration::from_secs(30));
}

/// A body without a length that never ends.
fn endless(mut s: TcpStream) {
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    let chunk = vec![0u8; 64 << 10];
    while s.write_all(&chunk).is_ok() {}
}

/// A recipe in a fresh directory with one artifact at `url`; returns (dir, recipe).
fn setup(url: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let body = format!(
        "[packages]\ninclude = [\"busybox\"]\n\n[[artifact]]\nurl = \"{url}\"\nsha256 = \"{}\"\ndest = \"/usr/local/bin/tool\"\n",
        "ab".repeat(32)
    );
    let r = recipe(d.path(), "dl.toml", &body);
    (d, r)
}

/// Runs `slipway fetch RECIPE ARGS...` with the cache `DIR/cache` and `env`, killing it
/// after [`WATCHDOG`]. Returns the output and the wall time.
fn fetch(dir: &Path, recipe: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new(bin());
    cmd.arg("fetch")
        .arg(recipe)
        .args(args)
        .env("SLIPWAY_CACHE", dir.join("cache"))
        .env_remove("SLIPWAY_MIRROR")
        .env_remove("SLIPWAY_DOWNLOAD_MAX_SIZE")
        .env_remove("SLIPWAY_DOWNLOAD_TIMEOUT")
        .env_remove("SLIPWAY_DOWNLOAD_READ_TIMEOUT")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > WATCHDOG {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "slipway fetch {args:?} still ran after {WATCHDOG:?}; killed:\n{}",
                text(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), start.elapsed())
}

/// The names in the cache's `tmp/` (work directories in use or left behind).
fn work_dirs(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("cache/tmp")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Asserts exit 4 within `max`, a message holding every one of `want`, and no work
/// directory left.
fn assert_stopped(dir: &Path, (o, took): (Output, Duration), max: Duration, want: &[&str]) {
    let t = fails(o, 4);
    assert!(took <= max, "took {took:?}, limit {max:?}:\n{t}");
    for w in want {
        assert!(t.contains(w), "expected {w:?} in:\n{t}");
    }
    assert_eq!(work_dirs(dir), Vec::<String>::new(), "work dirs left:\n{t}");
}

#[test]
fn a_dripping_server_hits_the_deadline() {
    let (d, r) = setup(&serve(drip));
    let args = ["--download-timeout", "1.5", "--download-read-timeout", "1"];
    let run = fetch(d.path(), &r, &args, &[]);
    assert_stopped(
        d.path(),
        run,
        Duration::from_secs(3),
        &["1.5 s download deadline", "--download-timeout"],
    );
}

#[test]
fn a_silent_server_hits_the_read_timeout() {
    let (d, r) = setup(&serve(silent));
    // Set by environment this time; the flags are the same limits.
    let env = [
        ("SLIPWAY_DOWNLOAD_TIMEOUT", "4s"),
        ("SLIPWAY_DOWNLOAD_READ_TIMEOUT", "500ms"),
    ];
    let run = fetch(d.path(), &r, &[], &env);
    assert_stopped(
        d.path(),
        run,
        Duration::from_secs(3),
        &["no byte came for 0.5 s", "SLIPWAY_DOWNLOAD_READ_TIMEOUT"],
    );
}

#[test]
fn an_endless_server_hits_the_size_cap() {
    let (d, r) = setup(&serve(endless));
    let run = fetch(d.path(), &r, &["--download-max-size", "1MiB"], &[]);
    assert_stopped(
        d.path(),
        run,
        Duration::from_secs(3),
        &["1 MiB download size cap", "--download-max-size"],
    );
}

#[test]
fn dev_zero_hits_the_size_cap() {
    let (d, r) = setup("file:///dev/zero");
    let env = [("SLIPWAY_DOWNLOAD_MAX_SIZE", "2MiB")];
    let run = fetch(d.path(), &r, &["--allow-host-paths"], &env);
    assert_stopped(
        d.path(),
        run,
        Duration::from_secs(3),
        &["2 MiB download size cap", "SLIPWAY_DOWNLOAD_MAX_SIZE"],
    );
}

#[test]
fn a_locked_size_caps_the_download() {
    let url = serve(endless);
    let (d, r) = setup(&url);
    let rec = slipway::recipe::Recipe::load(&r).unwrap();
    let lock = slipway::lock::Lock {
        lock_version: slipway::lock::LOCK_VERSION,
        input_digest: slipway::lock::input_digest(&rec),
        release: "trixie".into(),
        architecture: "amd64".into(),
        parent: None,
        packages: vec![],
        artifacts: vec![slipway::lock::LockedArtifact {
            url,
            sha256: "ab".repeat(32),
            size: 5000,
            dest: "/usr/local/bin/tool".into(),
        }],
        cuts: vec![],
    };
    lock.write(&rec.lock_path()).unwrap();
    let run = fetch(d.path(), &r, &[], &[]);
    assert_stopped(
        d.path(),
        run,
        Duration::from_secs(3),
        &["larger than its locked size of 5000 bytes", "lock --update"],
    );
}

#[test]
fn a_killed_download_is_swept_by_the_next_run() {
    let (d, r) = setup(&serve(drip));
    let mut child = Command::new(bin())
        .arg("fetch")
        .arg(&r)
        .env("SLIPWAY_CACHE", d.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !work_dirs(d.path()).iter().any(|n| n.starts_with("work-")) {
        assert!(start.elapsed() < WATCHDOG, "no download started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = work_dirs(d.path());
    assert!(
        left.iter().any(|n| n.starts_with("work-")),
        "the kill left no work directory to sweep: {left:?}"
    );
    let run = fetch(d.path(), &r, &["--download-timeout", "0.5"], &[]);
    assert_stopped(
        d.path(),
        run,
        Duration::from_secs(2),
        &["download deadline"],
    );
}
