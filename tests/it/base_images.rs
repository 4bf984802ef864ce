//! The bundled base images, consumed for real: each `docker load`s and does its job
//! (busybox runs a shell command and a Dockerfile RUN step, python serves a Flask request,
//! nginx answers on 8080 as uid 65532, glibc runs a dynamically linked program), skopeo
//! and umoci accept each, extended images reuse their base's layers, every image repeats
//! bit for bit from another cache with the clock moved, and the arm64 builds of every
//! image with a program of its own (busybox, python and issue 25's cc, nodejs and java)
//! run one under qemu-aarch64-static.
#![allow(clippy::unwrap_used)]

use crate::common::docker::*;
use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes/base")
        .join(format!("{name}.toml"))
}

/// A bundled base image, built once per run for every test process (a fixture: these
/// tests consume the images; `every_image_repeats_...` builds its second copy on purpose).
fn built(name: &str) -> PathBuf {
    fixtures::base_image(&format!("base/{name}"))
}

#[test]
fn busybox_runs_a_shell_and_a_dockerfile_run_step() {
    let out = built("busybox");
    oci_tools_accept(&out);
    let img = docker_load(&out);
    let said = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        &img,
        "/bin/sh",
        "-c",
        "echo hello-$((6*7)); id -u",
    ]));
    assert!(said.contains("hello-42"), "{said}");
    assert_eq!(
        said.lines().nth(1),
        Some("65532"),
        "nonroot by default: {said}"
    );
    let d = tempfile::tempdir().unwrap();
    let tag = format!("slipway-test/busybox-run:{}", std::process::id());
    let _c = docker_build(
        d.path(),
        &format!("FROM {img}\nRUN echo built-by-run > /tmp/marker && sha256sum /tmp/marker > /tmp/sum\nCMD [\"/bin/sh\", \"-c\", \"cat /tmp/marker; sha256sum -c /tmp/sum\"]\n"),
        &tag,
    );
    let said = run(Command::new("docker").args(["run", "--rm", "--network", "none", &tag]));
    assert!(
        said.contains("built-by-run") && said.contains("OK"),
        "{said}"
    );
    let rep = json_file(&out.join("report.json"));
    println!(
        "busybox: {} bytes compressed, {} uncompressed",
        rep["images"][0]["compressed_bytes"], rep["images"][0]["uncompressed_bytes"]
    );
}

#[test]
fn busybox_root_variant_runs_as_uid_0() {
    let out = fixtures::build("base/busybox", &["--root", "--format", "oci-archive"]);
    let img = docker_load(&out);
    assert!(img.ends_with(":latest-root"), "{img}");
    let said =
        run(Command::new("docker").args(["run", "--rm", "--network", "none", &img, "id", "-u"]));
    assert_eq!(said.trim(), "0");
}

#[test]
fn python_serves_flask_and_builds_from_a_dockerfile() {
    let out = built("python");
    oci_tools_accept(&out);
    let img = docker_load(&out);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("app.py"),
        "import os, flask\napp = flask.Flask(__name__)\n\n@app.get('/')\ndef hello():\n    return 'flask says hi from uid %d' % os.getuid()\n\nif __name__ == '__main__':\n    app.run(host='0.0.0.0', port=8080)\n",
    )
    .unwrap();
    let tag = format!("slipway-test/flask-app:{}", std::process::id());
    let _i = docker_build(
        d.path(),
        &format!("FROM {img}\nCOPY app.py /app/app.py\nCMD [\"/app/app.py\"]\n"),
        &tag,
    );
    let name = format!("slipway-flask-{}", std::process::id());
    run(Command::new("docker").args(["run", "-d", "--name", &name, "-p", "127.0.0.1::8080", &tag]));
    let _c = Cleanup(vec![name.clone()], "rm");
    let port = published_port(&name, "8080/tcp");
    let (code, body) = http_get(port, "/");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("flask says hi from uid 65532"), "{body}");
}

