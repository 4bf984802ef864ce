//! The host image: consumes the assembled tree of a `kind = "host"` recipe (kernel,
//! pruned modules, systemd, ...) and produces a bootable GPT disk, top-down:
//!
//! 1. split the tree: the kernel and systemd's EFI stub go to the UKI, not the root; the
//!    tree's `/var` moves to `/usr/share/factory/var` with a tmpfiles.d file that copies
//!    it into the empty /var partition at first boot; `/etc/machine-id` says
//!    `uninitialized`;
//! 2. the initramfs (slipway-init + the boot modules), [`crate::disk::initramfs`];
//! 3. the read-only root (squashfs) and its dm-verity hash tree;
//! 4. the UKI (stub + kernel + initramfs + `roothash=` command line + os-release);
//! 5. the ESP ([`crate::disk::loader`]): two slots (the default), systemd-boot at
//!    `EFI/BOOT/BOOTX64.EFI` and the UKI at `EFI/Linux/slipway-VERSION.efi`; one slot,
//!    the UKI at `EFI/BOOT/BOOTX64.EFI`; the empty /var ext4;
//! 6. the GPT disk ([`crate::disk::layout`]): ESP, root, root-verity, (slot B's empty
//!    root and root-verity, [`crate::disk::slots`],) var (types from the Discoverable
//!    Partitions Specification; root and verity UUIDs are the halves of the root hash,
//!    the other ids derive from it).
//!
//! Everything is a function of the tree and the epoch, so two builds give the same bytes.

use crate::disk::erofs::RootFs;
use crate::disk::gpt::Guid;
use crate::io::hash::sha256_hex;
use crate::recipe::Recipe;
use crate::tree::{Entry, Kind, Tree};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where systemd's EFI stub is in the tree (package systemd-boot-efi).
pub const STUB: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Where the tree's /var goes in the root.
pub const FACTORY_VAR: &str = "usr/share/factory/var";
/// The tmpfiles.d file that copies it back at first boot.
pub const FACTORY_TMPFILES: &str = "usr/lib/tmpfiles.d/00-slipway-factory-var.conf";
/// Default ESP size of a one-slot disk: FAT32, room for two UKIs.
pub const DEFAULT_ESP: u64 = 64 << 20;
/// The smallest default ESP of a two-slot disk (it grows with the UKI: [`esp_size`]).
pub const DEFAULT_ESP_SLOTS: u64 = 128 << 20;
/// UKIs a two-slot ESP holds: one per slot and one more, the file an update writes
/// under a temporary name before it renames it into place.
pub const ESP_UKIS: u64 = 3;
/// Default /var size as built (grown at first boot).
pub const DEFAULT_VAR: u64 = 128 << 20;
/// Kernel arguments every image gets, before the recipe's.
/// `systemd.firstboot=off`: an image has no one at its console to answer the first-boot
/// wizard's questions (provisioning configures the node instead); `no_timer_check`:
/// under emulation the kernel's IO-APIC timer probe can miss its window and panic.
pub const BASE_CMDLINE: &[&str] = &["console=ttyS0", "no_timer_check", "systemd.firstboot=off"];

/// The host programs a host image build runs: mksquashfs only for `root-fs =
/// "squashfs-xz"` (the default root is slipway's own writer's; erofs roots retired).
pub fn tools(r: &Recipe) -> Vec<&'static str> {
    let mut t = vec![
        "depmod",
        "objcopy",
        "mkfs.vfat",
        "mmd",
        "mcopy",
        "mkfs.ext4",
    ];
    let kind = crate::disk::root::kind_of(r);
    if kind.needs_host_tool() {
        t.push(kind.program());
    }
    if r.secure_boot.is_some() {
        t.extend(["osslsigncode", "openssl"]);
    }
    t
}

/// The smallest /var and ESP the disk stage makes: bounds the recipe checks too, so
/// they live with the recipe's other size bounds (the recipe does not import the disk).
pub use crate::recipe::check::{MIN_ESP, MIN_VAR};

