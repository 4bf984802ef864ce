//! The bundled base-image recipes (recipes/base/): each is built once from real Debian
//! packages and its tree is checked by running what it ships: busybox's shell and applet
//! links (amd64 natively, arm64 under qemu-user), glibc's loader against its own
//! libraries, Flask under the image's python3, and nginx serving a page as uid 65532 in
//! its own network namespace. Running programs inside the trees needs root (chroot,
//! unshare); without it these tests say so and skip.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Copies recipes/base (recipes and overlay directories, no locks) into `dir`.
fn copy_recipes(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/base");
    let dest = dir.join("base");
    for e in walkdir::WalkDir::new(&src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&src).unwrap();
        let to = dest.join(rel);
        if e.file_type().is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else if !rel.to_string_lossy().ends_with(".lock") {
            fs::copy(e.path(), &to).unwrap();
        }
    }
    dest
}

/// Sets `key = value` in the `[debian]` table of the copied static.toml (every base
/// recipe inherits its source from there).
fn set_debian(base: &Path, key: &str, value: &str) {
    let p = base.join("static.toml");
    let text = fs::read_to_string(&p).unwrap();
    assert!(
        text.contains("\n[debian]\n"),
        "static.toml has a [debian] table"
    );
    let text = text.replacen(
        "\n[debian]\n",
        &format!("\n[debian]\n{key} = \"{value}\"\n"),
        1,
    );
    fs::write(&p, text).unwrap();
}

struct Built {
    out: PathBuf,
    root: PathBuf,
    report: serde_json::Value,
    secs: f64,
}

fn build(base: &Path, name: &str, out: &Path) -> Built {
    let recipe = base.join(format!("{name}.toml"));
    let t = Instant::now();
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "dir,tar",
        ],
    ));
    let secs = t.elapsed().as_secs_f64();
    let report = serde_json::from_slice(&fs::read(out.join("report.json")).unwrap()).unwrap();
    Built {
        out: out.to_path_buf(),
        root: out.join("rootfs"),
        report,
        secs,
    }
}

/// A bundled base image from the fixture cache (built once per run for every test
/// process; the builds themselves are tested elsewhere).
fn fixture(name: &str) -> Built {
    let out = fixtures::base_image(&format!("base/{name}"));
    let report = serde_json::from_slice(&fs::read(out.join("report.json")).unwrap()).unwrap();
    Built {
        root: out.join("rootfs"),
        secs: fixtures::build_seconds(&out),
        out,
        report,
    }
}

/// Size of `gzip -9` of the image's rootfs.tar, and one summary line printed for the log.
fn measure(name: &str, b: &Built) -> u64 {
    let gz = Command::new("gzip")
        .args(["-9c"])
        .arg(b.out.join("rootfs.tar"))
        .output()
        .unwrap();
    assert!(gz.status.success());
    let gz = gz.stdout.len() as u64;
    println!(
        "{name}: {} packages, tree {:.2} MB, rootfs.tar gzip -9 {:.2} MB, build {:.1} s",
        b.report["packages"],
        b.report["tree_bytes"].as_u64().unwrap() as f64 / 1e6,
        gz as f64 / 1e6,
        b.secs
    );
    gz
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root to chroot into the built tree (CI runs as root)");
    true
}

/// Runs a host command and returns its output, failing with everything it printed.
fn run(program: &str, args: &[&str]) -> Output {
    let o = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (see scripts/setup-host.sh)"));
    assert!(
        o.status.success(),
        "{program} {args:?} failed ({:?}):\n{}",
        o.status,
        text(&o)
    );
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `bin/sh` -> `usr/bin/sh`: merged /usr, written here independently of slipway's code.
fn usr_merged(p: &str) -> String {
    let p = p.trim_start_matches('/');
    let first = p.split('/').next().unwrap();
    if ["bin", "sbin", "lib", "lib32", "lib64", "libx32"].contains(&first) {
        format!("usr/{p}")
    } else {
        p.to_string()
    }
}

/// Every file path the image's packages ship (from status.d/*.md5sums), merged-/usr form,
/// with its md5.
fn package_files(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for e in fs::read_dir(root.join("var/lib/dpkg/status.d")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md5sums") {
            for line in fs::read_to_string(&p).unwrap().lines() {
                let (md5, path) = line.split_once("  ").unwrap();
                files.insert(usr_merged(path), md5.to_string());
            }
        }
    }
    files
}

