//! The disks an install may write, as sysfs shows them, and the choice of one: consumes
//! `/sys/class/block/NAME/...` (under a root directory, so tests use a fake tree) and the
//! config's target; produces each disk's size, logical block size, serials and the
//! `/dev/disk/by-id/` names udev would give it (there is no udev in the initramfs), and
//! the one disk the target names, or an error naming every candidate.
//!
//! by-id names, as systemd's 60-persistent-storage.rules builds them:
//! `virtio-SERIAL` (virtio-blk's `serial` attribute), `nvme-MODEL_SERIAL` and
//! `nvme-WWID`, `ata-MODEL_SERIAL` (SCSI-translated ATA disks: vendor `ATA`, serial from
//! VPD page 0x80; udev's ata_id reads the full 40-character model, sysfs shows the first
//! 16), `usb-VENDOR_MODEL_SERIAL-T:L` (USB mass storage: the USB device's iSerial). White
//! space becomes `_`, other characters outside `0-9A-Za-z#+-.:=@_` become `_`.
//! by-path names, as udev's path_id builds them, for the buses a server boots from:
//! `pci-BDF` and `virtio-pci-BDF` (virtio-blk), `pci-BDF-nvme-NSID` (NVMe), where BDF is
//! the PCI address of the disk's controller; other buses get none (use by-id or a serial).

use super::config::Target;
use std::fs;
use std::path::{Path, PathBuf};

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Kernel name (`vdb`).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Logical block size.
    pub lba: u64,
    /// The kernel marks it read-only.
    pub read_only: bool,
    /// Serials the disk reports (virtio, NVMe, VPD page 0x80, USB iSerial).
    pub serials: Vec<String>,
    /// Names under /dev/disk/by-id/.
    pub by_id: Vec<String>,
    /// Names under /dev/disk/by-path/.
    pub by_path: Vec<String>,
}

/// A PCI address as sysfs names a device: `0000:00:04.0`.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b':',
            10 => c == b'.',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The by-path names of disk `name` whose sysfs directory is `dir`.
fn by_path(dir: &Path, name: &str) -> Vec<String> {
    let Ok(real) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    let Some(bdf) = real
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .rfind(|c| is_pci_address(c))
    else {
        return Vec::new();
    };
    if name.starts_with("vd") {
        vec![format!("pci-{bdf}"), format!("virtio-pci-{bdf}")]
    } else if name.starts_with("nvme") {
        attr(dir, "nsid")
            .map(|n| vec![format!("pci-{bdf}-nvme-{n}")])
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    let s = fs::read_to_string(dir.join(name)).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// udev's replacement of white space and unsafe characters in an id.
pub fn udev_safe(s: &str) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            out.push('_');
            space = false;
        }
        out.push(if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) {
            c
        } else {
            '_'
        });
    }
    out
}

