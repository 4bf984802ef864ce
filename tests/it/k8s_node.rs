//! `recipes/k8s-node.toml` (upstream containerd 2.3, runc 1.4 and Kubernetes 1.36 from
//! release artifacts), built and booted with stand-ins.
//!
//! None of the upstream files can be downloaded on the machines CI runs on, so **neither
//! upstream's containerd and runc nor kubelet run in CI**. What runs instead
//! (tests/it/common/k8s.rs):
//!
//! - containerd and runc: **Debian's containerd 2.x and runc** (the packages of Debian
//!   forky, the next release, downloaded with apt-get from the host's Debian mirror and
//!   unpacked with dpkg-deb), repacked into a tarball shaped like upstream's
//!   (`bin/containerd`, `bin/containerd-shim-runc-v2`, `bin/ctr`) and a bare runc binary.
//!   Debian's 2.x build reads the same version-3 configuration; its version is Debian's,
//!   not the pinned 2.3.4, and its runc links libseccomp and glibc dynamically where
//!   upstream's is static (the image has both: systemd needs them);
//! - kubelet, kubeadm, kubectl, crictl: a small static stand-in program
//!   (tests/files/k8s-standin.rs, built here with rustc) that reports the versions the
//!   recipe pins.
//!
//! All of them are served by an HTTP server on the host's loopback to a recipe that
//! extends k8s-node.toml and replaces its eight artifacts (same destinations), so the
//! build goes through the real fetch, verify (sha256), tar member extraction and install
//! path. Then, in the built disk (the squashfs root read with unsquashfs): Debian's
//! containerd and runc are not installed, the binaries are at /usr/bin with mode 0755
//! and are the served bytes, containerd's unit is slipway's and enabled, and its
//! configuration is version 3. And in one boot (`slipway test`): multi-user with no
//! failed unit; containerd 2.x with that configuration (its CRI images and runtime
//! plugins loaded); the pause image (base/pause.toml, catatonit) imported by
//! slipway-preload-images.service and pinned by the CRI plugin as the sandbox image; the
//! node settings kubeadm's preflight wants (swap off, ip_forward, bridge-nf-call-iptables,
//! cgroup v2 controllers, overlay and br_netfilter, the binaries, at the pinned
//! versions); the kubelet waiting for kubeadm's configuration; from a `[kubernetes]`
//! provisioning section, the JoinConfiguration written field by field and the join unit
//! running the kubeadm artifact with it; `slipway-node check` passing, and failing when
//! port 10250 is taken and when br_netfilter is unloaded; pods run through containerd's
//! CRI socket by `slipway-node cri run` (the calls kubelet makes), on the node's network
//! and on the CNI bridge. Then the join unit is started again, as the next boot starts
//! it: it is skipped (the stand-in kubeadm wrote kubelet.conf, as a successful join
//! does) and kubeadm ran once. (That took a reboot, 30 s of CI, until the suite was
//! trimmed; what survives a reboot is proven by node_agents' clean reboot.)
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

const ENDPOINT: &str = "10.0.2.200:6443";
const TOKEN: &str = "k8stst.0123456789abcdef";
const CA_HASH: &str = "sha256:5f2a4e0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627";

