//! Booting a host image in QEMU: consumes a disk image (`disk.raw` or `disk.qcow2`) and
//! a [`VmSpec`]; produces a running [`Vm`] whose serial console is captured (or on the
//! terminal), with its QMP monitor and the test agent's virtio-serial port as Unix
//! sockets in the VM's work directory.
//!
//! The image is never written: the VM boots a qcow2 overlay backed by it, created once
//! per work directory, so a VM can be stopped and started again on the same overlay
//! (reboot tests) while the built image stays byte-for-byte what users get. UEFI
//! firmware is OVMF (`OVMF_CODE_4M.fd` read-only, a private copy of the variables).
//! A spec with a [`DirectKernel`] boots that kernel and initramfs instead (QEMU's
//! `-kernel`, `-initrd`, `-append`; no OVMF), with the disk optional: the initramfs
//! and kernel-module tests, which have a kernel but no bootable disk. Everything else
//! (machine, CPU, console, overlay, QMP) is the same one command line.
//! User-mode networking always runs with `restrict=on`: the guest reaches only the
//! forwards listed, to services on the host's loopback, and slirp's own DHCP, DNS and
//! TFTP (the network boot's server).
//!
//! Around that command line: the firmware ([`super::firmware`]: OVMF, or its Secure Boot
//! build), extra drives on any bus ([`super::drives`]), a software TPM
//! ([`super::tpm`]), and, when the guest may reboot itself (no `-no-reboot`), a second
//! QMP monitor whose events count its reboots and power-offs ([`super::events`]).
//! QEMU and swtpm start through [`Tool::spawn_bound`], so they die with the thread that
//! started them, even when the process is killed.
//!
//! Two environment variables let a CI run count and serialise boots across every
//! process that boots (cargo tests, `slipway test`, `slipway boot`):
//! - `SLIPWAY_BOOT_LOG` ([`BOOT_LOG_ENV`]): each QEMU start ([`Vm::start`],
//!   [`run_interactive`]) appends one line `<unix time> <disk or kernel> <accel>` to
//!   this file (opened in append mode, one `write` per line, so processes do not
//!   interleave); the number of lines is the number of boots.
//! - `SLIPWAY_VM_LOCK` ([`VM_LOCK_ENV`]): before QEMU starts, the process takes an
//!   exclusive `flock(2)` on this file (created if missing) and holds it until the last
//!   of its VMs is dropped or killed, so VMs of different processes never run at once.
//!   VMs of one process share the process's lock (a test that starts the next boot
//!   before dropping the last does not deadlock). Do not point it at a file the
//!   process's parent already holds with `flock(1)`: the child would wait for itself.

pub use super::drives::{Disk, Interface};
use super::events::{Counts, Events};
pub use super::firmware::Firmware;
use super::tpm::Swtpm;
use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The firmware code and variable template (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The variable store template copied into each work directory.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The virtio-serial port name of the test agent.
pub const AGENT_PORT: &str = "org.slipway.test";
/// The fw_cfg name the provisioning agent reads its config from.
pub const FW_CFG_CONFIG: &str = "opt/org.slipway/config";
/// The file each QEMU start appends a line to (see the module documentation).
pub const BOOT_LOG_ENV: &str = "SLIPWAY_BOOT_LOG";
/// The file whose exclusive `flock` a process holds while its VMs run.
pub const VM_LOCK_ENV: &str = "SLIPWAY_VM_LOCK";

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    /// Emulated (works everywhere; slow).
    Tcg,
    /// Hardware virtualisation (/dev/kvm); only when asked.
    Kvm,
}

impl Accel {
    /// QEMU's name for it (`-accel`).
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

impl Accel {
    /// Every accelerator, in the order `--help` lists them.
    pub const ALL: [Accel; 2] = [Accel::Tcg, Accel::Kvm];
}

impl std::str::FromStr for Accel {
    type Err = anyhow::Error;

    /// An [`Accel::name`] (`--accel`).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Accel::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| anyhow::anyhow!("{s:?} is not an accelerator (expected tcg or kvm)"))
    }
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

/// A guest-side address whose every connection QEMU relays to a host TCP service on a
/// connection of its own (a `guestfwd` to `cmd:socat`, one process per connection).
/// Unlike a [`GuestForward`], which QEMU carries over one host connection opened at
/// start, this serves concurrent clients and real services (a registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyForward {
    /// The address the guest connects to (inside the user network's range).
    pub guest: Ipv4Addr,
    /// Its port.
    pub guest_port: u16,
    /// The host service (on loopback).
    pub host: SocketAddrV4,
}

