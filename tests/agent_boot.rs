//! The test agent on a real virtio-serial port: the host disconnects and connects again,
//! and `slipway-agent test-agent` in the guest serves the same boot. A virtio-serial
//! port reports hang-up while no host is connected and reads return end-of-file, which
//! the agent waits through and reopens after (agent/src/testagent.rs); only QEMU's port
//! behaves so (tests/agent.rs serves the protocol over a pty, which does neither), and
//! the harness and the other boot tests hold one connection per boot. The image is the
//! containerd-host fixture, provisioned through fw_cfg with only `[test-agent]`.
//!
//! The other provisioning behaviours are proven elsewhere: the vfat `SLIPWAY` drive in a
//! boot (qemu/provisioning-drive.toml), fw_cfg (qemu/smoke.toml), and on the host in
//! agent/src/source.rs (fw_cfg winning over a drive, drives found without udev),
//! agent/src/provision.rs (file mode and owner, the applied-config record) and
//! tests/agent.rs (the protocol). Console log: `$CARGO_TARGET_TMPDIR/agent-boot/`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use slipway::boot::agent::AgentClient;
use slipway::boot::qemu::{Vm, VmSpec};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// TCG boots on a loaded 2-core machine: generous, but bounded.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const CONFIG: &str = "schema-version = 1\n\n[test-agent]\n";

#[test]
fn the_test_agent_serves_the_same_boot_after_the_host_reconnects() {
    let disk = fixtures::host_image("containerd-host").join("disk.raw");
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("config.toml");
    fs::write(&cfg, CONFIG).unwrap();
    let mut spec = VmSpec::new(&disk);
    spec.agent = true;
    spec.fw_cfg_config = Some(cfg);
    let mut vm = Vm::start(&spec, &d.path().join("vm")).unwrap();
    let sock = vm.work.agent();

    let mut c = AgentClient::connect(&sock, Duration::from_secs(30)).unwrap();
    let first = c
        .wait_ready(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("no test agent: {e:#}\n{}", vm.tail(60)));
    eprintln!(
        "test agent after {:.1} s",
        vm.started.elapsed().as_secs_f64()
    );
    // Disconnect: the guest's port hangs up; the agent waits for the next host.
    drop(c);
    std::thread::sleep(Duration::from_secs(1));
    let mut c = AgentClient::connect(&sock, Duration::from_secs(10)).unwrap();
    let again = c
        .wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no answer after reconnecting: {e:#}\n{}", vm.tail(60)));
    assert_eq!(again.boot_id, first.boot_id, "not the same boot");
    assert!(again.uptime >= first.uptime, "{again:?} before {first:?}");
    c.write_file("/run/slipway-test-x", 0o644, b"written")
        .unwrap();
    assert_eq!(c.read_file("/run/slipway-test-x").unwrap(), b"written");
    // The image has no shell or coreutils: systemd-escape is a program it has.
    let r = c
        .exec(&["systemd-escape", "a b"], Duration::from_secs(30))
        .unwrap();
    assert_eq!((r.exit, r.stdout.as_slice()), (Some(0), &b"a\\x20b\n"[..]));
    drop(c);

    let console = vm.kill();
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-boot");
    fs::create_dir_all(&logs).unwrap();
    fs::write(logs.join("reconnect.log"), &console).unwrap();
    assert_console_clean(
        &console,
        "reconnect",
        &["slipway-init: boot stopped"],
        &vm.tail(60),
    );
}