/// Checks, once the tree is assembled and before the disk is built, that the ESP can
/// hold the UKI's known parts (kernel and EFI stub; the initramfs and command line come
/// on top) with 1 MiB for the file system.
pub fn check_esp_fits(r: &Recipe, tree: &Tree) -> Result<()> {
    let esp_size = r.disk.esp_size.map(|s| s.0).unwrap_or(default_esp(r));
    let kernel = crate::kernel::find(tree).map_err(|e| needs_kernel(r, e))?;
    let vmlinuz = file_bytes(tree, &kernel.vmlinuz_path, "kernel")?.len() as u64;
    let stub = file_bytes(tree, STUB, "systemd EFI stub")
        .map(|b| b.len() as u64)
        .unwrap_or(0);
    if vmlinuz + stub + (1 << 20) > esp_size {
        return Err(esp_too_small(
            r,
            format!(
                "cannot hold the UKI: its kernel and EFI stub alone are {:.1} MiB (use at least {} MiB)",
                (vmlinuz + stub) as f64 / (1u64 << 20) as f64,
                (vmlinuz + stub).div_ceil(1 << 20) + 16
            ),
        ));
    }
    Ok(())
}

/// `disk.esp-size` (as written, or the default) is too small: `why`.
fn esp_too_small(r: &Recipe, why: String) -> anyhow::Error {
    let at = r.origin_of("disk.esp-size");
    match r.disk.esp_size {
        Some(s) => at.err(format!("{} MiB {why}", s.0 >> 20)),
        None => at.err(format!(
            "the default {} MiB {why}; set disk.esp-size",
            default_esp(r) >> 20
        )),
    }
}

/// The smallest default ESP of `r` ([`DEFAULT_ESP`] or [`DEFAULT_ESP_SLOTS`]).
fn default_esp(r: &Recipe) -> u64 {
    if r.disk.slot_count() == 2 {
        DEFAULT_ESP_SLOTS
    } else {
        DEFAULT_ESP
    }
}

/// The ESP of `r` for a UKI of `uki` bytes and `other` bytes of other files (the boot
/// loader, its configuration, enrollment): `disk.esp-size`, else the default. A
/// two-slot ESP holds [`ESP_UKIS`] UKIs and the rest with 2 MiB for FAT's tables; the
/// default grows to that (in whole MiB) when the UKI is large, and a set size that is
/// smaller is refused.
pub fn esp_size(r: &Recipe, uki: u64, other: u64) -> Result<u64> {
    let (copies, spare) = if r.disk.slot_count() == 2 {
        (ESP_UKIS, 2 << 20)
    } else {
        (1, 1 << 20)
    };
    let need = (copies * uki + other + spare).div_ceil(1 << 20) << 20;
    match r.disk.esp_size {
        Some(s) if s.0 < need => Err(esp_too_small(
            r,
            format!(
                "cannot hold {copies} UKI(s) of {:.1} MiB and the boot files (use at least {} MiB)",
                uki as f64 / (1u64 << 20) as f64,
                need >> 20
            ),
        )),
        Some(s) => Ok(s.0),
        None => Ok(default_esp(r).max(need)),
    }
}

/// The host image has no kernel (`e` says why): the recipe's `[kernel]` is missing or
/// names no kernel package the image has.
fn needs_kernel(r: &Recipe, e: anyhow::Error) -> anyhow::Error {
    match &r.kernel_at {
        Some(at) => at.sub("package").wrap(e),
        None => r.origin_of("image.kind").wrap(e.context(
            "a host image needs a [kernel] table naming its package and modules \
             (e.g. modules = [\"storage\", \"root\", \"var\"])",
        )),
    }
}

pub use crate::output::{HostDisk, PartitionInfo};

/// The files the disk stage writes into the output directory.
pub struct Written {
    /// What was made.
    pub disk: HostDisk,
    /// `disk.raw`, `uki.efi`, `vmlinuz`, `initrd`.
    pub outputs: Vec<crate::output::Output>,
    /// The ESP's files (path, bytes), as [`crate::disk::loader::esp_files`] lists them:
    /// the installer's ESP for 4096-byte sectors is made of the same.
    pub esp_files: Vec<(String, Vec<u8>)>,
}

