//! slipway-agent in a real guest: a Debian cloud kernel under QEMU (TCG) boots an
//! initramfs whose busybox /init runs `slipway-agent provision` and then
//! `slipway-agent test-agent`. Boot 1 finds its config on a vfat config drive labelled
//! SLIPWAY; boot 2 has the drive and fw_cfg and must use fw_cfg. The host checks the
//! result through the test agent over a real virtio-serial port, including a disconnect
//! and reconnect. (systemd and the unit files are exercised by the host-image boot tests;
//! here the init is a script, so the config has no systemd or test-agent keys.)
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use slipway::boot::agent::AgentClient;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Modules the guest needs, with dependencies resolved by the host's modprobe.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "qemu_fw_cfg",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
];

/// The guest's /init: mounts the API file systems, loads the modules, provisions, serves.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for m in $(cat /etc/modules-list); do insmod /$m; done
/usr/lib/slipway/slipway-agent provision
echo "GUEST-HOSTNAME: $(hostname)"
/usr/lib/slipway/slipway-agent test-agent --port org.slipway.test &
while true; do sleep 60; done
"#;

/// Kernel and initramfs.
fn kit(dir: &Path) -> (PathBuf, PathBuf) {
    let r = recipe(
        dir,
        "kernel.toml",
        "[image]\nkind = \"base\"\n[packages]\ninclude = [\"linux-image-cloud-amd64\", \"busybox-static\"]\n\
         exclude = [\"kmod\", \"linux-base\", \"initramfs-tools\", \"linux-initramfs-tool\"]\n",
    );
    let out = dir.join("kernel-out");
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            r.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "dir",
        ],
    ));
    let rootfs = out.join("rootfs");
    let kver = fs::read_dir(rootfs.join("usr/lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with("cloud-amd64"))
        .expect("no cloud kernel modules");
    run(Command::new("depmod").arg("-b").arg(&rootfs).arg(&kver));
    let deps = run(Command::new("modprobe")
        .arg("-d")
        .arg(&rootfs)
        .args(["-S", &kver, "--show-depends", "-a"])
        .args(MODULES));
    let stage = dir.join("initramfs");
    let prefix = rootfs.to_str().unwrap().trim_end_matches('/').to_string();
    let mut list = Vec::<String>::new();
    for line in deps.lines() {
        let Some(path) = line.strip_prefix("insmod ") else {
            continue;
        };
        let path = path.trim();
        let rel = path.strip_prefix(&prefix).unwrap().trim_start_matches('/');
        let rel_ko = rel.strip_suffix(".xz").unwrap_or(rel).to_string();
        if list.contains(&rel_ko) {
            continue;
        }
        let dest = stage.join(&rel_ko);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if rel.ends_with(".xz") {
            run(Command::new("sh")
                .arg("-c")
                .arg("xz -dc \"$1\" > \"$2\"")
                .arg("sh")
                .arg(path)
                .arg(&dest));
        } else {
            fs::copy(path, &dest).unwrap();
        }
        list.push(rel_ko);
    }
    for d in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "var",
        "tmp",
        "usr/lib/slipway",
    ] {
        fs::create_dir_all(stage.join(d)).unwrap();
    }
    fs::write(stage.join("etc/modules-list"), list.join("\n") + "\n").unwrap();
    fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::copy(rootfs.join("usr/bin/busybox"), stage.join("bin/busybox")).unwrap();
    fs::copy(
        static_binary("slipway-agent", "SLIPWAY_AGENT"),
        stage.join("usr/lib/slipway/slipway-agent"),
    )
    .unwrap();
    fs::write(stage.join("init"), INIT).unwrap();
    run(Command::new("chmod").arg("0755").arg(stage.join("init")));
    let initrd = dir.join("initrd.cpio");
    run(Command::new("sh")
        .arg("-c")
        .arg("find . | sort | cpio -o -H newc -R 0:0 --quiet > \"$1\"")
        .arg("sh")
        .arg(&initrd)
        .current_dir(&stage));
    (rootfs.join(format!("boot/vmlinuz-{kver}")), initrd)
}

/// Where the console logs of the boots are kept (in the target directory).
fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-boot-logs");
    fs::create_dir_all(&d).unwrap();
    d
}

