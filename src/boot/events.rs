//! Counting what the guest does to its own machine: consumes a QMP monitor socket that
//! QEMU serves for events only, produces the number of guest-initiated resets (reboots)
//! and power-offs. QEMU reports them as `RESET` and `SHUTDOWN` events with
//! `"guest": true` (<https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html>).
//! A separate monitor, so that [`super::qmp::execute`] can still connect to the main one.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the guest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Guest-initiated resets (a reboot, a reset through the firmware).
    pub reboots: u32,
    /// Guest-initiated power-offs.
    pub power_offs: u32,
}

/// A thread reading events from one VM.
pub struct Events {
    counts: Arc<Mutex<Counts>>,
}

impl Events {
    /// Connects to `sock` (waiting up to 10 s for QEMU to create it) and counts events
    /// until QEMU closes it.
    pub fn watch(sock: &Path) -> Result<Events> {
        let end = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() > end => {
                    return Err(e).with_context(|| {
                        format!("connecting to the QMP event socket {}", sock.display())
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut w = s.try_clone().context("cloning the QMP event socket")?;
        let mut r = BufReader::new(s);
        let mut greeting = String::new();
        r.read_line(&mut greeting)
            .context("reading the QMP greeting")?;
        if !greeting.contains("QMP") {
            bail!("{} is not a QMP socket", sock.display());
        }
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .context("negotiating QMP capabilities")?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let c = Arc::clone(&counts);
        std::thread::spawn(move || {
            let _keep = w;
            for line in r.lines() {
                let Ok(line) = line else { break };
                if let Some(kind) = guest_event(&line) {
                    if let Ok(mut c) = c.lock() {
                        match kind {
                            Kind::Reset => c.reboots += 1,
                            Kind::Shutdown => c.power_offs += 1,
                        }
                    }
                }
            }
        });
        Ok(Events { counts })
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }
}

enum Kind {
    Reset,
    Shutdown,
}

/// A guest-initiated RESET or SHUTDOWN event in one line of QMP.
fn guest_event(line: &str) -> Option<Kind> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["data"]["guest"] != serde_json::Value::Bool(true) {
        return None;
    }
    match v["event"].as_str()? {
        "RESET" => Some(Kind::Reset),
        // QEMU 7.2 reports a reset under -no-reboot as SHUTDOWN with reason guest-reset.
        "SHUTDOWN" if v["data"]["reason"] == "guest-reset" => Some(Kind::Reset),
        "SHUTDOWN" => Some(Kind::Shutdown),
        _ => None,
    }
}

/// QEMU's flags for the event monitor on `sock`.
pub fn args(sock: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=events,path={},server=on,wait=off",
            sock.display()
        ),
        "-mon".into(),
        "chardev=events,mode=control".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_guest_resets_and_power_offs_count() {
        let kind = |l: &str| match guest_event(l) {
            Some(Kind::Reset) => "reset",
            Some(Kind::Shutdown) => "shutdown",
            None => "-",
        };
        let e = |ev: &str, guest: bool, reason: &str| {
            format!(
                r#"{{"timestamp": {{"seconds": 1, "microseconds": 2}}, "event": "{ev}", "data": {{"guest": {guest}, "reason": "{reason}"}}}}"#
            )
        };
        assert_eq!(kind(&e("RESET", true, "guest-reset")), "reset");
        assert_eq!(kind(&e("RESET", false, "host-qmp-system-reset")), "-");
        assert_eq!(kind(&e("SHUTDOWN", true, "guest-shutdown")), "shutdown");
        assert_eq!(kind(&e("SHUTDOWN", true, "guest-reset")), "reset");
        assert_eq!(kind(&e("SHUTDOWN", false, "host-signal")), "-");
        assert_eq!(kind(r#"{"return": {}}"#), "-");
        assert_eq!(kind("not json"), "-");
    }
}
