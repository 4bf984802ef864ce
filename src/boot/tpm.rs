//! A software TPM 2.0 beside a VM: consumes the VM's work directory, produces a running
//! `swtpm` whose control socket QEMU's `tpm-tis` device connects to. Its state lives in
//! `WORK/tpm/`, so a machine keeps its TPM across the harness's restarts; swtpm ends
//! when QEMU closes the socket (`--terminate`), or with the thread that started it.

use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running swtpm.
pub struct Swtpm {
    child: Child,
    /// The control socket QEMU connects to.
    pub socket: PathBuf,
}

impl Swtpm {
    /// Starts swtpm for the VM in `dir` and waits (up to 10 s) for its socket.
    pub fn start(dir: &Path) -> Result<Swtpm> {
        let state = dir.join("tpm");
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let socket = dir.join("tpm.sock");
        let _ = std::fs::remove_file(&socket);
        let log = dir.join("swtpm.log");
        let mut child = Tool::new("starting the software TPM", "swtpm")
            .args(["socket", "--tpm2", "--terminate", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--log")
            .arg(format!("file={}", log.display()))
            .spawn_bound(Stdio::null(), Stdio::null(), Stdio::null())?;
        let end = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                bail!(
                    "swtpm exited ({st}) before it listened; see {}",
                    log.display()
                );
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                bail!("swtpm did not create {} within 10 s", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Swtpm { child, socket })
    }

    /// QEMU's flags for a TPM 2.0 on the TIS interface backed by this swtpm.
    pub fn args(&self) -> Vec<String> {
        args(&self.socket)
    }
}

/// QEMU's flags for a `tpm-tis` device whose emulator listens on `socket`.
pub fn args(socket: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id=chrtpm,path={}", socket.display()),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=chrtpm".into(),
        "-device".into(),
        "tpm-tis,tpmdev=tpm0".into(),
    ]
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
