//! OCI images end to end: slipway builds base images, and real consumers read them:
//! Docker (`docker load`, `docker run`, `docker build` FROM them), skopeo and umoci.
//! Reproducibility across caches and a moved clock, multi-arch indexes, the SBOM, and bad
//! input that must leave the previous good output untouched.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(format!("{name}.toml"))
}

/// Builds `recipe` into `out` with `extra` arguments; returns report.json.
fn build(cache: &Path, recipe: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "--quiet",
        "build",
        recipe.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(slipway(cache, &args));
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{cmd:?} failed:\n{t}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

/// `docker load`s an archive and returns the image reference it printed.
pub fn docker_load(archive: &Path) -> String {
    let out = run(Command::new("docker").args(["load", "-i"]).arg(archive));
    out.lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("docker load printed no image: {out}"))
        .trim()
        .to_string()
}

/// A statically linked Rust program, built here with the toolchain that runs the tests.
fn static_hello(dir: &Path) -> PathBuf {
    let src = dir.join("hello.rs");
    std::fs::write(
        &src,
        r#"fn main() {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            let certs = std::fs::metadata("/etc/ssl/certs/ca-certificates.crt").map(|m| m.len()).unwrap_or(0);
            println!("hello from static; {uid}; certs {certs}");
        }"#,
    )
    .unwrap();
    let out = dir.join("hello");
    run(Command::new("rustc")
        .args(["-O", "-C", "target-feature=+crt-static", "-o"])
        .arg(&out)
        .arg(&src));
    out
}

#[test]
fn static_image_loads_runs_and_is_read_by_oci_tools() {
    let d = tempfile::tempdir().unwrap();
    let out = fixtures::base_image("base/static");
    let rep = json_file(&out.join("report.json"));
    let img = &rep["images"][0];
    let manifest = img["manifest"].as_str().unwrap().to_string();
    let compressed = img["compressed_bytes"].as_u64().unwrap();
    println!("static: {compressed} bytes compressed, manifest {manifest}");

    let layout = out.join("oci");
    let index = check_layout(&layout, &manifest);
    check_sbom(&out, &index, &manifest);
    check_tools_and_docker(&out, &manifest, d.path());
}

