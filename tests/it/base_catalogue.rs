//! The base-image catalogue at distroless parity (issue 25), consumed for real under
//! Docker as uid 65532: `cc` runs a C++ program built here with the host's g++, `nodejs`
//! answers the host through a published port, `java` runs a class compiled here with
//! the host's javac on a read-only root and trusts the image's CA bundle; the `debug`
//! variant of every image has a shell that runs as the image's user while the images
//! themselves have none; the new images repeat bit for bit from another cache with the
//! clock moved, pass skopeo and umoci, and list every package in their SBOM. Their arm64
//! builds run a program under qemu-aarch64-static in tests/it/base_images.rs, beside
//! busybox's and python's (one test, one package cache). Host-only: no VM boots.
#![allow(clippy::unwrap_used)]

use crate::common::docker::*;
use crate::common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every bundled base image.
const IMAGES: [&str; 10] = [
    "static",
    "busybox",
    "glibc",
    "glibc-full",
    "python",
    "nginx",
    "pause",
    "cc",
    "nodejs",
    "java",
];

/// The images issue 25 adds, and the image each extends.
const NEW: [(&str, &str); 3] = [("cc", "glibc"), ("nodejs", "cc"), ("java", "cc")];

fn repo_recipe(name: &str) -> PathBuf {
    fixtures::recipes_dir().join(format!("base/{name}.toml"))
}

/// A bundled base image from the fixture cache (shared with tests/it/base_images.rs).
fn built(name: &str) -> PathBuf {
    fixtures::base_image(&format!("base/{name}"))
}

/// The debug variant of a bundled image (`--root`: its root variant). Only what `docker
/// load` reads (image.tar) and the report: its config is read from the archive.
fn debug_built(name: &str, root: bool) -> PathBuf {
    let mut args = vec!["--variant", "debug", "--format", "oci-archive"];
    if root {
        args.push("--root");
    }
    fixtures::build(&format!("base/{name}"), &args)
}

/// Asserts that `out/sbom.spdx.json` lists exactly the packages of the lock of
/// `recipe`, each with its locked version.
fn sbom_lists_every_package(out: &Path, recipe: &slipway::recipe::Recipe) {
    let lock = slipway::lock::Lock::read(&recipe.lock_path())
        .unwrap()
        .unwrap_or_else(|| panic!("{} has no lock", recipe.display()));
    let sbom = json_file(&out.join("sbom.spdx.json"));
    let listed: BTreeSet<(String, String)> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["purl"].is_string() || p["externalRefs"].is_array())
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = lock
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let missing: Vec<_> = want.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "{}: SBOM lacks {missing:?}",
        recipe.display()
    );
    assert!(
        want.len() > 5,
        "{}: {} packages",
        recipe.display(),
        want.len()
    );
}

/// The checks every new image passes before it runs anything: skopeo and umoci, the
/// SBOM, and its parent's layers under its own.
fn check_new_image(name: &str, parent: &str) -> PathBuf {
    let out = built(name);
    oci_tools_accept(&out);
    sbom_lists_every_package(
        &out,
        &slipway::recipe::Recipe::load(&repo_recipe(name)).unwrap(),
    );
    let (mine, theirs) = (layers_of(&out), layers_of(&built(parent)));
    assert!(
        mine.len() > theirs.len() && mine[..theirs.len()] == theirs[..],
        "{name} = {parent}'s layers + its own"
    );
    out
}

#[test]
fn cc_runs_a_cpp_program_built_with_the_hosts_gxx() {
    let img = docker_load(&check_new_image("cc", "glibc"));
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("hello.cpp"),
        r#"#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <unistd.h>
int main(int argc, char **argv) {
    std::map<std::string, int> m{{"answer", 42}};
    try {
        throw std::runtime_error("caught");
    } catch (const std::exception &e) {
        std::cout << "c++ " << e.what() << " " << m.at("answer") << " uid " << getuid() << " args " << argc << std::endl;
    }
}
"#,
    )
    .unwrap();
    run(Command::new("g++")
        .args(["-O2", "-o"])
        .arg(d.path().join("hello"))
        .arg(d.path().join("hello.cpp")));
    let needed = run(Command::new("readelf")
        .arg("-d")
        .arg(d.path().join("hello")));
    assert!(
        needed.contains("libstdc++.so.6"),
        "dynamically linked: {needed}"
    );
    let said = run(Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--read-only", "-v"])
        .arg(format!("{}:/w:ro", d.path().display()))
        .args(["--entrypoint", "/w/hello", &img, "x"]));
    assert_eq!(said.trim(), "c++ caught 42 uid 65532 args 2");
}