#[test]
fn nginx_answers_on_8080_as_nonroot() {
    let out = built("nginx");
    oci_tools_accept(&out);
    let img = docker_load(&out);
    let name = format!("slipway-nginx-{}", std::process::id());
    run(Command::new("docker").args(["run", "-d", "--name", &name, "-p", "127.0.0.1::8080", &img]));
    let _c = Cleanup(vec![name.clone()], "rm");
    let port = published_port(&name, "8080/tcp");
    let (code, body) = http_get(port, "/");
    assert_eq!(code, 200, "{body}");
    let top = run(Command::new("docker").args(["top", &name, "-eo", "pid,uid,comm"]));
    let uids: Vec<&str> = top
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|u| *u == "65532"),
        "{top}"
    );
    let logs = Command::new("docker")
        .args(["logs", &name])
        .output()
        .unwrap();
    let logs = text(&logs);
    assert!(
        logs.contains("\"GET / HTTP/1.0\" 200"),
        "access log on stdout: {logs}"
    );
}

#[test]
fn glibc_runs_a_dynamically_linked_program() {
    let out = built("glibc");
    oci_tools_accept(&out);
    let img = docker_load(&out);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("hello.rs"),
        "fn main() { println!(\"dynamic hello, {} args\", std::env::args().count()); }",
    )
    .unwrap();
    run(Command::new("rustc")
        .args(["-O", "-o"])
        .arg(d.path().join("hello"))
        .arg(d.path().join("hello.rs")));
    let interp = run(Command::new("readelf")
        .arg("-l")
        .arg(d.path().join("hello")));
    assert!(
        interp.contains("ld-linux-x86-64.so.2"),
        "the program is dynamically linked"
    );
    let tag = format!("slipway-test/glibc-hello:{}", std::process::id());
    let _i = docker_build(
        d.path(),
        &format!(
            "FROM {img}\nCOPY hello /usr/local/bin/hello\nENTRYPOINT [\"/usr/local/bin/hello\"]\n"
        ),
        &tag,
    );
    let said = run(Command::new("docker").args(["run", "--rm", "--network", "none", &tag, "x"]));
    assert!(said.contains("dynamic hello, 2 args"), "{said}");
}