#[test]
fn k8s_node_with_stand_ins_boots_runs_pods_and_joins_from_provisioning() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let server = slipway::testing::serve::Server::start(&www).unwrap();
    let [kube, crictl, containerd, runc] = common::k8s::pinned_versions();
    eprintln!(
        "k8s-node pins Kubernetes {kube}, crictl {crictl}, containerd {containerd}, runc {runc}"
    );
    let stand_ins = common::k8s::stand_ins(d.path(), &www, server.port, &kube, &crictl);
    config_dump(d.path(), &stand_ins.containerd);
    let parent = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/k8s-node.toml");
    fs::write(
        d.path().join("k8s-node-ci.toml"),
        format!(
            "# k8s-node with stand-ins for every upstream binary (CI cannot download them).\n\
             schema-version = 1\nextends = \"{}\"\n\n[image]\nname = \"k8s-node-ci\"\n\n{}",
            parent.display(),
            stand_ins.artifacts
        ),
    )
    .unwrap();
    let qemu = d.path().join("qemu");
    fs::create_dir_all(&qemu).unwrap();
    fs::write(qemu.join("k8s-node.toml"), definition(&kube, &crictl)).unwrap();
    let out = d.path().join("out");
    let started = std::time::Instant::now();
    let o = common::k8s::slipway_test(&qemu, &out);
    let t = text(&o);
    if !o.status.success() {
        let console = fs::read_to_string(out.join("k8s-node/vm/console.log")).unwrap_or_default();
        let lines: Vec<&str> = console
            .lines()
            .filter(|l| l.contains("containerd") || l.contains("kube") || l.contains("Failed"))
            .collect();
        panic!(
            "slipway test failed:\n{t}\nconsole lines about containerd, kube*, failures:\n{}",
            lines.join("\n")
        );
    }
    eprintln!(
        "build + boots: {:.0} s\n{t}",
        started.elapsed().as_secs_f64()
    );
    drop(server);

    // The JoinConfiguration, field by field against the config above.
    let written = fs::read(out.join("k8s-node/join.json")).unwrap();
    let v: Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(v["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(v["kind"], "JoinConfiguration");
    let bt = &v["discovery"]["bootstrapToken"];
    assert_eq!(bt["apiServerEndpoint"], ENDPOINT);
    assert_eq!(bt["token"], TOKEN);
    assert_eq!(bt["caCertHashes"], serde_json::json!([CA_HASH]));
    let reg = &v["nodeRegistration"];
    assert_eq!(reg["name"], "worker-7");
    assert_eq!(reg["criSocket"], "unix:///run/containerd/containerd.sock");
    assert_eq!(
        reg["taints"],
        serde_json::json!([{ "key": "dedicated", "value": "ci", "effect": "NoSchedule" }])
    );
    assert_eq!(
        reg["kubeletExtraArgs"],
        serde_json::json!([{ "name": "node-labels", "value": "node.example.com/pool=blue,tier=web" }])
    );
    // What the kubeadm artifact was given is that file.
    assert_eq!(
        fs::read(out.join("k8s-node/kubeadm-saw.json")).unwrap(),
        written
    );

    // The built disk, as a user gets it.
    check_built_disk(
        &out.join("artifacts/k8s-node-ci"),
        d.path(),
        &stand_ins.containerd,
        &stand_ins.runc,
    );
}

/// `containerd config dump` of the recipe's version-3 configuration, run on the host by
/// the stand-in containerd (`bytes`, written into `dir`): containerd reads the file and
/// prints every key it took, with its defaults; the recipe's keys must be among them.
fn config_dump(dir: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("containerd-for-config-dump");
    fs::write(&bin, bytes).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes/k8s-node/rootfs/etc/containerd/config.toml");
    let dump = run(Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"]));
    let v: toml::Value = toml::from_str(&dump).unwrap_or_else(|e| panic!("{e}:\n{dump}"));
    assert_eq!(v["version"].as_integer(), Some(3), "{dump}");
    let p = &v["plugins"];
    assert_eq!(
        p["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
        Some("localhost/slipway/pause:latest"),
        "{dump}"
    );
    let rt = &p["io.containerd.cri.v1.runtime"];
    let runc = &rt["containerd"]["runtimes"]["runc"]["options"];
    assert_eq!(runc["BinaryName"].as_str(), Some("/usr/bin/runc"), "{dump}");
    assert_eq!(runc["SystemdCgroup"].as_bool(), Some(true), "{dump}");
    assert_eq!(
        rt["cni"]["bin_dirs"][0].as_str(),
        Some("/usr/lib/cni"),
        "{dump}"
    );
    assert_eq!(
        p["io.containerd.internal.v1.opt"]["path"].as_str(),
        Some("/var/lib/containerd/opt"),
        "{dump}"
    );
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

/// The `slipway test` definition: provisioning with a `[kubernetes]` section and the
/// steps of its one boot; the stand-ins report
/// Kubernetes `kube` and crictl `crictl`.
fn definition(kube: &str, crictl: &str) -> String {
    DEFINITION
        .replace("{ENDPOINT}", ENDPOINT)
        .replace("{TOKEN}", TOKEN)
        .replace("{CA_HASH}", CA_HASH)
        .replace("{KUBE}", &kube.replace('.', r"\."))
        .replace("{CRICTL}", &crictl.replace('.', r"\."))
}

/// [`definition`] with `{ENDPOINT}`, `{TOKEN}`, `{CA_HASH}`, `{KUBE}` and `{CRICTL}`
/// still to fill in.
const DEFINITION: &str = r#"description = "k8s-node (Debian's containerd 2.x and runc stand in for upstream's; stand-in kubelet/kubeadm: the real kubelet does not run in CI)"
recipe = "../k8s-node-ci.toml"
timeout = 600

[provisioning]
hostname = "worker-7"

[provisioning.kubernetes]
api-server-endpoint = "{ENDPOINT}"
token = "{TOKEN}"
ca-cert-hashes = ["{CA_HASH}"]
node-name = "worker-7"
labels = { "node.example.com/pool" = "blue", tier = "web" }
taint = [{ key = "dedicated", value = "ci", effect = "NoSchedule" }]

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
wait-for-unit = "slipway-kubeadm-join.service"

[[step]]
name = "the join ran the kubeadm artifact, its output on the console"
wait-for-console-text = "slipway stand-in kubeadm: join with /etc/kubernetes/slipway-join.json"

[[step]]
read-file = "/var/lib/slipway-test/kubeadm-join.args"
expect-regex = '^join --config /etc/kubernetes/slipway-join.json\n$'

[[step]]
copy-out = { from = "/etc/kubernetes/slipway-join.json", to = "join.json" }

[[step]]
copy-out = { from = "/var/lib/slipway-test/kubeadm-join.config", to = "kubeadm-saw.json" }

[[step]]
name = "kubelet waits for kubeadm's configuration instead of failing"
succeed = ["systemctl", "show", "--property=ConditionResult", "--property=ActiveState", "kubelet.service"]
expect-regex = '(?s)ConditionResult=no.*ActiveState=inactive|(?s)ActiveState=inactive.*ConditionResult=no'

[[step]]
name = "swap off"
read-file = "/proc/swaps"
expect-regex = '^Filename[^\n]*\n$'

[[step]]
read-file = "/proc/sys/net/ipv4/ip_forward"
expect-regex = '^1\n'

[[step]]
read-file = "/proc/sys/net/bridge/bridge-nf-call-iptables"
expect-regex = '^1\n'

[[step]]
name = "cgroup v2 with the controllers kubelet uses"
read-file = "/sys/fs/cgroup/cgroup.controllers"
expect-regex = '\bcpuset\b.*\bcpu\b.*\bio\b.*\bmemory\b.*\bpids\b'

[[step]]
read-file = "/sys/module/br_netfilter/initstate"
expect-regex = '^live\n'

[[step]]
read-file = "/proc/filesystems"
expect-regex = '(?m)\toverlay$'

[[step]]
succeed = ["conntrack", "--version"]

[[step]]
succeed = ["socat", "-V"]

[[step]]
succeed = ["ethtool", "--version"]

[[step]]
succeed = ["ebtables", "--version"]

[[step]]
name = "the Kubernetes binaries at the pinned versions (stand-ins that say so)"
succeed = ["kubectl", "version", "--client"]
expect-regex = '^Client Version: v{KUBE} \(slipway stand-in kubectl'

[[step]]
succeed = ["kubelet", "--version"]
expect-regex = '^Kubernetes v{KUBE} \(slipway stand-in kubelet'

[[step]]
succeed = ["crictl", "--version"]
expect-regex = '^crictl version v{CRICTL} \(slipway stand-in crictl'

[[step]]
name = "the node-readiness check passes"
succeed = ["slipway-node", "check"]
expect-regex = '(?s)ok swap.*ok cgroup2.*ok cri: .*ok binaries.*ok port-10250'

[[step]]
name = "something on kubelet's port: the check fails and says so"
succeed = ["systemd-run", "--unit=occupy-10250", "--", "socat", "TCP-LISTEN:10250,reuseaddr,fork", "OPEN:/dev/null"]

[[step]]
wait-for-open-port = 10250
timeout = 60

[[step]]
fail = ["slipway-node", "check"]
expect-regex = '(?m)^FAIL port-10250: '

[[step]]
succeed = ["systemctl", "stop", "occupy-10250.service"]

[[step]]
name = "br_netfilter unloaded: the check fails on it and on the bridge sysctl"
succeed = ["modprobe", "-r", "br_netfilter"]

[[step]]
fail = ["slipway-node", "check"]
expect-regex = '(?s)FAIL bridge-nf-call-iptables: .*FAIL br_netfilter: '

[[step]]
succeed = ["modprobe", "br_netfilter"]

[[step]]
succeed = ["systemctl", "restart", "systemd-sysctl.service"]

[[step]]
name = "restored, the check passes again"
succeed = ["slipway-node", "check"]

[[step]]
copy-image = { recipe = "base/busybox", to = "/var/tmp/busybox.tar" }

[[step]]
succeed = ["ctr", "--namespace", "k8s.io", "images", "import", "--base-name", "docker.io/slipway/busybox", "/var/tmp/busybox.tar"]

[[step]]
name = "a pod through the CRI socket, as kubelet runs one (sandbox from the preloaded pause image)"
succeed = ["slipway-node", "cri", "run", "--image", "docker.io/slipway/busybox:latest", "--", "echo", "hello from a pod"]
expect = "hello from a pod"

[[step]]
name = "a pod with its own network from the CNI bridge plugin"
succeed = ["slipway-node", "cri", "run", "--pod-network", "--name", "netpod", "--image", "docker.io/slipway/busybox:latest", "--", "ip", "-4", "-o", "addr", "show", "eth0"]
expect-regex = 'inet \d+\.\d+\.\d+\.\d+/'

[[step]]
name = "started again, as every boot starts it, the join is skipped: kubelet.conf exists"
succeed = ["systemctl", "restart", "slipway-kubeadm-join.service"]

[[step]]
succeed = ["systemctl", "show", "--property=ConditionResult", "--property=ActiveState", "slipway-kubeadm-join.service"]
expect-regex = '(?s)ConditionResult=no.*ActiveState=inactive|(?s)ActiveState=inactive.*ConditionResult=no'

[[step]]
name = "kubeadm join ran once"
read-file = "/var/lib/slipway-test/kubeadm-join.count"
expect-regex = '\Ajoin\n\z'
"#;
