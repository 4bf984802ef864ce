//! `recipes/k8s-node-upstream.toml` (containerd 2.2.1, runc 1.3.4 and Kubernetes 1.35
//! from upstream release artifacts), built and booted with stand-ins.
//!
//! None of the upstream files can be downloaded on the machines CI runs on, so **neither
//! upstream's containerd 2.2.1 and runc 1.3.4 nor kubelet run in CI**. What runs instead:
//!
//! - containerd and runc: **Debian's containerd 2.x and runc 1.3** (the `containerd` and
//!   `runc` packages of Debian forky, the next release, downloaded with apt-get from the
//!   host's Debian mirror and unpacked with dpkg-deb), repacked into a tarball shaped like
//!   upstream's (`bin/containerd`, `bin/containerd-shim-runc-v2`, `bin/ctr`) and a bare
//!   runc binary, as upstream publishes them. Debian's build of a 2.x containerd reads the
//!   same version-3 configuration; its runc links libseccomp and glibc dynamically where
//!   upstream's is static (the image has both libraries: systemd needs them);
//! - kubelet, kubeadm, kubectl, crictl: the static stand-in of tests/k8s_node.rs.
//!
//! All of them are served by an HTTP server on the host's loopback, to a recipe that
//! extends k8s-node-upstream.toml and replaces its eight artifacts (same destinations),
//! so the build goes through the real fetch, sha256 check, tar member extraction and
//! install path. Then:
//!
//! - in the built disk (the squashfs root read with unsquashfs): Debian's containerd and
//!   runc are not installed (no package, no /usr/sbin/runc, no Debian unit), the four
//!   binaries are at /usr/bin with mode 0755 and are the served bytes, containerd's unit
//!   is slipway's and enabled for multi-user.target, and the configuration is version 3;
//! - in one boot (`slipway test`): multi-user with no failed unit; containerd 2.x running
//!   with that configuration (its CRI images and runtime plugins loaded); the pause image
//!   imported by slipway-preload-images.service (which runs /usr/bin/ctr) and pinned by
//!   the CRI plugin as the sandbox image; `slipway-node check` passing (containerd and
//!   runc found, the CRI answering); and a pod run through the CRI socket by
//!   `slipway-node cri run` on the CNI bridge (Debian's plugins in /usr/lib/cni, named
//!   by `bin_dirs`).
#![allow(clippy::unwrap_used)]

mod common;
use common::k8s::{sha, stand_in, tarball};
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

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
fn debian_containerd_2(dir: &Path) -> std::path::PathBuf {
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
    run(Command::new("apt-get").args(&opts).args(["-q", "update"]));
    run(Command::new("apt-get")
        .args(&opts)
        .args(["-q", "download", "containerd/forky", "runc/forky"])
        .current_dir(state.join("debs")));
    let root = dir.join("debian-containerd-2");
    for e in fs::read_dir(state.join("debs")).unwrap() {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(e.unwrap().path())
            .arg(&root));
    }
    root
}

/// One [[artifact]] table.
fn artifact(port: u16, file: &str, data: &[u8], dest: &str, member: Option<&str>) -> String {
    let member = member.map_or(String::new(), |m| format!("member = \"{m}\"\n"));
    format!(
        "[[artifact]]\nurl = \"http://127.0.0.1:{port}/{file}\"\nsha256 = \"{}\"\ndest = \"{dest}\"\nmode = \"0755\"\n{member}\n",
        sha(data)
    )
}

/// The root file system of the disk built into `dir`, copied out of disk.raw into
/// `work/root.img` (this host's unsquashfs reads no offset), and the manifest.
fn root_image(dir: &Path, work: &Path) -> (std::path::PathBuf, serde_json::Value) {
    use std::io::{Read, Seek};
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let root = manifest["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("root-") && !n.ends_with("-verity"))
        })
        .unwrap_or_else(|| panic!("no root partition in {manifest}"))
        .clone();
    let mut disk = fs::File::open(dir.join("disk.raw")).unwrap();
    disk.seek(std::io::SeekFrom::Start(root["offset"].as_u64().unwrap()))
        .unwrap();
    let img = work.join("root.img");
    let mut f = fs::File::create(&img).unwrap();
    std::io::copy(&mut disk.take(root["content"].as_u64().unwrap()), &mut f).unwrap();
    (img, manifest)
}

/// The bytes of `path` in the squashfs image `img`.
fn file_in(img: &Path, path: &str, work: &Path) -> Vec<u8> {
    let dest = work.join("extract");
    let _ = fs::remove_dir_all(&dest);
    run(Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&dest)
        .arg(img)
        .arg(path));
    fs::read(dest.join(path.trim_start_matches('/'))).unwrap()
}

