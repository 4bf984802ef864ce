//! The bundled base images, consumed for real: each `docker load`s and does its job
//! (busybox runs a shell command and a Dockerfile RUN step, python serves a Flask request,
//! nginx answers on 8080 as uid 65532, glibc runs a dynamically linked program), skopeo
//! and umoci accept each, extended images reuse their base's layers, every image repeats
//! bit for bit from another cache with the clock moved, and the arm64 images run under
//! qemu-aarch64-static.
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
    let cache_b = d.path().join("cache-b");
    for name in ["static", "busybox", "glibc", "python", "nginx"] {
        repeats(
            &repo_recipe(name),
            &built(name),
            &cache_b,
            &d.path().join(name),
        );
    }
}

#[test]
fn arm64_busybox_and_python_run_under_qemu_user() {
    let d = tempfile::tempdir().unwrap();
    for (name, argv, want) in [
        (
            "busybox",
            vec![
                "usr/bin/busybox",
                "sh",
                "-c",
                "echo arm64-$((6*7)); uname -m",
            ],
            "arm64-42",
        ),
        (
            "python",
            vec![
                "usr/bin/python3",
                "-c",
                "import flask, platform; print('flask', flask.__name__, platform.machine())",
            ],
            "flask flask aarch64",
        ),
    ] {
        let out = d.path().join(name);
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
                "dir,oci",
            ],
        ));
        let rootfs = out.join("rootfs");
        // ELF e_machine 183 (EM_AARCH64): the image holds arm64 code, not the host's.
        let elf = std::fs::read(rootfs.join(argv[0])).unwrap();
        assert_eq!(
            u16::from_le_bytes([elf[18], elf[19]]),
            183,
            "{name}: {} is arm64",
            argv[0]
        );
        let said = run(Command::new("qemu-aarch64-static")
            .arg("-L")
            .arg(&rootfs)
            .arg(rootfs.join(argv[0]))
            .args(&argv[1..]));
        assert!(said.contains(want), "{name}: {said}");
        let cfg = json_file(&out.join("report.json"));
        assert_eq!(cfg["images"][0]["architecture"], "arm64");
    }
}