/// Network boot through slirp's TFTP server: DHCP names `bootfile`, served from `tftp`.
/// Who fetches it is [`VmSpec::nic_boot`]: the NIC's iPXE (ipxe-qemu's option ROM;
/// scripts or EFI programs), or OVMF's own UEFI PXE client (EFI programs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netboot {
    /// The directory served (read-only) by TFTP.
    pub tftp: PathBuf,
    /// The file DHCP offers (relative to `tftp`), e.g. an EFI program or iPXE.
    pub bootfile: String,
}

/// The device the firmware boots first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFrom {
    /// The extra drive with this index in [`VmSpec::disks`].
    Disk(usize),
    /// The first drive, then the second: a blank target disk before an installer's
    /// medium boots the medium until the target holds a system, then the target.
    DiskThen(usize, usize),
    /// The NIC (PXE through OVMF).
    Network,
}

/// What drives the NIC under UEFI, and so which client a network boot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NicBoot {
    /// The NIC's option ROM, iPXE (QEMU's default; Debian's ipxe-qemu, 2019): runs iPXE
    /// scripts (`#!ipxe`) and EFI programs.
    #[default]
    Ipxe,
    /// OVMF's own virtio-net driver and UEFI PXE client (the NIC has no option ROM,
    /// `romfile=`): DHCP, then TFTP of the boot file, which must be an EFI program.
    Ovmf,
}

/// A host loopback port forwarded into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostForward {
    /// Port on 127.0.0.1.
    pub host_port: u16,
    /// Port in the guest.
    pub guest_port: u16,
}

/// A kernel QEMU loads itself (`-kernel`, `-initrd`, `-append`), in place of OVMF
/// starting the UKI on the disk's ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectKernel {
    /// The kernel image (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (a newc cpio, compressed or not).
    pub initrd: Option<PathBuf>,
    /// The kernel command line. The console is the first serial port, so it
    /// usually starts with `console=ttyS0`.
    pub cmdline: String,
}

/// Everything about one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The image booted (through an overlay). Empty (`PathBuf::new()`, as
    /// [`VmSpec::direct`] leaves it): no disk, which only a [`DirectKernel`] boot allows.
    pub disk: PathBuf,
    /// Grow the overlay to this size (the guest sees a bigger disk); None: as the image.
    pub disk_size: Option<u64>,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Accelerator.
    pub accel: Accel,
    /// Boot this kernel and initramfs directly (no OVMF); None: UEFI from the disk.
    pub kernel: Option<DirectKernel>,
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
    /// SMBIOS strings, each one `-smbios VALUE` (e.g.
    /// `type=1,manufacturer=Amazon EC2,product=t3.medium`): what the guest reads as its
    /// DMI identity, as a cloud's firmware sets it.
    pub smbios: Vec<String>,
    /// The UEFI firmware (ignored by a direct-kernel boot).
    pub firmware: Firmware,
    /// The variable store a new work directory starts from; None: the firmware's own.
    pub vars: Option<PathBuf>,
    /// Extra drives with a bus, serial and sector sizes, after [`VmSpec::drives`].
    pub disks: Vec<Disk>,
    /// What the firmware boots first; None: its own order.
    pub boot_from: Option<BootFrom>,
    /// A software TPM 2.0 (swtpm) beside the VM.
    pub tpm: bool,
    /// Network boot (needs [`VmSpec::network`]).
    pub netboot: Option<Netboot>,
    /// What drives the NIC under UEFI (the network boot's client).
    pub nic_boot: NicBoot,
    /// Guest addresses relayed connection by connection to host services.
    pub proxy_forwards: Vec<ProxyForward>,
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
            kernel: None,
            fw_cfg_config: None,
            drives: Vec::new(),
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
            network: true,
            network_range: None,
            agent: false,
            no_reboot: true,
            smbios: Vec::new(),
            firmware: Firmware::Uefi,
            vars: None,
            disks: Vec::new(),
            boot_from: None,
            tpm: false,
            netboot: None,
            nic_boot: NicBoot::Ipxe,
            proxy_forwards: Vec::new(),
        }
    }

    /// A direct-kernel boot with the defaults of [`VmSpec::new`] and no disk (set
    /// [`VmSpec::disk`] to boot with one, as `/dev/vda`).
    pub fn direct(kernel: DirectKernel) -> VmSpec {
        VmSpec {
            kernel: Some(kernel),
            ..VmSpec::new(Path::new(""))
        }
    }

    /// Whether a disk is attached (through the overlay).
    pub fn has_disk(&self) -> bool {
        !self.disk.as_os_str().is_empty()
    }

    /// What boots: the kernel of a direct boot, else the disk, else the first extra
    /// drive, else the network boot's file (the boot log's field).
    pub fn boots(&self) -> PathBuf {
        match (&self.kernel, &self.netboot) {
            (Some(k), _) => k.kernel.clone(),
            _ if self.has_disk() => self.disk.clone(),
            (None, Some(n))
                if self.boot_from == Some(BootFrom::Network) || self.disks.is_empty() =>
            {
                n.tftp.join(&n.bootfile)
            }
            _ => self
                .disks
                .first()
                .map(|d| d.file.clone())
                .unwrap_or_default(),
        }
    }
}

