//! Self-tests of the boot-test harness (`slipway test`, src/testing/): a wrong expected
//! output, a unit that does not exist, a time-out and a kernel panic each fail with a
//! clear message, and no QEMU process is left behind. kola-strict still catches trouble
//! on the boot-time-tuned image (its console runs at a lower kernel log level): a
//! segfaulting program, a failing unit and a module that fails to load each fail a step
//! with the watcher's verdict. The containerd-host image comes from the shared fixture
//! cache and boots once for all of these (the harness's `Machine` keeps the VM across
//! failed steps); then the real binary runs two short tests (a pass and a time-out,
//! neither waiting for a full boot) for the summary, the exit code and JUnit. Needs `make build` (the bundled slipway-init and slipway-agent), QEMU and OVMF
//! (scripts/setup-host.sh).

#![allow(clippy::unwrap_used)]

use crate::common;

use crate::common::{bin, qemu_under};
use slipway::boot::qemu::VmSpec;
use slipway::testing::definition::Definition;
use slipway::testing::steps::Machine;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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

/// Runs provocation `i` and, when the step itself passed (the trouble came after it
/// returned), the wait after it; returns the error that failed one of them.
fn provoked(m: &mut Machine, def: &Definition, i: usize) -> String {
    match m.run(&def.steps[i]) {
        Ok(()) => err_of(m, def, i + 1),
        Err(e) => format!("{e:#}"),
    }
}

/// Builds tests/files/segv.rs (a program that writes to address 0) as a static binary.
fn build_segv(out: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/files/segv.rs");
    common::run(
        Command::new("rustc")
            .args([
                "--edition",
                "2021",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(out)
            .arg(&src),
    );
}

/// One boot, seven failures: the VM keeps running after a failed step.
const FAILURES: &str = r#"
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
copy-in = { from = "segv", to = "/var/tmp/segv", mode = "0755" }
[[step]]
name = "a program segfaults"
succeed = ["systemd-run", "--unit=segv", "/var/tmp/segv"]
[[step]]
sleep = 15
[[step]]
name = "a unit fails"
succeed = ["systemd-run", "--unit=fails", "-p", "Type=oneshot", "/usr/bin/systemd-escape"]
[[step]]
sleep = 15
[[step]]
copy-in = { from = "bad-module.conf", to = "/etc/modules-load.d/slipway-bad.conf" }
[[step]]
name = "a module fails to load"
succeed = ["systemctl", "restart", "systemd-modules-load.service"]
[[step]]
sleep = 15
[[step]]
name = "trigger a kernel panic (sysrq c)"
succeed = ["systemd-run", "-p", "StandardOutput=file:/proc/sysrq-trigger", "/usr/bin/systemd-escape", "c"]
timeout = 60
[[step]]
sleep = 60
[[step]]
name = "let the rest of an event's lines pass"
sleep = 4
"#;

#[test]
fn failures_are_clear_and_no_qemu_is_left_behind() {
    let tmp = tempfile::Builder::new()
        .prefix("harness-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let root = tmp.path();
    let image = common::fixtures::host_image("containerd-host");
    std::os::unix::fs::symlink(&image, root.join("image")).unwrap();

    let defs = root.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    build_segv(&defs.join("segv"));
    std::fs::write(
        defs.join("bad-module.conf"),
        "# a module that does not exist: systemd-modules-load fails to load it\nslipway-no-such-module\n",
    )
    .unwrap();
    let def = Definition::parse(&defs.join("failures.toml"), FAILURES).unwrap();
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
    m.run(&def.steps[4]).unwrap();
    // Each provocation, then a wait the console fails: the first bad line decides the kind.
    for (setup, step, kind) in [
        (None, 5, "segfault"),
        (None, 7, "failed unit"),
        (Some(9), 10, "module load error"),
    ] {
        if let Some(i) = setup {
            m.run(&def.steps[i]).unwrap();
        }
        let e = provoked(&mut m, &def, step);
        assert!(
            e.contains(&format!("console shows {kind}: ")),
            "{} should fail as {kind}: {e}\n{}",
            def.steps[step].name,
            m.tail(40)
        );
        // Later lines of the same event (the unit's failure after a segfault, say) may
        // fail one more step; let them pass before the next provocation. (The waits end
        // as soon as the console shows trouble; this one is short.)
        let _ = m.run(&def.steps[14]);
    }
    // systemd-run returns once the unit started; the panic follows at once (the step
    // itself may already see it).
    let e = match m.run(&def.steps[12]) {
        Ok(()) => err_of(&mut m, &def, 13),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("console shows kernel panic: ") && e.contains("sysrq triggered crash"),
        "{e}\n{}",
        m.tail(40)
    );
    drop(m);
    assert_eq!(qemu_under(&work), Vec::<String>::new(), "QEMU left running");

    the_binary_reports_a_pass_and_a_time_out(root, &defs);
}

/// The real binary: a pass and a time-out, the summary, the exit code, JUnit.
fn the_binary_reports_a_pass_and_a_time_out(root: &Path, defs: &Path) {
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
        .arg(defs)
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
