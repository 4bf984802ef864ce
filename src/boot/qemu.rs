//! Booting a host image in QEMU: consumes a disk image (`disk.raw` or `disk.qcow2`) and
//! a [`VmSpec`]; produces a running [`Vm`] whose serial console is captured (or on the
//! terminal), with its QMP monitor and the test agent's virtio-serial port as Unix
//! sockets in the VM's work directory.
//!
//! The image is never written: the VM boots a qcow2 overlay backed by it, created once
//! per work directory, so a VM can be stopped and started again on the same overlay
//! (reboot tests) while the built image stays byte-for-byte what users get. UEFI
//! firmware is OVMF (`OVMF_CODE_4M.fd` read-only, a private copy of the variables).
//! User-mode networking always runs with `restrict=on`: the guest reaches only the
//! forwards listed, to services on the host's loopback.

use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The firmware code and variable template (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The variable store template copied into each work directory.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The virtio-serial port name of the test agent.
pub const AGENT_PORT: &str = "org.slipway.test";
/// The fw_cfg name the provisioning agent reads its config from.
pub const FW_CFG_CONFIG: &str = "opt/org.slipway/config";

/// How the guest's CPU is run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    /// Emulated (works everywhere; slow).
    Tcg,
    /// Hardware virtualisation (/dev/kvm); only when asked.
    Kvm,
}

/// A guest-side address forwarded to a TCP service on the host's loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestForward {
    /// The address the guest connects to (inside the user network's range).
    pub guest: Ipv4Addr,
    /// Its port.
    pub guest_port: u16,
    /// The port on 127.0.0.1 it reaches.
    pub host_port: u16,
}

/// A host loopback port forwarded into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostForward {
    /// Port on 127.0.0.1.
    pub host_port: u16,
    /// Port in the guest.
    pub guest_port: u16,
}

/// Everything about one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The image booted (through an overlay).
    pub disk: PathBuf,
    /// Grow the overlay to this size (the guest sees a bigger disk); None: as the image.
    pub disk_size: Option<u64>,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Accelerator.
    pub accel: Accel,
    /// A provisioning config passed through fw_cfg.
    pub fw_cfg_config: Option<PathBuf>,
    /// Extra raw drives (config drives, data disks), attached read-write as virtio.
    pub drives: Vec<PathBuf>,
    /// Guest -> host loopback forwards.
    pub guest_forwards: Vec<GuestForward>,
    /// Host loopback -> guest forwards.
    pub host_forwards: Vec<HostForward>,
    /// Whether the guest has a NIC at all.
    pub network: bool,
    /// The user network's address range (QEMU's `net=`, e.g. `169.254.169.0/24`);
    /// None: QEMU's 10.0.2.0/24. slirp forwards only addresses inside it, so a guest
    /// forward to the cloud metadata address 169.254.169.254 needs a range covering it.
    pub network_range: Option<String>,
    /// Attach the test agent's virtio-serial port.
    pub agent: bool,
    /// Exit instead of rebooting (a boot that stops shows it).
    pub no_reboot: bool,
}

impl VmSpec {
    /// The defaults the boot tests use: q35, 2 vCPUs, 2 GiB, TCG.
    pub fn new(disk: &Path) -> VmSpec {
        VmSpec {
            disk: disk.to_path_buf(),
            disk_size: None,
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Tcg,
            fw_cfg_config: None,
            drives: Vec::new(),
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
            network: true,
            network_range: None,
            agent: false,
            no_reboot: true,
        }
    }
}

/// Host programs a boot needs.
pub const TOOLS: &[&str] = &["qemu-system-x86_64", "qemu-img"];

/// Checks the host can boot images: QEMU, qemu-img and OVMF present.
pub fn check_host() -> Result<()> {
    crate::tool::require(TOOLS)?;
    for f in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(f).is_file() {
            bail!("{f} not found (Debian: ovmf)");
        }
    }
    Ok(())
}

/// The files of a VM's work directory.
pub struct WorkDir {
    /// The directory.
    pub dir: PathBuf,
}

impl WorkDir {
    /// The qcow2 overlay the VM writes to.
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("overlay.qcow2")
    }
    /// The UEFI variable store.
    pub fn vars(&self) -> PathBuf {
        self.dir.join("OVMF_VARS.fd")
    }
    /// The QMP socket.
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// The test agent's socket.
    pub fn agent(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
    /// The serial console log (appended across boots).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}

/// Creates the overlay and variable store in `dir` unless they exist (so a second
/// start continues on the same disk).
pub fn prepare(spec: &VmSpec, dir: &Path) -> Result<WorkDir> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let w = WorkDir {
        dir: dir.to_path_buf(),
    };
    if !w.vars().exists() {
        std::fs::copy(OVMF_VARS, w.vars())
            .with_context(|| format!("copying {OVMF_VARS} to {}", w.vars().display()))?;
    }
    if !w.overlay().exists() {
        let disk = std::fs::canonicalize(&spec.disk)
            .with_context(|| format!("the disk image {}", spec.disk.display()))?;
        let fmt = backing_format(&disk);
        let mut t = Tool::new("creating the copy-on-write overlay", "qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", fmt, "-b"])
            .arg(&disk)
            .arg(w.overlay());
        if let Some(size) = spec.disk_size {
            t = t.arg(size.to_string());
        }
        t.run()?;
    }
    Ok(w)
}

/// QEMU's format name for a disk image, by its extension: qcow2, VHD (`vpc`, which
/// QEMU does not probe for fixed disks), VMDK; anything else is raw.
pub fn backing_format(disk: &Path) -> &'static str {
    match disk.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        Some("vhd") => "vpc",
        Some("vmdk") => "vmdk",
        _ => "raw",
    }
}

