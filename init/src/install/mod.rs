//! The installer (`slipway.install=1 slipway.media=<ID>`): slipway-init's own mode, run
//! from the installer UKI of an ISO (CD-ROM, virtual media or a USB stick). Consumes the
//! medium (found by its ISO 9660 volume set `SLIPWAY-<ID>`), its embedded config and
//! `/slipway/install.json` with the payload files; produces the image on the disk the
//! config names, with a GPT for that disk's logical block size, fresh disk, ESP and
//! /var ids, and the config at `/var/lib/slipway/install/config.toml` on the new /var,
//! where the installed system's `metal` platform reads it. Every step prints a
//! `slipway-install:` line; every failure names the step, the disk or file and the error,
//! and powers off. Why it runs here and not in a live system: decision 0036.

mod config;
mod layout;
mod manifest;
mod medium;
mod probe;
mod stream;
mod target;

use crate::cmdline::Cmdline;
use crate::console::{self, fail, At, Res};
use crate::{disks, ext4, sys};
use config::{After, Install};
use manifest::Manifest;
use nix::mount::{mount, umount, MsFlags};
use nix::sys::reboot::RebootMode;
use slipway_common::gpt;
use slipway_common::guid::Guid;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

/// Where the installed system's agent reads the config (on its /var).
pub const CONFIG_ON_VAR: &str = "lib/slipway/install/config.toml";
/// Where the new /var is mounted to write it.
const TARGET_VAR: &str = "/run/slipway/target-var";

/// Runs the installer; never returns: reboots or powers off.
pub fn run(c: &Cmdline) -> ! {
    match install(c) {
        Ok(After::Reboot) => {
            console::say("rebooting");
            console::stop(RebootMode::RB_AUTOBOOT)
        }
        Ok(After::Poweroff) => {
            console::say("powering off");
            console::stop(RebootMode::RB_POWER_OFF)
        }
        Err(f) => console::fail_and_power_off(&f),
    }
}

/// A disk that could be the target, and what it holds.
struct Candidate {
    info: target::BlockInfo,
    holds: Vec<String>,
}

/// The whole install, top-down.
fn install(c: &Cmdline) -> Res<After> {
    let id = c.media.as_deref().unwrap_or_default();
    console::say(&format!("looking for the installer medium SLIPWAY-{id}"));
    let medium = medium::find(id, Duration::from_secs(c.rootwait))?;
    medium::mount_medium(&medium)?;
    console::say(&format!(
        "medium /dev/{medium} mounted on {}",
        medium::MOUNT
    ));
    let (text, inst) = read_config()?;
    let m = read_manifest()?;
    console::say(&format!(
        "image {} {} (root hash {})",
        m.image, m.version, m.root_hash
    ));
    let disks = candidates(&medium);
    console::say(&format!("{} disks:", disks.len()));
    for d in &disks {
        console::say(&format!(
            "  {}; holds {}",
            target::describe(&d.info),
            if d.holds.is_empty() {
                "nothing (blank)".to_string()
            } else {
                d.holds.join(", ")
            }
        ));
    }
    let Some(t) = &inst.target else {
        console::say(
            "no target disk named (set target = \"/dev/disk/by-id/NAME\" or target-serial = \"SERIAL\" in the config's [install] table); nothing was written",
        );
        return Ok(After::Poweroff);
    };
    let infos: Vec<target::BlockInfo> = disks.iter().map(|d| d.info.clone()).collect();
    let i = target::choose(&infos, t, &medium)
        .map_err(|(what, why)| fail("install-pick-target", what, why))?;
    let d = &disks[i];
    let dev = format!("/dev/{}", d.info.name);
    console::say(&format!("target {}", target::describe(&d.info)));
    check_target(d, &inst, &dev)?;
    let ids = fresh_ids().at("install-fresh-ids", "getrandom")?;
    let plan = layout::plan(&m, d.info.lba, d.info.size, ids).at("install-layout", &dev)?;
    write_disk(&dev, &d.info, &plan)?;
    if !text.is_empty() {
        write_config(&d.info.name, &plan, &text)?;
    }
    console::say(&format!(
        "installed {} {} onto {dev} ({}-byte blocks, disk GUID {})",
        m.image, m.version, d.info.lba, ids.disk
    ));
    Ok(inst.after)
}

