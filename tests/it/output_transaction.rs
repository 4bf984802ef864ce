//! The output directory is one transaction (src/io/staging.rs): a build that fails or is
//! killed (SIGINT, SIGTERM, SIGKILL) at any point leaves the previous output
//! byte-identical; SIGINT and SIGTERM leave nothing behind and SIGKILL's leftovers go
//! with the next build; two builds into one output give one consistent set or a clear
//! error; symlinks planted at temporary names are not followed; modes do not come from
//! the umask. Builds are of two small children of base/static (0.1 s each once cached);
//! `SLIPWAY_TEST_PAUSE`/`SLIPWAY_TEST_FAIL` (src/io/faults.rs) stop a build at a named
//! point.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every base format; the tests that do not need `rootfs/` leave it out (it is 1000
/// files to write and to compare).
const FULL: &str = "tar,dir,oci,oci-archive";
const LIGHT: &str = "tar,oci,oci-archive";

/// base/static under another name with a marker file (and `oci` lines added to its
/// `[oci]` table), in `dir`, with base/static's lock (same packages, same input digest):
/// no resolve, a 0.1 s build once the packages are cached.
fn variant(dir: &Path, name: &str, oci: &str) -> PathBuf {
    static LOCKED: std::sync::Once = std::sync::Once::new();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/base/static.toml");
    LOCKED.call_once(|| {
        ok(slipway(
            &shared_cache(),
            &["--quiet", "lock", base.to_str().unwrap()],
        ));
    });
    let text = std::fs::read_to_string(&base).unwrap();
    assert!(text.contains("name = \"static\"\n") && text.contains("[oci]\n"));
    let text = text
        .replace("name = \"static\"\n", &format!("name = \"{name}\"\n"))
        .replace("[oci]\n", &format!("[oci]\n{oci}"));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("{text}\n[[entry]]\npath = \"/etc/{name}\"\ntype = \"file\"\nmode = \"0644\"\ncontent = \"{name}\\n\"\n"),
    )
    .unwrap();
    std::fs::copy(
        base.with_extension("toml.lock"),
        path.with_extension("toml.lock"),
    )
    .unwrap();
    path
}

/// Two variants of base/static whose trees differ.
fn recipes(dir: &Path) -> (PathBuf, PathBuf) {
    (variant(dir, "old", ""), variant(dir, "new", ""))
}

/// Asserts two snapshots are equal, naming the entries that differ.
fn assert_same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let diff: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .take(8)
        .collect();
    assert!(diff.is_empty(), "{what}: the output changed: {diff:?}");
}

fn cmd(formats: &str, recipe: &Path, out: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["--quiet", "build"])
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .args(["--format", formats])
        .env("SLIPWAY_CACHE", shared_cache())
        .env_remove("SLIPWAY_MIRROR")
        .env_remove("SLIPWAY_TEST_PAUSE")
        .env_remove("SLIPWAY_TEST_FAIL")
        .stdin(Stdio::null());
    c
}

fn build(formats: &str, recipe: &Path, out: &Path) -> String {
    ok(cmd(formats, recipe, out).output().unwrap())
}

/// Every entry under `dir`: kind, mode, and content digest or link target.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if m.is_file() {
                hex(&Sha256::digest(std::fs::read(e.path()).unwrap()))
            } else {
                "dir".into()
            };
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, format!("{:o} {what}", m.mode() & 0o7777))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Asserts that report.json's files are the files there (one consistent set).
fn assert_consistent(out: &Path) {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let mut checked = 0;
    for o in report["outputs"].as_array().unwrap() {
        let (path, sha) = (o["path"].as_str().unwrap(), o["sha256"].as_str().unwrap());
        assert!(path.starts_with(&out.display().to_string()), "{path}");
        if ["tar", "oci-archive", "sbom"].contains(&o["kind"].as_str().unwrap()) {
            let got = hex(&Sha256::digest(std::fs::read(path).unwrap()));
            assert_eq!(got, sha, "{path} does not match report.json");
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "{report}");
}

/// Asserts that the output is the build of the recipe `name`.
fn assert_image(out: &Path, name: &str) {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["image"], name);
}