/// The applet paths `busybox --list-full` prints, run through `runner` (none: natively).
fn applet_list(binary: &Path, runner: Option<&str>) -> BTreeSet<String> {
    let bin = binary.to_str().unwrap();
    let o = match runner {
        Some(r) => run(r, &[bin, "--list-full"]),
        None => run(bin, &["--list-full"]),
    };
    let listed: BTreeSet<String> = stdout(&o).lines().map(usr_merged).collect();
    assert!(listed.len() > 100, "busybox lists {} applets", listed.len());
    listed
}

/// The "N links created" figure of the build report's applets line.
fn reported_links(report: &serde_json::Value) -> usize {
    let line = report["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .find(|s| s.starts_with("applets: "))
        .unwrap_or_else(|| panic!("no applets line in the report: {report}"));
    let before = line.split(" links created").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Checks every applet link of the busybox tree at `root` against the binary's own list.
fn check_applet_links(root: &Path, listed: &BTreeSet<String>, report: &serde_json::Value) {
    let busybox = fs::canonicalize(root.join("usr/bin/busybox")).unwrap();
    let pkg = package_files(root);
    let (mut links, mut present) = (Vec::new(), Vec::new());
    for p in listed {
        let path = root.join(p);
        if p == "linuxrc" {
            assert!(!path.exists(), "/linuxrc is skipped by the recipe");
            continue;
        }
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|_| panic!("applet /{p} has no link in the image"));
        if meta.file_type().is_symlink() {
            assert_eq!(
                fs::canonicalize(&path).unwrap(),
                busybox,
                "/{p} links to busybox"
            );
            assert!(
                !pkg.contains_key(p),
                "the link /{p} sits on a path a package ships"
            );
            links.push(p.clone());
        } else {
            // Already there before the links: must still be the package's own file.
            let md5 = pkg
                .get(p)
                .unwrap_or_else(|| panic!("/{p} is neither a link nor a package file"));
            let sum = stdout(&run("md5sum", &[path.to_str().unwrap()]));
            assert!(sum.starts_with(md5.as_str()), "/{p} was changed: {sum}");
            present.push(p.clone());
        }
    }
    assert!(
        present.contains(&"usr/bin/busybox".to_string()),
        "busybox lists itself and keeps its own file: {present:?}"
    );
    let skipped = usize::from(listed.contains("linuxrc"));
    assert_eq!(links.len(), listed.len() - present.len() - skipped);
    assert_eq!(reported_links(report), links.len(), "report agrees");
}

#[test]
fn busybox_amd64_has_a_shell_and_every_applet_link() {
    let b = fixture("busybox");
    measure("busybox", &b);
    if skip_unless_root("busybox_amd64_has_a_shell_and_every_applet_link") {
        return;
    }
    let listed = applet_list(&b.root.join("usr/bin/busybox"), None);
    check_applet_links(&b.root, &listed, &b.report);
    let o = run(
        "chroot",
        &[
            b.root.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo hello; ls /bin | wc -l",
        ],
    );
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hello"), "{out}");
    let in_bin = fs::read_dir(b.root.join("usr/bin")).unwrap().count();
    assert_eq!(
        lines.next().map(str::trim),
        Some(in_bin.to_string().as_str())
    );
    let who = stdout(&run(
        "chroot",
        &[
            "--userspec=65532:65532",
            b.root.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "id -u; cat /etc/ssl/certs/ca-certificates.crt | grep -c BEGIN",
        ],
    ));
    let mut w = who.lines();
    assert_eq!(w.next(), Some("65532"));
    assert!(w.next().unwrap().parse::<u32>().unwrap() > 100);
}

#[test]
fn busybox_arm64_links_and_runs_under_qemu() {
    let d = tempfile::tempdir().unwrap();
    let base = copy_recipes(d.path());
    set_debian(&base, "architecture", "arm64");
    let b = build(&base, "busybox", &d.path().join("out"));
    measure("busybox (arm64)", &b);
    let bin = b.root.join("usr/bin/busybox");
    let elf = fs::read(&bin).unwrap();
    // e_machine 183 = EM_AARCH64 (little-endian): the target's binary, not the host's.
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 183);
    let listed = applet_list(&bin, Some("qemu-aarch64-static"));
    check_applet_links(&b.root, &listed, &b.report);
    let root = b.root.to_str().unwrap();
    let o = run(
        "qemu-aarch64-static",
        &["-L", root, &format!("{root}/bin/busybox"), "echo", "hi"],
    );
    assert_eq!(stdout(&o), "hi\n");

    // Without the emulator the build stops and names the Debian package to install.
    let path_dir = d.path().join("path");
    fs::create_dir(&path_dir).unwrap();
    std::os::unix::fs::symlink(which("dpkg"), path_dir.join("dpkg")).unwrap();
    let o = Command::new(bin_path())
        .args(["build", base.join("busybox.toml").to_str().unwrap()])
        .args(["-o", d.path().join("out2").to_str().unwrap()])
        .env("SLIPWAY_CACHE", shared_cache())
        .env("PATH", &path_dir)
        .output()
        .unwrap();
    let t = fails(o, 1);
    assert!(
        t.contains("qemu-aarch64-static not found (Debian: qemu-user-static)"),
        "{t}"
    );
}