#[test]
fn k8s_node_upstream_with_debian_containerd_2_stand_in_boots_and_runs_pods() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let server = slipway::testing::serve::Server::start(&www).unwrap();
    let port = server.port;

    // containerd and runc: Debian's 2.x build, shaped like upstream's release files.
    let deb = debian_containerd_2(d.path());
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
    for (dest, member) in [
        ("/usr/bin/containerd", "bin/containerd"),
        (
            "/usr/bin/containerd-shim-runc-v2",
            "bin/containerd-shim-runc-v2",
        ),
        ("/usr/bin/ctr", "bin/ctr"),
    ] {
        artifacts.push_str(&artifact(
            port,
            "containerd-linux-amd64.tar.gz",
            &tgz,
            dest,
            Some(member),
        ));
    }
    artifacts.push_str(&artifact(port, "runc.amd64", &runc, "/usr/bin/runc", None));

    // kubelet, kubeadm, kubectl, crictl: the stand-in.
    let bin = stand_in(d.path());
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
    let crictl = tarball(&[("crictl", &bin)]);
    fs::write(www.join("crictl.tar.gz"), &crictl).unwrap();
    artifacts.push_str(&artifact(
        port,
        "crictl.tar.gz",
        &crictl,
        "/usr/bin/crictl",
        Some("crictl"),
    ));

    let parent = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/k8s-node-upstream.toml");
    fs::write(
        d.path().join("k8s-node-upstream-ci.toml"),
        format!(
            "# k8s-node-upstream with stand-ins for every upstream binary (CI cannot download them).\n\
             schema-version = 1\nextends = \"{}\"\n\n[image]\nname = \"k8s-node-upstream-ci\"\n\n{artifacts}",
            parent.display()
        ),
    )
    .unwrap();
    let qemu = d.path().join("qemu");
    fs::create_dir_all(&qemu).unwrap();
    fs::write(qemu.join("k8s-node-upstream.toml"), DEFINITION).unwrap();
    let out = d.path().join("out");
    let started = std::time::Instant::now();
    let o = common::k8s::slipway_test(&qemu, &out);
    let t = text(&o);
    if !o.status.success() {
        let console =
            fs::read_to_string(out.join("k8s-node-upstream/vm/console.log")).unwrap_or_default();
        let tail: Vec<&str> = console
            .lines()
            .filter(|l| l.contains("containerd") || l.contains("kube") || l.contains("Failed"))
            .collect();
        panic!(
            "slipway test failed:\n{t}\nconsole lines about containerd, kube*, failures:\n{}",
            tail.join("\n")
        );
    }
    eprintln!(
        "build + boot: {:.0} s\n{t}",
        started.elapsed().as_secs_f64()
    );
    drop(server);

    // The built disk, as a user gets it.
    check_built_disk(
        &out.join("artifacts/k8s-node-upstream-ci"),
        d.path(),
        &containerd,
        &runc,
    );
}

