//! The bundled host recipe, recipes/containerd-host.toml: its tree is built from real
//! Debian 13 packages (`--format dir`) and checked for what the disk stage and the first
//! boot rely on: the units enabled and masked (no getty, no logind), the configuration of
//! containerd, CNI, networkd, journald and systemd, root locked, no shell, no sshd, only
//! the four CNI plugins, /etc/machine-id uninitialized and the kernel modules a cloud VM
//! boots with. Its Debian 12 copy, containerd-host-bookworm.toml, must stay the same
//! recipe apart from [image] and [debian], and must build.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Copies the two host recipes and their overlay directory into `dir` (so no lock file
/// is written into the source tree).
fn copy_recipes(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    for f in ["containerd-host.toml", "containerd-host-bookworm.toml"] {
        fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let overlay = src.join("containerd-host");
    for e in walkdir::WalkDir::new(&overlay) {
        let e = e.unwrap();
        let to = dir
            .join("containerd-host")
            .join(e.path().strip_prefix(&overlay).unwrap());
        if e.file_type().is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Builds `recipe` into `dir/out-NAME` (tree only) and returns the tree's root.
fn build(dir: &Path, name: &str) -> (PathBuf, serde_json::Value) {
    let out = dir.join(format!("out-{name}"));
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            dir.join(format!("{name}.toml")).to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "dir",
        ],
    ));
    let report = serde_json::from_slice(&fs::read(out.join("report.json")).unwrap()).unwrap();
    (out.join("rootfs"), report)
}

fn read(root: &Path, p: &str) -> String {
    fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("/{p}: {e}"))
}

fn link(root: &Path, p: &str) -> Option<String> {
    fs::read_link(root.join(p))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// `KEY=VALUE` lines of a systemd-style configuration file.
fn has_setting(text: &str, key: &str, value: &str) -> bool {
    text.lines().any(|l| l.trim() == format!("{key}={value}"))
}

/// The file names of the links under etc/systemd/system/*.wants/.
fn wanted(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in fs::read_dir(root.join("etc/systemd/system")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wants") || name.ends_with(".requires") {
            for u in fs::read_dir(e.path()).unwrap() {
                v.push(format!(
                    "{name}/{}",
                    u.unwrap().file_name().to_string_lossy()
                ));
            }
        }
    }
    v.sort();
    v
}

/// Checks that `module` is in the pruned tree, as a `.ko*` file or built in.
fn has_module(root: &Path, kver: &str, module: &str) -> bool {
    let norm = |s: &str| s.replace('-', "_");
    let dir = root.join("usr/lib/modules").join(kver);
    let as_file = walkdir::WalkDir::new(dir.join("kernel"))
        .into_iter()
        .filter_map(|e| e.ok())
        .any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.split(".ko").next().map(norm) == Some(norm(module)) && n.contains(".ko")
        });
    let builtin = fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".ko"))
                .map(norm)
                == Some(norm(module))
        });
    as_file || builtin
}

