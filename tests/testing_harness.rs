//! Self-tests of the boot-test harness (`slipway test`, src/testing/): a wrong expected
//! output, a unit that does not exist, a time-out and a kernel panic each fail with a
//! clear message, and no QEMU process is left behind. One containerd-host image is
//! built (about 10 s) and booted once for the four failures (the harness's `Machine`
//! keeps the VM across failed steps); then the real binary runs two short tests (a pass
//! and a time-out, neither waiting for a full boot) for the summary, the exit code and
//! JUnit. Needs `make build` (the bundled slipway-init and slipway-agent), QEMU and OVMF
//! (scripts/setup-host.sh).

#![allow(clippy::unwrap_used)]

mod common;

use common::{bin, shared_cache, slipway};
use slipway::boot::qemu::VmSpec;
use slipway::testing::definition::Definition;
use slipway::testing::steps::Machine;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// QEMU processes whose command line mentions `dir`.
fn qemu_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

fn err_of(m: &mut Machine, def: &Definition, i: usize) -> String {
    match m.run(&def.steps[i]) {
        Ok(()) => panic!(
            "{} passed; it should fail\n{}",
            def.steps[i].name,
            m.tail(40)
        ),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn failures_are_clear_and_no_qemu_is_left_behind() {
    let tmp = tempfile::Builder::new()
        .prefix("harness-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let root = tmp.path();
    let image = root.join("image");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/containerd-host.toml");
    common::ok(slipway(
        &shared_cache(),
        &[
            "build",
            recipe.to_str().unwrap(),
            "-o",
            image.to_str().unwrap(),
            "--format",
            "disk",
        ],
    ));

    // One boot, four failures: the VM keeps running after a failed step.
    let defs = root.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let def = Definition::parse(
        &defs.join("failures.toml"),
        r#"
image = "../image"
[[step]]
wait-for-unit = "does-not-exist.service"
[[step]]
succeed = ["systemctl", "--version"]
expect = "no such output"
[[step]]
wait-for-console-text = "this text never appears"
timeout = 3
[[step]]
read-file = "/proc/sys/kernel/osrelease"
expect-regex = 'cloud-amd64'
[[step]]
name = "trigger a kernel panic (sysrq c)"
succeed = ["systemd-run", "-p", "StandardOutput=file:/proc/sysrq-trigger", "/usr/bin/systemd-escape", "c"]
timeout = 60
[[step]]
sleep = 60
"#,
    )
    .unwrap();
    let work = root.join("vm");
    let cfg = root.join("config.toml");
    std::fs::write(&cfg, def.provisioning.as_deref().unwrap()).unwrap();
    let mut spec = VmSpec::new(&image.join("disk.raw"));
    spec.agent = true;
    spec.fw_cfg_config = Some(cfg);
    let mut m = Machine::new(
        spec,
        &work,
        root,
        def.agent,
        &def.expect_failure,
        Duration::from_secs(400),
        HashMap::new(),
    );
    m.start().unwrap();
    let e = err_of(&mut m, &def, 0);
    assert!(
        e.contains("unit does-not-exist.service does not exist (LoadState=not-found)"),
        "{e}"
    );
    let e = err_of(&mut m, &def, 1);
    assert!(
        e.contains("the output does not match \"no such output\"") && e.contains("stdout: systemd"),
        "{e}"
    );
    let e = err_of(&mut m, &def, 2);
    assert!(
        e.contains("timed out after 3 s; no console line matched /this text never appears/"),
        "{e}"
    );
    m.run(&def.steps[3]).unwrap();
    // systemd-run returns once the unit started; the panic follows at once (the step
    // itself may already see it).
    let e = match m.run(&def.steps[4]) {
        Ok(()) => err_of(&mut m, &def, 5),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("console shows kernel panic: ") && e.contains("sysrq triggered crash"),
        "{e}\n{}",
        m.tail(40)
    );
    drop(m);
    assert_eq!(qemu_under(&work), Vec::<String>::new(), "QEMU left running");

    // The real binary: a pass and a time-out, the summary, the exit code, JUnit.
    std::fs::write(
        defs.join("quick-pass.toml"),
        "description = \"the kernel starts\"\nimage = \"../image\"\n[[step]]\nwait-for-console-text = 'Linux version \\S+'\ntimeout = 120\n",
    )
    .unwrap();
    std::fs::write(
        defs.join("quick-timeout.toml"),
        "image = \"../image\"\n[[step]]\nwait-for-console-text = 'Linux version \\S+'\ntimeout = 120\n[[step]]\nwait-for-console-text = \"this text never appears\"\ntimeout = 3\n",
    )
    .unwrap();
    let out = root.join("out");
    let junit = root.join("junit.xml");
    let o = Command::new(bin())
        .args(["test", "--dir"])
        .arg(&defs)
        .arg("--output")
        .arg(&out)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    let text = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    for want in [
        "PASS quick-pass",
        "FAIL quick-timeout",
        "step[1] wait-for-console-text /this text never appears/: timed out after 3 s",
        "last 40 console lines:",
        "1 passed, 1 failed, 2 tests",
        "error: 1 of 2 tests failed",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
    assert!(out.join("quick-pass/vm/console.log").is_file());
    assert!(
        !out.join("quick-pass/vm/overlay.qcow2").exists(),
        "the overlay is removed without --keep"
    );
    assert_eq!(qemu_under(root), Vec::<String>::new(), "QEMU left running");
}