/// The layout: index.json names the manifest by tag; the config's diff_ids and history
/// match the layers; media types are OCI's. Returns index.json.
fn check_layout(layout: &Path, manifest: &str) -> Value {
    let index = json_file(&layout.join("index.json"));
    let top = &index["manifests"][0];
    assert_eq!(top["digest"], manifest);
    assert_eq!(
        top["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let m: Value = serde_json::from_slice(&blob(layout, manifest)).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    for k in ["created", "source", "revision", "title"] {
        assert!(
            m["annotations"][format!("org.opencontainers.image.{k}")].is_string(),
            "annotation {k} missing: {m}"
        );
    }
    let cfg: Value =
        serde_json::from_slice(&blob(layout, m["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers.len()
    );
    assert_eq!(cfg["history"].as_array().unwrap().len(), layers.len());
    for (l, diff) in layers
        .iter()
        .zip(cfg["rootfs"]["diff_ids"].as_array().unwrap())
    {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let gz = blob(layout, l["digest"].as_str().unwrap());
        assert_eq!(gz.len() as u64, l["size"].as_u64().unwrap());
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
        let hex = sha2_hex(&tar);
        assert_eq!(diff.as_str().unwrap(), format!("sha256:{hex}"));
    }
    assert_eq!(cfg["config"]["User"], "65532:65532");
    index
}

/// The SBOM: beside the image and attached to it.
fn check_sbom(out: &Path, index: &Value, manifest: &str) {
    let layout = out.join("oci");
    let sbom = json_file(&out.join("sbom.spdx.json"));
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let lock =
        std::fs::read_to_string(repo_recipe("base/static").with_extension("toml.lock")).unwrap();
    let pkgs = sbom["packages"].as_array().unwrap();
    let bf = pkgs.iter().find(|p| p["name"] == "base-files").unwrap();
    let purl = bf["externalRefs"][0]["referenceLocator"].as_str().unwrap();
    assert!(
        purl.starts_with("pkg:deb/debian/base-files@") && purl.contains("arch=amd64"),
        "{purl}"
    );
    let sha = bf["checksums"][0]["checksumValue"].as_str().unwrap();
    assert!(
        lock.contains(sha),
        "the SBOM's sha256 of base-files is the locked one"
    );
    assert!(
        pkgs.iter().any(|p| p["licenseDeclared"]
            .as_str()
            .is_some_and(|l| l != "NOASSERTION")),
        "some package states a license"
    );
    let art = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["artifactType"] == "application/spdx+json")
        .expect("SBOM artifact in index.json");
    let am: Value =
        serde_json::from_slice(&blob(&layout, art["digest"].as_str().unwrap())).unwrap();
    assert_eq!(am["subject"]["digest"], manifest);
    assert_eq!(
        blob(&layout, am["layers"][0]["digest"].as_str().unwrap()),
        std::fs::read(out.join("sbom.spdx.json")).unwrap()
    );
}

/// skopeo and umoci accept the layout and the archive; Docker loads it, builds FROM it
/// with a static binary copied in, and runs that.
fn check_tools_and_docker(out: &Path, manifest: &str, tmp: &Path) {
    let layout = out.join("oci");
    let si: Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect"])
        .arg(format!("oci:{}:latest", layout.display()))))
    .unwrap();
    assert_eq!(si["Digest"], manifest);
    let sa: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect"]).arg(
        format!("oci-archive:{}:latest", out.join("image.tar").display()),
    )))
    .unwrap();
    assert_eq!(sa["Digest"], manifest);
    let bundle = tmp.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    assert!(bundle
        .join("rootfs/etc/ssl/certs/ca-certificates.crt")
        .is_file());
    assert!(bundle.join("rootfs/usr/share/zoneinfo/UTC").exists());

    // Docker: load, then build FROM it with a static binary copied in, and run.
    let r = docker_load(&out.join("image.tar"));
    assert_eq!(r, "slipway/static:latest");
    let hello = static_hello(tmp);
    let ctx = tmp.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(&hello, ctx.join("hello")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM slipway/static:latest\nCOPY hello /usr/local/bin/hello\nENTRYPOINT [\"/usr/local/bin/hello\"]\n",
    )
    .unwrap();
    let tag = format!("slipway-test/static-hello:{}", std::process::id());
    run(Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0"));
    let said = run(Command::new("docker").args(["run", "--rm", "--network", "none", &tag]));
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(said.contains("hello from static"), "{said}");
    assert!(said.contains("65532"), "runs as nonroot: {said}");
    let certs: u64 = said
        .rsplit("certs ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(certs > 100_000, "CA bundle readable: {said}");
}

fn sha2_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn same_digest_from_another_cache_and_a_moved_clock() {
    let d = tempfile::tempdir().unwrap();
    let r = repo_recipe("base/static");
    // a: the fixture every test consumes; b: built again on purpose.
    let a_dir = fixtures::base_image("base/static");
    let a = json_file(&a_dir.join("report.json"));
    // A fresh cache (packages fetched again, nothing decoded or compressed yet) and the
    // wall clock five days ahead. The fetch runs on the real clock: apt rightly refuses
    // a Release file whose Valid-Until the moved clock has passed (the security suite's
    // is a week), and the build itself then needs no network.
    ok(Command::new(bin())
        .args(["--quiet", "fetch"])
        .arg(&r)
        .env("SLIPWAY_CACHE", d.path().join("cache-b"))
        .output()
        .unwrap());
    let o = Command::new("faketime")
        .arg("+5 days")
        .arg(bin())
        .args(["--quiet", "--offline", "build"])
        .arg(&r)
        .arg("-o")
        .arg(d.path().join("b"))
        .env("SLIPWAY_CACHE", d.path().join("cache-b"))
        .output()
        .unwrap();
    ok(o);
    let b = json_file(&d.path().join("b/report.json"));
    assert_eq!(a["images"][0]["manifest"], b["images"][0]["manifest"]);
    let ha = sha2_hex(&std::fs::read(a_dir.join("image.tar")).unwrap());
    let hb = sha2_hex(&std::fs::read(d.path().join("b/image.tar")).unwrap());
    assert_eq!(ha, hb, "image.tar byte-identical");
    // zstd layers are reproducible too, and differ from gzip ones.
    let z1 = build(
        &shared_cache(),
        &r,
        &d.path().join("z1"),
        &["--compression", "zstd", "--format", "oci"],
    );
    let z2 = build(
        &d.path().join("cache-b"),
        &r,
        &d.path().join("z2"),
        &["--compression", "zstd", "--format", "oci"],
    );
    assert_eq!(z1["images"][0]["manifest"], z2["images"][0]["manifest"]);
    assert_ne!(z1["images"][0]["manifest"], a["images"][0]["manifest"]);
    let m: Value = serde_json::from_slice(&blob(
        &d.path().join("z1/oci"),
        z1["images"][0]["manifest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    run(Command::new("skopeo")
        .args(["inspect"])
        .arg(format!("oci:{}:latest", d.path().join("z1/oci").display())));
}

#[test]
fn multi_arch_index_for_amd64_and_arm64() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // A copy of the recipe (it extends nothing and has no overlay), so that the arm64
    // lock the build writes beside it stays out of the source tree.
    let r = d.path().join("static.toml");
    std::fs::copy(repo_recipe("base/static"), &r).unwrap();
    let rep = build(&shared_cache(), &r, &out, &["--arch", "amd64,arm64"]);
    let layout = out.join("oci");
    let index = json_file(&layout.join("index.json"));
    let top = &index["manifests"][0];
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    let idx: Value =
        serde_json::from_slice(&blob(&layout, top["digest"].as_str().unwrap())).unwrap();
    let plats: Vec<(String, String)> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        plats.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["amd64", "arm64"]
    );
    let images = rep["images"].as_array().unwrap();
    assert_eq!(images[1]["architecture"], "arm64");
    assert_eq!(images[1]["manifest"], plats[1].1.as_str());
    // The arm64 image is made of arm64 packages: its SBOM says so, and its own lock exists.
    let sb = json_file(&out.join("sbom-arm64.spdx.json"));
    assert!(sb["packages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .all(|p| p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .contains("arch=arm64")
            || p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .contains("arch=all")));
    assert!(r.with_extension("toml.arm64.lock").is_file());
    assert!(r.with_extension("toml.lock").is_file());
    // skopeo picks the arm64 image from the index.
    let si: Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["--override-arch", "arm64", "inspect"])
        .arg(format!("oci:{}:latest", layout.display()))))
    .unwrap();
    assert_eq!(si["Architecture"], "arm64");
    assert_eq!(si["Digest"], top["digest"], "skopeo names the index");
}

