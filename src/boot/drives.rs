//! Extra drives of a VM: consumes [`Disk`]s (an image file, the bus it hangs on, its
//! serial and sector sizes), produces QEMU's `-drive`/`-device` pairs. virtio-blk, NVMe,
//! USB mass storage (on one xHCI controller) and a SATA CD-ROM; a `bootindex` makes a
//! drive the firmware's first boot choice (QEMU's `bootorder` fw_cfg file, which OVMF
//! follows).

use std::path::PathBuf;

/// The bus a drive is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interface {
    /// virtio-blk-pci (`/dev/vdX`).
    #[default]
    Virtio,
    /// An NVMe controller with one namespace (`/dev/nvmeXn1`); QEMU needs a serial.
    Nvme,
    /// A USB stick on an xHCI controller (`/dev/sdX`, removable).
    UsbStorage,
    /// A SATA CD-ROM (`/dev/srX`), always read-only.
    Cdrom,
}

impl Interface {
    /// The name definitions use.
    pub fn name(self) -> &'static str {
        match self {
            Interface::Virtio => "virtio",
            Interface::Nvme => "nvme",
            Interface::UsbStorage => "usb-storage",
            Interface::Cdrom => "cdrom",
        }
    }
}

/// One extra drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The raw image file (written in place unless `read_only`).
    pub file: PathBuf,
    /// Its bus.
    pub interface: Interface,
    /// The serial the guest reads (NVMe: default `slipway-N`).
    pub serial: Option<String>,
    /// Logical sector size in bytes (512 or 4096); None: QEMU's 512.
    pub logical_block_size: Option<u32>,
    /// Physical sector size in bytes; None: the logical size.
    pub physical_block_size: Option<u32>,
    /// Attached read-only (a CD-ROM always is).
    pub read_only: bool,
}

impl Disk {
    /// A read-write virtio drive of `file` with QEMU's defaults.
    pub fn virtio(file: PathBuf) -> Disk {
        Disk {
            file,
            interface: Interface::Virtio,
            serial: None,
            logical_block_size: None,
            physical_block_size: None,
            read_only: false,
        }
    }
}

/// The QEMU flags for `disks` (ids `xd0`, `xd1`, ...); `boot` lists the indices of the
/// drives the firmware boots, first to last (`bootindex` 0, 1, ...).
pub fn args(disks: &[Disk], boot: &[usize]) -> Vec<String> {
    let mut a = Vec::new();
    if disks.iter().any(|d| d.interface == Interface::UsbStorage) {
        a.extend(["-device".to_string(), "qemu-xhci,id=xhci".to_string()]);
    }
    let mut sata = 0;
    for (i, d) in disks.iter().enumerate() {
        let ro = d.read_only || d.interface == Interface::Cdrom;
        let mut drive = format!("file={},format=raw,if=none,id=xd{i}", d.file.display());
        if d.interface == Interface::Cdrom {
            drive.push_str(",media=cdrom");
        }
        if ro {
            drive.push_str(",readonly=on");
        }
        let mut dev = match d.interface {
            Interface::Virtio => format!("virtio-blk-pci,drive=xd{i}"),
            Interface::Nvme => format!("nvme,drive=xd{i}"),
            Interface::UsbStorage => format!("usb-storage,bus=xhci.0,drive=xd{i},removable=on"),
            Interface::Cdrom => {
                sata += 1;
                // q35's AHCI ports ide.0..ide.5; port 0 stays free for a guest disk.
                format!("ide-cd,bus=ide.{sata},drive=xd{i}")
            }
        };
        let serial = match (&d.serial, d.interface) {
            (Some(s), _) => Some(s.clone()),
            (None, Interface::Nvme) => Some(format!("slipway-{i}")),
            (None, _) => None,
        };
        if let Some(s) = serial {
            dev.push_str(&format!(",serial={s}"));
        }
        if let Some(n) = d.logical_block_size {
            dev.push_str(&format!(",logical_block_size={n}"));
        }
        if let Some(n) = d.physical_block_size.or(d.logical_block_size) {
            dev.push_str(&format!(",physical_block_size={n}"));
        }
        if let Some(n) = boot.iter().position(|b| *b == i) {
            dev.push_str(&format!(",bootindex={n}"));
        }
        a.extend(["-drive".to_string(), drive, "-device".to_string(), dev]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_interface_gets_its_device_and_properties() {
        let mut nvme = Disk::virtio(PathBuf::from("/d/a.img"));
        nvme.interface = Interface::Nvme;
        nvme.logical_block_size = Some(4096);
        let mut usb = Disk::virtio(PathBuf::from("/d/b.img"));
        usb.interface = Interface::UsbStorage;
        usb.serial = Some("STICK".into());
        let mut cd = Disk::virtio(PathBuf::from("/d/c.iso"));
        cd.interface = Interface::Cdrom;
        let mut ro = Disk::virtio(PathBuf::from("/d/d.img"));
        ro.read_only = true;
        let a = args(&[nvme, usb, cd, ro], &[2, 1]);
        assert_eq!(
            a,
            [
                "-device",
                "qemu-xhci,id=xhci",
                "-drive",
                "file=/d/a.img,format=raw,if=none,id=xd0",
                "-device",
                "nvme,drive=xd0,serial=slipway-0,logical_block_size=4096,physical_block_size=4096",
                "-drive",
                "file=/d/b.img,format=raw,if=none,id=xd1",
                "-device",
                "usb-storage,bus=xhci.0,drive=xd1,removable=on,serial=STICK,bootindex=1",
                "-drive",
                "file=/d/c.iso,format=raw,if=none,id=xd2,media=cdrom,readonly=on",
                "-device",
                "ide-cd,bus=ide.1,drive=xd2,bootindex=0",
                "-drive",
                "file=/d/d.img,format=raw,if=none,id=xd3,readonly=on",
                "-device",
                "virtio-blk-pci,drive=xd3",
            ]
        );
    }
}