/// The embedded config's text and its `[install]` table.
fn read_config() -> Res<(String, Install)> {
    const STEP: &str = "install-read-config";
    let p = medium::path("config.area");
    let area = fs::read(&p).at(STEP, &p)?;
    let bytes = config::from_area(&area).at(STEP, &p)?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| fail(STEP, &p, "the config is not UTF-8 text"))?;
    let inst = config::parse(&text).at(STEP, format!("{p} (the embedded config)"))?;
    if text.is_empty() {
        console::say("no config embedded in the medium (slipway iso embed-config ISO CONFIG)");
    } else {
        console::say(&format!("config: {} bytes from {p}", text.len()));
    }
    Ok((text, inst))
}

fn read_manifest() -> Res<Manifest> {
    let p = medium::path("install.json");
    let b = fs::read(&p).at("install-read-manifest", &p)?;
    manifest::parse(&b).at("install-read-manifest", &p)
}

/// Every whole disk but the medium, with what it holds.
fn candidates(medium: &str) -> Vec<Candidate> {
    let root = std::path::Path::new("/");
    disks::list()
        .into_iter()
        .filter_map(|name| {
            let info = match target::read(root, &name) {
                Ok(i) => i,
                Err(e) => {
                    console::say(&format!("  {name}: {e}"));
                    return None;
                }
            };
            let holds = if name == medium {
                vec!["the installer medium".to_string()]
            } else {
                holds(&info)
            };
            Some(Candidate { info, holds })
        })
        .collect()
}

/// The partition tables and file-system signatures at the start and end of a disk.
fn holds(d: &target::BlockInfo) -> Vec<String> {
    let read = || -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let f = File::open(format!("/dev/{}", d.name))?;
        let mut head = vec![0u8; probe::HEAD.min(d.size as usize)];
        f.read_exact_at(&mut head, 0)?;
        let mut tail = vec![0u8; d.lba as usize];
        if d.size >= d.lba {
            f.read_exact_at(&mut tail, d.size - d.lba)?;
        }
        Ok((head, tail))
    };
    match read() {
        Ok((head, tail)) => probe::signatures(&head, &tail, d.lba as usize)
            .into_iter()
            .map(String::from)
            .collect(),
        Err(e) => vec![format!("unreadable ({e})")],
    }
}

/// Refuses a disk that holds anything unless `wipe = true`.
fn check_target(d: &Candidate, inst: &Install, dev: &str) -> Res<()> {
    if d.holds.is_empty() {
        return Ok(());
    }
    let found = d.holds.join(", ");
    if !inst.wipe {
        return Err(fail(
            "install-check-target",
            dev,
            format!(
                "holds {found}; nothing was written (set wipe = true in [install] to write over it)"
            ),
        ));
    }
    console::say(&format!(
        "{dev} holds {found}; writing over it (wipe = true)"
    ));
    Ok(())
}

fn fresh_ids() -> std::io::Result<layout::FreshIds> {
    let mut r = [0u8; 48];
    sys::getrandom(&mut r)?;
    Ok(layout::FreshIds {
        disk: Guid::from_hash(&r[..16]),
        esp: Guid::from_hash(&r[16..32]),
        var: Guid::from_hash(&r[32..]),
    })
}

