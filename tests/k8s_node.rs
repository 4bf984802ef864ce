//! `recipes/k8s-node.toml`, built and booted, with stand-ins for the Kubernetes binaries.
//!
//! kubelet, kubeadm, kubectl and crictl cannot be downloaded on the machines CI runs on,
//! so **kubelet itself does not run in CI**. The test builds a recipe that extends
//! k8s-node.toml and replaces those four artifacts with a small static stand-in program
//! (tests/files/k8s-standin.rs, built here with rustc) served by an HTTP server on the
//! host's loopback: the build goes through the real fetch, verify (sha256), lock and
//! install path. It then boots the image with `slipway test` (two boots) and checks:
//! multi-user with no failed unit; the pause image (base/pause.toml, catatonit) in
//! containerd's k8s.io namespace; the node settings kubeadm's preflight wants (swap off,
//! ip_forward, bridge-nf-call-iptables, cgroup v2 controllers, overlay and br_netfilter,
//! the binaries); the kubelet waiting for kubeadm's configuration; and, from a
//! `[kubernetes]` provisioning section, the JoinConfiguration written field by field and
//! the join unit running the kubeadm artifact with it; `slipway-node check` passing, and
//! failing when port 10250 is taken and when br_netfilter is unloaded; and pods run
//! through containerd's CRI socket by `slipway-node cri run` (the calls kubelet makes),
//! on the node's network and on the CNI bridge. Then a reboot: the join unit is skipped
//! (the stand-in kubeadm wrote kubelet.conf, as a successful join does) and kubeadm ran
//! once in the two boots.
#![allow(clippy::unwrap_used)]

mod common;
use common::k8s::{sha, stand_in, tarball};
use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

const ENDPOINT: &str = "10.0.2.200:6443";
const TOKEN: &str = "k8stst.0123456789abcdef";
const CA_HASH: &str = "sha256:5f2a4e0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627";

#[test]
fn k8s_node_with_stand_in_kubernetes_binaries_boots_and_joins_from_provisioning() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let bin = stand_in(d.path());
    let mut artifacts = String::new();
    let server = slipway::testing::serve::Server::start(&www).unwrap();
    for name in ["kubelet", "kubeadm", "kubectl"] {
        fs::write(www.join(name), &bin).unwrap();
        artifacts.push_str(&format!(
            "[[artifact]]\nurl = \"http://127.0.0.1:{}/{name}\"\nsha256 = \"{}\"\ndest = \"/usr/bin/{name}\"\nmode = \"0755\"\n\n",
            server.port,
            sha(&bin)
        ));
    }
    let crictl = tarball(&[("crictl", &bin)]);
    fs::write(www.join("crictl.tar.gz"), &crictl).unwrap();
    artifacts.push_str(&format!(
        "[[artifact]]\nurl = \"http://127.0.0.1:{}/crictl.tar.gz\"\nsha256 = \"{}\"\ndest = \"/usr/bin/crictl\"\nmode = \"0755\"\nmember = \"crictl\"\n",
        server.port,
        sha(&crictl)
    ));
    let parent = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/k8s-node.toml");
    fs::write(
        d.path().join("k8s-node-ci.toml"),
        format!(
            "# k8s-node with stand-ins for the Kubernetes binaries (CI cannot download them).\n\
             schema-version = 1\nextends = \"{}\"\n\n[image]\nname = \"k8s-node-ci\"\n\n{artifacts}",
            parent.display()
        ),
    )
    .unwrap();
    let qemu = d.path().join("qemu");
    fs::create_dir_all(&qemu).unwrap();
    fs::write(qemu.join("k8s-node.toml"), definition()).unwrap();
    let out = d.path().join("out");
    let o = common::k8s::slipway_test(&qemu, &out);
    let t = text(&o);
    if !o.status.success() {
        let console = fs::read_to_string(out.join("k8s-node/vm/console.log")).unwrap_or_default();
        let kube: Vec<&str> = console.lines().filter(|l| l.contains("kube")).collect();
        panic!(
            "slipway test failed:\n{t}\nconsole lines about kube*:\n{}",
            kube.join("\n")
        );
    }
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
}

/// The `slipway test` definition: provisioning with a `[kubernetes]` section, the steps
/// of the first boot, a reboot and the steps of the second.
fn definition() -> String {
    DEFINITION
        .replace("{ENDPOINT}", ENDPOINT)
        .replace("{TOKEN}", TOKEN)
        .replace("{CA_HASH}", CA_HASH)
}

/// [`definition`] with `{ENDPOINT}`, `{TOKEN}` and `{CA_HASH}` still to fill in.
const DEFINITION: &str = r#"description = "k8s-node (stand-in kubelet/kubeadm: the real kubelet does not run in CI)"
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
wait-for-unit = "slipway-preload-images.service"

[[step]]
name = "the pause image is in containerd's k8s.io namespace"
succeed = ["ctr", "--namespace", "k8s.io", "images", "ls", "-q"]
expect-regex = '(?m)^localhost/slipway/pause:latest$'

[[step]]
name = "containerd's configuration names it as the CRI sandbox image"
read-file = "/etc/containerd/config.toml"
expect-regex = '(?m)^\s*sandbox_image = "localhost/slipway/pause:latest"$'

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
succeed = ["kubectl", "version", "--client"]
expect = "slipway stand-in kubectl"

[[step]]
succeed = ["crictl", "--version"]
expect = "slipway stand-in crictl"

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
name = "after a reboot the join does not run again (kubelet.conf exists)"
reboot = true

[[step]]
succeed = ["systemctl", "is-system-running", "--wait"]
expect-regex = "^running"
timeout = 300

[[step]]
succeed = ["systemctl", "show", "--property=ConditionResult", "--property=ActiveState", "slipway-kubeadm-join.service"]
expect-regex = '(?s)ConditionResult=no.*ActiveState=inactive|(?s)ActiveState=inactive.*ConditionResult=no'

[[step]]
name = "kubeadm join ran once in two boots"
read-file = "/var/lib/slipway-test/kubeadm-join.count"
expect-regex = '\Ajoin\n\z'
"#;