/// The bytes of the file at `path` in `tree` (symlinks followed); `what` names it in
/// the error.
pub(crate) fn file_bytes<'t>(tree: &'t Tree, path: &str, what: &str) -> Result<&'t [u8]> {
    let resolved = tree.resolve(path).unwrap_or_else(|| path.to_string());
    match tree.get(&resolved).map(|e| &e.kind) {
        Some(Kind::File(c)) => Ok(c.as_slice()),
        _ => bail!("the image has no {what} (/{path})"),
    }
}

/// A 32-byte digest of `parts`, for ids that must not collide between their uses.
pub(crate) fn derive(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Puts the provisioning agent (the static `slipway-agent`) and its units into the
/// tree, and enables `slipway-provision.service` (sysinit.target), the cloud metadata
/// unit and the readiness marker `slipway-ready.service` (multi-user.target). The test agent is
/// only started by a provisioning config that asks for it: never baked in.
pub fn add_agent(t: &mut Tree, agent: &[u8], epoch: u64) -> Result<()> {
    let bin = crate::boot::agent::AGENT_IN_IMAGE.trim_start_matches('/');
    t.ensure_parents(bin, epoch)?;
    t.remove(bin);
    t.put(bin, Entry::file(agent.to_vec(), 0o755, epoch))?;
    for f in crate::disk::rootfs::AGENT_UNITS {
        t.ensure_parents(f.path, epoch)?;
        t.remove(f.path);
        t.put(f.path, Entry::file(f.bytes.to_vec(), 0o644, epoch))?;
    }
    // Provisioning early (sysinit), cloud metadata once the network is up.
    for (link, unit) in [
        (
            "etc/systemd/system/sysinit.target.wants/slipway-provision.service",
            "slipway-provision.service",
        ),
        (
            "etc/systemd/system/multi-user.target.wants/slipway-metadata.service",
            "slipway-metadata.service",
        ),
        // The readiness marker (slipway-ready.target and its health check come with it).
        (
            "etc/systemd/system/multi-user.target.wants/slipway-ready.service",
            "slipway-ready.service",
        ),
        // A/B updates (docs/updates.md): each does nothing on a one-slot disk.
        (
            "etc/systemd/system/multi-user.target.wants/slipway-bless.service",
            "slipway-bless.service",
        ),
        (
            "etc/systemd/system/multi-user.target.wants/slipway-update-gate.service",
            "slipway-update-gate.service",
        ),
        (
            "etc/systemd/system/timers.target.wants/slipway-update.timer",
            "slipway-update.timer",
        ),
    ] {
        t.ensure_parents(link, epoch)?;
        t.remove(link);
        t.put(
            link,
            Entry::symlink(&format!("/usr/lib/systemd/system/{unit}"), epoch),
        )?;
    }
    Ok(())
}

/// Splits the assembled tree into the root file system's tree (see the module doc),
/// with the provisioning agent added.
pub fn root_tree(tree: &Tree, agent: &[u8], epoch: u64) -> Result<Tree> {
    let mut t = tree.clone();
    add_agent(&mut t, agent, epoch)?;
    let boot: Vec<String> = t.under("boot").map(|(p, _)| p.clone()).collect();
    for p in boot {
        t.remove(&p);
    }
    t.remove("usr/lib/systemd/boot");
    // ConditionNeedsUpdate= (ldconfig, hwdb, journal catalog) compares /usr's mtime
    // with these stamps: the image is built up to date, and /usr is read-only anyway.
    let stamp = format!(
        "# Written by slipway: /usr and this directory were built together.\nTIMESTAMP_NSEC={}\n",
        u128::from(epoch) * 1_000_000_000
    );
    for p in ["etc/.updated", "var/.updated"] {
        t.remove(p);
        t.ensure_parents(p, epoch)?;
        t.put(p, Entry::file(stamp.clone().into_bytes(), 0o644, epoch))?;
    }
    // /var: into the factory directory, copied back by tmpfiles at first boot.
    let var: Vec<(String, Entry)> = t.remove("var");
    let mut tmpfiles = String::from(
        "# Written by slipway: the image's /var content, copied into the empty /var\n\
         # partition at first boot (C copies only what does not exist yet).\n",
    );
    let mut moved: Vec<(String, Entry)> = Vec::new();
    for (p, mut e) in var {
        if p == "var" {
            continue;
        }
        if let Kind::Hardlink(target) = &e.kind {
            if let Some(rest) = target.strip_prefix("var/") {
                e.kind = Kind::Hardlink(format!("{FACTORY_VAR}/{rest}"));
            }
        }
        moved.push((p, e));
    }
    moved.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, e) in &moved {
        let depth = p.matches('/').count();
        let bad = p
            .chars()
            .any(|c| c.is_whitespace() || c == '%' || c == '\\');
        if depth <= 2 && !bad {
            match (&e.kind, depth) {
                (Kind::Dir, 1) => tmpfiles.push_str(&format!(
                    "d /{p} {:04o} {} {} -\n",
                    e.mode & 0o7777,
                    e.uid,
                    e.gid
                )),
                (Kind::Symlink(target), _) => {
                    tmpfiles.push_str(&format!("L /{p} - - - - {target}\n"))
                }
                _ => tmpfiles.push_str(&format!(
                    "C /{p} - - - - /{FACTORY_VAR}/{}\n",
                    &p["var/".len()..]
                )),
            }
        }
    }
    for (p, e) in moved {
        let dest = format!("{FACTORY_VAR}/{}", &p["var/".len()..]);
        t.ensure_parents(&dest, epoch)?;
        t.insert_unchecked(&dest, e);
    }
    t.ensure_parents(FACTORY_TMPFILES, epoch)?;
    t.put(
        FACTORY_TMPFILES,
        Entry::file(tmpfiles.into_bytes(), 0o644, epoch),
    )?;
    // Mount points, and first-boot machine-id handling by systemd.
    for d in ["dev", "proc", "sys", "run", "tmp", "var", "etc"] {
        if t.get(d).is_none() {
            t.put(d, Entry::dir(0o755, epoch))?;
        }
    }
    if let Some(e) = t.get_mut("tmp") {
        e.mode = 0o1777;
    }
    // ldconfig.service rebuilds /etc/ld.so.cache on first boot; with /usr read-only
    // there is nothing to rebuild (and Debian's ldconfig wrapper needs a shell).
    let mask = "etc/systemd/system/ldconfig.service";
    if t.get(mask).is_none() && t.get("usr/lib/systemd/system/ldconfig.service").is_some() {
        t.ensure_parents(mask, epoch)?;
        t.put(mask, Entry::symlink("/dev/null", epoch))?;
    }
    let id = &crate::disk::rootfs::MACHINE_ID;
    t.remove(id.path);
    t.put(id.path, Entry::file(id.bytes.to_vec(), 0o444, epoch))?;
    Ok(t)
}