/// Host programs a boot needs.
pub const TOOLS: &[&str] = &["qemu-system-x86_64", "qemu-img"];
/// The program a [`ProxyForward`] relays each connection with.
pub const RELAY: &str = "socat";

/// Checks the host can boot images: QEMU, qemu-img and OVMF present.
pub fn check_host() -> Result<()> {
    crate::tool::require(TOOLS)?;
    check_ovmf()
}

fn check_ovmf() -> Result<()> {
    for f in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(f).is_file() {
            bail!("{f} not found (Debian: ovmf)");
        }
    }
    Ok(())
}

/// Checks what `spec` needs: QEMU, qemu-img for a disk, OVMF for a UEFI boot, and the
/// kernel and initramfs files of a direct boot.
pub fn check_spec(spec: &VmSpec) -> Result<()> {
    crate::tool::require(&TOOLS[..1])?;
    if spec.has_disk() {
        crate::tool::require(&TOOLS[1..])?;
    }
    match &spec.kernel {
        None if !spec.has_disk() && spec.disks.is_empty() && spec.netboot.is_none() => {
            bail!("a VM needs a disk, a drive, a network boot or a kernel to boot")
        }
        None => super::firmware::check(spec.firmware, spec.vars.as_deref())?,
        Some(k) => {
            for f in std::iter::once(&k.kernel).chain(&k.initrd) {
                if !f.is_file() {
                    bail!(
                        "{}: not a file (the direct-kernel boot's kernel or initramfs)",
                        f.display()
                    );
                }
            }
        }
    }
    if spec.disk_size.is_some() && !spec.has_disk() {
        bail!("disk_size is set but the VM has no disk");
    }
    check_extras(spec)
}

