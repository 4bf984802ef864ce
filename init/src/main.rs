//! slipway-init: the `/init` of slipway's initramfs.
//!
//! Consumes: the kernel command line (`roothash=`, optional `init=`, `rootwait=`,
//! `slipway.verity=`), the modules listed in `/etc/slipway/modules`, and a GPT disk laid
//! out per the UAPI Discoverable Partitions Specification: a root partition (squashfs)
//! whose PARTUUID is the first 128 bits of the root hash, a root-verity
//! partition (made by `veritysetup format`) whose PARTUUID is the last 128 bits, and a
//! var partition (ext4).
//! Produces: `/` read-only on `/dev/mapper/root` (dm-verity), `/var` read-write and grown
//! to the end of the disk, `/etc` an overlay whose changes live on /var, and then execs
//! the real init (systemd). Any failure prints the step, the device and the error on the
//! console and halts; see `docs/initramfs.md`.
//!
//! The root's disk is the disk booted from (`LoaderDevicePartUUID`, see `scope`). Two
//! bare-metal modes: `slipway.install=1` runs the installer instead (`install`), and
//! `slipway.root=initrd` takes root and verity from files of the initramfs (`netboot`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cmdline;
mod console;
mod disks;
mod dm;
mod efi;
mod ext4;
mod install;
mod modules;
mod netboot;
mod scope;
mod slots;
mod switch;
mod sys;
mod verity;

use cmdline::{Cmdline, OnCorruption};
use console::{fail, At, Res};
use nix::mount::{mount, MsFlags};
use slipway_common::gpt::types;
use slipway_common::guid::Guid;
use std::convert::Infallible;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Where the real root is assembled.
const SYSROOT: &str = "/sysroot";
/// The device-mapper name (and /dev/mapper node) of the verified root.
const DM_NAME: &str = "root";
/// The verified root's device-mapper UUID: this, then the root hash.
const DM_UUID_PREFIX: &str = "SLIPWAY-VERITY-";
/// Persistent /etc changes live here on /var (relative to the new root).
const ETC_STATE: &str = "/var/lib/slipway/etc";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--version") {
        println!("slipway-init {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!("slipway-init: must run as PID 1 (it is the /init of an initramfs)");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        console::fail_and_halt(&fail("internal", "slipway-init", info));
    }));
    let Err(f) = boot(&args[1..]);
    console::fail_and_halt(&f);
}

/// The whole boot, top-down; returns only on failure.
fn boot(init_args: &[String]) -> Res<Infallible> {
    let start = Instant::now();
    mount_api()?;
    console::open();
    console::mark("started");
    let n = modules::load_all()?;
    console::info(&format!("loaded {n} modules"));
    let cmdline = fs::read_to_string("/proc/cmdline").at("read-cmdline", "/proc/cmdline")?;
    let cmdline = cmdline::parse(&cmdline).at("read-cmdline", "/proc/cmdline")?;
    if cmdline.install {
        install::run(&cmdline);
    }
    let boot = if cmdline.root_initrd {
        None
    } else {
        boot_partition()
    };
    let root = if cmdline.root_initrd {
        netboot::find_root(&roothash(&cmdline, "netboot-root")?)?
    } else {
        find_root(&cmdline, boot)?
    };
    let sb = open_verity(&root)?;
    mount_root(&root)?;
    prepare_var(&root, &cmdline)?;
    var_links()?;
    mount_etc()?;
    netboot::hand_over_config()?;
    note_slots(&root, boot)?;
    arm_verity(&root, &sb, &cmdline)?;
    console::mark(&format!(
        "root ready after {:.2} s; switching to {}",
        start.elapsed().as_secs_f64(),
        cmdline.init
    ));
    switch::switch_root(SYSROOT, &cmdline.init, init_args)
}

/// For a two-slot disk, the agent's slot list and the ESP's mount unit ([`slots`]).
fn note_slots(root: &Root, boot: Option<Guid>) -> Res<()> {
    let Some(disk) = &root.disk else {
        return Ok(());
    };
    if let Some(said) = slots::write(&disk.name, &disk.table.partitions(), boot)
        .at("note-slots", slots::SLOTS_FILE)?
    {
        console::info(&said);
    }
    Ok(())
}