/// A two-slot disk's root has the empty directory `/efi`, where the booted ESP is
/// mounted (slipway-init writes its mount unit; systemd-bless-boot and the agent look
/// there).
fn check_efi_dir(r: &Recipe, root: &Tree) -> Result<()> {
    if r.disk.slot_count() < 2 || matches!(root.get("efi").map(|e| &e.kind), Some(Kind::Dir)) {
        return Ok(());
    }
    Err(r.origin_of("disk.slots").err(
        "a two-slot disk mounts its ESP at /efi, which the image lacks: add \
         [[entry]] path = \"/efi\" type = \"dir\" (or set disk.slots = 1)",
    ))
}

/// The static programs slipway puts into host images.
pub struct Bundled {
    /// slipway-init (the initramfs's /init).
    pub init: Vec<u8>,
    /// slipway-agent (provisioning, test agent).
    pub agent: Vec<u8>,
}

impl Bundled {
    /// Finds and checks both (see [`crate::tool::bundled_binary`]).
    pub fn find() -> Result<Bundled> {
        let init = crate::disk::initramfs::read_static(&crate::disk::initramfs::find_init()?)?;
        let agent = crate::disk::initramfs::read_static(&crate::boot::find_agent()?)?;
        Ok(Bundled { init, agent })
    }
}

/// What the UKI is made of, read from the assembled tree.
struct BootInputs<'t> {
    kernel: crate::kernel::KernelInfo,
    vmlinuz: &'t [u8],
    stub: &'t [u8],
    os_release: &'t [u8],
    plan: &'t crate::kernel::closure::ModulePlan,
    /// systemd-boot (two slots only).
    boot_loader: Option<&'t [u8]>,
}