#[test]
fn nodejs_answers_the_host_through_a_published_port() {
    let img = docker_load(&check_new_image("nodejs", "cc"));
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("server.js"),
        "const http = require('http');\n\
         http.createServer((req, res) => {\n\
           res.end(`node ${process.version} uid ${process.getuid()} ${req.url}`);\n\
         }).listen(8080, '0.0.0.0');\n",
    )
    .unwrap();
    let name = format!("slipway-node-{}", std::process::id());
    run(Command::new("docker")
        .args([
            "run",
            "-d",
            "--read-only",
            "--name",
            &name,
            "-p",
            "127.0.0.1::8080",
            "-v",
        ])
        .arg(format!("{}:/app:ro", d.path().display()))
        .args([&img, "server.js"]));
    let _c = Cleanup(vec![name.clone()], "rm");
    let port = published_port(&name, "8080/tcp");
    let (code, body) = http_get(port, "/hi");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("node v20.") && body.ends_with(" uid 65532 /hi"),
        "{body}"
    );
}

#[test]
fn java_runs_a_class_as_65532_on_a_read_only_root_and_trusts_the_ca_bundle() {
    let out = check_new_image("java", "cc");
    let img = docker_load(&out);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("Hello.java"),
        r#"import java.nio.file.*;
import java.security.KeyStore;
import javax.net.ssl.*;
public class Hello {
    public static void main(String[] args) throws Exception {
        TrustManagerFactory f = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        f.init((KeyStore) null);
        int n = 0;
        for (TrustManager t : f.getTrustManagers()) {
            if (t instanceof X509TrustManager x) n += x.getAcceptedIssuers().length;
        }
        System.out.println("java " + Runtime.version().feature());
        System.out.println("uid " + Files.getAttribute(Paths.get("/proc/self"), "unix:uid"));
        System.out.println("cas " + n);
    }
}
"#,
    )
    .unwrap();
    // The host's JDK 17 compiles for 17: the image's newer JRE runs it.
    run(Command::new("javac")
        .args(["--release", "17", "-d"])
        .arg(d.path())
        .arg(d.path().join("Hello.java")));
    let o = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--read-only", "-v"])
        .arg(format!("{}:/app:ro", d.path().display()))
        // -Xshare:on fails unless the JRE's CDS archive maps (read-only, as shipped).
        .args([&img, "-Xshare:on", "-cp", "/app", "Hello"])
        .output()
        .unwrap();
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        lines[0].starts_with("java ") && lines[1] == "uid 65532",
        "{said}"
    );
    let cas: usize = lines[2].strip_prefix("cas ").unwrap().parse().unwrap();
    // As many as the image's CA bundle holds.
    let bundle =
        std::fs::read_to_string(out.join("rootfs/etc/ssl/certs/ca-certificates.crt")).unwrap();
    let in_bundle = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(
        cas >= 100 && cas == in_bundle,
        "{cas} trusted, {in_bundle} in the bundle"
    );
    assert_eq!(lines.len(), 3, "nothing else printed (no warning): {said}");
}

/// Paths of shells (and BusyBox, which is one) anywhere in the tree at `root`.
fn shells(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            ["sh", "ash", "bash", "dash", "zsh", "mksh", "busybox"].contains(&n.as_ref())
        })
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect()
}