/// Checks the drives, network boot, proxies and TPM of `spec`.
fn check_extras(spec: &VmSpec) -> Result<()> {
    for d in &spec.disks {
        if !d.file.is_file() {
            bail!("{}: not a file (a drive of the VM)", d.file.display());
        }
    }
    for i in boot_order(spec) {
        if i >= spec.disks.len() {
            bail!(
                "boot from drive {i}, but the VM has {} drives",
                spec.disks.len()
            );
        }
    }
    if (spec.netboot.is_some()
        || !spec.proxy_forwards.is_empty()
        || spec.boot_from == Some(BootFrom::Network))
        && !spec.network
    {
        bail!("a network boot or a proxy forward needs the VM's network");
    }
    if let Some(n) = &spec.netboot {
        let p = n.tftp.display().to_string();
        if p.contains(',') || n.bootfile.contains(',') {
            bail!("{p}: a network boot's directory and file may not contain a comma (QEMU's option syntax)");
        }
        if !n.tftp.join(&n.bootfile).is_file() {
            bail!(
                "{}: the network boot's file is missing",
                n.tftp.join(&n.bootfile).display()
            );
        }
    }
    if !spec.proxy_forwards.is_empty() {
        crate::tool::require(&[RELAY])?;
    }
    if spec.tpm {
        crate::tool::require(&["swtpm"])?;
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
    /// The QMP socket that only reports events (when the guest may reboot itself).
    pub fn events(&self) -> PathBuf {
        self.dir.join("events.sock")
    }
}

/// Creates the overlay and variable store in `dir` unless they exist (so a second
/// start continues on the same disk). A direct-kernel boot has no variable store, and
/// a VM without a disk no overlay.
pub fn prepare(spec: &VmSpec, dir: &Path) -> Result<WorkDir> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let w = WorkDir {
        dir: dir.to_path_buf(),
    };
    if spec.kernel.is_none() && !w.vars().exists() {
        let from = super::firmware::vars_template(spec.firmware, spec.vars.as_deref());
        std::fs::copy(&from, w.vars())
            .with_context(|| format!("copying {} to {}", from.display(), w.vars().display()))?;
    }
    if spec.has_disk() && !w.overlay().exists() {
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

/// The QEMU command line for `spec` in work directory `w`; `tpm` is the running
/// swtpm's socket when the spec asks for a TPM.
pub fn command(spec: &VmSpec, w: &WorkDir, interactive: bool, tpm: Option<&Path>) -> Tool {
    let machine = match spec.kernel {
        None => spec.firmware.machine(),
        Some(_) => "q35",
    };
    let mut c = Tool::new("running the VM", "qemu-system-x86_64")
        .args([
            "-accel",
            spec.accel.name(),
            "-machine",
            machine,
            "-cpu",
            "max",
        ])
        .args(["-m", &spec.memory_mib.to_string()])
        .args(["-smp", &spec.cpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", if interactive { "mon:stdio" } else { "stdio" }]);
    if spec.no_reboot {
        c = c.arg("-no-reboot");
    } else {
        c = c.args(super::events::args(&w.events()));
    }
    c = match &spec.kernel {
        None => c
            .args(spec.firmware.flags())
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                spec.firmware.code()
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                w.vars().display()
            )),
        Some(k) => {
            c = c.arg("-kernel").arg(&k.kernel);
            if let Some(initrd) = &k.initrd {
                c = c.arg("-initrd").arg(initrd);
            }
            c.args(["-append", &k.cmdline])
        }
    };
    if spec.has_disk() {
        c = c.arg("-drive").arg(format!(
            "file={},format=qcow2,if=virtio,discard=unmap",
            w.overlay().display()
        ));
    }
    for d in &spec.drives {
        c = c
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", d.display()));
    }
    c = c.args(super::drives::args(&spec.disks, &boot_order(spec)));
    for v in &spec.smbios {
        c = c.arg("-smbios").arg(v);
    }
    if let Some(cfg) = &spec.fw_cfg_config {
        c = c
            .arg("-fw_cfg")
            .arg(format!("name={FW_CFG_CONFIG},file={}", cfg.display()));
    }
    if spec.network {
        let boot = if spec.boot_from == Some(BootFrom::Network) {
            ",bootindex=0"
        } else {
            ""
        };
        let rom = match spec.nic_boot {
            NicBoot::Ipxe => "",
            NicBoot::Ovmf => ",romfile=",
        };
        c = c
            .args(["-netdev", &netdev(spec)])
            .args(["-device", &format!("virtio-net-pci,netdev=n0{rom}{boot}")]);
    }
    if let Some(sock) = tpm {
        c = c.args(super::tpm::args(sock));
    }
    if spec.agent {
        c = c
            .args(["-device", "virtio-serial-pci,id=vser0"])
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
        .arg(format!("unix:{},server=on,wait=off", w.qmp().display()))
}

/// The extra drives the firmware boots, in order.
fn boot_order(spec: &VmSpec) -> Vec<usize> {
    match spec.boot_from {
        Some(BootFrom::Disk(i)) => vec![i],
        Some(BootFrom::DiskThen(i, j)) => vec![i, j],
        _ => Vec::new(),
    }
}

/// The user network: restricted, with the spec's range, forwards and network boot.
/// slirp's TFTP server and DHCP boot file still answer under `restrict=on` (they are
/// slirp itself, not the host's network), so a network boot needs no exception.
fn netdev(spec: &VmSpec) -> String {
    let mut netdev = "user,id=n0,restrict=on".to_string();
    if let Some(range) = &spec.network_range {
        netdev.push_str(&format!(",net={range}"));
    }
    if let Some(n) = &spec.netboot {
        netdev.push_str(&format!(
            ",tftp={},bootfile={}",
            n.tftp.display(),
            n.bootfile
        ));
    }
    for f in &spec.guest_forwards {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{}:{}-tcp:127.0.0.1:{}",
            f.guest, f.guest_port, f.host_port
        ));
    }
    for f in &spec.proxy_forwards {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{}:{}-cmd:{RELAY} STDIO TCP:{}",
            f.guest, f.guest_port, f.host
        ));
    }
    for f in &spec.host_forwards {
        netdev.push_str(&format!(
            ",hostfwd=tcp:127.0.0.1:{}-:{}",
            f.host_port, f.guest_port
        ));
    }
    netdev
}