/// The built disk (`built`, the output directory linked from `OUTPUT/artifacts/`) as a
/// user gets it: the root file system copied out to `work` and listed: the upstream
/// binaries (the served `containerd` and `runc` bytes) in place of Debian's packages,
/// containerd's unit and its version-3 configuration.
fn check_built_disk(built: &Path, work: &Path, containerd: &[u8], runc: &[u8]) {
    let (img, manifest) = root_image(built, work);
    eprintln!(
        "sizes: root file system {} bytes, disk.raw {} bytes",
        fs::metadata(&img).unwrap().len(),
        fs::metadata(built.join("disk.raw")).unwrap().len()
    );
    let listing = run(Command::new("unsquashfs").arg("-lln").arg(&img));
    let packages: Vec<&str> = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for gone in ["containerd", "runc"] {
        assert!(
            !packages.contains(&gone),
            "Debian's {gone} is installed: {packages:?}"
        );
    }
    assert!(packages.contains(&"containernetworking-plugins"));
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| {
                l.ends_with(&format!("squashfs-root{path}"))
                    || l.contains(&format!("squashfs-root{path} -> "))
            })
            .map(str::to_string)
    };
    for path in [
        "/usr/bin/containerd",
        "/usr/bin/containerd-shim-runc-v2",
        "/usr/bin/ctr",
        "/usr/bin/runc",
        "/usr/bin/kubelet",
        "/usr/bin/crictl",
    ] {
        let l = line(path).unwrap_or_else(|| panic!("{path} is not in the image"));
        assert!(l.starts_with("-rwxr-xr-x 0/0 "), "{l}");
    }
    for absent in [
        "/usr/sbin/runc",
        "/usr/share/doc/containerd/copyright",
        "/usr/lib/containerd",
    ] {
        assert!(line(absent).is_none(), "{absent} is in the image");
    }
    let enabled = line("/etc/systemd/system/multi-user.target.wants/containerd.service")
        .expect("containerd.service is not enabled");
    assert!(
        enabled.ends_with("-> /usr/lib/systemd/system/containerd.service"),
        "{enabled}"
    );
    assert_eq!(file_in(&img, "/usr/bin/containerd", work), containerd);
    assert_eq!(file_in(&img, "/usr/bin/runc", work), runc);
    let unit = String::from_utf8(file_in(
        &img,
        "/usr/lib/systemd/system/containerd.service",
        work,
    ))
    .unwrap();
    for want in [
        "ExecStart=/usr/bin/containerd\n",
        "Delegate=yes\n",
        "KillMode=process\n",
    ] {
        assert!(
            unit.contains(want),
            "containerd.service lacks {want:?}:\n{unit}"
        );
    }
    let config = String::from_utf8(file_in(&img, "/etc/containerd/config.toml", work)).unwrap();
    let v: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(v["version"].as_integer(), Some(3));
    let p = &v["plugins"];
    assert_eq!(
        p["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
        Some("localhost/slipway/pause:latest")
    );
    let runc_opts = &p["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]["options"];
    assert_eq!(runc_opts["SystemdCgroup"].as_bool(), Some(true));
    assert_eq!(runc_opts["BinaryName"].as_str(), Some("/usr/bin/runc"));
    let cni = &p["io.containerd.cri.v1.runtime"]["cni"];
    assert_eq!(
        cni["bin_dirs"].as_array().unwrap()[0].as_str(),
        Some("/usr/lib/cni")
    );
    assert!(
        line("/usr/lib/cni/bridge").is_some(),
        "the CNI bridge plugin is not in /usr/lib/cni"
    );
}

/// The `slipway test` definition: one boot, no provisioning (the harness adds the test
/// agent).
const DEFINITION: &str = r#"description = "k8s-node-upstream (Debian's containerd 2.x and runc stand in for upstream's; stand-in kubelet/kubeadm)"
recipe = "../k8s-node-upstream-ci.toml"
timeout = 600

[[step]]
name = "multi-user with no failed unit"
succeed = ["systemctl", "is-system-running", "--wait"]
expect-regex = "^running"
timeout = 300

[[step]]
name = "containerd 2.x from the artifact"
succeed = ["containerd", "--version"]
expect-regex = '^containerd \S+ v?2\.\d+\.\d+'

[[step]]
succeed = ["runc", "--version"]
expect-regex = '^runc version 1\.\d+\.\d+'

[[step]]
name = "its version-3 configuration loaded: the CRI images plugin is ok"
succeed = ["ctr", "plugins", "ls"]
expect-regex = '(?m)^io\.containerd\.cri\.v1\s+images\s+\S+\s+ok\s*$'

[[step]]
name = "and the CRI runtime plugin"
succeed = ["ctr", "plugins", "ls"]
expect-regex = '(?m)^io\.containerd\.cri\.v1\s+runtime\s+\S+\s+ok\s*$'

[[step]]
wait-for-unit = "slipway-preload-images.service"

[[step]]
name = "the pause image imported by /usr/bin/ctr and pinned by the CRI as the sandbox image"
succeed = ["ctr", "--namespace", "k8s.io", "images", "ls"]
expect-regex = '(?m)^localhost/slipway/pause:latest\s.*io\.cri-containerd\.pinned=pinned'

[[step]]
name = "the CRI answers with containerd 2.x"
succeed = ["slipway-node", "cri", "version"]
expect-regex = '(?m)^RuntimeVersion:\s+v?2\.\d+'

[[step]]
name = "kubelet waits for kubeadm's configuration instead of failing"
succeed = ["systemctl", "show", "--property=ConditionResult", "--property=ActiveState", "kubelet.service"]
expect-regex = '(?s)ConditionResult=no.*ActiveState=inactive|(?s)ActiveState=inactive.*ConditionResult=no'

[[step]]
name = "the node-readiness check passes"
succeed = ["slipway-node", "check"]
expect-regex = '(?s)ok cri: .*ok binaries'

[[step]]
copy-image = { recipe = "base/busybox", to = "/var/tmp/busybox.tar" }

[[step]]
succeed = ["ctr", "--namespace", "k8s.io", "images", "import", "--base-name", "docker.io/slipway/busybox", "/var/tmp/busybox.tar"]

[[step]]
name = "a pod on the CNI bridge through the CRI socket (sandbox from the pinned pause image, runc at /usr/bin, Debian's CNI plugins named by bin_dirs)"
succeed = ["slipway-node", "cri", "run", "--pod-network", "--name", "netpod", "--image", "docker.io/slipway/busybox:latest", "--", "ip", "-4", "-o", "addr", "show", "eth0"]
expect-regex = 'inet \d+\.\d+\.\d+\.\d+/'
"#;
