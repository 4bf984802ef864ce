//! Consuming built base images for real: the OCI tools' verdict on a layout, `docker
//! load`, `docker build` and HTTP through a published port, and the build report's
//! image digests. Shared by tests/it/base_images.rs and tests/it/base_catalogue.rs.

use super::run;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

/// A JSON file.
pub fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The manifest digest of the (first) image in `out/report.json`.
pub fn manifest_of(out: &Path) -> String {
    json_file(&out.join("report.json"))["images"][0]["manifest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The layer digests of the (first) image in `out/report.json`, bottom first.
pub fn layers_of(out: &Path) -> Vec<String> {
    json_file(&out.join("report.json"))["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// `docker load -i out/image.tar`: the name:tag it loaded.
pub fn docker_load(out: &Path) -> String {
    let o = run(Command::new("docker")
        .args(["load", "-i"])
        .arg(out.join("image.tar")));
    o.lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("docker load printed no image: {o}"))
        .trim()
        .to_string()
}

/// Removes containers (`"rm"`) or images (`"rmi"`) when dropped.
pub struct Cleanup(pub Vec<String>, pub &'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for x in &self.0 {
            let _ = Command::new("docker").args([self.1, "-f", x]).output();
        }
    }
}

/// `docker build` of `dockerfile` in `ctx` as `tag` (the classic builder: nothing to
/// pull); the image is removed when the returned guard drops.
pub fn docker_build(ctx: &Path, dockerfile: &str, tag: &str) -> Cleanup {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(ctx)
        .env("DOCKER_BUILDKIT", "0"));
    Cleanup(vec![tag.to_string()], "rmi")
}

/// GET `path` from 127.0.0.1:`port`, retrying while the server starts; (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut last = String::new();
    for _ in 0..100 {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .ok();
                let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if let Some(code) = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                    return (code, body);
                }
                last = buf;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("no HTTP answer on 127.0.0.1:{port}{path}: {last}");
}

/// The host port Docker published for the container's `port` ("8080/tcp").
pub fn published_port(container: &str, port: &str) -> u16 {
    let o = run(Command::new("docker").args(["port", container, port]));
    o.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no published port: {o}"))
}

/// skopeo inspects `out/oci` (the digest the report names) and umoci unpacks it.
pub fn oci_tools_accept(out: &Path) {
    oci_tools_accept_tag(out, "latest");
}

/// [`oci_tools_accept`] for the image tagged `tag` in the layout.
pub fn oci_tools_accept_tag(out: &Path, tag: &str) {
    let layout = out.join("oci");
    let si: Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{tag}", layout.display()))))
    .unwrap();
    assert_eq!(si["Digest"].as_str().unwrap(), manifest_of(out));
    let d = tempfile::tempdir().unwrap();
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(d.path().join("b")));
    assert!(d.path().join("b/rootfs/etc/passwd").is_file());
}

/// Builds `recipe` again into `out` from the cache `cache_b` with the clock three days
/// on, offline, and asserts the manifest digest and the `image.tar` bytes of `first`,
/// the same recipe's build from the tests' shared cache.
///
/// The packages reach `cache_b` through `slipway vendor` from the shared cache (which
/// fetches only what it lacks: `slipway test` may have built the fixture from another
/// cache) and `build --vendor`: each .deb is hashed against the lock on its way in, then
/// decoded, assembled and written afresh in `cache_b`. Downloading them again would only
/// prove that the mirror serves the locked bytes, which the sha256 check already proves;
/// it cost the catalogue's repeat test most of its time.
pub fn repeats(recipe: &Path, first: &Path, cache_b: &Path, vendor: &Path, out: &Path) {
    let name = recipe.display();
    super::ok(super::slipway(
        &super::shared_cache(),
        &[
            "--quiet",
            "vendor",
            &recipe.to_string_lossy(),
            &vendor.to_string_lossy(),
        ],
    ));
    let built = super::ok(
        Command::new("faketime")
            .arg("+3 days")
            .arg(super::bin())
            .args(["--offline", "build"])
            .arg(recipe)
            .arg("-o")
            .arg(out)
            .args(["--format", "oci,oci-archive", "--vendor"])
            .arg(vendor)
            .env("SLIPWAY_CACHE", cache_b)
            .output()
            .unwrap(),
    );
    println!("{name} again:\n{built}");
    assert_eq!(
        manifest_of(first),
        manifest_of(out),
        "{name}: same manifest digest"
    );
    assert!(
        std::fs::read(first.join("image.tar")).unwrap()
            == std::fs::read(out.join("image.tar")).unwrap(),
        "{name}: image.tar byte-identical"
    );
}
