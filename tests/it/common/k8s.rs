//! Stand-ins for the upstream binaries recipes/k8s-node.toml downloads (the machines CI
//! runs on cannot reach them), for tests/it/k8s_node.rs: a small static program built from
//! tests/files/k8s-standin.rs for kubelet, kubeadm, kubectl and crictl, reporting the
//! versions the recipe pins; Debian's containerd 2.x and runc for upstream's; tarballs
//! shaped like the upstream release archives, and the sha256 a recipe pins them by.

use std::fs;
use std::path::Path;
use std::process::Command;

/// The versions recipes/k8s-node.toml pins: (Kubernetes, crictl, containerd, runc),
/// read from its artifact URLs.
pub fn pinned_versions() -> [String; 4] {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/k8s-node.toml");
    let r = slipway::recipe::Recipe::load(&path).unwrap();
    let version = |dest: &str| {
        let a = r.artifacts.iter().find(|a| a.dest == dest).unwrap();
        let v = regex::Regex::new(r"/v(\d+\.\d+\.\d+)/").unwrap();
        v.captures(&a.url).unwrap()[1].to_string()
    };
    [
        version("/usr/bin/kubelet"),
        version("/usr/bin/crictl"),
        version("/usr/bin/containerd"),
        version("/usr/bin/runc"),
    ]
}

/// Builds the stand-in (kubelet, kubeadm, kubectl, crictl: it answers by the name it is
/// run as) into `dir` and returns its bytes. Asked for its version, it gives `kube`
/// (crictl: `crictl`), the versions the recipe pins.
pub fn stand_in(dir: &Path, kube: &str, crictl: &str) -> Vec<u8> {
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
            .arg(&src)
            .env("STANDIN_KUBERNETES_VERSION", kube)
            .env("STANDIN_CRICTL_VERSION", crictl),
    );
    fs::read(out).unwrap()
}

/// Debian forky's containerd (2.x) and runc, downloaded with apt-get from the host's
/// Debian mirror (slipway's own reading of /etc/apt, so no host name is written here)
/// into a private apt state under `dir`, and unpacked there with dpkg-deb; returns the
/// unpacked tree.
///
/// Not through a slipway recipe: slipway refuses an expired Release file
/// (`APT::Update::Error-Mode=any`), and the InRelease of a testing suite is valid for a
/// week only, so a mirror snapshot older than that (as on the machines CI runs on)
/// fails. apt still checks the archive signatures here; only the date check is off,
/// for this test stand-in.
pub fn debian_containerd_2(dir: &Path) -> std::path::PathBuf {
    let m = slipway::recipe::mirror::from_host(Path::new("/etc/apt")).unwrap();
    let state = dir.join("apt");
    for sub in ["lists/partial", "cache/archives/partial", "debs"] {
        fs::create_dir_all(state.join(sub)).unwrap();
    }
    fs::write(state.join("status"), "").unwrap();
    fs::write(
        state.join("sources.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} forky main\n",
            m.archive
        ),
    )
    .unwrap();
    let opts: Vec<String> = [
        format!("Dir::State={}", state.display()),
        format!("Dir::State::Lists={}", state.join("lists").display()),
        format!("Dir::State::status={}", state.join("status").display()),
        format!("Dir::Cache={}", state.join("cache").display()),
        format!(
            "Dir::Etc::SourceList={}",
            state.join("sources.list").display()
        ),
        "Dir::Etc::SourceParts=/nonexistent".into(),
        "APT::Architecture=amd64".into(),
        "Acquire::Check-Valid-Until=false".into(),
        "Acquire::Languages=none".into(),
        // The private state is under a root-only temporary directory.
        "APT::Sandbox::User=root".into(),
    ]
    .iter()
    .flat_map(|o| ["-o".to_string(), o.clone()])
    .collect();
    super::run(Command::new("apt-get").args(&opts).args(["-q", "update"]));
    super::run(
        Command::new("apt-get")
            .args(&opts)
            .args(["-q", "download", "containerd/forky", "runc/forky"])
            .current_dir(state.join("debs")),
    );
    let root = dir.join("debian-containerd-2");
    for e in fs::read_dir(state.join("debs")).unwrap() {
        super::run(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(e.unwrap().path())
                .arg(&root),
        );
    }
    root
}

/// One [[artifact]] table: `file` served on `port`, pinned by the sha256 of `data`.
pub fn artifact(port: u16, file: &str, data: &[u8], dest: &str, member: Option<&str>) -> String {
    let member = member.map_or(String::new(), |m| format!("member = \"{m}\"\n"));
    format!(
        "[[artifact]]\nurl = \"http://127.0.0.1:{port}/{file}\"\nsha256 = \"{}\"\ndest = \"{dest}\"\nmode = \"0755\"\n{member}\n",
        sha(data)
    )
}

/// What stands in for the eight upstream artifacts of k8s-node.toml, written to `www`
/// (served on `port`).
pub struct StandIns {
    /// The [[artifact]] tables that replace the recipe's (same destinations).
    pub artifacts: String,
    /// The bytes served as /usr/bin/containerd and /usr/bin/runc.
    pub containerd: Vec<u8>,
    pub runc: Vec<u8>,
}

/// Debian's containerd 2.x and runc, shaped like upstream's release files (a tarball
/// with `bin/containerd`, `bin/containerd-shim-runc-v2`, `bin/ctr`; a bare runc), and
/// the small stand-in as kubelet, kubeadm, kubectl and (in a tarball) crictl, reporting
/// `kube` and `crictl` as their versions; all written to `www` for `port`.
pub fn stand_ins(dir: &Path, www: &Path, port: u16, kube: &str, crictl: &str) -> StandIns {
    let deb = debian_containerd_2(dir);
    let read = |p: &str| fs::read(deb.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let (containerd, shim, ctr) = (
        read("usr/bin/containerd"),
        read("usr/bin/containerd-shim-runc-v2"),
        read("usr/bin/ctr"),
    );
    let runc = read("usr/sbin/runc");
    let tgz = tarball(&[
        ("bin/containerd", &containerd),
        ("bin/containerd-shim-runc-v2", &shim),
        ("bin/ctr", &ctr),
    ]);
    fs::write(www.join("containerd-linux-amd64.tar.gz"), &tgz).unwrap();
    fs::write(www.join("runc.amd64"), &runc).unwrap();
    let mut artifacts = String::new();
    for name in ["containerd", "containerd-shim-runc-v2", "ctr"] {
        artifacts.push_str(&artifact(
            port,
            "containerd-linux-amd64.tar.gz",
            &tgz,
            &format!("/usr/bin/{name}"),
            Some(&format!("bin/{name}")),
        ));
    }
    artifacts.push_str(&artifact(port, "runc.amd64", &runc, "/usr/bin/runc", None));
    let bin = stand_in(dir, kube, crictl);
    for name in ["kubelet", "kubeadm", "kubectl"] {
        fs::write(www.join(name), &bin).unwrap();
        artifacts.push_str(&artifact(
            port,
            name,
            &bin,
            &format!("/usr/bin/{name}"),
            None,
        ));
    }
    let tgz = tarball(&[("crictl", &bin)]);
    fs::write(www.join("crictl.tar.gz"), &tgz).unwrap();
    artifacts.push_str(&artifact(
        port,
        "crictl.tar.gz",
        &tgz,
        "/usr/bin/crictl",
        Some("crictl"),
    ));
    StandIns {
        artifacts,
        containerd,
        runc,
    }
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