/// Mounts /proc, /sys, /dev (devtmpfs: the kernel creates the device nodes) and /run.
fn mount_api() -> Res<()> {
    let nosuid = MsFlags::MS_NOSUID;
    let plain = nosuid | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (what, fstype, dir, flags, data) in [
        ("proc", "proc", "/proc", plain, None),
        ("sysfs", "sysfs", "/sys", plain, None),
        ("devtmpfs", "devtmpfs", "/dev", nosuid, Some("mode=0755")),
        (
            "tmpfs",
            "tmpfs",
            "/run",
            nosuid | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
    ] {
        fs::create_dir_all(dir).at("mount-api", dir)?;
        mount(Some(what), dir, Some(fstype), flags, data).at("mount-api", dir)?;
    }
    Ok(())
}

/// The root and verity block devices the root hash names: partitions of one disk, or
/// loop devices over files of the initramfs (netboot).
pub(crate) struct Root {
    /// The disk, when the root is on one (its var partition is used).
    disk: Option<disks::Disk>,
    /// Bytes of the root device.
    root_bytes: u64,
    root_dev: String,
    verity_dev: String,
    /// The root device for messages (`vda2`, `loop0 (/slipway/root.img)`).
    root_what: String,
    roothash: String,
}

/// The two halves of the root hash as partition UUIDs (systemd's DDI convention).
fn hash_uuids(roothash: &str) -> Result<(Guid, Guid), String> {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&roothash[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("roothash={roothash} is not hex"))?;
    }
    let mut a = [0u8; 16];
    let mut z = [0u8; 16];
    a.copy_from_slice(&bytes[..16]);
    z.copy_from_slice(&bytes[16..]);
    Ok((Guid::from_uuid_bytes(a), Guid::from_uuid_bytes(z)))
}

/// The root hash from the command line, or the failure of `step`.
fn roothash(c: &Cmdline, step: &'static str) -> Res<String> {
    c.roothash.clone().ok_or_else(|| {
        fail(
            step,
            "kernel command line",
            "no roothash= (the dm-verity root hash of the image's root partition)",
        )
    })
}

/// The ESP the firmware booted from (LoaderDevicePartUUID), said on the console.
fn boot_partition() -> Option<Guid> {
    match efi::boot_partition() {
        Ok(Some(g)) => {
            console::mark(&format!(
                "booted from the ESP with partition UUID {g} (LoaderDevicePartUUID): the root is looked for on that disk only"
            ));
            Some(g)
        }
        Ok(None) => {
            console::info(
                "no LoaderDevicePartUUID: the root's disk is the only disk holding its UUID",
            );
            None
        }
        Err(e) => {
            console::notice(&format!("ignoring LoaderDevicePartUUID: {e}"));
            None
        }
    }
}

