//! Messages and the failure path. Every failure is a [`Fail`] naming the step, the
//! device or file, and the error; it is printed as
//! `slipway-init: <step>: <subject>: <error>` on /dev/console and in the kernel log,
//! and then the machine halts. There is never a shell and never a reboot: a broken
//! image should stop where a human (or a test reading the serial console) can see why.

use nix::sys::reboot::{reboot, RebootMode};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

/// A failed boot step.
#[derive(Debug)]
pub struct Fail {
    /// The step, e.g. `mount-root`.
    pub step: &'static str,
    /// The device, partition or file the step worked on.
    pub subject: String,
    /// What went wrong.
    pub error: String,
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.step, self.subject, self.error)
    }
}

/// A step's result.
pub type Res<T> = Result<T, Fail>;

/// A [`Fail`] for `step` on `subject`.
pub fn fail(step: &'static str, subject: impl fmt::Display, error: impl fmt::Display) -> Fail {
    Fail {
        step,
        subject: subject.to_string(),
        error: error.to_string(),
    }
}

/// Attaches a step and subject to an error.
pub trait At<T> {
    /// Converts the error into a [`Fail`] of `step` on `subject`.
    fn at(self, step: &'static str, subject: impl fmt::Display) -> Res<T>;
}

impl<T, E: fmt::Display> At<T> for Result<T, E> {
    fn at(self, step: &'static str, subject: impl fmt::Display) -> Res<T> {
        self.map_err(|e| fail(step, subject, e))
    }
}

static CONSOLE: OnceLock<File> = OnceLock::new();

/// Opens /dev/console for messages (call once /dev is mounted). Until then, and if it
/// cannot be opened, messages go to the standard error the kernel gave us.
pub fn open() {
    if let Ok(f) = File::options().write(true).open("/dev/console") {
        let _ = CONSOLE.set(f);
    }
}

fn to_console(line: &str) {
    match CONSOLE.get() {
        Some(mut c) => {
            let _ = c.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

fn to_kmsg(level: u8, msg: &str) {
    if let Ok(mut k) = File::options().write(true).open("/dev/kmsg") {
        let _ = k.write_all(format!("<{level}>slipway-init: {msg}\n").as_bytes());
    }
}

/// A progress note for the kernel log (shown on the console unless `quiet`).
pub fn info(msg: &str) {
    to_kmsg(6, msg);
}

/// A milestone for the kernel log at notice level: on the console with the kernel's
/// default log level and with `loglevel=6`, which hides the `info` notes (the boot phases
/// `bench/boot.sh` times, and events a test waits for, such as growing /var).
pub fn mark(msg: &str) {
    to_kmsg(5, msg);
}

/// A note that must reach the console (waiting for a device).
pub fn notice(msg: &str) {
    to_console(&format!("slipway-init: {msg}\n"));
    to_kmsg(5, msg);
}

/// Prints the failure and halts.
pub fn fail_and_halt(f: &Fail) -> ! {
    let line = format!("{f}");
    to_console(&format!("slipway-init: {line}\n"));
    to_kmsg(3, &line);
    to_console("slipway-init: boot stopped; halting (no shell, no reboot)\n");
    halt()
}

/// Flushes the console and halts the machine; never returns and never reboots.
pub fn halt() -> ! {
    stop(RebootMode::RB_HALT_SYSTEM)
}

/// A line of the installer, always on the console: `slipway-install: <msg>`.
pub fn say(msg: &str) {
    to_console(&format!("slipway-install: {msg}\n"));
    to_kmsg(5, &format!("install: {msg}"));
}

/// Prints an installer failure and powers the machine off (an installer that cannot
/// finish stops; nothing more is written).
pub fn fail_and_power_off(f: &Fail) -> ! {
    let line = format!("{f}");
    to_console(&format!("slipway-init: {line}\n"));
    to_kmsg(3, &line);
    to_console("slipway-install: stopped; powering off\n");
    stop(RebootMode::RB_POWER_OFF)
}

/// Syncs, flushes the console and reboots, powers off or halts; never returns.
pub fn stop(mode: RebootMode) -> ! {
    nix::unistd::sync();
    if let Some(c) = CONSOLE.get() {
        let _ = nix::sys::termios::tcdrain(c);
    }
    // Serial consoles drain asynchronously; give the last line time to leave.
    std::thread::sleep(Duration::from_millis(500));
    let _ = reboot(mode);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
