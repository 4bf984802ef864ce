//! Where a config comes from, in order: QEMU fw_cfg (`opt/org.slipway/config`), then a
//! config drive (a vfat or iso9660 file system labelled `SLIPWAY` or `cidata` holding
//! `slipway.toml`). Consumes the running system's /sys and /dev; produces the config
//! bytes and a source name for messages, plus notes (both present, unreadable drive).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The fw_cfg blob QEMU's `-fw_cfg name=opt/org.slipway/config,file=...` provides.
pub const FW_CFG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.slipway/config/raw";
/// The config file on a config drive.
pub const DRIVE_FILE: &str = "slipway.toml";
/// File-system labels of config drives (compared case-insensitively: iso9660 volume IDs
/// are often upper case).
pub const LABELS: &[&str] = &["SLIPWAY", "cidata"];
/// A config is small; anything larger is refused rather than read into memory.
const MAX_CONFIG: u64 = 4 << 20;

/// A found config.
pub struct Found {
    /// `fw_cfg` or `config drive /dev/vdb (SLIPWAY)`.
    pub source: String,
    /// The raw config.
    pub bytes: Vec<u8>,
}

/// Looks for a config in fw_cfg, then on config drives; `notes` gets lines to print.
pub fn find(notes: &mut Vec<String>) -> Option<Found> {
    let fw = read_fw_cfg(notes);
    let drive = read_drive(notes);
    match (fw, drive) {
        (Some(bytes), Some(d)) => {
            notes.push(format!(
                "config found in fw_cfg and on {}: using fw_cfg",
                d.source
            ));
            Some(Found {
                source: "fw_cfg".into(),
                bytes,
            })
        }
        (Some(bytes), None) => Some(Found {
            source: "fw_cfg".into(),
            bytes,
        }),
        (None, d) => d,
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(MAX_CONFIG + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_CONFIG {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CONFIG} bytes"
        )));
    }
    Ok(buf)
}