impl<'t> BootInputs<'t> {
    /// The kernel, the EFI stub, os-release and the module plan of `asm`; their absence
    /// names the recipe key that asks for them.
    fn of(r: &Recipe, asm: &'t crate::assemble::Assembled) -> Result<Self> {
        let tree = &asm.tree;
        let plan = asm
            .module_plan
            .as_ref()
            .ok_or_else(|| needs_kernel(r, anyhow::anyhow!("the recipe has no [kernel] table")))?;
        let kernel = crate::kernel::find(tree).map_err(|e| needs_kernel(r, e))?;
        let vmlinuz = file_bytes(tree, &kernel.vmlinuz_path, "kernel")?;
        let stub =
            file_bytes(tree, STUB, "systemd EFI stub").map_err(|e| {
                r.origin_of("packages.include").wrap(e.context(
                    "add systemd-boot-efi to packages.include (the UKI is built on its stub)",
                ))
            })?;
        let os_release = file_bytes(tree, "usr/lib/os-release", "os-release")?;
        let boot_loader = if r.disk.slot_count() == 2 {
            let sd_boot = crate::disk::loader::SYSTEMD_BOOT;
            Some(file_bytes(tree, sd_boot, "systemd-boot").map_err(|e| {
                r.origin_of("packages.include").wrap(e.context(
                    "a two-slot disk boots systemd-boot: add systemd-boot-efi to \
                     packages.include and do not drop its systemd-boot*.efi (or set \
                     disk.slots = 1)",
                ))
            })?)
        } else {
            None
        };
        Ok(BootInputs {
            kernel,
            vmlinuz,
            stub,
            os_release,
            plan,
            boot_loader,
        })
    }
}

/// Builds the disk of host recipe `r` from its assembled tree into `out` (`disk.raw`,
/// `uki.efi`, `vmlinuz`, `initrd`), with the programs in `bundled`; `cache` is slipway's
/// cache directory (the initramfs and the root image are kept there by the digest of
/// their inputs). Stage times and warnings go into `c`.
pub fn build(
    r: &Recipe,
    asm: &crate::assemble::Assembled,
    bundled: &Bundled,
    cache: &Path,
    out: &Path,
    rep: &crate::io::progress::Reporter,
    c: &mut crate::output::Collector,
) -> Result<Written> {
    let epoch = asm.epoch;
    let boot = BootInputs::of(r, asm)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".slipway-disk-")
        .tempdir_in(out)
        .with_context(|| format!("creating a staging directory in {}", out.display()))?;
    let stage_cache = crate::io::stage_cache::StageCache::open(cache)?;
    let root_t = root_tree(&asm.tree, &bundled.agent, epoch)?;
    check_efi_dir(r, &root_t)?;
    let (initrd, root) = initrd_and_root(
        r,
        asm,
        &boot,
        bundled,
        cache,
        staging.path(),
        &stage_cache,
        &root_t,
        rep,
        c,
    )?;
    let cmdline = kernel_cmdline(r, &root.root_hash);
    let t = Instant::now();
    let boot_files = uki_and_keys(r, &boot, &initrd.bytes, &cmdline, epoch)?;
    c.since("uki", t);
    let hash_bytes = crate::io::hash::unhex(&root.root_hash)?;
    let ids = derive(&[b"slipway-disk", &hash_bytes]);
    let var_size = r.disk.var_size.map(|s| s.0).unwrap_or(DEFAULT_VAR);
    let slot = crate::disk::slots::sizes(r, root.bytes.len() as u64, root.verity.len() as u64)?;
    let t = Instant::now();
    let esp_files = boot_files.esp_files(&r.version);
    let esp_size = esp_size(r, boot_files.uki.len() as u64, boot_files.other_bytes())?;
    let esp = write_esp(&esp_files, esp_size, (&ids, epoch), staging.path())?;
    c.since("esp", t);
    let uki = boot_files.uki;
    let t = Instant::now();
    let var_img = write_var(staging.path(), var_size, &hash_bytes, epoch)?;
    c.since("var", t);
    let t = Instant::now();
    let stage = rep.stage("writing the disk image");
    let contents = crate::disk::layout::Contents {
        esp: &esp,
        root: &root.bytes,
        verity: &root.verity,
        var: &var_img,
        slot,
    };
    let (disk_path, partitions, disk_sha, disk_size) = crate::disk::layout::write_gpt_disk(
        r,
        &contents,
        (esp_size, var_size),
        &hash_bytes,
        &ids[16..],
        out,
    )?;
    stage.done(format!(
        "{:.1} MB: ESP {:.1}, root {:.1}, verity {:.2}, var {:.0} MB",
        disk_size as f64 / 1e6,
        esp_size as f64 / 1e6,
        root.bytes.len() as f64 / 1e6,
        root.verity.len() as f64 / 1e6,
        var_size as f64 / 1e6
    ));
    c.since("disk", t);
    let disk_out = crate::output::Output {
        kind: "disk-raw".into(),
        path: disk_path.display().to_string(),
        size: disk_size,
        sha256: disk_sha,
    };
    let files = [
        ("uki.efi", "uki", &uki[..]),
        ("vmlinuz", "kernel", boot.vmlinuz),
        ("initrd", "initramfs", &initrd.bytes[..]),
    ];
    let outputs = write_boot_files(out, disk_out, &files)?;
    Ok(Written {
        disk: HostDisk {
            kernel: boot.kernel.version.clone(),
            root_hash: root.root_hash,
            cmdline,
            root_fs: fs_name(root.kind).into(),
            partitions,
            initramfs_modules: initrd.modules,
            disk_size,
        },
        outputs,
        esp_files,
    })
}