#[test]
fn extended_images_reuse_their_base_layers() {
    let (stat, glibc, python, nginx) = (
        built("static"),
        built("glibc"),
        built("python"),
        built("nginx"),
    );
    let (ls, lg, lp, ln) = (
        layers_of(&stat),
        layers_of(&glibc),
        layers_of(&python),
        layers_of(&nginx),
    );
    assert!(
        lg.len() > ls.len() && lg[..ls.len()] == ls[..],
        "glibc = static's layers + its own"
    );
    assert!(
        lp.len() > lg.len() && lp[..lg.len()] == lg[..],
        "python = glibc's layers + its own"
    );
    assert!(
        ln.len() > lg.len() && ln[..lg.len()] == lg[..],
        "nginx = glibc's layers + its own"
    );
    let rep = json_file(&python.join("report.json"));
    let shared = rep["images"][0]["shared_bytes"].as_u64().unwrap();
    let glibc_total: u64 = json_file(&glibc.join("report.json"))["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        shared, glibc_total,
        "python reports glibc's bytes as shared"
    );
    let m: Value = serde_json::from_slice(
        &std::fs::read(
            python
                .join("oci/blobs/sha256")
                .join(manifest_of(&python).trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.digest"],
        manifest_of(&glibc).as_str()
    );
}

#[test]
fn every_image_repeats_from_another_cache_with_the_clock_moved() {
    let d = tempfile::tempdir().unwrap();
    let (cache_b, vendor) = (d.path().join("cache-b"), d.path().join("vendor"));
    for name in ["static", "busybox", "glibc", "python", "nginx"] {
        repeats(
            &repo_recipe(name),
            &built(name),
            &cache_b,
            &vendor,
            &d.path().join(name),
        );
    }
}

/// `slipway build RECIPE --arch arm64 --format FORMATS` into `dir/NAME`, from the tests'
/// shared package cache: the output directory.
fn arm64_build(name: &str, formats: &str, dir: &Path) -> PathBuf {
    let out = dir.join(name);
    ok(slipway(
        &shared_cache(),
        &[
            "--quiet",
            "build",
            repo_recipe(name).to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--arch",
            "arm64",
            "--format",
            formats,
        ],
    ));
    out
}

/// Runs `exe` (a path inside `root`) with `args` under qemu-aarch64-static, the image's
/// loader and libraries taken from `root`, after checking that it is arm64 code (ELF
/// e_machine 183, EM_AARCH64), not the host's: stdout and stderr.
fn under_qemu(root: &Path, exe: &str, args: &[&str]) -> String {
    let exe = root.join(exe.trim_start_matches('/'));
    let elf = std::fs::read(&exe).unwrap();
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        183,
        "{} is arm64",
        exe.display()
    );
    let o = Command::new("qemu-aarch64-static")
        .arg("-L")
        .arg(root)
        .arg(&exe)
        .args(args)
        .output()
        .unwrap();
    let said = text(&o);
    assert!(o.status.success(), "{}: {said}", exe.display());
    said
}

/// The images with programs of their own, built for arm64, each running one of them
/// under qemu-aarch64-static: busybox's shell, python with an extension module, cc's
/// loader resolving libstdc++, node, and the JRE (issue 25 adds cc, nodejs and java).
/// One test, so that the arm64 builds share one package cache and run one after the
/// other.
#[test]
fn arm64_images_run_under_qemu_user() {
    let d = tempfile::tempdir().unwrap();
    // busybox as an OCI image too: its report and index name arm64. The others as
    // trees: compressing their arm64 layers would cost CI seconds for what busybox shows.
    let busybox = arm64_build("busybox", "dir,oci", d.path());
    let rep = json_file(&busybox.join("report.json"));
    assert_eq!(rep["images"][0]["architecture"], "arm64");
    let said = under_qemu(
        &busybox.join("rootfs"),
        "usr/bin/busybox",
        &["sh", "-c", "echo arm64-$((6*7)); uname -m"],
    );
    assert_eq!(said, "arm64-42\naarch64\n");

    // python: the interpreter and an arm64 extension module with the image's libssl.
    // Not `import flask`: the image ships no byte code, and compiling flask's sources
    // under emulation costs 45 s of CPU for what the amd64 test already runs (flask is
    // the same Python source on both architectures, checked here by its files).
    let python = arm64_build("python", "dir", d.path()).join("rootfs");
    let said = under_qemu(
        &python,
        "usr/bin/python3",
        &[
            "-c",
            "import os, _ssl; print(os.uname().machine, _ssl.OPENSSL_VERSION.split()[0])",
        ],
    );
    assert_eq!(said.trim(), "aarch64 OpenSSL");
    for f in [
        "flask/__init__.py",
        "werkzeug/serving.py",
        "jinja2/environment.py",
    ] {
        let p = python.join("usr/lib/python3/dist-packages").join(f);
        assert!(p.is_file(), "{} in the arm64 python image", p.display());
    }

    // cc: the image's loader resolves libstdc++ inside the image.
    let cc = arm64_build("cc", "dir", d.path()).join("rootfs");
    let lib = cc.join("usr/lib/aarch64-linux-gnu/libstdc++.so.6");
    let list = under_qemu(
        &cc,
        "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
        &["--list", lib.to_str().unwrap()],
    );
    assert!(
        list.contains("libm.so.6") && list.contains("libgcc_s.so.1") && !list.contains("not found"),
        "{list}"
    );

    // node: `-v` after the loader has mapped libnode and every library it needs (from the
    // image, for arm64). Running JavaScript would start V8 under emulation, 12 s for
    // what the amd64 test's HTTP server already shows.
    let node = arm64_build("nodejs", "dir", d.path()).join("rootfs");
    let said = under_qemu(&node, "usr/bin/node", &["-v"]);
    assert!(
        said.starts_with("v20.") && said.lines().count() == 1,
        "{said}"
    );

    // java: the JRE itself (the /usr/bin/java alternative's link is absolute, so it is
    // resolved inside the image here). -Xint: the interpreter alone starts faster under
    // emulation. The JVM prints its settings and version on stderr.
    let java = arm64_build("java", "dir", d.path()).join("rootfs");
    let jvm = std::fs::read_dir(java.join("usr/lib/jvm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with("-arm64"))
        .unwrap();
    let said = under_qemu(
        &java,
        &format!("usr/lib/jvm/{jvm}/bin/java"),
        &["-Xint", "-XshowSettings:properties", "-version"],
    );
    assert!(
        said.contains("os.arch = aarch64") && said.contains("openjdk version \"21"),
        "{said}"
    );
}