fn bin_path() -> PathBuf {
    common::bin()
}

fn which(program: &str) -> PathBuf {
    slipway::tool::which(program).unwrap_or_else(|| panic!("{program} not on PATH"))
}

/// Every shared object below usr/lib of `root`, by file name.
fn shared_objects(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root.join("usr/lib")) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".so") {
            out.insert(name, e.path().to_path_buf());
        }
    }
    out
}

fn all_paths(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn glibc_libraries_resolve_in_the_image_and_gconv_is_only_in_full() {
    let b = fixture("glibc");
    let gz = measure("glibc", &b);
    let full = fixture("glibc-full");
    measure("glibc-full", &full);
    let root = &b.root;
    let multiarch = root.join("usr/lib/x86_64-linux-gnu");

    // Every DT_NEEDED of every shared object in the image is itself in the image.
    let sos = shared_objects(root);
    for lib in ["libc.so.6", "libssl.so.3", "libcrypto.so.3", "libz.so.1"] {
        assert!(sos.contains_key(lib), "{lib} missing");
    }
    let mut checked = 0;
    for (name, path) in &sos {
        if fs::symlink_metadata(path).unwrap().file_type().is_symlink() {
            continue;
        }
        let dynamic = stdout(&run("readelf", &["-d", path.to_str().unwrap()]));
        for needed in dynamic
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        {
            assert!(sos.contains_key(needed), "{name} needs {needed}, absent");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} libraries checked");
    assert!(!multiarch.join("gconv").exists(), "gconv is dropped");
    assert!(root.join("etc/nsswitch.conf").is_file());
    assert!(root.join("etc/ssl/certs/ca-certificates.crt").is_file());
    assert!(
        !root.join("usr/bin/sh").exists() && !root.join("usr/bin/bash").exists(),
        "no shell"
    );
    // The 4.5 MB goal is out of reach with trixie's OpenSSL 3.5: its libcrypto alone
    // is 2.3 MB compressed and the shared libraries together 5.4 MB; this is a
    // regression budget.
    assert!(gz < 6_000_000, "glibc rootfs.tar.gz is {gz} bytes");

    // glibc-full is glibc plus the gconv directory, nothing else.
    let small = all_paths(root);
    let big = all_paths(&full.root);
    let extra: Vec<&String> = big.difference(&small).collect();
    assert!(
        extra
            .iter()
            .all(|p| p.starts_with("usr/lib/x86_64-linux-gnu/gconv")),
        "{extra:?}"
    );
    let gconv = full.root.join("usr/lib/x86_64-linux-gnu/gconv");
    assert!(gconv.join("gconv-modules").is_file() || gconv.join("gconv-modules.d").is_dir());
    assert!(gconv.join("IBM037.so").is_file(), "an EBCDIC module");
    assert!(small.difference(&big).next().is_none());

    if skip_unless_root("glibc loader check") {
        return;
    }
    // The image's own dynamic loader resolves libssl's dependencies inside the image.
    let o = run(
        "chroot",
        &[
            root.to_str().unwrap(),
            "/usr/lib64/ld-linux-x86-64.so.2",
            "--list",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        ],
    );
    let list = stdout(&o);
    assert!(!list.contains("not found"), "{list}");
    assert!(
        list.contains("libcrypto.so.3") && list.contains("libzstd.so.1"),
        "{list}"
    );
}

#[test]
fn python_runs_a_flask_app_as_nonroot() {
    let b = fixture("python");
    measure("python", &b);
    let root = &b.root;
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_string_lossy();
        assert!(!rel.contains("__pycache__"), "{rel}");
        if rel.starts_with("usr/share/doc/") && !e.file_type().is_dir() {
            assert!(
                rel.ends_with("/copyright"),
                "docs other than copyright: {rel}"
            );
        }
        let parts: Vec<&str> = rel.split('/').collect();
        assert!(
            !(parts.len() > 3 && parts[2].starts_with("python3.") && parts[3] == "test"),
            "the test suite: {rel}"
        );
    }
    assert!(root.join("app").is_dir());
    if skip_unless_root("python_runs_a_flask_app_as_nonroot") {
        return;
    }
    let program = r#"
import flask, sqlite3, ssl, json, zoneinfo
app = flask.Flask("t")

@app.route("/hello/<name>")
def hello(name):
    return flask.jsonify(greeting=f"hello {name}", tz=str(zoneinfo.ZoneInfo("Europe/Berlin")))

r = app.test_client().get("/hello/slipway")
print(r.status_code)
print(r.get_data(as_text=True).strip())
"#;
    let o = run(
        "chroot",
        &[
            "--userspec=65532:65532",
            root.to_str().unwrap(),
            "/usr/bin/python3",
            "-c",
            program,
        ],
    );
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("200"), "{out}");
    let body: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(body["greeting"], "hello slipway");
    assert_eq!(body["tz"], "Europe/Berlin");
}

