//! Where a config comes from, among the sources the platform trusts (`platform`), in
//! order: on `metal` only, the files a bare-metal boot leaves (the netboot server's
//! per-machine config that slipway-init hands over in /run, then the config the
//! installer wrote on /var); then QEMU fw_cfg (`opt/org.slipway/config`), then a
//! slipway config drive (a vfat or iso9660 file system labelled `SLIPWAY` or `cidata`
//! holding `slipway.toml`), then an OpenStack config drive (label `config-2`, holding
//! Nova's `openstack/latest/meta_data.json` and `user_data`, made into a config by
//! `metadata`, exactly as the OpenStack metadata service's answers are). Consumes the
//! running system's /sys and /dev through [`Machine`] (so the choice is unit-tested with
//! a fake machine); produces the config bytes and a source name for messages, plus notes
//! (more than one source present, unreadable drive, a drive the platform does not
//! trust, which is never mounted).

use crate::metadata::{self, Metadata};
use crate::platform::Platform;
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
/// The label of an OpenStack config drive (Nova writes iso9660 by default, vfat when
/// `config_drive_format = vfat`; see
/// <https://docs.openstack.org/nova/latest/user/config-drive.html>).
pub const OPENSTACK_LABEL: &str = "config-2";
/// The per-machine config of a diskless (netboot) node: slipway-init copies it there
/// from the initramfs the boot server sent (`/slipway/config.toml`); exactly as trusted as
/// the boot server.
pub const NETBOOT_CONFIG: &str = "/run/slipway/netboot-config.toml";
/// The config the installer (slipway-init's install mode) wrote on the installed disk's
/// /var, from the config embedded in the installer ISO.
pub const INSTALL_CONFIG: &str = "/var/lib/slipway/install/config.toml";
/// The bare-metal files, in the order they are read, with their source names.
pub const METAL_FILES: [(&str, &str); 2] = [
    (NETBOOT_CONFIG, "netboot config"),
    (INSTALL_CONFIG, "installer config"),
];

/// A config is small; anything larger is refused rather than read into memory, here and
/// by `slipway-agent check`.
pub const MAX_CONFIG: u64 = 4 << 20;

/// A found config.
pub struct Found {
    /// `fw_cfg`, `config drive /dev/vdb (SLIPWAY)` or
    /// `config drive /dev/vdb (config-2, openstack)`.
    pub source: String,
    /// The raw config.
    pub bytes: Vec<u8>,
}

/// A source that has something, before one is chosen.
enum Candidate {
    Config(Found),
    OpenStack(Metadata),
}

impl Candidate {
    fn source(&self) -> &str {
        match self {
            Candidate::Config(f) => &f.source,
            Candidate::OpenStack(m) => &m.source,
        }
    }
}

/// `in fw_cfg`, `in installer config ...` or `on config drive ...`, for the note about
/// more than one source.
fn place(source: &str) -> String {
    if source == "fw_cfg" {
        "in fw_cfg".into()
    } else if METAL_FILES.iter().any(|(_, what)| source.starts_with(what)) {
        format!("in {source}")
    } else {
        format!("on {source}")
    }
}

/// What [`find`] reads from the machine, so that the choice between sources can be
/// tested without one: the running system is [`Live`]; the unit tests use a fake.
pub trait Machine {
    /// The file at `path` (one of [`METAL_FILES`]), if it exists (`notes` gets a warning
    /// when it is there but unreadable).
    fn local_file(&mut self, path: &str, notes: &mut Vec<String>) -> Option<Vec<u8>>;
    /// The config blob QEMU's fw_cfg provides, if any (`notes` gets a warning when it
    /// is there but unreadable).
    fn fw_cfg(&mut self, notes: &mut Vec<String>) -> Option<Vec<u8>>;
    /// The block devices whose file system [`probe`] recognises, in the order to try
    /// them, each with its probe.
    fn probed_devices(&mut self) -> Vec<(PathBuf, Probe)>;
    /// The files `rels` (paths with `/`; `None` for one that is absent) of the file
    /// system on `dev`, mounted read-only.
    fn read_files(
        &mut self,
        dev: &Path,
        fstype: &str,
        rels: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, String>;
}

/// The running system: /sys/firmware/qemu_fw_cfg, /dev/disk/by-label and
/// /sys/class/block, and read-only mounts under /run.
pub struct Live;

impl Machine for Live {
    fn local_file(&mut self, path: &str, notes: &mut Vec<String>) -> Option<Vec<u8>> {
        let p = Path::new(path);
        if !p.exists() {
            return None;
        }
        match read_limited(p) {
            Ok(b) => Some(b),
            Err(e) => {
                notes.push(format!("warning: reading {path}: {e}"));
                None
            }
        }
    }