/// The EFI binaries and keys of the ESP, signed when the image is.
struct BootFiles {
    /// The UKI.
    uki: Vec<u8>,
    /// systemd-boot (two slots).
    boot_loader: Option<Vec<u8>>,
    /// The Secure Boot enrollment files (none when unsigned).
    enrollment: crate::disk::enroll::EspFiles,
}

impl BootFiles {
    /// The ESP's files for image version `version`.
    fn esp_files(&self, version: &str) -> Vec<(String, Vec<u8>)> {
        crate::disk::loader::esp_files(
            &self.uki,
            version,
            self.boot_loader.as_deref(),
            &self.enrollment,
        )
    }

    /// Bytes of everything but the UKI.
    fn other_bytes(&self) -> u64 {
        let loader = self.boot_loader.as_ref().map_or(0, |b| b.len() as u64);
        let keys: u64 = self.enrollment.iter().map(|(_, b)| b.len() as u64).sum();
        loader + keys + crate::disk::loader::LOADER_CONF_TEXT.len() as u64
    }
}

/// The UKI and systemd-boot (two slots), signed when the recipe has a signing key
/// (`[secure-boot]` or the command line's) with the same key, and the Secure Boot
/// enrollment files for the ESP (none when unsigned).
fn uki_and_keys(
    r: &Recipe,
    boot: &BootInputs,
    initrd: &[u8],
    cmdline: &str,
    epoch: u64,
) -> Result<BootFiles> {
    let parts = crate::disk::uki::Parts {
        stub: boot.stub,
        kernel: boot.vmlinuz,
        initrd,
        cmdline,
        os_release: boot.os_release,
        uname: Some(&boot.kernel.version),
    };
    let Some(sb) = &r.secure_boot else {
        return Ok(BootFiles {
            uki: crate::disk::uki::build_uki(&parts)?,
            boot_loader: boot.boot_loader.map(<[u8]>::to_vec),
            enrollment: Vec::new(),
        });
    };
    let s = crate::disk::sign::Signer::open(sb, epoch)
        .with_context(|| format!("{}: the Secure Boot signing key", r.display()))?;
    let uki = signed_uki(&parts, &s)?;
    let boot_loader = match boot.boot_loader {
        Some(b) => Some(s.sign_pe("systemd-boot", b)?),
        None => None,
    };
    let enrollment = crate::disk::enroll::files(&s, epoch, sb.microsoft_uefi_ca)?;
    Ok(BootFiles {
        uki,
        boot_loader,
        enrollment,
    })
}