/// Appends the boot-log line for a start of `spec` to `log` (see the module docs).
fn record_boot(log: &Path, spec: &VmSpec) -> Result<()> {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let line = format!("{secs} {} {}\n", spec.boots().display(), spec.accel.name());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the boot log {} (${BOOT_LOG_ENV})", log.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("appending to the boot log {}", log.display()))
}

/// Counts a start of `spec` in `$SLIPWAY_BOOT_LOG`, when set.
fn count_boot(spec: &VmSpec) -> Result<()> {
    match std::env::var_os(BOOT_LOG_ENV) {
        Some(log) => record_boot(Path::new(&log), spec),
        None => Ok(()),
    }
}

/// Opens `path` (creating it if missing) and waits for an exclusive flock on it,
/// saying so on stderr when another process holds it.
fn flock_exclusive(path: &Path) -> Result<Flock<File>> {
    let file = match File::open(path) {
        Ok(f) => f,
        // Opened read-only when it exists: flock needs no write access, and O_CREAT on
        // another user's file in /tmp fails under fs.protected_regular.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("creating the VM lock {}", path.display()))?,
        Err(e) => return Err(e).with_context(|| format!("opening the VM lock {}", path.display())),
    };
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Ok(l),
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => f,
        Err((_, e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    };
    eprintln!(
        "waiting for the VM lock {} (${VM_LOCK_ENV}): another process runs a VM",
        path.display()
    );
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

/// The VM lock as one process holds it: taken by the process's first running VM and
/// released with its last.
struct LockState {
    held: Option<Flock<File>>,
    users: usize,
}

impl LockState {
    fn acquire(&mut self, path: &Path) -> Result<()> {
        if self.users == 0 {
            self.held = Some(flock_exclusive(path)?);
        }
        self.users += 1;
        Ok(())
    }

    fn release(&mut self) {
        self.users = self.users.saturating_sub(1);
        if self.users == 0 {
            self.held = None;
        }
    }
}

static VM_LOCK: Mutex<LockState> = Mutex::new(LockState {
    held: None,
    users: 0,
});

fn vm_lock_state() -> MutexGuard<'static, LockState> {
    // The state stays consistent even if a holder panicked: a count and a file.
    VM_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One VM's share of the process's VM lock (`$SLIPWAY_VM_LOCK`).
struct VmLockShare;

impl VmLockShare {
    /// Takes a share when `$SLIPWAY_VM_LOCK` is set (waiting for other processes).
    fn take() -> Result<Option<VmLockShare>> {
        let Some(path) = std::env::var_os(VM_LOCK_ENV) else {
            return Ok(None);
        };
        vm_lock_state().acquire(Path::new(&path))?;
        Ok(Some(VmLockShare))
    }
}

impl Drop for VmLockShare {
    fn drop(&mut self) {
        vm_lock_state().release();
    }
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
    /// The guest's own reboots and power-offs (when it may reboot itself).
    events: Option<Events>,
    /// Dropped after `child` is reaped (fields drop after [`Drop::drop`]).
    tpm: Option<Swtpm>,
    /// Dropped after `child` is reaped (fields drop after [`Drop::drop`]).
    lock: Option<VmLockShare>,
}

/// Copies QEMU's output (stdout, then stderr lines prefixed `qemu: `) into `console`
/// and the log file, carriage returns removed.
fn capture(
    mut r: Box<dyn Read + Send>,
    prefix: &'static str,
    console: Arc<Mutex<String>>,
    log: Arc<Mutex<File>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
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
    })
}

