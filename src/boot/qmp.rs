//! A minimal QMP (QEMU Machine Protocol) client: connects to the VM's monitor socket,
//! negotiates capabilities and runs one command. Used for hard resets
//! (`system_reset`), ACPI power-off (`system_powerdown`) and `quit`.
//! Protocol: <https://www.qemu.org/docs/master/interop/qmp-spec.html>.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Reads lines until one is a command reply (`return` or `error`), skipping events.
fn reply(r: &mut impl BufRead, what: &str) -> Result<serde_json::Value> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).context("reading from QMP")? == 0 {
            bail!("QMP closed the connection while waiting for the reply to {what}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))?;
        if let Some(e) = v.get("error") {
            bail!("QMP {what}: {e}");
        }
        if v.get("return").is_some() {
            return Ok(v);
        }
    }
}

/// Runs `command` (no arguments) on the QMP socket `sock`.
pub fn execute(sock: &Path, command: &str) -> Result<()> {
    let s = UnixStream::connect(sock)
        .with_context(|| format!("connecting to the QMP socket {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting)
        .context("reading the QMP greeting")?;
    if !greeting.contains("QMP") {
        bail!(
            "{} is not a QMP socket (it said {greeting:?})",
            sock.display()
        );
    }
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    reply(&mut r, "qmp_capabilities")?;
    w.write_all(
        serde_json::json!({ "execute": command })
            .to_string()
            .as_bytes(),
    )?;
    w.write_all(b"\n")?;
    match reply(&mut r, command) {
        Ok(_) => Ok(()),
        // `quit` may close the socket before replying.
        Err(_) if command == "quit" => Ok(()),
        Err(e) => Err(e),
    }
}