/// Starts a build paused at `point`; returns once it says so.
fn paused(formats: &str, recipe: &Path, out: &Path, point: &str) -> Child {
    let mut child = cmd(formats, recipe, out)
        .env("SLIPWAY_TEST_PAUSE", point)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        log.push_str(&line);
        if line.trim() == format!("slipway: paused at {point}") {
            // Keep draining stderr so the child never blocks on it.
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            return child;
        }
    }
    let status = child.wait().unwrap();
    panic!("the build never paused at {point} ({status}):\n{log}");
}

fn signal(child: &mut Child, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{sig} did not end the build"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_failed_build_leaves_the_previous_output_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let (old, _) = recipes(d.path());
    let out = d.path().join("o/out");
    build(FULL, &old, &out);
    let before = snapshot(&out);
    // A recipe error found late: the tree is written by then.
    let bad = variant(d.path(), "bad", "exposed-ports = [\"http\"]\n");
    let t = fails(cmd(FULL, &bad, &out).output().unwrap(), 2);
    assert!(t.contains("exposed-ports"), "{t}");
    assert_same(&snapshot(&out), &before, "after a late recipe error");
    // Failures (a full disk, say) after each stage, up to the swap itself.
    let (_, new) = recipes(d.path());
    for point in ["tar", "oci", "commit"] {
        let o = cmd(FULL, &new, &out)
            .env("SLIPWAY_TEST_FAIL", point)
            .output()
            .unwrap();
        let t = fails(o, 1);
        assert!(t.contains(&format!("failing at {point}")), "{t}");
        assert_same(
            &snapshot(&out),
            &before,
            &format!("after failing at {point}"),
        );
        assert_eq!(
            names(&d.path().join("o")),
            ["out"],
            "leftovers after failing at {point}"
        );
    }
}

#[test]
fn a_killed_build_leaves_the_previous_output_byte_identical() {
    use nix::sys::signal::Signal::{SIGINT, SIGKILL, SIGTERM};
    let d = tempfile::tempdir().unwrap();
    let (old, new) = recipes(d.path());
    let out = d.path().join("o/out");
    build(LIGHT, &old, &out);
    let before = snapshot(&out);
    for (sig, point) in [
        (SIGINT, "staged"),
        (SIGTERM, "tar"),
        (SIGINT, "report"),
        (SIGTERM, "oci"),
        (SIGINT, "commit"),
    ] {
        let mut child = paused(LIGHT, &new, &out, point);
        let status = signal(&mut child, sig);
        assert_eq!(status.code(), Some(128 + sig as i32), "{sig} at {point}");
        assert_same(&snapshot(&out), &before, &format!("{sig} at {point}"));
        assert_eq!(
            names(&d.path().join("o")),
            ["out"],
            "{sig} at {point} left files"
        );
    }
    // SIGKILL cleans nothing; the next build does (their locks are free).
    for point in ["tar", "commit"] {
        let mut child = paused(LIGHT, &new, &out, point);
        signal(&mut child, SIGKILL);
        assert_same(&snapshot(&out), &before, &format!("SIGKILL at {point}"));
        assert!(
            names(&d.path().join("o")).len() > 1,
            "SIGKILL at {point} left no staging?"
        );
    }
    build(LIGHT, &old, &out);
    let (mut a, mut b) = (snapshot(&out), before.clone());
    a.remove("report.json"); // it has the build's times
    b.remove("report.json");
    assert_same(&a, &b, "rebuilt");
    assert_eq!(names(&d.path().join("o")), ["out"], "stale staging removed");
    // Killed after the swap: the new set is whole, the old one is cleaned up later.
    let mut child = paused(LIGHT, &new, &out, "swapped");
    signal(&mut child, SIGKILL);
    assert_consistent(&out);
    assert_image(&out, "new");
    build(LIGHT, &new, &out);
    assert_eq!(names(&d.path().join("o")), ["out"]);
}

#[test]
fn concurrent_builds_give_one_consistent_set_or_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let (old, new) = recipes(d.path());
    let out = d.path().join("o/out");
    build(LIGHT, &old, &out);
    build(LIGHT, &new, &out);
    let before = snapshot(&out);
    let mut first = paused(LIGHT, &old, &out, "oci");
    let t = fails(cmd(LIGHT, &new, &out).output().unwrap(), 1);
    assert!(
        t.contains("another slipway build") && t.contains(&format!("pid {}", first.id())),
        "{t}"
    );
    signal(&mut first, nix::sys::signal::Signal::SIGTERM);
    assert_same(&snapshot(&out), &before, "after SIGTERM");
    // A race: each build either wins the lock or says why not; the survivor is whole.
    let children: Vec<_> = (0..4)
        .map(|i| {
            cmd(LIGHT, if i % 2 == 0 { &old } else { &new }, &out)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let t = text(&o);
        assert!(
            o.status.success() || t.contains("another slipway build"),
            "{t}"
        );
    }
    assert_consistent(&out);
    assert_eq!(names(&d.path().join("o")), ["out"]);
}