struct Guest {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Guest {
    fn console(&self) -> String {
        self.log.lock().unwrap().clone()
    }
    fn wait_for(&self, what: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.console().contains(what) {
            if start.elapsed() > timeout {
                let log = self.console();
                fs::write(log_dir().join("timeout.log"), &log).unwrap();
                panic!("no {what:?} on the console within {timeout:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn boot(kit: &(PathBuf, PathBuf), sock: &Path, extra: &[String]) -> Guest {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&kit.0)
        .arg("-initrd")
        .arg(&kit.1)
        .args(["-append", "console=ttyS0 no_timer_check panic=-1"])
        .args(slipway::boot::agent::qemu_port_args(sock))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (log, _readers) = capture_console(&mut child);
    Guest { child, log }
}

#[test]
fn agent_boot_provisions_from_a_config_drive_and_fw_cfg_and_serves_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let kit = kit(dir.path());

    let drive_cfg = dir.path().join("drive.toml");
    fs::write(
        &drive_cfg,
        "schema-version = 1\nhostname = \"from-drive\"\n[[file]]\npath = \"/etc/app.conf\"\nmode = \"0600\"\ncontent = \"drive\\n\"\n",
    )
    .unwrap();
    let drive = dir.path().join("cfg.img");
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", "SLIPWAY"])
        .arg(&drive)
        .arg("2048"));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&drive)
        .arg(&drive_cfg)
        .arg("::slipway.toml"));
    let drive_arg = vec![
        "-drive".to_string(),
        format!("file={},format=raw,if=virtio,readonly=on", drive.display()),
    ];

    // Boot 1: the config drive only.
    let sock = dir.path().join("ta1.sock");
    let g = boot(&kit, &sock, &drive_arg);
    g.wait_for("GUEST-HOSTNAME:", Duration::from_secs(240));
    let console = g.console();
    fs::write(log_dir().join("boot1.log"), &console).unwrap();
    eprintln!(
        "{}",
        console
            .lines()
            .filter(|l| l.contains("slipway-"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        console.contains("slipway-provision: applied config from config drive /dev/vda (SLIPWAY)"),
        "{console}"
    );
    assert!(console.contains("GUEST-HOSTNAME: from-drive"), "{console}");
    let mut c = AgentClient::connect(&sock, Duration::from_secs(10)).unwrap();
    let first = c.wait_ready(Duration::from_secs(120)).unwrap();
    assert_eq!(c.read_file("/etc/app.conf").unwrap(), b"drive\n");
    let r = c
        .exec(
            &["stat", "-c", "%a %u", "/etc/app.conf"],
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "600 0\n");
    assert!(
        String::from_utf8_lossy(&c.read_file("/var/lib/slipway/provisioned").unwrap())
            .starts_with("sha256 ")
    );
    // Disconnect and reconnect: the agent keeps serving the same boot.
    drop(c);
    std::thread::sleep(Duration::from_secs(1));
    let mut c = AgentClient::connect(&sock, Duration::from_secs(10)).unwrap();
    let again = c.wait_ready(Duration::from_secs(60)).unwrap();
    assert_eq!(again.boot_id, first.boot_id);
    c.write_file("/tmp/x", 0o644, b"written").unwrap();
    let r = c.exec(&["cat", "/tmp/x"], Duration::from_secs(30)).unwrap();
    assert_eq!(r.stdout, b"written");
    drop(g);

    // Boot 2: fw_cfg and the drive; fw_cfg wins.
    let fw_cfg = dir.path().join("fw.toml");
    fs::write(&fw_cfg, "schema-version = 1\nhostname = \"from-fw-cfg\"\n").unwrap();
    let mut extra = drive_arg.clone();
    extra.extend(slipway::boot::agent::qemu_fw_cfg_args(&fw_cfg));
    let sock = dir.path().join("ta2.sock");
    let g = boot(&kit, &sock, &extra);
    g.wait_for("GUEST-HOSTNAME:", Duration::from_secs(240));
    let console = g.console();
    fs::write(log_dir().join("boot2.log"), &console).unwrap();
    eprintln!(
        "{}",
        console
            .lines()
            .filter(|l| l.contains("slipway-"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        console.contains("slipway-provision: config found in fw_cfg and on config drive /dev/vda (SLIPWAY): using fw_cfg"),
        "{console}"
    );
    assert!(
        console.contains("slipway-provision: applied config from fw_cfg"),
        "{console}"
    );
    assert!(console.contains("GUEST-HOSTNAME: from-fw-cfg"), "{console}");
    let mut c = AgentClient::connect(&sock, Duration::from_secs(10)).unwrap();
    let p = c.wait_ready(Duration::from_secs(120)).unwrap();
    assert_ne!(p.boot_id, first.boot_id);
}