/// The JSON blob `digest` of the image in `out`: from its OCI layout, else from its
/// OCI archive (image.tar, an OCI layout in one tar).
fn blob_of(out: &Path, digest: &str) -> serde_json::Value {
    let rel = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    if out.join("oci").is_dir() {
        return json_file(&out.join("oci").join(&rel));
    }
    let mut archive = tar::Archive::new(std::fs::File::open(out.join("image.tar")).unwrap());
    let mut entry = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_string_lossy().trim_start_matches("./") == rel)
        .unwrap_or_else(|| panic!("{}: no {rel} in image.tar", out.display()));
    serde_json::from_reader(&mut entry).unwrap()
}

/// The image's run configuration (user, entrypoint, command, working directory,
/// environment), read from its config blob.
fn run_config(out: &Path) -> serde_json::Value {
    let manifest = blob_of(out, &manifest_of(out));
    let config = blob_of(out, manifest["config"]["digest"].as_str().unwrap());
    let mut c = config["config"].clone();
    // The labels say which variant it is; everything else must match.
    c.as_object_mut().unwrap().remove("Labels");
    c
}

/// The user id a shell in image `img` runs as (`id -u`, no network).
fn uid_in_shell(img: &str) -> String {
    let said = run(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        img,
        "-c",
        "id -u",
    ]));
    said.trim().to_string()
}

#[test]
fn debug_variants_have_a_shell_and_the_images_have_none() {
    for name in IMAGES {
        let out = built(name);
        let found = shells(&out.join("rootfs"));
        if name == "busybox" {
            assert!(!found.is_empty(), "busybox has its shell");
        } else {
            assert!(found.is_empty(), "{name} has no shell: {found:?}");
        }
        if name == "pause" {
            continue;
        }
        let dbg = debug_built(name, false);
        let img = docker_load(&dbg);
        assert!(img.ends_with(":debug"), "{img}");
        assert_eq!(
            run_config(&dbg),
            run_config(&out),
            "{name}: same run config"
        );
        let (mine, theirs) = (layers_of(&dbg), layers_of(&out));
        // BusyBox's layer on top; busybox has it already, its debug tag adds none.
        let added = usize::from(name != "busybox");
        assert!(
            mine.len() == theirs.len() + added && mine[..theirs.len()] == theirs[..],
            "{name}:debug = {name}'s layers + {added}"
        );
        assert_eq!(uid_in_shell(&img), "65532", "{name}:debug");
    }
    // The root variant of a debug image: tag debug-root, uid 0; BusyBox in its SBOM.
    let dbg = debug_built("glibc", true);
    let img = docker_load(&dbg);
    assert!(img.ends_with(":debug-root"), "{img}");
    assert_eq!(uid_in_shell(&img), "0");
    let r = slipway::recipe::Recipe::load(&repo_recipe("glibc"))
        .unwrap()
        .variant(slipway::recipe::Variant::Debug)
        .unwrap();
    sbom_lists_every_package(&dbg, &r);
    let sbom = std::fs::read_to_string(dbg.join("sbom.spdx.json")).unwrap();
    assert!(sbom.contains("\"busybox-static\""));
}

#[test]
fn new_images_repeat_from_another_cache_with_the_clock_moved() {
    let d = tempfile::tempdir().unwrap();
    let cache_b = d.path().join("cache-b");
    // Packages are vendored from the first cache, checked against the lock and decoded
    // again into the second, and the trees and layer tars made again; the compressed
    // layers are taken from the first cache's layer cache, which verifies each by
    // decompressing it to the diff id just computed. That gzip itself repeats is
    // tests/it/base_images.rs's check; compressing java's and nodejs's 350 MB again would
    // cost CI a minute and a half.
    let firsts: Vec<PathBuf> = NEW.iter().map(|(name, _)| built(name)).collect();
    std::fs::create_dir_all(&cache_b).unwrap();
    std::os::unix::fs::symlink(shared_cache().join("layers"), cache_b.join("layers")).unwrap();
    for ((name, _), first) in NEW.iter().zip(&firsts) {
        repeats(
            &repo_recipe(name),
            first,
            &cache_b,
            &d.path().join("vendor"),
            &d.path().join(name),
        );
    }
}