/// Clears the old start and end, writes and checks every partition's contents, then
/// the table (last, so a disk that fails midway has no valid table), and has the kernel
/// read it.
fn write_disk(dev: &str, d: &target::BlockInfo, plan: &layout::Plan) -> Res<()> {
    const STEP: &str = "install-write";
    let f = File::options()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(dev)
        .at(STEP, format!("{dev} (opening it exclusively)"))?;
    let edge = layout::ALIGN.min(d.size);
    stream::zero(&f, 0, edge).at(STEP, dev)?;
    stream::zero(&f, d.size - edge, edge).at(STEP, dev)?;
    for w in &plan.writes {
        let p = &w.partition;
        let Some(file) = &w.file else {
            console::say(&format!(
                "{dev} partition {} ({}, {}, {} bytes at byte {}): created, nothing written (an update fills it)",
                p.number,
                w.role.name(),
                p.uuid,
                p.size(),
                p.offset()
            ));
            continue;
        };
        let src = medium::path(&file.path);
        console::say(&format!(
            "writing {} ({} bytes) to {dev} partition {} ({}, {}) at byte {}",
            file.path,
            file.size,
            p.number,
            w.role.name(),
            p.uuid,
            p.offset()
        ));
        let subject = format!("{dev} partition {} ({})", p.number, file.path);
        stream::copy(std::path::Path::new(&src), &f, p.offset(), p.size(), file)
            .at(STEP, &subject)?;
        stream::read_back(&f, p.offset(), file).at("install-verify", &subject)?;
        let data: u64 = file.data.iter().map(|(_, n)| n).sum();
        console::say(&format!(
            "checked {}: {data} data bytes in {} extents, sha256 {} as written and as read back; the other {} bytes zeroed",
            file.path,
            file.data.len(),
            file.data_sha256,
            file.size - data
        ));
    }
    let t = &plan.table;
    f.write_all_at(&t.protective_mbr(), 0)
        .at(STEP, format!("{dev} protective MBR"))?;
    for (off, bytes) in t.serialize() {
        f.write_all_at(&bytes, off)
            .at(STEP, format!("{dev} GPT at byte {off}"))?;
    }
    f.sync_all().at(STEP, format!("{dev} (fsync)"))?;
    gpt::Table::read(&f, d.lba, d.size / d.lba).at("install-verify", format!("{dev} GPT"))?;
    console::say(&format!(
        "wrote the GPT of {dev} for {}-byte blocks: {} partitions",
        d.lba,
        plan.writes.len()
    ));
    sys::blkrrpart(&f).at(STEP, format!("{dev} (BLKRRPART: re-reading the table)"))
}

/// Mounts the new var partition and writes the config to [`CONFIG_ON_VAR`] (0600).
fn write_config(disk: &str, plan: &layout::Plan, text: &str) -> Res<()> {
    const STEP: &str = "install-write-config";
    let var = plan
        .writes
        .iter()
        .find(|w| w.role == manifest::Role::Var)
        .map(|w| w.partition.number)
        .ok_or_else(|| fail(STEP, disk, "no var partition"))?;
    let start = Instant::now();
    let name = loop {
        if let Some(n) = disks::partition_name(disk, var) {
            break n;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(fail(
                STEP,
                disk,
                format!("partition {var} did not appear after 10 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let node = format!("/dev/{name}");
    let mut sb = [0u8; ext4::SIZE];
    File::open(&node)
        .and_then(|f| f.read_exact_at(&mut sb, ext4::OFFSET))
        .at(STEP, &node)?;
    if !matches!(ext4::probe(&sb), ext4::Probe::Ext4(_)) {
        return Err(fail(STEP, &node, "the var partition does not hold ext4"));
    }
    fs::create_dir_all(TARGET_VAR).at(STEP, TARGET_VAR)?;
    mount(
        Some(node.as_str()),
        TARGET_VAR,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .at(STEP, format!("{node} (ext4) on {TARGET_VAR}"))?;
    let path = format!("{TARGET_VAR}/{CONFIG_ON_VAR}");
    let written = put_config(&path, text);
    let unmounted = umount(TARGET_VAR).at(STEP, format!("unmounting {TARGET_VAR}"));
    written.at(STEP, format!("{node}: /var/{CONFIG_ON_VAR}"))?;
    unmounted?;
    console::say(&format!(
        "wrote the config ({} bytes) to /var/{CONFIG_ON_VAR} on {node}",
        text.len()
    ));
    Ok(())
}

fn put_config(path: &str, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::path::Path::new(path)
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir.parent().unwrap_or(dir))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()
}