#[test]
fn nginx_serves_as_65532_and_logs_to_stdout() {
    let d = tempfile::tempdir().unwrap();
    let b = fixture("nginx");
    measure("nginx", &b);
    if skip_unless_root("nginx_serves_as_65532_and_logs_to_stdout") {
        return;
    }
    // nginx writes its temporary directories into /tmp: it runs in a copy, the fixture
    // stays as built.
    let copy = d.path().join("rootfs");
    run(
        "cp",
        &["-a", b.root.to_str().unwrap(), copy.to_str().unwrap()],
    );
    let root = copy.to_str().unwrap().to_string();
    // The image's nginx, as uid 65532, in a new network and mount namespace. /dev and
    // /proc come from the host (a container runtime provides them), and the stdio pipes
    // are handed to 65532 as runc does, so /dev/stdout can be reopened.
    let script = format!(
        "ip link set lo up && mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc \
         && chown 65532:65532 /proc/self/fd/1 /proc/self/fd/2 \
         && exec chroot --userspec=65532:65532 {root} /usr/sbin/nginx -e stderr"
    );
    let child = Command::new("unshare")
        .args(["--net", "--mount", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until unshare has entered the new namespace, so that curl never reaches a
    // server of the host.
    let host_ns = fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_link(format!("/proc/{pid}/ns/net")).ok().as_ref() == Some(&host_ns) {
        assert!(Instant::now() < deadline, "unshare did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let netns = format!("--net=/proc/{pid}/ns/net");
    let body = d.path().join("body");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        let o = Command::new("nsenter")
            .args([netns.as_str(), "curl", "-s", "-A", "slipway-test", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}", "http://127.0.0.1:8080/"])
            .output()
            .unwrap();
        let code = stdout(&o);
        if code == "200" || Instant::now() > deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(code, "200", "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        fs::read(&body).unwrap(),
        fs::read(b.root.join("usr/share/nginx/html/index.html")).unwrap()
    );
    assert!(
        out.lines()
            .any(|l| l.contains("\"GET / HTTP/1.1\" 200") && l.contains("slipway-test")),
        "access log line on stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(!err.contains("GET /"), "access log on stderr:\n{err}");
    assert!(
        !err.contains("[emerg]") && !err.contains("[alert]"),
        "{err}"
    );

    // Then the configuration test as root (workers would run as nobody), and the full
    // configuration it loads.
    let t = run("chroot", &[&root, "/usr/sbin/nginx", "-t"]);
    assert!(text(&t).contains("test is successful"), "{}", text(&t));
    let conf = stdout(&run("chroot", &[&root, "/usr/sbin/nginx", "-T"]));
    assert!(conf.contains("listen 8080"), "{conf}");
    assert!(!conf.contains("\nuser "), "no user directive");
    for dir in [
        "client_temp",
        "proxy_temp",
        "fastcgi_temp",
        "uwsgi_temp",
        "scgi_temp",
    ] {
        assert!(conf.contains(&format!("/tmp/{dir}")), "{dir} in /tmp");
    }
}