/// Waits for the disk holding the partition the root hash names (only the disk booted
/// from, when `boot` says which: [`scope::choose`]); checks its type and the verity
/// partition's.
fn find_root(c: &Cmdline, boot: Option<Guid>) -> Res<Root> {
    let wait = Duration::from_secs(c.rootwait);
    const STEP: &str = "find-root";
    let roothash = roothash(c, STEP)?;
    let (root_uuid, verity_uuid) = hash_uuids(&roothash).at(STEP, "kernel command line")?;
    let start = Instant::now();
    let mut next_note = Duration::from_secs(5);
    loop {
        let mut unreadable = Vec::new();
        let mut found = Vec::new();
        for name in disks::list() {
            match disks::Disk::read(&name) {
                Ok(d) => found.push(d),
                Err(e) => unreadable.push(format!("{name} ({e})")),
            }
        }
        let seen: Vec<scope::Seen> = found
            .iter()
            .map(|d| scope::Seen {
                name: d.name.clone(),
                partitions: d.table.partitions(),
            })
            .collect();
        let missing = match scope::choose(&seen, boot, &root_uuid) {
            scope::Choice::Disk(i) => {
                let disk = found.swap_remove(i);
                match root_on(disk, &root_uuid, &verity_uuid, &roothash)? {
                    Some(r) => return Ok(r),
                    None => "the partition devices have not appeared".to_string(),
                }
            }
            scope::Choice::NotYet(why) => why,
            scope::Choice::Refuse(subject, why) => return Err(fail(STEP, subject, why)),
        };
        let waited = start.elapsed();
        if waited >= wait {
            let mut all: Vec<String> = found.iter().map(|d| d.describe()).collect();
            all.extend(unreadable);
            let disks = if all.is_empty() {
                "no disks".to_string()
            } else {
                all.join("; ")
            };
            return Err(fail(
                STEP,
                format!("partition UUID {root_uuid}"),
                format!("{missing} after {} s; seen: {disks}", wait.as_secs()),
            ));
        }
        if waited >= next_note {
            console::notice(&format!(
                "waiting for the root partition (UUID {root_uuid}): {} s of {}",
                next_note.as_secs(),
                wait.as_secs()
            ));
            next_note += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The root on `disk` (chosen by [`scope::choose`]): the partition of UUID `root_uuid`
/// and type root, and the verity partition; `None` while the kernel has not made the
/// partition devices yet.
fn root_on(
    disk: disks::Disk,
    root_uuid: &Guid,
    verity_uuid: &Guid,
    roothash: &str,
) -> Res<Option<Root>> {
    const STEP: &str = "find-root";
    let name = disk.name.clone();
    let root = disk
        .by_uuid(root_uuid)
        .ok_or_else(|| fail(STEP, &name, format!("no partition with UUID {root_uuid}")))?;
    if root.type_guid != types::ROOT_X86_64 {
        return Err(fail(
            STEP,
            format!("{name} partition {}", root.number),
            format!(
                "has UUID {root_uuid} but type {} ({}); expected root x86-64 ({})",
                root.type_guid,
                types::name(&root.type_guid),
                types::ROOT_X86_64
            ),
        ));
    }
    let verity = disk.by_uuid(verity_uuid).ok_or_else(|| {
        fail(
            STEP,
            &name,
            format!(
                "no partition with UUID {verity_uuid} (root-verity: the last 128 bits of roothash=); {}",
                disk.describe()
            ),
        )
    })?;
    if verity.type_guid != types::ROOT_VERITY_X86_64 {
        return Err(fail(
            STEP,
            format!("{name} partition {}", verity.number),
            format!(
                "has UUID {verity_uuid} but type {}; expected root-verity x86-64 ({})",
                verity.type_guid,
                types::ROOT_VERITY_X86_64
            ),
        ));
    }
    // The kernel may not have made the partition devices yet.
    let (Some(r), Some(v)) = (
        disks::partition_name(&name, root.number),
        disks::partition_name(&name, verity.number),
    ) else {
        return Ok(None);
    };
    console::info(&format!(
        "root {r} ({root_uuid}), verity {v} ({verity_uuid}) on {name}"
    ));
    Ok(Some(Root {
        root_bytes: root.blocks() * disk.lba_size,
        disk: Some(disk),
        root_what: r.clone(),
        root_dev: r,
        verity_dev: v,
        roothash: roothash.to_string(),
    }))
}

/// Reads the verity superblock, creates /dev/mapper/root with a `verity` table that
/// fails reads with EIO (so a corrupt root makes `mount-root` fail with a message here;
/// [`arm_verity`] switches to the chosen corruption mode before handing over).
fn open_verity(r: &Root) -> Res<verity::Superblock> {
    let hash = format!("/dev/{}", r.verity_dev);
    let mut buf = [0u8; verity::SUPERBLOCK_SIZE];
    File::open(&hash)
        .and_then(|f| f.read_exact_at(&mut buf, 0))
        .at("read-verity-superblock", &hash)?;
    let sb = verity::Superblock::parse(&buf).at("read-verity-superblock", &hash)?;
    let data_bytes = r.root_bytes;
    if sb.data_bytes() > data_bytes {
        return Err(fail(
            "read-verity-superblock",
            &hash,
            format!(
                "the hash tree covers {} bytes but the root {} has {data_bytes}",
                sb.data_bytes(),
                r.root_what
            ),
        ));
    }
    let subject = format!(
        "/dev/mapper/{DM_NAME} (data {}, hash {})",
        r.root_what, r.verity_dev
    );
    let ctl = dm::Control::open().at("open-verity", &subject)?;
    // The UUID names the root hash the table checks: the running system (and a test)
    // reads what its mounted root is from /sys/block/dm-N/dm/uuid.
    let uuid = format!("{DM_UUID_PREFIX}{}", r.roothash);
    let (major, minor) = ctl.create(DM_NAME, &uuid).at("open-verity", &subject)?;
    load_table(&ctl, r, &sb, OnCorruption::Eio).at("open-verity", &subject)?;
    ctl.resume(DM_NAME).at("open-verity", &subject)?;
    let node = format!("/dev/mapper/{DM_NAME}");
    if !fs::exists(&node).unwrap_or(false) {
        nix::sys::stat::mknod(
            node.as_str(),
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major, minor),
        )
        .at("open-verity", &node)?;
    }
    Ok(sb)
}

fn load_table(
    ctl: &dm::Control,
    r: &Root,
    sb: &verity::Superblock,
    mode: OnCorruption,
) -> Result<(), String> {
    let params = sb.table_params(
        &disks::dev(&r.root_dev)?,
        &disks::dev(&r.verity_dev)?,
        &r.roothash,
        mode,
    );
    ctl.load(
        DM_NAME,
        dm::READONLY,
        sb.data_bytes() / 512,
        "verity",
        &params,
    )
}

/// Mounts the verified root read-only at /sysroot: squashfs, checked by its magic (erofs
/// roots were retired, docs/decisions/0034-erofs.md).
fn mount_root(r: &Root) -> Res<()> {
    const STEP: &str = "mount-root";
    let node = format!("/dev/mapper/{DM_NAME}");
    let subject = format!("{node} (verity over {})", r.root_what);
    let mut head = [0u8; 4096];
    File::open(&node)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .map_err(|e| {
            let why = if e.raw_os_error() == Some(nix::libc::EIO) {
                " (dm-verity rejected a block of the root partition: the image is corrupt or roothash= is wrong)"
            } else {
                ""
            };
            fail(STEP, &subject, format!("reading the file-system superblock: {e}{why}"))
        })?;
    let le32 = |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    if le32(0) != 0x7371_7368 {
        return Err(fail(STEP, &subject, "not a squashfs file system"));
    }
    let fstype = "squashfs";
    fs::create_dir_all(SYSROOT).at(STEP, SYSROOT)?;
    mount(
        Some(node.as_str()),
        SYSROOT,
        Some(fstype),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .at(STEP, format!("{subject} as {fstype}"))?;
    console::info(&format!("mounted {node} ({fstype}) read-only on {SYSROOT}"));
    Ok(())
}

/// /var: a tmpfs (`slipway.var=tmpfs`), or the var partition of the root's disk.
fn prepare_var(r: &Root, c: &Cmdline) -> Res<()> {
    match (&r.disk, c.var_tmpfs) {
        (_, true) => netboot::mount_var_tmpfs(SYSROOT),
        (Some(disk), false) => prepare_var_disk(disk),
        (None, false) => Err(fail(
            "find-var",
            &r.root_what,
            "the root is not on a disk, so there is no var partition: add slipway.var=tmpfs",
        )),
    }
}

/// Finds the var partition on the root's disk, grows it to the end of the disk if the
/// disk is larger than the table says, mounts it and grows its ext4 to fill it.
fn prepare_var_disk(disk: &disks::Disk) -> Res<()> {
    let mut table = disk.table.clone();
    let var = table
        .partitions()
        .into_iter()
        .find(|p| p.type_guid == types::VAR)
        .ok_or_else(|| {
            fail(
                "find-var",
                &disk.name,
                format!(
                    "no partition of type var ({}); {}",
                    types::VAR,
                    disk.describe()
                ),
            )
        })?;
    let var_name = disks::partition_name(&disk.name, var.number).ok_or_else(|| {
        fail(
            "find-var",
            &disk.name,
            format!("partition {} has no device", var.number),
        )
    })?;
    let var_node = format!("/dev/{var_name}");

    // Grow the partition (GPT, then the kernel's view).
    let old_backup = table.backup_lba();
    if let Some(new_last) = table
        .grow(var.number, disk.lbas)
        .at("grow-var", &var_node)?
    {
        let mut f = File::options()
            .read(true)
            .write(true)
            .open(format!("/dev/{}", disk.name))
            .at("grow-var", format!("/dev/{}", disk.name))?;
        table
            .write(&mut f, Some(old_backup))
            .at("grow-var", format!("/dev/{}", disk.name))?;
        let lba = disk.lba_size;
        let start = var.first_lba * lba;
        let len = (new_last - var.first_lba + 1) * lba;
        sys::blkpg_resize(&f, var.number, start, len).at(
            "grow-var",
            format!("{var_node} (BLKPG resize to {len} bytes)"),
        )?;
        console::info(&format!(
            "grew {var_name} from {} MiB to {} MiB",
            (var.blocks() * lba) >> 20,
            len >> 20
        ));
    }

    // The file system: the image builder makes it; slipway-init only grows it.
    let mut sbuf = [0u8; ext4::SIZE];
    File::open(&var_node)
        .and_then(|f| f.read_exact_at(&mut sbuf, ext4::OFFSET))
        .at("mount-var", &var_node)?;
    let sb = match ext4::probe(&sbuf) {
        ext4::Probe::Ext4(sb) => sb,
        ext4::Probe::Empty => {
            return Err(fail(
                "mount-var",
                &var_node,
                "no file system on the var partition (the image must carry an ext4 there; slipway-init does not run mkfs)",
            ))
        }
        ext4::Probe::Other => {
            return Err(fail("mount-var", &var_node, "the var partition does not hold ext4"))
        }
    };
    let target = format!("{SYSROOT}/var");
    mount(
        Some(var_node.as_str()),
        target.as_str(),
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .at("mount-var", format!("{var_node} on {target}"))?;
    let part_bytes = disks::size_bytes(&var_name).at("grow-var-fs", &var_node)?;
    let want = part_bytes / sb.block_size;
    if want > sb.blocks {
        let dir = File::open(&target).at("grow-var-fs", &target)?;
        sys::ext4_resize(&dir, want).at(
            "grow-var-fs",
            format!(
                "{var_node} (EXT4_IOC_RESIZE_FS from {} to {want} blocks)",
                sb.blocks
            ),
        )?;
        console::mark(&format!(
            "grew the ext4 on {var_node} from {} to {want} blocks",
            sb.blocks
        ));
    }
    Ok(())
}

/// The compatibility links every Linux system has on /var: `run` to `../run` and
/// `lock` to `../run/lock`. A fresh /var has neither, and systemd marks the system
/// tainted (`var-run-bad`) when /var/run is not that link, so they are made before
/// systemd starts. Anything already there is left alone.
fn var_links() -> Res<()> {
    for (name, target) in [("run", "../run"), ("lock", "../run/lock")] {
        let link = format!("{SYSROOT}/var/{name}");
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(target, &link).at("var-links", &link)?;
        }
    }
    Ok(())
}

/// Mounts an overlay on /sysroot/etc whose upper layer lives on /var, so changes to
/// /etc (provisioning, machine-id) persist across boots.
fn mount_etc() -> Res<()> {
    const STEP: &str = "mount-etc";
    let state = format!("{SYSROOT}{ETC_STATE}");
    let (upper, work) = (format!("{state}/upper"), format!("{state}/work"));
    for d in [&upper, &work] {
        fs::create_dir_all(d).at(STEP, d)?;
    }
    let etc = format!("{SYSROOT}/etc");
    let opts = format!("lowerdir={etc},upperdir={upper},workdir={work}");
    mount(
        Some("overlay"),
        etc.as_str(),
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .at(STEP, format!("overlay on {etc} ({opts})"))
}

/// Replaces the EIO-mode verity table with the command line's corruption mode
/// (default: panic), live: load, suspend, resume.
fn arm_verity(r: &Root, sb: &verity::Superblock, c: &Cmdline) -> Res<()> {
    if c.on_corruption == OnCorruption::Eio {
        return Ok(());
    }
    let subject = format!("/dev/mapper/{DM_NAME}");
    let ctl = dm::Control::open().at("arm-verity", &subject)?;
    load_table(&ctl, r, sb, c.on_corruption).at("arm-verity", &subject)?;
    ctl.suspend(DM_NAME).at("arm-verity", &subject)?;
    ctl.resume(DM_NAME).at("arm-verity", &subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hash_halves_are_partition_uuids() {
        let h = "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210";
        let (a, z) = hash_uuids(h).unwrap();
        assert_eq!(a.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(z.to_string(), "01234567-89ab-cdef-fedc-ba9876543210");
    }

    /// A roothash whose first half is no partition's UUID stops the boot at find-root,
    /// naming that UUID and where it comes from. The real scan runs over this
    /// machine's disks (none carries the made-up UUID); `rootwait=0` scans once.
    #[test]
    fn a_wrong_roothash_names_the_partition_uuid_it_did_not_find() {
        let hash = "5117a9e0b0075e7d00c0ffee0badf00d0123456789abcdeffedcba9876543210";
        let c = cmdline::parse(&format!("console=ttyS0 roothash={hash} rootwait=0")).unwrap();
        let Err(e) = find_root(&c, None) else {
            panic!("a disk of this machine has the partition UUID of roothash={hash}");
        };
        // The UUID text of the first 16 bytes, as in the partition table's tools.
        let h = &hash[..32];
        let uuid = [&h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]].join("-");
        assert_eq!(e.step, "find-root");
        assert_eq!(e.subject, format!("partition UUID {uuid}"));
        let want = format!(
            "find-root: partition UUID {uuid}: no partition with UUID {uuid} (the first 128 bits of roothash=) on any disk after 0 s; seen: "
        );
        assert!(e.to_string().starts_with(&want), "{e}");
    }
}