#[test]
fn bad_oci_config_is_a_clear_error_and_keeps_the_old_image() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // The previous good output: a copy of the fixture (the failing builds write to it).
    run(Command::new("cp")
        .arg("-a")
        .arg(fixtures::base_image("base/static"))
        .arg(&out));
    let before = std::fs::read(out.join("image.tar")).unwrap();
    let index_before = std::fs::read(out.join("oci/index.json")).unwrap();
    let parent = repo_recipe("base/static");
    let cases = [
        (
            "[oci]\nentrypoint = [\"/usr/bin/nothere\"]\n",
            "oci.entrypoint",
            "/usr/bin/nothere",
        ),
        ("[oci]\nuser = \"www-data\"\n", "oci.user", "www-data"),
        (
            "[oci]\nworking-dir = \"/srv/app\"\n",
            "oci.working-dir",
            "/srv/app",
        ),
        (
            "[oci]\nexposed-ports = [\"http\"]\n",
            "oci.exposed-ports",
            "http",
        ),
    ];
    for (i, (body, key, what)) in cases.iter().enumerate() {
        let r = recipe(
            d.path(),
            &format!("bad{i}.toml"),
            &format!(
                "extends = \"{}\"\n[image]\nname = \"bad{i}\"\n{body}",
                parent.display()
            ),
        );
        let t = fails(
            slipway(
                &shared_cache(),
                &["build", r.to_str().unwrap(), "-o", out.to_str().unwrap()],
            ),
            2,
        );
        assert!(
            t.contains(key) && t.contains(what) && t.contains(&format!("bad{i}.toml")),
            "{t}"
        );
        assert_eq!(
            std::fs::read(out.join("image.tar")).unwrap(),
            before,
            "old archive kept"
        );
        assert_eq!(
            std::fs::read(out.join("oci/index.json")).unwrap(),
            index_before,
            "old layout kept"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no half-written output: {leftovers:?}"
    );
}

#[test]
fn inspect_and_diff_show_packages_and_sizes() {
    let d = tempfile::tempdir().unwrap();
    let base = repo_recipe("base/static");
    let o = ok(slipway(
        &shared_cache(),
        &["--json", "inspect", base.to_str().unwrap()],
    ));
    let v: Value = serde_json::from_str(&o).unwrap();
    let by_pkg = v["sizes"]["by_package"].as_array().unwrap();
    let tz = by_pkg
        .iter()
        .find(|r| r[0] == "tzdata")
        .expect("tzdata listed");
    let total = v["sizes"]["total"]["bytes"].as_u64().unwrap();
    let sum: u64 = by_pkg.iter().map(|r| r[1]["bytes"].as_u64().unwrap()).sum();
    assert_eq!(sum, total, "package rows add up to the total");
    assert!(tz[1]["bytes"].as_u64().unwrap() > 100_000);
    let child = recipe(
        d.path(),
        "child.toml",
        &format!(
            "extends = \"{}\"\n[image]\nname = \"child\"\n[packages]\ninclude = [\"netcat-openbsd\"]\nexclude = [\"libbsd0\", \"libmd0\", \"libc6\"]\n[paths]\nkeep = [\"usr/bin/nc.openbsd\"]\n",
            base.display()
        ),
    );
    let o = ok(slipway(
        &shared_cache(),
        &[
            "--json",
            "diff",
            base.to_str().unwrap(),
            child.to_str().unwrap(),
        ],
    ));
    let v: Value = serde_json::from_str(&o).unwrap();
    let pk = v["packages"].as_array().unwrap();
    assert!(
        pk.iter()
            .any(|p| p["name"] == "netcat-openbsd" && p["from"].is_null()),
        "{o}"
    );
    let files = v["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"] == "/usr/bin/nc.openbsd" && f["change"] == "added"),
        "{o}"
    );
    let t = ok(slipway(
        &shared_cache(),
        &["diff", base.to_str().unwrap(), child.to_str().unwrap()],
    ));
    assert!(t.contains("+ netcat-openbsd"), "{t}");
}