/// The UKI of `parts` with a PCR policy signed by `s` for each phase
/// ([`crate::disk::pcr`]: `.pcrpkey` and `.pcrsig`, as ukify adds them), Authenticode-
/// signed by `s`.
fn signed_uki(parts: &crate::disk::uki::Parts, s: &crate::disk::sign::Signer) -> Result<Vec<u8>> {
    use crate::disk::{pcr, uki};
    let pkey = s.public_key_pem()?;
    let with_key = [(".pcrpkey", pkey.as_bytes())];
    let predicted = pcr::uki_value_of_parts(parts.stub, &uki::payload(parts, &with_key))?;
    let values: Vec<[u8; 32]> = pcr::phases(&predicted)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let sig = pcr::pcrsig(&values, &s.public_key_der()?, |d| s.sign_sha256_digest(d))?;
    let unsigned = uki::build_uki_with(parts, &[with_key[0], (".pcrsig", sig.as_bytes())])?;
    if pcr::uki_value_of_pe(&unsigned)? != predicted {
        bail!("the UKI's measured sections differ from those its PCR policy was signed for");
    }
    s.sign_pe("the UKI", &unsigned)
}

/// The initramfs and the root image (with its verity tree), which need nothing of each
/// other, built side by side.
#[allow(clippy::too_many_arguments)]
fn initrd_and_root(
    r: &Recipe,
    asm: &crate::assemble::Assembled,
    boot: &BootInputs,
    bundled: &Bundled,
    cache: &Path,
    staging: &Path,
    stage_cache: &crate::io::stage_cache::StageCache,
    root_t: &Tree,
    rep: &crate::io::progress::Reporter,
    c: &mut crate::output::Collector,
) -> Result<(
    crate::disk::initramfs::Initramfs,
    crate::disk::root::RootImage,
)> {
    let (initrd, root) = std::thread::scope(|s| {
        let initrd = s.spawn(|| {
            let t = Instant::now();
            build_initrd(r, asm, boot.plan, &bundled.init, cache, rep).map(|i| (i, t.elapsed()))
        });
        let t = Instant::now();
        let stage = rep.stage("writing the root file system");
        let mut warnings = Vec::new();
        let root =
            crate::disk::root::build(r, root_t, asm.epoch, staging, stage_cache, &mut warnings);
        if let Ok(img) = &root {
            stage.done(format!(
                "{} entries, {:.1} MB",
                img.entries,
                img.bytes.len() as f64 / 1e6
            ));
        }
        let initrd = initrd
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("building the initramfs panicked")));
        (initrd, root.map(|img| (img, t.elapsed(), warnings)))
    });
    let (initrd, t_initrd) = initrd?;
    let (root, t_root, warnings) = root?;
    c.time("initramfs", t_initrd.as_secs_f64());
    c.time("root", t_root.as_secs_f64());
    c.warn(warnings);
    crate::io::faults::point("disk")?;
    Ok((initrd, root))
}

/// The initramfs of the host image (slipway-init `init` and the boot modules of `plan`),
/// kept in `cache` by content.
fn build_initrd(
    r: &Recipe,
    asm: &crate::assemble::Assembled,
    plan: &crate::kernel::closure::ModulePlan,
    init: &[u8],
    cache: &Path,
    rep: &crate::io::progress::Reporter,
) -> Result<crate::disk::initramfs::Initramfs> {
    let stage = rep.stage("building the initramfs");
    let initrd = crate::disk::initramfs::build_cached(
        &asm.tree,
        plan,
        &crate::disk::initramfs::boot_features(plan),
        init,
        asm.epoch,
        &cache.join("initramfs"),
    )
    .with_context(|| format!("{}: the initramfs", r.display()))?;
    stage.done(format!(
        "{} modules, {:.2} MB compressed",
        initrd.modules.len(),
        initrd.bytes.len() as f64 / 1e6
    ));
    Ok(initrd)
}