#[test]
fn containerd_host_tree() {
    let d = tempfile::tempdir().unwrap();
    copy_recipes(d.path());

    // The bookworm recipe is a copy (a child cannot change the release): everything but
    // [image] and [debian] must be the same.
    // libtss2 (for systemd's pcrphase units, issue 24) is the one package set named
    // differently: trixie's names carry the t64 transition and a new libtss2-mu soname.
    // Each recipe must include its four; the rest must be equal.
    let table = |f: &str| {
        let mut t: toml::Table = toml::from_str(&read(d.path(), f)).unwrap();
        t.remove("image");
        t.remove("debian");
        let include = t["packages"]["include"].as_array().unwrap().clone();
        let (tss, rest): (Vec<_>, Vec<_>) = include
            .into_iter()
            .partition(|p| p.as_str().unwrap().starts_with("libtss2-"));
        assert_eq!(
            tss.len(),
            4,
            "{f}: the libtss2 libraries systemd's pcrphase units load"
        );
        t["packages"]
            .as_table_mut()
            .unwrap()
            .insert("include".into(), toml::Value::Array(rest));
        t
    };
    assert_eq!(
        table("containerd-host.toml"),
        table("containerd-host-bookworm.toml"),
        "containerd-host-bookworm.toml differs from containerd-host.toml beyond [image] and [debian]"
    );

    let (root, report) = build(d.path(), "containerd-host");

    check_units(&root);
    check_no_way_in(&root);
    let plugins = check_containerd(&root);
    check_network_and_console(&root);
    check_kernel(&root, &report);
    // The Debian 12 copy builds, with the same shape.
    let (bw, _) = build(d.path(), "containerd-host-bookworm");
    let mut bw_plugins: Vec<String> = fs::read_dir(bw.join("usr/lib/cni"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    bw_plugins.sort();
    assert_eq!(bw_plugins, plugins);
    assert_eq!(
        link(&bw, "etc/systemd/system/getty@.service").as_deref(),
        Some("/dev/null")
    );
    let bw_wants = wanted(&bw);
    assert!(
        bw_wants.contains(&"multi-user.target.wants/containerd.service".to_string()),
        "{bw_wants:?}"
    );
    assert!(
        !bw_wants.iter().any(|w| w.contains("getty")),
        "{bw_wants:?}"
    );
}

/// Units: what runs, and what never does.
fn check_units(root: &Path) {
    let wants = wanted(root);
    for u in [
        "multi-user.target.wants/containerd.service",
        "multi-user.target.wants/systemd-networkd.service",
        "sockets.target.wants/systemd-networkd.socket",
        "sysinit.target.wants/systemd-resolved.service",
        "sysinit.target.wants/systemd-timesyncd.service",
    ] {
        assert!(wants.contains(&u.to_string()), "{u} not enabled: {wants:?}");
    }
    assert!(
        !wants
            .iter()
            .any(|w| w.contains("getty") || w.contains("cni-dhcp")),
        "{wants:?}"
    );
    for u in [
        "getty.target",
        "getty@.service",
        "serial-getty@.service",
        "console-getty.service",
        "container-getty@.service",
        "autovt@.service",
        "debug-shell.service",
        "systemd-logind.service",
        "systemd-firstboot.service",
        "systemd-sysusers.service",
        "ldconfig.service",
        "systemd-hwdb-update.service",
    ] {
        assert_eq!(
            link(root, &format!("etc/systemd/system/{u}")).as_deref(),
            Some("/dev/null"),
            "{u} is not masked"
        );
    }
    assert_eq!(
        link(root, "etc/systemd/system/default.target").as_deref(),
        Some("/usr/lib/systemd/system/multi-user.target")
    );
    assert!(!root
        .join("usr/lib/systemd/system-generators/systemd-getty-generator")
        .exists());
}

/// No way in: no shell, no sshd, no getty program, root locked; the machine id is
/// generated at first boot.
fn check_no_way_in(root: &Path) {
    // No way in: no shell, no sshd, no getty program, root locked.
    for p in [
        "usr/bin/sh",
        "usr/bin/bash",
        "usr/bin/dash",
        "usr/sbin/sshd",
        "usr/sbin/agetty",
        "usr/bin/login",
        "usr/bin/apt",
        "usr/bin/dpkg",
    ] {
        assert!(
            fs::symlink_metadata(root.join(p)).is_err(),
            "/{p} is in the image"
        );
    }
    let shadow = read(root, "etc/shadow");
    let root_pw = shadow
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .and_then(|r| r.split(':').next())
        .unwrap();
    assert!(
        root_pw == "*" || root_pw.starts_with('!'),
        "root's password field is {root_pw:?}"
    );

    // First boot: systemd generates the machine id and commits it into the /etc overlay.
    let mid = read(root, "etc/machine-id");
    assert!(mid.is_empty() || mid == "uninitialized\n", "{mid:?}");
    assert!(root
        .join("usr/lib/systemd/system/systemd-machine-id-commit.service")
        .exists());
}

/// containerd and CNI; returns the CNI plugins.
fn check_containerd(root: &Path) -> Vec<String> {
    // containerd: config version 2, runc through systemd cgroups, CNI from Debian's dir.
    let cfg: toml::Table = toml::from_str(&read(root, "etc/containerd/config.toml")).unwrap();
    assert_eq!(cfg["version"].as_integer(), Some(2));
    let cri = &cfg["plugins"]["io.containerd.grpc.v1.cri"];
    let runc = &cri["containerd"]["runtimes"]["runc"];
    assert_eq!(runc["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(true));
    let runc_bin = runc["options"]["BinaryName"].as_str().unwrap();
    assert!(
        root.join(runc_bin.trim_start_matches('/')).is_file(),
        "{runc_bin}"
    );
    let bin_dir = cri["cni"]["bin_dir"].as_str().unwrap();
    assert_eq!(bin_dir, "/usr/lib/cni");
    assert_eq!(cri["cni"]["conf_dir"].as_str(), Some("/etc/cni/net.d"));
    let mut plugins: Vec<String> = fs::read_dir(root.join("usr/lib/cni"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    plugins.sort();
    assert_eq!(plugins, ["bridge", "host-local", "loopback", "portmap"]);
    let conflist: serde_json::Value =
        serde_json::from_str(&read(root, "etc/cni/net.d/10-containerd-net.conflist")).unwrap();
    for p in conflist["plugins"].as_array().unwrap() {
        let t = p["type"].as_str().unwrap();
        assert!(plugins.iter().any(|x| x == t), "conflist uses {t}");
    }
    plugins
}

/// Network, time, console.
fn check_network_and_console(root: &Path) {
    let net = read(root, "usr/lib/systemd/network/89-ethernet.network");
    assert!(has_setting(&net, "Type", "ether"), "{net}");
    assert!(has_setting(&net, "Name", "en* eth*"), "{net}");
    assert!(has_setting(&net, "DHCP", "yes"), "{net}");
    assert_eq!(
        link(root, "etc/resolv.conf").as_deref(),
        Some("../run/systemd/resolve/resolv.conf")
    );
    let journald = read(
        root,
        "usr/lib/systemd/journald.conf.d/80-serial-console.conf",
    );
    for (k, v) in [
        ("ForwardToConsole", "yes"),
        ("TTYPath", "/dev/ttyS0"),
        ("MaxLevelConsole", "info"),
    ] {
        assert!(has_setting(&journald, k, v), "{k}={v}: {journald}");
    }
    let system = read(root, "usr/lib/systemd/system.conf.d/80-show-status.conf");
    assert!(has_setting(&system, "ShowStatus", "yes"), "{system}");
    assert!(root.join("usr/lib/systemd/systemd-timesyncd").is_file());
}

/// The kernel and its modules, the UKI's stub, and what the path globs dropped.
fn check_kernel(root: &Path, report: &serde_json::Value) {
    // Kernel: only the planned modules, with everything the disk stage and containerd
    // load; ext4 and virtio_console are built into Debian 13's cloud kernel.
    let summary = report["kernel_modules"].as_str().unwrap();
    assert!(summary.contains("cloud-amd64"), "{summary}");
    let kver = fs::read_dir(root.join("usr/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    assert!(root.join(format!("boot/vmlinuz-{kver}")).is_file());
    for m in [
        "virtio_blk",
        "dm-verity",
        "squashfs",
        "overlay",
        "br_netfilter",
        "qemu_fw_cfg",
        "virtio_console",
        "vfat",
        "isofs",
        "ext4",
    ] {
        assert!(has_module(root, &kver, m), "kernel module {m} missing");
    }
    // The UKI's stub is in the tree for the disk stage.
    assert!(root
        .join("usr/lib/systemd/boot/efi/linuxx64.efi.stub")
        .is_file());

    // Docs and translations are gone (copyright files stay).
    assert!(!root.join("usr/share/man").exists());
    assert!(!root.join("usr/share/locale").exists());
}