fn read_fw_cfg(notes: &mut Vec<String>) -> Option<Vec<u8>> {
    if !Path::new("/sys/firmware/qemu_fw_cfg").exists() {
        // Built as a module in Debian kernels; absent on non-QEMU machines, so a failure
        // here only means "no fw_cfg".
        let _ = Command::new("modprobe")
            .args(["-q", "qemu_fw_cfg"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let p = Path::new(FW_CFG);
    if !p.exists() {
        return None;
    }
    match read_limited(p) {
        Ok(b) => Some(b),
        Err(e) => {
            notes.push(format!("warning: reading {FW_CFG}: {e}"));
            None
        }
    }
}

/// A file system type and label read from a superblock.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    /// `vfat` or `iso9660` (the names mount(2) takes).
    pub fstype: &'static str,
    /// The volume label, trailing spaces removed.
    pub label: String,
}

fn trim_label(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

/// Reads the label of a FAT or ISO 9660 file system from its first 33 KiB.
/// FAT: the boot sector's BS_VolLab (offset 43 on FAT12/16, 71 on FAT32, each after
/// an extended boot signature 0x29), with the 0x55AA signature. ISO 9660 (ECMA-119
/// 8.4): the primary volume descriptor at 32 KiB, type 1, "CD001", volume id at 40.
pub fn probe(dev: &impl FileExt) -> Option<Probe> {
    let mut pvd = [0u8; 2048];
    if dev.read_exact_at(&mut pvd, 32768).is_ok() && pvd[0] == 1 && &pvd[1..6] == b"CD001" {
        return Some(Probe {
            fstype: "iso9660",
            label: trim_label(&pvd[40..72]),
        });
    }
    let mut bs = [0u8; 512];
    dev.read_exact_at(&mut bs, 0).ok()?;
    if bs[510..512] != [0x55, 0xaa] {
        return None;
    }
    let (sig, label, fstype) = if &bs[82..87] == b"FAT32" {
        (66, 71, 82)
    } else {
        (38, 43, 54)
    };
    if bs[sig] != 0x29 || &bs[fstype..fstype + 3] != b"FAT" {
        return None;
    }
    Some(Probe {
        fstype: "vfat",
        label: trim_label(&bs[label..label + 11]),
    })
}

/// Block devices to look at: /dev/disk/by-label/{SLIPWAY,cidata} first (udev may not be
/// done yet, so then every device the kernel lists in /sys/class/block).
fn candidates() -> Vec<PathBuf> {
    let mut devs: Vec<PathBuf> = Vec::new();
    for l in LABELS {
        if let Ok(p) = fs::canonicalize(Path::new("/dev/disk/by-label").join(l)) {
            devs.push(p);
        }
    }
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("dm-"))
        .collect();
    names.sort();
    for n in names {
        let p = Path::new("/dev").join(n);
        if !devs.contains(&p) {
            devs.push(p);
        }
    }
    devs
}

fn read_drive(notes: &mut Vec<String>) -> Option<Found> {
    for dev in candidates() {
        let Ok(f) = File::open(&dev) else { continue };
        let Some(p) = probe(&f) else { continue };
        if !LABELS.iter().any(|l| l.eq_ignore_ascii_case(&p.label)) {
            continue;
        }
        drop(f);
        let source = format!("config drive {} ({})", dev.display(), p.label);
        match read_from_drive(&dev, p.fstype) {
            Ok(Some(bytes)) => return Some(Found { source, bytes }),
            Ok(None) => notes.push(format!("warning: {source}: no {DRIVE_FILE} on it")),
            Err(e) => notes.push(format!("warning: {source}: {e}")),
        }
    }
    None
}

/// Mounts `dev` read-only in a directory under /run, reads slipway.toml, unmounts.
fn read_from_drive(dev: &Path, fstype: &str) -> Result<Option<Vec<u8>>, String> {
    let dir = PathBuf::from(format!("/run/slipway/config-drive.{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounted = mount(Some(dev), &dir, Some(fstype), flags, None::<&str>)
        .map_err(|e| format!("mounting {} ({fstype}) read-only: {e}", dev.display()));
    let result = mounted.and_then(|()| {
        // iso9660 without Rock Ridge/Joliet may show names in upper case.
        let names = [DRIVE_FILE.to_string(), DRIVE_FILE.to_uppercase()];
        let file = names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
        let r = match file {
            Some(p) => read_limited(&p)
                .map(Some)
                .map_err(|e| format!("reading {DRIVE_FILE}: {e}")),
            None => Ok(None),
        };
        let _ = umount2(&dir, MntFlags::MNT_DETACH);
        r
    });
    let _ = fs::remove_dir(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat16(label: &[u8; 11]) -> Vec<u8> {
        let mut b = vec![0u8; 40960];
        b[38] = 0x29;
        b[43..54].copy_from_slice(label);
        b[54..62].copy_from_slice(b"FAT16   ");
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn reads_fat_and_iso9660_labels() {
        let img = fat16(b"SLIPWAY    ");
        let p = probe(&MemDev(img)).unwrap();
        assert_eq!((p.fstype, p.label.as_str()), ("vfat", "SLIPWAY"));

        let mut img = vec![0u8; 40960];
        img[82..87].copy_from_slice(b"FAT32");
        img[66] = 0x29;
        img[71..82].copy_from_slice(b"cidata     ");
        img[510..512].copy_from_slice(&[0x55, 0xaa]);
        // FAT32's type string is at 82 and includes the label's end; fix up the layout.
        let mut img32 = img.clone();
        img32[82..90].copy_from_slice(b"FAT32   ");
        let p = probe(&MemDev(img32)).unwrap();
        assert_eq!((p.fstype, p.label.as_str()), ("vfat", "cidata"));

        let mut iso = vec![0u8; 40960];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        iso[32768 + 40..32768 + 72].copy_from_slice(b"CIDATA                          ");
        let p = probe(&MemDev(iso)).unwrap();
        assert_eq!((p.fstype, p.label.as_str()), ("iso9660", "CIDATA"));

        assert!(probe(&MemDev(vec![0u8; 40960])).is_none());
        let mut no_sig = fat16(b"SLIPWAY    ");
        no_sig[38] = 0;
        assert!(probe(&MemDev(no_sig)).is_none());
    }

    struct MemDev(Vec<u8>);
    impl FileExt for MemDev {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let o = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - o);
            buf[..n].copy_from_slice(&self.0[o..o + n]);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }
}
