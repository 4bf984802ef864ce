//! Stand-ins for the upstream binaries a Kubernetes node recipe downloads (the machines
//! CI runs on cannot reach them), shared by tests/k8s_node.rs and
//! tests/k8s_node_upstream.rs: a small static program built from
//! tests/files/k8s-standin.rs, tarballs shaped like the upstream release archives, and
//! the sha256 a recipe pins them by.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Builds the stand-in (kubelet, kubeadm, kubectl, crictl: it answers by the name it is
/// run as) into `dir` and returns its bytes.
pub fn stand_in(dir: &Path) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/files/k8s-standin.rs");
    let out = dir.join("standin");
    super::run(
        Command::new("rustc")
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(&out)
            .arg(&src),
    );
    fs::read(out).unwrap()
}

/// A gzip tarball holding `members` (name, bytes), each a regular file of mode 0755.
pub fn tarball(members: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut t = tar::Builder::new(gz);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        t.append_data(&mut h, name, *data).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap()
}

/// The sha256 of `data`, in hex.
pub fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// Runs `slipway test` on the definitions in `qemu`, writing to `out`, with the shared
/// package cache and the fixture cache (the images shared with the other tests, such as
/// base/busybox, come from it; the node image, with this run's stand-ins, is built
/// into it).
pub fn slipway_test(qemu: &Path, out: &Path) -> std::process::Output {
    Command::new(super::bin())
        .args(["test", "--dir"])
        .arg(qemu)
        .arg("--output")
        .arg(out)
        .env("SLIPWAY_CACHE", super::shared_cache())
        .env("SLIPWAY_FIXTURES", super::fixtures::root())
        .output()
        .unwrap()
}