/// The serial in a VPD page 0x80 (Unit Serial Number): a 4-byte header, then the text.
fn vpd80(dir: &Path) -> Option<String> {
    let b = fs::read(dir.join("vpd_pg80")).ok()?;
    let len = usize::from(*b.get(3)?);
    let text = b.get(4..4 + len.min(b.len().saturating_sub(4)))?;
    let s = String::from_utf8_lossy(text)
        .trim()
        .trim_matches('\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// The USB device a SCSI device hangs off: the nearest parent with `idVendor`.
fn usb_parent(device: &Path) -> Option<PathBuf> {
    let mut p = fs::canonicalize(device).ok()?;
    while p.pop() {
        if p.join("idVendor").is_file() {
            return Some(p);
        }
    }
    None
}

/// Reads disk `name` under `root` (`/`, or a fake tree in tests).
pub fn read(root: &Path, name: &str) -> Result<BlockInfo, String> {
    let dir = root.join("sys/class/block").join(name);
    let num = |a: &str| -> Result<u64, String> {
        let s = attr(&dir, a).ok_or_else(|| format!("{}/{a}: missing", dir.display()))?;
        s.parse()
            .map_err(|_| format!("{}/{a}: {s:?} is not a number", dir.display()))
    };
    let mut info = BlockInfo {
        name: name.to_string(),
        size: num("size")? * 512,
        lba: num("queue/logical_block_size")?,
        read_only: attr(&dir, "ro").as_deref() == Some("1"),
        serials: Vec::new(),
        by_id: Vec::new(),
        by_path: by_path(&dir, name),
    };
    let device = dir.join("device");
    if name.starts_with("vd") {
        if let Some(s) = attr(&dir, "serial") {
            info.by_id.push(format!("virtio-{}", udev_safe(&s)));
            info.serials.push(s);
        }
    } else if name.starts_with("nvme") {
        if let Some(s) = attr(&device, "serial") {
            let model = attr(&device, "model").unwrap_or_default();
            info.by_id
                .push(format!("nvme-{}_{}", udev_safe(&model), udev_safe(&s)));
            info.serials.push(s);
        }
        if let Some(w) = attr(&dir, "wwid") {
            info.by_id.push(format!("nvme-{}", udev_safe(&w)));
        }
    } else if name.starts_with("sd") || name.starts_with("sr") {
        let vendor = attr(&device, "vendor").unwrap_or_default();
        let model = udev_safe(&attr(&device, "model").unwrap_or_default());
        let usb = usb_parent(&device).and_then(|u| attr(&u, "serial"));
        if let Some(s) = &usb {
            let hctl = fs::canonicalize(&device)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let tl: Vec<&str> = hctl.split(':').skip(2).collect();
            let instance = if tl.len() == 2 {
                tl.join(":")
            } else {
                "0:0".into()
            };
            info.by_id.push(format!(
                "usb-{}_{model}_{}-{instance}",
                udev_safe(&vendor),
                udev_safe(s)
            ));
        }
        if let Some(s) = vpd80(&device) {
            if vendor == "ATA" {
                info.by_id.push(format!("ata-{model}_{}", udev_safe(&s)));
            }
            info.serials.push(s);
        }
        info.serials.extend(usb);
    }
    Ok(info)
}

/// The index of the disk `target` names among `disks`, never `medium` (the installer's
/// own medium) or a read-only disk. The error names the target and every match.
pub fn choose(
    disks: &[BlockInfo],
    target: &Target,
    medium: &str,
) -> Result<usize, (String, String)> {
    let (what, hits): (String, Vec<usize>) = match target {
        Target::ById(n) => (
            format!("{}{n}", super::config::BY_ID),
            (0..disks.len())
                .filter(|&i| disks[i].by_id.contains(n))
                .collect(),
        ),
        Target::ByPath(n) => (
            format!("{}{n}", super::config::BY_PATH),
            (0..disks.len())
                .filter(|&i| disks[i].by_path.contains(n))
                .collect(),
        ),
        Target::Serial(s) => (
            format!("serial {s:?}"),
            (0..disks.len())
                .filter(|&i| disks[i].serials.iter().any(|x| x == s))
                .collect(),
        ),
    };
    match hits[..] {
        [] => Err((
            what,
            "no disk has it (the disks are listed above)".to_string(),
        )),
        [i] if disks[i].name == medium => {
            Err((what, format!("is {medium}, the installer's own medium")))
        }
        [i] if disks[i].read_only => {
            Err((what, format!("is {}, which is read-only", disks[i].name)))
        }
        [i] => Ok(i),
        _ => Err((
            what,
            format!(
                "names more than one disk ({}); refusing to guess",
                hits.iter()
                    .map(|&i| disks[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// `vdb: 10.0 GiB, 512-byte blocks, serial DISK2, /dev/disk/by-id/virtio-DISK2`.
pub fn describe(d: &BlockInfo) -> String {
    let mut s = format!(
        "{}: {:.1} GiB, {}-byte blocks",
        d.name,
        d.size as f64 / f64::from(1u32 << 30),
        d.lba
    );
    if d.read_only {
        s.push_str(", read-only");
    }
    if d.serials.is_empty() {
        s.push_str(", no serial");
    } else {
        s.push_str(&format!(", serial {}", d.serials.join(" / ")));
    }
    for n in &d.by_id {
        s.push_str(&format!(", {}{n}", super::config::BY_ID));
    }
    for n in &d.by_path {
        s.push_str(&format!(", {}{n}", super::config::BY_PATH));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let p = std::env::temp_dir()
                .join(format!("slipway-init-target-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Tree(p)
        }
        fn put(&self, rel: &str, content: &[u8]) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        fn disk(&self, name: &str, sectors: u64, lba: u64) {
            self.put(
                &format!("sys/class/block/{name}/size"),
                format!("{sectors}\n").as_bytes(),
            );
            self.put(
                &format!("sys/class/block/{name}/queue/logical_block_size"),
                format!("{lba}\n").as_bytes(),
            );
            self.put(&format!("sys/class/block/{name}/ro"), b"0\n");
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn names_disks_as_udev_does() {
        let t = Tree::new("names");
        t.disk("vdb", 20971520, 512);
        t.put("sys/class/block/vdb/serial", b"DISK-B\n");
        t.disk("nvme0n1", 2097152, 4096);
        t.put(
            "sys/class/block/nvme0n1/device/serial",
            b"nvme serial 7   \n",
        );
        t.put(
            "sys/class/block/nvme0n1/device/model",
            b"QEMU NVMe Ctrl                          \n",
        );
        t.put("sys/class/block/nvme0n1/wwid", b"nvme.1b36-6e766d65\n");
        t.disk("sda", 1000, 512);
        t.put("sys/class/block/sda/device/vendor", b"ATA     \n");
        t.put("sys/class/block/sda/device/model", b"Samsung SSD 870 \n");
        let mut pg80 = vec![0, 0x80, 0, 8];
        pg80.extend(b"S5Y1NX0R");
        t.put("sys/class/block/sda/device/vpd_pg80", &pg80);
        // A USB stick: the SCSI device lies under the USB device (which has idVendor).
        let usb = "sys/devices/pci0000:00/0000:00:04.0/usb1/1-1";
        t.put(&format!("{usb}/idVendor"), b"46f4\n");
        t.put(&format!("{usb}/serial"), b"STICK\n");
        let scsi = format!("{usb}/1-1:1.0/host2/target2:0:0/2:0:0:0");
        t.put(&format!("{scsi}/vendor"), b"QEMU    \n");
        t.put(&format!("{scsi}/model"), b"QEMU HARDDISK   \n");
        t.disk("sdb", 1000, 512);
        std::os::unix::fs::symlink(t.0.join(&scsi), t.0.join("sys/class/block/sdb/device"))
            .unwrap();

        let vdb = read(&t.0, "vdb").unwrap();
        assert_eq!((vdb.size, vdb.lba), (10 << 30, 512));
        assert_eq!(vdb.by_id, ["virtio-DISK-B"]);
        assert_eq!(vdb.serials, ["DISK-B"]);
        let nvme = read(&t.0, "nvme0n1").unwrap();
        assert_eq!(nvme.lba, 4096);
        assert_eq!(
            nvme.by_id,
            [
                "nvme-QEMU_NVMe_Ctrl_nvme_serial_7",
                "nvme-nvme.1b36-6e766d65"
            ]
        );
        assert_eq!(
            read(&t.0, "sda").unwrap().by_id,
            ["ata-Samsung_SSD_870_S5Y1NX0R"]
        );
        let sdb = read(&t.0, "sdb").unwrap();
        assert_eq!(sdb.by_id, ["usb-QEMU_QEMU_HARDDISK_STICK-0:0"]);
        assert_eq!(sdb.serials, ["STICK"]);
        assert!(describe(&vdb).starts_with(
            "vdb: 10.0 GiB, 512-byte blocks, serial DISK-B, /dev/disk/by-id/virtio-DISK-B"
        ));
    }

    fn info(name: &str, serial: &str) -> BlockInfo {
        BlockInfo {
            name: name.into(),
            size: 1 << 30,
            lba: 512,
            read_only: false,
            serials: vec![serial.into()],
            by_id: vec![format!("virtio-{serial}")],
            by_path: vec![format!("pci-0000:00:0{}.0", name.len())],
        }
    }

    #[test]
    fn chooses_exactly_the_named_disk() {
        let disks = [info("vda", "A"), info("vdb", "B"), info("sr0", "CD")];
        assert_eq!(choose(&disks, &Target::Serial("B".into()), "sr0"), Ok(1));
        assert_eq!(
            choose(&disks, &Target::ById("virtio-A".into()), "sr0"),
            Ok(0)
        );
        let (what, why) = choose(&disks, &Target::Serial("C".into()), "sr0").unwrap_err();
        assert_eq!(what, "serial \"C\"");
        assert!(why.starts_with("no disk has it"), "{why}");
        let (_, why) = choose(&disks, &Target::Serial("CD".into()), "sr0").unwrap_err();
        assert!(why.contains("installer's own medium"), "{why}");
        let twins = [info("vda", "A"), info("vdb", "A")];
        let (_, why) = choose(&twins, &Target::ById("virtio-A".into()), "sr0").unwrap_err();
        assert!(why.contains("(vda, vdb)"), "{why}");
        let mut ro = [info("vda", "A")];
        ro[0].read_only = true;
        assert!(choose(&ro, &Target::Serial("A".into()), "sr0")
            .unwrap_err()
            .1
            .contains("read-only"));
    }

    #[test]
    fn by_path_names_from_the_pci_address() {
        let t = Tree::new("path");
        let vd = "sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/virtio3/block/vdc";
        let nv = "sys/devices/pci0000:00/0000:00:05.0/nvme/nvme0/nvme0n1";
        for (dev, name) in [(vd, "vdc"), (nv, "nvme0n1")] {
            t.put(&format!("{dev}/size"), b"2048\n");
            t.put(&format!("{dev}/queue/logical_block_size"), b"512\n");
            fs::create_dir_all(t.0.join("sys/class/block")).unwrap();
            std::os::unix::fs::symlink(t.0.join(dev), t.0.join("sys/class/block").join(name))
                .unwrap();
        }
        t.put(&format!("{nv}/nsid"), b"1\n");
        assert_eq!(
            read(&t.0, "vdc").unwrap().by_path,
            ["pci-0000:01:00.0", "virtio-pci-0000:01:00.0"]
        );
        assert_eq!(
            read(&t.0, "nvme0n1").unwrap().by_path,
            ["pci-0000:00:05.0-nvme-1"]
        );
        assert!(is_pci_address("0000:00:04.0") && !is_pci_address("pci0000:00"));
    }

    #[test]
    fn udev_replaces_spaces_and_unsafe_characters() {
        assert_eq!(udev_safe("  QEMU  HARDDISK "), "QEMU_HARDDISK");
        assert_eq!(udev_safe("a/b\\c*d"), "a_b_c_d");
    }
}