    fn fw_cfg(&mut self, notes: &mut Vec<String>) -> Option<Vec<u8>> {
        read_fw_cfg(notes)
    }

    fn probed_devices(&mut self) -> Vec<(PathBuf, Probe)> {
        probed_block_devices()
    }

    fn read_files(
        &mut self,
        dev: &Path,
        fstype: &str,
        rels: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, String> {
        with_mounted(dev, fstype, |dir| {
            rels.iter().map(|r| read_optional(dir, r)).collect()
        })?
    }
}

/// Looks for a config on the running system: [`find_on`] with [`Live`].
pub fn find(platform: Platform, notes: &mut Vec<String>) -> Option<Found> {
    find_on(&mut Live, platform, notes)
}

/// Looks for a config in fw_cfg, then on slipway config drives, then on OpenStack
/// config drives, each only if `platform` trusts it; the first wins, whatever order
/// the devices come in. `notes` gets lines to print, among them one per other source
/// found and one per labelled drive the platform does not trust (not mounted).
pub fn find_on(m: &mut impl Machine, platform: Platform, notes: &mut Vec<String>) -> Option<Found> {
    let trusted = platform.sources();
    let mut all = Vec::new();
    for (path, what) in METAL_FILES {
        let Some(bytes) = m.local_file(path, notes) else {
            continue;
        };
        if platform == Platform::Metal {
            all.push(Candidate::Config(Found {
                source: format!("{what} {path}"),
                bytes,
            }));
        } else {
            notes.push(format!(
                "ignoring {path}: only platform metal reads the {what}; platform {} reads {}",
                platform.name(),
                platform.describe_sources()
            ));
        }
    }
    if trusted.fw_cfg {
        if let Some(bytes) = m.fw_cfg(notes) {
            all.push(Candidate::Config(Found {
                source: "fw_cfg".into(),
                bytes,
            }));
        }
    }
    let (drives, ignored): (Vec<_>, Vec<_>) = labelled_drives(m).into_iter().partition(|(_, p)| {
        if p.label.eq_ignore_ascii_case(OPENSTACK_LABEL) {
            trusted.openstack_drive
        } else {
            trusted.slipway_drives
        }
    });
    for (dev, p) in &ignored {
        notes.push(format!(
            "ignoring the drive {} labelled {}: platform {} reads {}",
            dev.display(),
            p.label,
            platform.name(),
            platform.describe_sources()
        ));
    }
    if let Some(f) = read_drive(m, &drives, notes) {
        all.push(Candidate::Config(f));
    }
    if let Some(md) = read_openstack_drive(m, &drives, notes) {
        all.push(Candidate::OpenStack(md));
    }
    let mut all = all.into_iter();
    let first = all.next()?;
    for other in all {
        notes.push(format!(
            "config found {} and {}: using {}",
            place(first.source()),
            place(other.source()),
            first.source()
        ));
    }
    Some(match first {
        Candidate::Config(f) => f,
        Candidate::OpenStack(md) => {
            notes.extend(md.notes.iter().cloned());
            notes.push(format!("metadata from {}: {}", md.source, md.summary()));
            let text = metadata::config_text(&md, notes);
            Found {
                source: md.source,
                bytes: text.into_bytes(),
            }
        }
    })
}

/// The file at `path`, refused when larger than [`MAX_CONFIG`] (never read further).
pub fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(MAX_CONFIG + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_CONFIG {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CONFIG} bytes (4 MiB, the node's limit for a config)"
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

/// Config drives: every probed device whose file system has one of [`LABELS`] or
/// [`OPENSTACK_LABEL`] (compared case-insensitively), in the machine's order.
fn labelled_drives(m: &mut impl Machine) -> Vec<(PathBuf, Probe)> {
    m.probed_devices()
        .into_iter()
        .filter(|(_, p)| {
            LABELS
                .iter()
                .chain([&OPENSTACK_LABEL])
                .any(|l| l.eq_ignore_ascii_case(&p.label))
        })
        .collect()
}

/// Block devices with a file system [`probe`] recognises on the running system.
fn probed_block_devices() -> Vec<(PathBuf, Probe)> {
    probed_block_devices_in(Path::new("/"))
}

/// Block devices with a file system [`probe`] recognises, under `root` (`/`, or a
/// directory tree in tests): the config-drive labels under /dev/disk/by-label first;
/// udev may not be done yet (or not run at all), so then every device the kernel lists
/// in /sys/class/block (not loop, ram or dm devices), probed here, by name.
fn probed_block_devices_in(root: &Path) -> Vec<(PathBuf, Probe)> {
    let labels: Vec<&str> = LABELS.iter().copied().chain([OPENSTACK_LABEL]).collect();
    let mut devs: Vec<PathBuf> = Vec::new();
    for l in &labels {
        if let Ok(p) = fs::canonicalize(root.join("dev/disk/by-label").join(l)) {
            devs.push(p);
        }
    }
    let mut names: Vec<String> = fs::read_dir(root.join("sys/class/block"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("dm-"))
        .collect();
    names.sort();
    for n in names {
        let p = root.join("dev").join(n);
        if !devs.contains(&p) {
            devs.push(p);
        }
    }
    devs.into_iter()
        .filter_map(|dev| {
            let p = probe(&File::open(&dev).ok()?)?;
            Some((dev, p))
        })
        .collect()
}

/// The first slipway config drive with a `slipway.toml`.
fn read_drive(
    m: &mut impl Machine,
    drives: &[(PathBuf, Probe)],
    notes: &mut Vec<String>,
) -> Option<Found> {
    for (dev, p) in drives {
        if !LABELS.iter().any(|l| l.eq_ignore_ascii_case(&p.label)) {
            continue;
        }
        let source = format!("config drive {} ({})", dev.display(), p.label);
        let file = m.read_files(dev, p.fstype, &[DRIVE_FILE]);
        match file.map(|v| v.into_iter().next().flatten()) {
            Ok(Some(bytes)) => return Some(Found { source, bytes }),
            Ok(None) => notes.push(format!("warning: {source}: no {DRIVE_FILE} on it")),
            Err(e) => notes.push(format!("warning: {source}: {e}")),
        }
    }
    None
}

/// The first OpenStack config drive whose metadata reads and parses.
fn read_openstack_drive(
    m: &mut impl Machine,
    drives: &[(PathBuf, Probe)],
    notes: &mut Vec<String>,
) -> Option<Metadata> {
    for (dev, p) in drives {
        if !p.label.eq_ignore_ascii_case(OPENSTACK_LABEL) {
            continue;
        }
        let source = format!("config drive {} ({}, openstack)", dev.display(), p.label);
        let rels = [metadata::OPENSTACK_META_DATA, metadata::OPENSTACK_USER_DATA];
        match m.read_files(dev, p.fstype, &rels) {
            Ok(files) => {
                let mut files = files.into_iter();
                let meta = files.next().flatten();
                let user_data = files.next().flatten();
                if let Some(md) = openstack_drive(&source, meta, user_data, notes) {
                    return Some(md);
                }
            }
            Err(e) => notes.push(format!("warning: {source}: {e}")),
        }
    }
    None
}

/// Nova's two files from an OpenStack config drive as [`Metadata`]. A drive with
/// user_data but no meta_data.json (some tools write only that) gives the user-data
/// alone; a meta_data.json that does not parse makes the drive unusable (an error naming
/// the file and the key), as does a drive with neither file.
fn openstack_drive(
    source: &str,
    meta: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    notes: &mut Vec<String>,
) -> Option<Metadata> {
    let mut m = match (meta, &user_data) {
        (Some(json), _) => match metadata::openstack_meta_data(&json) {
            Ok(m) => m,
            Err(e) => {
                notes.push(format!(
                    "ERROR: {source}: {}: {e}; the drive is not used",
                    metadata::OPENSTACK_META_DATA
                ));
                return None;
            }
        },
        (None, Some(_)) => {
            notes.push(format!(
                "warning: {source}: no {}; only its user_data is used",
                metadata::OPENSTACK_META_DATA
            ));
            Metadata::default()
        }
        (None, None) => {
            notes.push(format!(
                "warning: {source}: neither {} nor {} on it",
                metadata::OPENSTACK_META_DATA,
                metadata::OPENSTACK_USER_DATA
            ));
            return None;
        }
    };
    m.source = source.to_string();
    m.user_data = user_data;
    Some(m)
}

/// `rel` (a path with `/`) under `dir`, or its upper-case form (iso9660 without Rock
/// Ridge or Joliet may show names in upper case); `None` when neither exists.
fn read_optional(dir: &Path, rel: &str) -> Result<Option<Vec<u8>>, String> {
    let file = [rel.to_string(), rel.to_uppercase()]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file());
    match file {
        Some(p) => read_limited(&p)
            .map(Some)
            .map_err(|e| format!("reading {rel}: {e}")),
        None => Ok(None),
    }
}

/// Mounts `dev` read-only (nosuid, nodev, noexec) in a directory under /run, runs `f` on
/// it, unmounts.
fn with_mounted<T>(dev: &Path, fstype: &str, f: impl FnOnce(&Path) -> T) -> Result<T, String> {
    let dir = PathBuf::from(format!("/run/slipway/config-drive.{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let result = mount(Some(dev), &dir, Some(fstype), flags, None::<&str>)
        .map_err(|e| format!("mounting {} ({fstype}) read-only: {e}", dev.display()))
        .map(|()| {
            let r = f(&dir);
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

    #[test]
    fn openstack_drive_files() {
        let src = "config drive /dev/vdb (config-2, openstack)";
        let meta = br#"{"hostname": "os-1.novalocal", "public_keys": {"k": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 k"}}"#;
        let ud = b"schema-version = 1\n[test-agent]\n";
        let mut notes = Vec::new();
        let m = openstack_drive(src, Some(meta.to_vec()), Some(ud.to_vec()), &mut notes).unwrap();
        assert_eq!(m.source, src);
        assert_eq!(m.hostname.as_deref(), Some("os-1"));
        assert!(notes.is_empty(), "{notes:?}");
        let cfg = crate::config::parse(&metadata::config_text(&m, &mut notes)).unwrap();
        assert_eq!(cfg.hostname.as_deref(), Some("os-1"));
        assert_eq!(cfg.ssh_keys.len(), 1);
        assert!(cfg.test_agent.is_some());

        // user_data that is not a slipway config: host name and key only, reported.
        let m = openstack_drive(
            src,
            Some(meta.to_vec()),
            Some(b"#!/bin/sh\nhostname x\n".to_vec()),
            &mut notes,
        )
        .unwrap();
        let cfg = crate::config::parse(&metadata::config_text(&m, &mut notes)).unwrap();
        assert_eq!(
            (cfg.hostname.as_deref(), cfg.ssh_keys.len()),
            (Some("os-1"), 1)
        );
        assert!(cfg.test_agent.is_none());
        assert!(
            notes[0].starts_with(&format!("ERROR: {src} user-data: it is not TOML")),
            "{notes:?}"
        );

        // A bad meta_data.json: the file and the key, and the drive is not used.
        let mut notes = Vec::new();
        let bad = br#"{"hostname": "h", "public_keys": {"k": 1}}"#;
        assert!(openstack_drive(src, Some(bad.to_vec()), Some(ud.to_vec()), &mut notes).is_none());
        assert_eq!(
            notes,
            [format!(
                "ERROR: {src}: openstack/latest/meta_data.json: public_keys.\"k\": expected a string (an OpenSSH public key line), found a number; the drive is not used"
            )]
        );

        // Only user_data: used, with a warning; neither file: not used.
        let mut notes = Vec::new();
        let m = openstack_drive(src, None, Some(ud.to_vec()), &mut notes).unwrap();
        assert_eq!((m.hostname, m.user_data.is_some()), (None, true));
        assert!(
            notes[0].contains("no openstack/latest/meta_data.json"),
            "{notes:?}"
        );
        assert!(openstack_drive(src, None, None, &mut notes).is_none());
        assert!(notes[1].contains("neither"), "{notes:?}");
    }

    #[test]
    fn several_sources_are_reported_by_place() {
        assert_eq!(place("fw_cfg"), "in fw_cfg");
        assert_eq!(
            place("config drive /dev/vdb (config-2, openstack)"),
            "on config drive /dev/vdb (config-2, openstack)"
        );
    }

    fn iso9660(volume_id: &str) -> Vec<u8> {
        let mut iso = vec![0u8; 40960];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        let id = format!("{volume_id:<32}");
        iso[32768 + 40..32768 + 72].copy_from_slice(id.as_bytes());
        iso
    }

    /// A drive of [`FakeMachine`]: its device path, its first sectors (what [`probe`]
    /// reads) and the files on its file system (`None`: it cannot be mounted).
    struct FakeDrive {
        dev: PathBuf,
        image: Vec<u8>,
        files: Option<Vec<(&'static str, Vec<u8>)>>,
    }

    fn drive(dev: &str, image: Vec<u8>, files: &[(&'static str, &str)]) -> FakeDrive {
        FakeDrive {
            dev: dev.into(),
            image,
            files: Some(
                files
                    .iter()
                    .map(|(n, t)| (*n, t.as_bytes().to_vec()))
                    .collect(),
            ),
        }
    }

    /// A machine with an optional fw_cfg blob and in-memory drives, in device order.
    #[derive(Default)]
    struct FakeMachine {
        /// Files by path (the bare-metal configs).
        files: Vec<(&'static str, Vec<u8>)>,
        fw_cfg: Option<Vec<u8>>,
        drives: Vec<FakeDrive>,
        /// The devices whose file system was read, in order.
        mounted: Vec<PathBuf>,
    }

    impl Machine for FakeMachine {
        fn local_file(&mut self, path: &str, _: &mut Vec<String>) -> Option<Vec<u8>> {
            self.files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, b)| b.clone())
        }

        fn fw_cfg(&mut self, _: &mut Vec<String>) -> Option<Vec<u8>> {
            self.fw_cfg.clone()
        }

        fn probed_devices(&mut self) -> Vec<(PathBuf, Probe)> {
            self.drives
                .iter()
                .filter_map(|d| Some((d.dev.clone(), probe(&MemDev(d.image.clone()))?)))
                .collect()
        }

        fn read_files(
            &mut self,
            dev: &Path,
            fstype: &str,
            rels: &[&str],
        ) -> Result<Vec<Option<Vec<u8>>>, String> {
            self.mounted.push(dev.to_path_buf());
            let d = self.drives.iter().find(|d| d.dev == dev).unwrap();
            assert_eq!(
                Some(fstype),
                probe(&MemDev(d.image.clone())).map(|p| p.fstype)
            );
            let files = d.files.as_ref().ok_or_else(|| {
                format!("mounting {} ({fstype}) read-only: EINVAL", dev.display())
            })?;
            Ok(rels
                .iter()
                .map(|r| files.iter().find(|(n, _)| n == r).map(|(_, b)| b.clone()))
                .collect())
        }
    }

    const FROM_FW_CFG: &str = "schema-version = 1\nhostname = \"from-fw-cfg\"\n";
    const FROM_DRIVE: &str = "schema-version = 1\nhostname = \"from-drive\"\n";
    const NOVA_META: &str = r#"{"hostname": "os-1.novalocal"}"#;

    /// The source and the config text `find_on` chose.
    fn chosen(m: &mut FakeMachine, notes: &mut Vec<String>) -> Option<(String, String)> {
        let f = find_on(m, Platform::Qemu, notes)?;
        Some((f.source, String::from_utf8(f.bytes).unwrap()))
    }

    /// On a cloud, neither fw_cfg nor any labelled drive is read (nor mounted); each
    /// drive is said. OpenStack reads its own drive and no slipway drive.
    #[test]
    fn a_cloud_platform_reads_no_drive_and_says_so() {
        let mut m = FakeMachine {
            fw_cfg: Some(FROM_FW_CFG.into()),
            drives: vec![
                drive(
                    "/dev/vdb",
                    fat16(b"SLIPWAY    "),
                    &[(DRIVE_FILE, FROM_DRIVE)],
                ),
                drive(
                    "/dev/vdc",
                    iso9660("config-2"),
                    &[(metadata::OPENSTACK_META_DATA, NOVA_META)],
                ),
            ],
            ..FakeMachine::default()
        };
        let mut notes = Vec::new();
        assert!(find_on(&mut m, Platform::Aws, &mut notes).is_none());
        assert_eq!(
            notes,
            [
                "ignoring the drive /dev/vdb labelled SLIPWAY: platform aws reads its metadata service only",
                "ignoring the drive /dev/vdc labelled config-2: platform aws reads its metadata service only",
            ]
        );
        assert!(m.mounted.is_empty(), "{:?}", m.mounted);

        let mut notes = Vec::new();
        let f = find_on(&mut m, Platform::OpenStack, &mut notes).unwrap();
        assert_eq!(f.source, "config drive /dev/vdc (config-2, openstack)");
        assert!(
            notes[0].starts_with("ignoring the drive /dev/vdb labelled SLIPWAY: platform openstack reads its config drive (config-2)"),
            "{notes:?}"
        );
        assert_eq!(m.mounted, [Path::new("/dev/vdc")]);
    }

    /// The installer's and the netboot server's configs are read on metal only, before
    /// fw_cfg and drives; elsewhere they are named and passed over.
    #[test]
    fn bare_metal_files_are_trusted_on_metal_only() {
        const INSTALLED: &str = "schema-version = 1\nhostname = \"installed\"\n";
        const NETBOOT: &str = "schema-version = 1\nhostname = \"netboot\"\n";
        let mut m = FakeMachine {
            files: vec![(INSTALL_CONFIG, INSTALLED.into())],
            fw_cfg: Some(FROM_FW_CFG.into()),
            ..FakeMachine::default()
        };
        let mut notes = Vec::new();
        let f = find_on(&mut m, Platform::Metal, &mut notes).unwrap();
        assert_eq!(f.source, format!("installer config {INSTALL_CONFIG}"));
        assert_eq!(f.bytes, INSTALLED.as_bytes());
        assert_eq!(
            notes,
            [format!("config found in installer config {INSTALL_CONFIG} and in fw_cfg: using installer config {INSTALL_CONFIG}")]
        );

        // The boot server's config comes first.
        m.files.insert(0, (NETBOOT_CONFIG, NETBOOT.into()));
        let f = find_on(&mut m, Platform::Metal, &mut Vec::new()).unwrap();
        assert_eq!(f.source, format!("netboot config {NETBOOT_CONFIG}"));

        // qemu (and every cloud) passes over both, and says so.
        let mut notes = Vec::new();
        let f = find_on(&mut m, Platform::Qemu, &mut notes).unwrap();
        assert_eq!(f.source, "fw_cfg");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[1].starts_with(&format!("ignoring {INSTALL_CONFIG}: only platform metal reads the installer config; platform qemu reads fw_cfg")),
            "{notes:?}"
        );
        let mut notes = Vec::new();
        assert!(find_on(&mut m, Platform::Aws, &mut notes).is_none());
        assert!(
            notes[0].starts_with(&format!("ignoring {NETBOOT_CONFIG}")),
            "{notes:?}"
        );
    }

    #[test]
    fn fw_cfg_wins_over_a_config_drive() {
        let slipway = drive(
            "/dev/vda",
            fat16(b"SLIPWAY    "),
            &[(DRIVE_FILE, FROM_DRIVE)],
        );
        let mut m = FakeMachine {
            fw_cfg: Some(FROM_FW_CFG.into()),
            drives: vec![slipway],
            ..FakeMachine::default()
        };
        let mut notes = Vec::new();
        assert_eq!(
            chosen(&mut m, &mut notes),
            Some(("fw_cfg".into(), FROM_FW_CFG.into()))
        );
        assert_eq!(
            notes,
            ["config found in fw_cfg and on config drive /dev/vda (SLIPWAY): using fw_cfg"]
        );
        assert_eq!(m.mounted, [Path::new("/dev/vda")], "the drive was not read");

        // The same drive alone is used, and nothing is noted.
        m.fw_cfg = None;
        let mut notes = Vec::new();
        assert_eq!(
            chosen(&mut m, &mut notes),
            Some(("config drive /dev/vda (SLIPWAY)".into(), FROM_DRIVE.into()))
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_slipway_drive_wins_over_an_openstack_drive_whatever_the_device_order() {
        let openstack = drive(
            "/dev/vda",
            iso9660("config-2"),
            &[(metadata::OPENSTACK_META_DATA, NOVA_META)],
        );
        let cidata = drive("/dev/vdb", iso9660("CIDATA"), &[(DRIVE_FILE, FROM_DRIVE)]);
        let mut m = FakeMachine {
            drives: vec![openstack, cidata],
            ..FakeMachine::default()
        };
        let mut notes = Vec::new();
        assert_eq!(
            chosen(&mut m, &mut notes),
            Some(("config drive /dev/vdb (CIDATA)".into(), FROM_DRIVE.into()))
        );
        assert_eq!(
            notes,
            [
                "config found on config drive /dev/vdb (CIDATA) and on config drive /dev/vda \
              (config-2, openstack): using config drive /dev/vdb (CIDATA)"
            ]
        );

        // fw_cfg before both: one note for each source left out.
        m.fw_cfg = Some(FROM_FW_CFG.into());
        let mut notes = Vec::new();
        assert_eq!(chosen(&mut m, &mut notes).unwrap().0, "fw_cfg");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[1].starts_with("config found in fw_cfg and on config drive /dev/vda (config-2"),
            "{notes:?}"
        );

        // The OpenStack drive alone: Nova's metadata made into a config.
        m.fw_cfg = None;
        m.drives.pop();
        let mut notes = Vec::new();
        let (source, text) = chosen(&mut m, &mut notes).unwrap();
        assert_eq!(source, "config drive /dev/vda (config-2, openstack)");
        let cfg = crate::config::parse(&text).unwrap();
        assert_eq!(cfg.hostname.as_deref(), Some("os-1"));
    }

    #[test]
    fn drives_without_a_config_or_a_known_label_are_passed_over() {
        let mut m = FakeMachine {
            drives: vec![
                drive(
                    "/dev/vda",
                    fat16(b"DATA       "),
                    &[(DRIVE_FILE, FROM_DRIVE)],
                ),
                drive("/dev/vdb", fat16(b"SLIPWAY    "), &[]),
                FakeDrive {
                    files: None,
                    ..drive("/dev/vdc", fat16(b"slipway    "), &[])
                },
                drive("/dev/vdd", vec![0u8; 40960], &[(DRIVE_FILE, FROM_DRIVE)]),
            ],
            ..FakeMachine::default()
        };
        let mut notes = Vec::new();
        assert_eq!(chosen(&mut m, &mut notes), None);
        assert_eq!(
            notes,
            [
                "warning: config drive /dev/vdb (SLIPWAY): no slipway.toml on it",
                "warning: config drive /dev/vdc (slipway): mounting /dev/vdc (vfat) read-only: EINVAL",
            ]
        );
        assert_eq!(m.mounted, [Path::new("/dev/vdb"), Path::new("/dev/vdc")]);

        // A later good drive is still found.
        let cidata = drive(
            "/dev/vde",
            fat16(b"cidata     "),
            &[(DRIVE_FILE, FROM_DRIVE)],
        );
        m.drives.push(cidata);
        let mut notes = Vec::new();
        assert_eq!(
            chosen(&mut m, &mut notes),
            Some(("config drive /dev/vde (cidata)".into(), FROM_DRIVE.into()))
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn block_devices_are_found_without_udev_and_by_label_first() {
        let d = crate::provision::tests::tempfile_lite::Dir::new();
        let root = fs::canonicalize(&d.0).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        let images = [
            ("vda", vec![0u8; 40960]),
            ("vdb", fat16(b"SLIPWAY    ")),
            ("vdc", iso9660("config-2")),
            ("loop0", fat16(b"SLIPWAY    ")),
            ("ram0", fat16(b"SLIPWAY    ")),
            ("dm-0", fat16(b"SLIPWAY    ")),
        ];
        for (name, image) in &images {
            fs::create_dir_all(root.join("sys/class/block").join(name)).unwrap();
            fs::write(root.join("dev").join(name), image).unwrap();
        }
        let found = |root: &Path| -> Vec<(PathBuf, String)> {
            probed_block_devices_in(root)
                .into_iter()
                .map(|(p, probe)| (p, probe.label))
                .collect()
        };
        // No /dev/disk/by-label (udev has not run): the kernel's list, by name, without
        // loop, ram and dm devices or a device without a known file system.
        let dev = |n: &str| root.join("dev").join(n);
        assert_eq!(
            found(&root),
            [
                (dev("vdb"), "SLIPWAY".into()),
                (dev("vdc"), "config-2".into())
            ]
        );
        // udev's link: that device first, and once.
        fs::create_dir_all(root.join("dev/disk/by-label")).unwrap();
        std::os::unix::fs::symlink("../../vdc", root.join("dev/disk/by-label/config-2")).unwrap();
        assert_eq!(
            found(&root),
            [
                (dev("vdc"), "config-2".into()),
                (dev("vdb"), "SLIPWAY".into())
            ]
        );
        fs::remove_dir_all(&root).unwrap();
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
