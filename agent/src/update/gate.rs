//! The health gate's watchdog (`slipway-agent gate`, `slipway-update-gate.service`):
//! consumes systemd's view of the boot (the state of `boot-complete.target` and of the
//! whole system) and the `[update]` health time; produces a verdict, and a reboot when
//! the boot will not become healthy.
//!
//! Boot counting counts boots: a version that comes up unhealthy and stays up would
//! never use up its tries. So on a trial boot (systemd-boot booted an entry with a
//! `+N` counter: the unit's condition is `LoaderBootCountPath`), the node reboots when
//!
//! - the boot finished (no start-up jobs left: `is-system-running` is past `starting`)
//!   and `boot-complete.target` is not active: a unit of the gate failed, so it never
//!   will be; or
//! - `health-timeout` passed (default 10 minutes) without it.
//!
//! systemd-boot then counts the try; with none left the entry is "bad" and the previous
//! version boots. `boot-complete.target` requires `slipway-ready.target`
//! (rootfs/usr/lib/systemd/system/boot-complete.target.d/slipway.conf).

use std::time::{Duration, Instant};

/// The target a healthy boot reaches.
pub const GATE: &str = "boot-complete.target";

/// What the watchdog asks of systemd.
pub trait Systemd {
    /// The `ActiveState` of `unit` (`active`, `inactive`, `activating`, `failed`, ...).
    fn active_state(&mut self, unit: &str) -> Result<String, String>;
    /// `systemctl is-system-running`: `initializing`, `starting`, `running`,
    /// `degraded`, ...
    fn system_state(&mut self) -> Result<String, String>;
    /// Reboots.
    fn reboot(&mut self) -> Result<(), String>;
}

/// How a watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The gate was reached after this long.
    Healthy(Duration),
    /// The node is rebooting, and why.
    Rebooted(String),
}

/// Watches the boot until [`GATE`] is active, or reboots (see the module doc), polling
/// every `poll`.
pub fn watch(
    sd: &mut dyn Systemd,
    timeout: Duration,
    poll: Duration,
    say: &mut dyn FnMut(String),
) -> Result<Verdict, String> {
    let start = Instant::now();
    loop {
        if sd.active_state(GATE)? == "active" {
            return Ok(Verdict::Healthy(start.elapsed()));
        }
        let system = sd.system_state()?;
        let finished = !matches!(system.as_str(), "initializing" | "starting");
        let why = if finished && sd.active_state(GATE)? != "active" {
            format!("the boot finished (system {system}) without reaching {GATE}")
        } else if start.elapsed() >= timeout {
            format!("{GATE} was not reached in {} s", timeout.as_secs())
        } else {
            std::thread::sleep(poll);
            continue;
        };
        say(format!(
            "health gate: {why}; rebooting, so that boot counting falls back to the previous version"
        ));
        sd.reboot()?;
        return Ok(Verdict::Rebooted(why));
    }
}

/// The running system's systemd, through `systemctl`.
pub struct Live;

fn systemctl(args: &[&str]) -> Result<String, String> {
    let o = std::process::Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))?;
    // is-system-running exits non-zero for every state but "running"; its answer is
    // on stdout either way.
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

impl Systemd for Live {
    fn active_state(&mut self, unit: &str) -> Result<String, String> {
        systemctl(&["show", "--property=ActiveState", "--value", unit])
    }
    fn system_state(&mut self) -> Result<String, String> {
        systemctl(&["is-system-running"])
    }
    fn reboot(&mut self) -> Result<(), String> {
        let s = std::process::Command::new("systemctl")
            .args(["--check-inhibitors=no", "reboot"])
            .status()
            .map_err(|e| format!("systemctl reboot: {e}"))?;
        if s.success() {
            Ok(())
        } else {
            Err(format!("systemctl reboot: {s}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot told as a script: (gate state, system state) per poll.
    struct Script {
        steps: Vec<(&'static str, &'static str)>,
        at: usize,
        rebooted: bool,
    }

    impl Systemd for Script {
        fn active_state(&mut self, _: &str) -> Result<String, String> {
            Ok(self.steps[self.at.min(self.steps.len() - 1)].0.into())
        }
        fn system_state(&mut self) -> Result<String, String> {
            let s = self.steps[self.at.min(self.steps.len() - 1)].1;
            self.at += 1;
            Ok(s.into())
        }
        fn reboot(&mut self) -> Result<(), String> {
            self.rebooted = true;
            Ok(())
        }
    }

    fn run(steps: Vec<(&'static str, &'static str)>, timeout: Duration) -> (Verdict, bool) {
        let mut s = Script {
            steps,
            at: 0,
            rebooted: false,
        };
        let mut lines = Vec::new();
        let v = watch(&mut s, timeout, Duration::from_millis(1), &mut |l| {
            lines.push(l)
        })
        .unwrap();
        (v, s.rebooted)
    }

    #[test]
    fn a_healthy_boot_is_left_alone() {
        let long = Duration::from_secs(60);
        let steps = vec![
            ("inactive", "starting"),
            ("activating", "starting"),
            ("active", "running"),
        ];
        let (v, rebooted) = run(steps, long);
        assert!(matches!(v, Verdict::Healthy(_)), "{v:?}");
        assert!(!rebooted);
        // Reached while the system is degraded by an unrelated unit: still healthy.
        let (v, _) = run(vec![("active", "degraded")], long);
        assert!(matches!(v, Verdict::Healthy(_)), "{v:?}");
    }

    #[test]
    fn a_finished_boot_without_the_gate_reboots_at_once() {
        let steps = vec![("inactive", "starting"), ("inactive", "degraded")];
        let (v, rebooted) = run(steps, Duration::from_secs(60));
        assert!(rebooted);
        let Verdict::Rebooted(why) = v else {
            panic!("{v:?}")
        };
        assert!(why.contains("finished (system degraded)"), "{why}");
    }

    #[test]
    fn a_boot_that_never_finishes_reboots_at_the_timeout() {
        let (v, rebooted) = run(vec![("inactive", "starting")], Duration::from_millis(30));
        assert!(rebooted);
        let Verdict::Rebooted(why) = v else {
            panic!("{v:?}")
        };
        assert!(why.contains("was not reached in 0 s"), "{why}");
    }
}