impl Vm {
    /// Starts QEMU for `spec` in `dir` (overlay created if missing), capturing the
    /// serial console into memory and appending it to `console.log`. Waits for the VM
    /// lock and counts the boot first (see the module documentation).
    pub fn start(spec: &VmSpec, dir: &Path) -> Result<Vm> {
        check_spec(spec)?;
        let work = prepare(spec, dir)?;
        for s in [work.qmp(), work.agent(), work.events()] {
            let _ = std::fs::remove_file(s);
        }
        let lock = VmLockShare::take()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work.console_log())
            .with_context(|| format!("opening {}", work.console_log().display()))?;
        let tpm = spec.tpm.then(|| Swtpm::start(&work.dir)).transpose()?;
        let mut child = command(spec, &work, false, tpm.as_ref().map(|t| t.socket.as_path()))
            .spawn_bound(Stdio::null(), Stdio::piped(), Stdio::piped())?;
        let started = Instant::now();
        let console = Arc::new(Mutex::new(String::new()));
        let log = Arc::new(Mutex::new(log));
        let out = child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>);
        let mut readers = Vec::new();
        for (pipe, prefix) in [(out, ""), (err, "qemu: ")] {
            if let Some(pipe) = pipe {
                readers.push(capture(
                    pipe,
                    prefix,
                    Arc::clone(&console),
                    Arc::clone(&log),
                ));
            }
        }
        let mut vm = Vm {
            child,
            work,
            console,
            readers,
            started,
            events: None,
            tpm,
            lock,
        };
        // After the spawn: a QEMU that did not start is not a boot. On an error here
        // the Vm is dropped, which stops QEMU.
        count_boot(spec)?;
        if !spec.no_reboot {
            vm.events = Some(Events::watch(&vm.work.events())?);
        }
        Ok(vm)
    }

    /// The guest's own reboots and power-offs since this start (counted only when the
    /// spec lets it reboot itself, i.e. without `no_reboot`).
    pub fn guest_events(&self) -> Counts {
        self.events.as_ref().map(Events::counts).unwrap_or_default()
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

    /// Stops QEMU at once (like pulling the plug), releases the VM lock, and
    /// collects the console.
    pub fn kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.tpm = None;
        self.lock = None;
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
/// QEMU's exit status. Ctrl-A X quits. Holds the VM lock and counts the boot like
/// [`Vm::start`].
pub fn run_interactive(spec: &VmSpec, dir: &Path) -> Result<std::process::ExitStatus> {
    check_spec(spec)?;
    let work = prepare(spec, dir)?;
    let _lock = VmLockShare::take()?;
    let tpm = spec.tpm.then(|| Swtpm::start(&work.dir)).transpose()?;
    let mut child = command(spec, &work, true, tpm.as_ref().map(|t| t.socket.as_path()))
        .spawn_bound(Stdio::inherit(), Stdio::inherit(), Stdio::inherit())?;
    if let Err(e) = count_boot(spec) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    child.wait().context("waiting for qemu-system-x86_64")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Tool) -> Vec<String> {
        c.argv()
    }

    /// The value after each occurrence of `flag`.
    fn values<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn work() -> WorkDir {
        WorkDir {
            dir: PathBuf::from("/w"),
        }
    }

    #[test]
    fn backing_format_follows_the_extension() {
        for (file, fmt) in [
            ("out/disk.qcow2", "qcow2"),
            ("out/disk.vhd", "vpc"),
            ("out/disk.vmdk", "vmdk"),
            ("out/disk.raw", "raw"),
            ("out/disk.img", "raw"),
            ("disk", "raw"),
            ("out/disk.QCOW2", "raw"),
        ] {
            assert_eq!(backing_format(Path::new(file)), fmt, "{file}");
        }
    }

    #[test]
    fn a_direct_kernel_boot_has_no_firmware_and_an_optional_disk() {
        let k = DirectKernel {
            kernel: PathBuf::from("/k/vmlinuz"),
            initrd: Some(PathBuf::from("/k/initrd.zst")),
            cmdline: "console=ttyS0 roothash=ab".into(),
        };
        let mut spec = VmSpec::direct(k.clone());
        spec.network = false;
        spec.memory_mib = 1024;
        spec.cpus = 1;
        assert!(!spec.has_disk());
        assert_eq!(spec.boots(), Path::new("/k/vmlinuz"));
        let a = args(&command(&spec, &work(), false, None));
        assert_eq!(values(&a, "-kernel"), ["/k/vmlinuz"]);
        assert_eq!(values(&a, "-initrd"), ["/k/initrd.zst"]);
        assert_eq!(values(&a, "-append"), ["console=ttyS0 roothash=ab"]);
        assert_eq!(values(&a, "-machine"), ["q35"]);
        assert_eq!(values(&a, "-m"), ["1024"]);
        assert_eq!(values(&a, "-smp"), ["1"]);
        assert_eq!(values(&a, "-serial"), ["stdio"]);
        assert!(a.iter().any(|x| x == "-no-reboot"), "{a:?}");
        assert!(
            values(&a, "-drive").is_empty(),
            "no firmware, no disk: {a:?}"
        );
        assert!(values(&a, "-netdev").is_empty(), "{a:?}");
        assert_eq!(values(&a, "-qmp"), ["unix:/w/qmp.sock,server=on,wait=off"]);

        // With a disk: the overlay, and still no pflash; no initrd: no -initrd.
        spec.disk = PathBuf::from("/img/disk.raw");
        spec.kernel = Some(DirectKernel { initrd: None, ..k });
        let a = args(&command(&spec, &work(), false, None));
        assert_eq!(
            values(&a, "-drive"),
            ["file=/w/overlay.qcow2,format=qcow2,if=virtio,discard=unmap"]
        );
        assert!(values(&a, "-initrd").is_empty(), "{a:?}");
        assert_eq!(spec.boots(), Path::new("/k/vmlinuz"));
    }

    #[test]
    fn a_uefi_boot_has_ovmf_and_no_kernel() {
        let spec = VmSpec::new(Path::new("/img/disk.vhd"));
        let a = args(&command(&spec, &work(), false, None));
        let drives = values(&a, "-drive");
        assert_eq!(drives.len(), 3, "{drives:?}");
        assert!(drives[0].starts_with("if=pflash,") && drives[0].contains(OVMF_CODE));
        assert_eq!(
            drives[1],
            "if=pflash,format=raw,unit=1,file=/w/OVMF_VARS.fd"
        );
        assert!(drives[2].starts_with("file=/w/overlay.qcow2,format=qcow2"));
        for flag in ["-kernel", "-initrd", "-append"] {
            assert!(!a.iter().any(|x| x == flag), "{flag} in {a:?}");
        }
        assert_eq!(values(&a, "-netdev"), ["user,id=n0,restrict=on"]);
        assert_eq!(spec.boots(), Path::new("/img/disk.vhd"));
        assert!(values(&a, "-smbios").is_empty(), "{a:?}");
    }

    /// Secure firmware, no NIC: SMM, a secure pflash, the secboot code, the snakeoil
    /// variables; drives after the image; a guest that may reboot gets the event monitor.
    #[test]
    fn secure_firmware_drives_tpm_and_reboots_on_the_command_line() {
        let mut spec = VmSpec::new(Path::new(""));
        spec.firmware = Firmware::UefiSecure;
        spec.network = false;
        spec.no_reboot = false;
        spec.disks = vec![Disk::virtio(PathBuf::from("/d/esp.img"))];
        spec.boot_from = Some(BootFrom::Disk(0));
        let a = args(&command(
            &spec,
            &work(),
            false,
            Some(Path::new("/w/tpm.sock")),
        ));
        assert_eq!(values(&a, "-machine"), ["q35,smm=on"]);
        assert_eq!(
            values(&a, "-global"),
            ["driver=cfi.pflash01,property=secure,value=on"]
        );
        let drives = values(&a, "-drive");
        assert!(
            drives[0].ends_with("file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
            "{drives:?}"
        );
        assert_eq!(drives[2], "file=/d/esp.img,format=raw,if=none,id=xd0");
        assert!(values(&a, "-device").contains(&"virtio-blk-pci,drive=xd0,bootindex=0"));
        assert!(values(&a, "-device").contains(&"tpm-tis,tpmdev=tpm0"));
        assert_eq!(values(&a, "-tpmdev"), ["emulator,id=tpm0,chardev=chrtpm"]);
        assert!(
            !a.iter().any(|x| x == "-no-reboot" || x == "-netdev"),
            "{a:?}"
        );
        assert_eq!(values(&a, "-mon"), ["chardev=events,mode=control"]);
        assert_eq!(spec.boots(), PathBuf::from("/d/esp.img"));
        assert_eq!(
            super::super::firmware::vars_template(spec.firmware, None),
            PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd")
        );
    }

    /// A network boot keeps restrict=on; a proxy forward runs socat per connection.
    #[test]
    fn netboot_and_proxy_forwards_in_the_netdev() {
        let mut spec = VmSpec::new(Path::new("/img/disk.raw"));
        spec.netboot = Some(Netboot {
            tftp: PathBuf::from("/t"),
            bootfile: "boot.ipxe".into(),
        });
        spec.proxy_forwards = vec![ProxyForward {
            guest: Ipv4Addr::new(10, 0, 2, 101),
            guest_port: 5000,
            host: "127.0.0.1:5001".parse().unwrap(),
        }];
        spec.boot_from = Some(BootFrom::Network);
        let a = args(&command(&spec, &work(), false, None));
        assert_eq!(
            values(&a, "-netdev"),
            ["user,id=n0,restrict=on,tftp=/t,bootfile=boot.ipxe,guestfwd=tcp:10.0.2.101:5000-cmd:socat STDIO TCP:127.0.0.1:5001"]
        );
        assert_eq!(
            values(&a, "-device"),
            ["virtio-net-pci,netdev=n0,bootindex=0"]
        );
        // OVMF's own PXE client: the NIC without its iPXE option ROM.
        spec.nic_boot = NicBoot::Ovmf;
        let a = args(&command(&spec, &work(), false, None));
        assert_eq!(
            values(&a, "-device"),
            ["virtio-net-pci,netdev=n0,romfile=,bootindex=0"]
        );
        spec.network = false;
        let e = check_extras(&spec).unwrap_err();
        assert!(format!("{e}").contains("needs the VM's network"), "{e}");
    }

    #[test]
    fn smbios_strings_become_one_flag_each() {
        let mut spec = VmSpec::new(Path::new("/img/disk.raw"));
        spec.smbios = vec![
            "type=1,manufacturer=Amazon EC2".into(),
            "type=3,asset=x".into(),
        ];
        let a = args(&command(&spec, &work(), false, None));
        assert_eq!(
            values(&a, "-smbios"),
            ["type=1,manufacturer=Amazon EC2", "type=3,asset=x"]
        );
    }

    #[test]
    fn a_spec_needs_a_disk_or_a_kernel() {
        let e = check_spec(&VmSpec::new(Path::new(""))).unwrap_err();
        assert!(format!("{e}").contains("needs a disk, a drive"), "{e}");
        let spec = VmSpec::direct(DirectKernel {
            kernel: PathBuf::from("/nonexistent/vmlinuz"),
            initrd: None,
            cmdline: String::new(),
        });
        let e = check_spec(&spec).unwrap_err();
        assert!(format!("{e}").contains("/nonexistent/vmlinuz"), "{e}");
    }

    #[test]
    fn each_start_appends_one_line_to_the_boot_log() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("boots.log");
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        record_boot(&log, &VmSpec::new(Path::new("/img/disk.raw"))).unwrap();
        let mut k = VmSpec::direct(DirectKernel {
            kernel: PathBuf::from("/k/vmlinuz"),
            initrd: None,
            cmdline: String::new(),
        });
        k.accel = Accel::Kvm;
        record_boot(&log, &k).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in &lines {
            let t: u64 = l[0].parse().unwrap();
            assert!(t >= before && t < before + 60, "{text}");
        }
        assert_eq!(lines[0][1..], ["/img/disk.raw", "tcg"]);
        assert_eq!(lines[1][1..], ["/k/vmlinuz", "kvm"]);
    }

    #[test]
    fn the_vm_lock_is_held_while_any_vm_of_the_process_runs() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm.lock");
        // Another open file description, as another process would have.
        let other_can_lock = || {
            let f = File::open(&path).unwrap();
            Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
        };
        let mut s = LockState {
            held: None,
            users: 0,
        };
        s.acquire(&path).unwrap();
        assert!(path.exists(), "the lock file is created");
        assert!(!other_can_lock());
        s.acquire(&path).unwrap();
        s.release();
        assert!(!other_can_lock(), "released with the first of two VMs");
        s.release();
        assert!(other_can_lock(), "still held after the last VM");
    }
}