/// The ESP of `esp_size` holding `files` ([`crate::disk::loader::esp_files`]), volume
/// id from `ids`, made in `staging`; returns its path (it is streamed into the disk).
fn write_esp(
    files: &[(String, Vec<u8>)],
    esp_size: u64,
    (ids, epoch): (&[u8], u64),
    staging: &Path,
) -> Result<PathBuf> {
    let volume_id = u32::from_le_bytes([ids[0], ids[1], ids[2], ids[3]]);
    let img = staging.join("esp.img");
    crate::disk::esp::build_esp_file(files, esp_size, volume_id, epoch, &img)?;
    Ok(img)
}

/// Writes the boot `files` (name, report kind, bytes) into `out`; returns them after
/// `disk`, as the report lists them.
fn write_boot_files(
    out: &Path,
    disk: crate::output::Output,
    files: &[(&str, &str, &[u8])],
) -> Result<Vec<crate::output::Output>> {
    let mut outputs = vec![disk];
    for (name, kind, bytes) in files {
        let p = out.join(name);
        crate::io::atomic::write(&p, bytes)?;
        outputs.push(crate::output::Output {
            kind: kind.to_string(),
            path: p.display().to_string(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        });
    }
    Ok(outputs)
}

/// The UKI's kernel command line: the root hash, [`BASE_CMDLINE`], the recipe's.
fn kernel_cmdline(r: &Recipe, root_hash: &str) -> String {
    let mut args: Vec<String> = vec![format!("roothash={root_hash}")];
    args.extend(BASE_CMDLINE.iter().map(|s| s.to_string()));
    args.extend(r.disk.cmdline.iter().cloned());
    args.join(" ")
}

/// The empty /var ext4 of `size` (UUID from the root hash `hash_bytes`), made in
/// `staging`; returns its path. It is copied into the disk from the file, not held in
/// memory: /var may be up to the recipe's bound (256 GiB).
fn write_var(staging: &Path, size: u64, hash_bytes: &[u8], epoch: u64) -> Result<PathBuf> {
    let var_uuid = Guid::from_hash(&derive(&[b"slipway-var-fs", hash_bytes])).to_text();
    let var_img = staging.join("var.img");
    crate::disk::ext4::write_empty(&var_img, size, "var", &var_uuid, epoch)?;
    Ok(var_img)
}

/// The manifest's name for a root file system kind.
pub fn fs_name(k: RootFs) -> &'static str {
    match k {
        RootFs::SquashfsXz => "squashfs-xz",
        RootFs::SquashfsZstd => "squashfs",
    }
}

/// The output directory's disk image, for commands that take `DIR` (boot, test).
pub fn disk_in(dir: &Path) -> PathBuf {
    dir.join("disk.raw")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> (tempfile::TempDir, Recipe) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(&p, text).unwrap();
        let r = Recipe::load(&p).unwrap();
        (d, r)
    }

    #[test]
    fn disk_mistakes_name_the_key_and_line_and_exit_2() {
        let mut t = Tree::new();
        t.put("usr/lib/modules/6.1.0", Entry::dir(0o755, 1))
            .unwrap();
        t.put(
            "usr/lib/modules/6.1.0/modules.builtin",
            Entry::file(Vec::new(), 0o644, 1),
        )
        .unwrap();
        t.put(
            "boot/vmlinuz-6.1.0",
            Entry::file(vec![0; 3 << 20], 0o644, 1),
        )
        .unwrap();
        let head = "schema-version = 1\n[image]\nkind = \"host\"\n[packages]\ninclude = [\"a1\"]\n";
        let (_d, r) = host(&format!("{head}[disk]\nesp-size = \"2MiB\"\n"));
        let e = check_esp_fits(&r, &t).unwrap_err();
        let m = format!("{e:#}");
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
        assert!(
            m.contains("r.toml: disk.esp-size: 2 MiB cannot hold the UKI")
                && m.ends_with("(line 7)"),
            "{m}"
        );
        // No kernel and no [kernel]: the recipe's image.kind asks for one.
        let (_d, r) = host(head);
        let e = check_esp_fits(&r, &Tree::new()).unwrap_err();
        let m = format!("{e:#}");
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
        assert!(
            m.contains("r.toml: image.kind: a host image needs a [kernel] table")
                && m.ends_with("(line 3)"),
            "{m}"
        );
    }
}