#[test]
fn symlinks_planted_at_temporary_names_are_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let (old, new) = recipes(d.path());
    let out = d.path().join("o/out");
    build(LIGHT, &old, &out);
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let absent = d.path().join("absent");
    // The names slipway's temporary files had (`.NAME.tmp-PID-N`), for the next pids.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0);
    for pid in last + 1..last + 200 {
        for n in 0..24 {
            for (i, file) in ["rootfs.tar", "image.tar", "report.json"]
                .iter()
                .enumerate()
            {
                let to = if i == 1 { &absent } else { &victim };
                let name = format!(".{file}.tmp-{pid}-{n}");
                std::os::unix::fs::symlink(to, out.join(name)).unwrap();
            }
        }
    }
    build(LIGHT, &new, &out);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!absent.exists(), "a dangling symlink was followed");
    assert_consistent(&out);
    assert!(
        names(&out).iter().all(|n| !n.contains(".tmp-")),
        "{:?}",
        names(&out)
    );
    for f in ["rootfs.tar", "image.tar", "report.json"] {
        assert!(out.join(f).symlink_metadata().unwrap().is_file(), "{f}");
    }
    // The lock file beside the output: never opened through a symlink.
    std::os::unix::fs::symlink(&victim, d.path().join("o/.out.lock")).unwrap();
    let t = fails(cmd(LIGHT, &old, &out).output().unwrap(), 1);
    assert!(t.contains(".out.lock"), "{t}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_image(&out, "new");
}

#[test]
fn outputs_have_explicit_modes_whatever_the_umask() {
    let d = tempfile::tempdir().unwrap();
    let (old, _) = recipes(d.path());
    let out = d.path().join("o/out");
    let c = cmd(FULL, &old, &out);
    let mut argv = vec![c.get_program().to_owned()];
    argv.extend(c.get_args().map(|a| a.to_owned()));
    ok(Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .args(argv)
        .env("SLIPWAY_CACHE", shared_cache())
        .env_remove("SLIPWAY_MIRROR")
        .output()
        .unwrap());
    let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o7777;
    for f in [
        "rootfs.tar",
        "image.tar",
        "report.json",
        "sbom.spdx.json",
        "oci/index.json",
        "oci/oci-layout",
    ] {
        assert_eq!(mode(f), 0o644, "{f}");
    }
    for dir in ["", "rootfs", "oci", "oci/blobs", "oci/blobs/sha256"] {
        assert_eq!(mode(dir), 0o755, "{dir}/");
    }
}

#[test]
fn leftovers_are_cleaned_and_foreign_directories_refused() {
    let d = tempfile::tempdir().unwrap();
    let (old, _) = recipes(d.path());
    let out = d.path().join("o/out");
    build(LIGHT, &old, &out);
    // What interrupted builds of older versions left in the output directory.
    std::fs::write(out.join(".disk.raw.tmp-4242-7"), b"271 MB").unwrap();
    std::fs::create_dir_all(out.join(".slipway-disk-x1/bin")).unwrap();
    std::fs::write(out.join(".slipway-disk-x1/bin/mount"), b"setuid").unwrap();
    std::fs::create_dir(d.path().join("o/.out.staging-0123456789abcdef")).unwrap();
    build(LIGHT, &old, &out);
    assert_eq!(names(&d.path().join("o")), ["out"]);
    assert!(
        names(&out).iter().all(|n| !n.starts_with('.')),
        "{:?}",
        names(&out)
    );
    // A directory that is not a build output is never swapped away.
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("notes.txt"), b"mine").unwrap();
    let t = fails(cmd(LIGHT, &old, &home).output().unwrap(), 2);
    assert!(t.contains("not a slipway output"), "{t}");
    assert_eq!(std::fs::read(home.join("notes.txt")).unwrap(), b"mine");
}