/// The QEMU command line for `spec` in work directory `w`.
pub fn command(spec: &VmSpec, w: &WorkDir, interactive: bool) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let accel = match spec.accel {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    };
    c.args(["-accel", accel, "-machine", "q35", "-cpu", "max"])
        .args(["-m", &spec.memory_mib.to_string()])
        .args(["-smp", &spec.cpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", if interactive { "mon:stdio" } else { "stdio" }]);
    if spec.no_reboot {
        c.arg("-no-reboot");
    }
    c.arg("-drive").arg(format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
    ));
    c.arg("-drive").arg(format!(
        "if=pflash,format=raw,unit=1,file={}",
        w.vars().display()
    ));
    c.arg("-drive").arg(format!(
        "file={},format=qcow2,if=virtio,discard=unmap",
        w.overlay().display()
    ));
    for d in &spec.drives {
        c.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", d.display()));
    }
    if let Some(cfg) = &spec.fw_cfg_config {
        c.arg("-fw_cfg")
            .arg(format!("name={FW_CFG_CONFIG},file={}", cfg.display()));
    }
    if spec.network {
        let mut netdev = "user,id=n0,restrict=on".to_string();
        if let Some(range) = &spec.network_range {
            netdev.push_str(&format!(",net={range}"));
        }
        for f in &spec.guest_forwards {
            netdev.push_str(&format!(
                ",guestfwd=tcp:{}:{}-tcp:127.0.0.1:{}",
                f.guest, f.guest_port, f.host_port
            ));
        }
        for f in &spec.host_forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{}-:{}",
                f.host_port, f.guest_port
            ));
        }
        c.args(["-netdev", &netdev])
            .args(["-device", "virtio-net-pci,netdev=n0"]);
    }
    if spec.agent {
        c.args(["-device", "virtio-serial-pci,id=vser0"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent,path={},server=on,wait=off",
                w.agent().display()
            ))
            .arg("-device")
            .arg(format!(
                "virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT}"
            ));
    }
    c.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", w.qmp().display()));
    c
}

/// A running VM whose console is captured.
pub struct Vm {
    child: Child,
    /// Its work directory.
    pub work: WorkDir,
    console: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// When QEMU started.
    pub started: Instant,
}

impl Vm {
    /// Starts QEMU for `spec` in `dir` (overlay created if missing), capturing the
    /// serial console into memory and appending it to `console.log`.
    pub fn start(spec: &VmSpec, dir: &Path) -> Result<Vm> {
        check_host()?;
        let work = prepare(spec, dir)?;
        for s in [work.qmp(), work.agent()] {
            let _ = std::fs::remove_file(s);
        }
        let mut cmd = command(spec, &work, false);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (Debian: qemu-system-x86)")?;
        let console = Arc::new(Mutex::new(String::new()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work.console_log())
            .with_context(|| format!("opening {}", work.console_log().display()))?;
        let log = Arc::new(Mutex::new(log));
        let mut readers = Vec::new();
        let out: Box<dyn Read + Send> = match child.stdout.take() {
            Some(o) => Box::new(o),
            None => bail!("qemu's stdout is not captured"),
        };
        let err: Box<dyn Read + Send> = match child.stderr.take() {
            Some(e) => Box::new(e),
            None => bail!("qemu's stderr is not captured"),
        };
        for (mut r, prefix) in [(out, ""), (err, "qemu: ")] {
            let console = Arc::clone(&console);
            let log = Arc::clone(&log);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                    let text = if prefix.is_empty() {
                        text
                    } else {
                        text.lines().map(|l| format!("{prefix}{l}\n")).collect()
                    };
                    if let Ok(mut c) = console.lock() {
                        c.push_str(&text);
                    }
                    if let Ok(mut l) = log.lock() {
                        let _ = l.write_all(text.as_bytes());
                    }
                }
            }));
        }
        Ok(Vm {
            child,
            work,
            console,
            readers,
            started: Instant::now(),
        })
    }

    /// Everything the console printed since this start.
    pub fn console(&self) -> String {
        self.console.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether QEMU has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until `pred` holds for the console (checked every 100 ms), QEMU exits,
    /// or `timeout` passes. Returns the seconds since start when `pred` first held.
    pub fn wait_console(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<Option<f64>> {
        let end = Instant::now() + timeout;
        loop {
            if pred(&self.console()) {
                return Ok(Some(self.started.elapsed().as_secs_f64()));
            }
            if self.exited() {
                // Let the readers drain the last output.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(pred(&self.console()).then(|| self.started.elapsed().as_secs_f64()));
            }
            if Instant::now() > end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `timeout` for QEMU to exit by itself; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Sends one QMP command (`system_reset`, `system_powerdown`, `quit`, ...).
    pub fn qmp(&self, command: &str) -> Result<()> {
        crate::boot::qmp::execute(&self.work.qmp(), command)
    }

    /// Stops QEMU at once (like pulling the plug) and collects the console.
    pub fn kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.console()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs QEMU for `spec` with the console on the terminal (`slipway boot`); returns
/// QEMU's exit status. Ctrl-A X quits.
pub fn run_interactive(spec: &VmSpec, dir: &Path) -> Result<std::process::ExitStatus> {
    check_host()?;
    let work = prepare(spec, dir)?;
    let mut cmd = command(spec, &work, true);
    cmd.status()
        .context("running qemu-system-x86_64 (Debian: qemu-system-x86)")
}
