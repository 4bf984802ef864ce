//! Issue "host image: kernel and modules": real Debian cloud kernels pruned to a recipe's
//! module features, index files regenerated with depmod, an initramfs written by
//! slipway's cpio writer, and a boot under QEMU (TCG) that loads every kept module and
//! fails on any module-load error in the kernel log.
//!
//! The boot uses busybox-static as the initramfs's only program: `/init` is a shell
//! script that mounts /proc, /sys and /dev, loads modules, prints what happened between
//! markers, and powers off. The test reads the serial console.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use slipway::assemble::tree::{Entry, Kind, Tree};
use slipway::kernel::{self, KernelInfo, ModulePlan};
use slipway::writers::cpio::{self, Compression, CpioOptions};
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The features the boot test keeps (the issue's virtio VM with verity and containers,
/// plus provisioning and the cloud NICs).
const BOOT_SET: &[&str] = &[
    "storage",
    "root",
    "var",
    "network",
    "containers",
    "provisioning",
];
/// Every feature: a containerd host.
const ALL_FEATURES: &[&str] = &[
    "storage",
    "root",
    "var",
    "network",
    "containers",
    "provisioning",
    "guest-channels",
    "systemd",
];
/// What an initramfs needs to find and mount a verity root and /var.
const INITRAMFS_SET: &[&str] = &["storage", "root", "var"];

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

/// Assembles a tree for `release` with the kernel and busybox-static, through the
/// library (the same code `slipway build` runs), with `[kernel] modules = modules`
/// (None: no `[kernel]` table, every module stays).
fn assemble(dir: &Path, release: &str, modules: Option<&[&str]>) -> slipway::assemble::Assembled {
    let kernel = match modules {
        Some(ms) => format!(
            "[kernel]\npackage = \"linux-image-cloud-amd64\"\nmodules = [{}]\n",
            ms.iter()
                .map(|m| format!("\"{m}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    };
    let include = if modules.is_some() {
        "\"busybox-static\""
    } else {
        "\"busybox-static\", \"linux-image-cloud-amd64\""
    };
    let r = recipe(
        dir,
        &format!("kernel-{release}.toml"),
        &format!(
            "[image]\nkind = \"host\"\n[debian]\nrelease = \"{release}\"\n[packages]\ninclude = [{include}]\n{kernel}"
        ),
    );
    let r = slipway::recipe::Recipe::load(&r).unwrap();
    let ctx = slipway::pipeline::Context {
        cache: slipway::fetch::cache::Cache::open(Some(shared_cache())).unwrap(),
        rep: slipway::io::progress::Reporter::quiet(),
        offline: false,
        locked: false,
        artifact_dirs: Vec::new(),
        vendor: None,
    };
    let fetched = slipway::pipeline::fetch(&ctx, &r).unwrap();
    slipway::assemble::assemble(&ctx.cache, &r, &fetched.lock).unwrap()
}

fn file<'t>(tree: &'t Tree, path: &str) -> &'t [u8] {
    match tree.get(path).map(|e| &e.kind) {
        Some(Kind::File(c)) => c.as_slice(),
        other => panic!("{path}: not a file: {other:?}"),
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Checks the pruned tree against a plan made from it: the closure is closed (planning
/// the pruned tree keeps exactly what is there), modules.dep names every kept module and
/// only kept dependencies, and depmod gives the same bytes again.
fn check_pruned(tree: &Tree, k: &KernelInfo, requests: &[String]) -> ModulePlan {
    let plan = kernel::plan(tree, k, requests).unwrap();
    let on_disk: BTreeSet<String> = tree
        .under(&k.modules_dir)
        .filter_map(|(p, _)| kernel::modinfo::name_of_path(p))
        .collect();
    let planned: BTreeSet<String> = plan.keep.iter().map(|m| m.name.clone()).collect();
    assert_eq!(on_disk, planned, "the pruned tree holds exactly the plan");
    assert_eq!(plan.total_count, plan.keep.len(), "nothing else is left");
    let dep =
        String::from_utf8(file(tree, &format!("{}/modules.dep", k.modules_dir)).to_vec()).unwrap();
    let mut lines = 0;
    for line in dep.lines() {
        let (m, deps) = line.split_once(':').unwrap();
        let name = kernel::modinfo::name_of_path(m).unwrap();
        let module = plan.get(&name).unwrap();
        assert_eq!(m, module.rel);
        // modules.dep lists the transitive hard dependencies.
        let mut closure = BTreeSet::new();
        let mut todo = module.deps.clone();
        while let Some(x) = todo.pop() {
            if closure.insert(x.clone()) {
                todo.extend(plan.get(&x).unwrap().deps.clone());
            }
        }
        let listed: BTreeSet<String> = deps
            .split_whitespace()
            .map(|d| kernel::modinfo::name_of_path(d).unwrap())
            .collect();
        assert_eq!(listed, closure, "modules.dep of {name} against .modinfo");
        lines += 1;
    }
    assert_eq!(
        lines,
        plan.keep.len(),
        "modules.dep has a line per kept module"
    );
    // depmod is deterministic: the same input gives the same index files, twice.
    let a = kernel::depmod::index_files(tree, k, &plan).unwrap();
    let b = kernel::depmod::index_files(tree, k, &plan).unwrap();
    assert_eq!(a, b, "depmod gave different bytes for the same modules");
    for (name, bytes) in &a {
        assert_eq!(
            file(tree, &format!("{}/{name}", k.modules_dir)),
            &bytes[..],
            "{name} in the tree differs from a fresh depmod run"
        );
    }
    for f in [
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.symbols.bin",
        "modules.builtin.bin",
        "modules.softdep",
        "modules.devname",
    ] {
        assert!(a.contains_key(f), "depmod wrote no {f}: {:?}", a.keys());
    }
    plan
}

/// The initramfs: busybox (with `modprobe` and `insmod` as hard links, which busybox
/// dispatches on), the kept modules and index files, /dev/console, and `/init`.
fn initramfs_tree(tree: &Tree, k: &KernelInfo, init: &str, modules: Option<&[&str]>) -> Tree {
    let mut t = Tree::new();
    let bb = tree.get("usr/bin/busybox").unwrap().clone();
    t.put("usr/bin/busybox", bb).unwrap();
    for applet in ["usr/sbin/modprobe", "usr/sbin/insmod"] {
        let mut l = Entry::file(vec![], 0o755, 0);
        l.kind = Kind::Hardlink("usr/bin/busybox".into());
        t.put(applet, l).unwrap();
    }
    for (p, e) in tree.under(&k.modules_dir) {
        let keep = match modules {
            None => true,
            Some(paths) => e.is_dir() || paths.contains(&p.as_str()),
        };
        if keep {
            t.put(p, e.clone()).unwrap();
        }
    }
    t.put("init", Entry::file(init.as_bytes().to_vec(), 0o755, 0))
        .unwrap();
    let mut console = Entry::file(vec![], 0o600, 0);
    console.kind = Kind::CharDevice(5, 1);
    t.put("dev/console", console).unwrap();
    for d in ["proc", "sys", "tmp"] {
        t.put(d, Entry::dir(0o755, 0)).unwrap();
    }
    t.add_merged_usr_links(0).unwrap();
    t
}

const INIT_HEAD: &str = r#"#!/usr/bin/busybox sh
b=/usr/bin/busybox
$b mount -t proc proc /proc
$b mount -t sysfs sysfs /sys
$b mount -t devtmpfs devtmpfs /dev
echo "SLIPWAY-INIT uptime=$($b cut -d' ' -f1 /proc/uptime) kernel=$($b uname -r)"
"#;

const INIT_TAIL: &str = r#"echo "LSMOD-BEGIN"
$b cat /proc/modules
echo "LSMOD-END"
echo "DMESG-BEGIN"
$b dmesg
echo "DMESG-END"
echo "SLIPWAY-DONE uptime=$($b cut -d' ' -f1 /proc/uptime)"
$b poweroff -f
"#;

/// What a boot printed.
struct Boot {
    log: String,
    /// Seconds from starting QEMU until /init printed its first line.
    to_init: f64,
    /// Seconds until QEMU exited.
    total: f64,
}

impl Boot {
    fn section(&self, name: &str) -> Vec<&str> {
        let begin = format!("{name}-BEGIN");
        let end = format!("{name}-END");
        self.log
            .lines()
            .skip_while(|l| !l.contains(&begin))
            .skip(1)
            .take_while(|l| !l.contains(&end))
            .collect()
    }
    fn loaded(&self) -> BTreeSet<String> {
        self.section("LSMOD")
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .map(|s| s.to_string())
            .collect()
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Boots `vmlinuz` with `initrd` under QEMU TCG; the serial log is saved beside them.
fn boot(vmlinuz: &Path, initrd: &Path, log_path: &Path) -> Boot {
    let timeout = std::env::var("SLIPWAY_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    // One boot at a time: TCG on a shared two-core machine is slow enough alone.
    let lock =
        fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-boot.lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let out = fs::File::create(log_path).unwrap();
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        // -cpu max: SSE4.2 and the other features cloud CPUs have, so crc32c_intel
        // and friends find their instructions (qemu64 lacks them: ENODEV).
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("qemu-system-x86_64 (Debian: qemu-system-x86; run scripts/setup-host.sh)");
    let mut to_init = None;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if to_init.is_none()
            && fs::read_to_string(log_path)
                .unwrap_or_default()
                .contains("SLIPWAY-INIT")
        {
            to_init = Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > Duration::from_secs(timeout) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let total = start.elapsed().as_secs_f64();
    let mut log = String::new();
    fs::File::open(log_path)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        status.is_some(),
        "QEMU did not finish in {timeout} s (log {}):\n{}",
        log_path.display(),
        tail(&log, 40)
    );
    assert!(
        log.contains("SLIPWAY-DONE"),
        "/init did not finish (log {}):\n{}",
        log_path.display(),
        tail(&log, 40)
    );
    for bad in [
        "Kernel panic - not syncing: Attempted to kill init",
        "Oops",
        "BUG:",
        "Call Trace",
    ] {
        let done_at = log.find("SLIPWAY-DONE").unwrap_or(log.len());
        assert!(
            !log[..done_at].contains(bad),
            "console shows {bad:?} (log {}):\n{}",
            log_path.display(),
            tail(&log, 60)
        );
    }
    Boot {
        to_init: to_init.unwrap_or(total),
        total,
        log,
    }
}

/// Kernel messages that mean a module did not load right.
const LOAD_ERRORS: &[&str] = &[
    "Unknown symbol",
    "disagrees about version",
    "invalid module format",
    "Invalid ELF header",
    "module verification failed",
    "gave up waiting",
    "Unknown parameter",
];

/// Modules that cannot load off their platform: Hyper-V's vmbus refuses to initialise
/// outside Hyper-V (ENODEV), and so everything that needs it cannot load either. The
/// set is derived from the plan: hv_vmbus and every kept module that depends on it.
fn needs_hyperv(plan: &ModulePlan) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = BTreeSet::new();
    if plan.get("hv_vmbus").is_some() {
        set.insert("hv_vmbus".into());
    }
    loop {
        let before = set.len();
        for m in &plan.keep {
            if m.deps.iter().any(|d| set.contains(d)) {
                set.insert(m.name.clone());
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

/// `failed_loads`: how many load attempts were expected to fail off-platform. busybox
/// first hands a module file to finit_module(2) as it is; when the final load fails, the
/// kernel's complaint about that first (compressed, so not ELF) attempt stays in the log
/// as "Invalid ELF header magic". One such line per expected failure is allowed.
fn assert_no_load_errors(b: &Boot, log_path: &Path, failed_loads: usize) {
    let dmesg = b.section("DMESG");
    assert!(!dmesg.is_empty(), "no dmesg section:\n{}", tail(&b.log, 40));
    let magic = dmesg
        .iter()
        .filter(|l| l.contains("Invalid ELF header magic"))
        .count();
    assert!(
        magic <= failed_loads,
        "{magic} \"Invalid ELF header magic\" lines for {failed_loads} expected failures (log {})",
        log_path.display()
    );
    let bad: Vec<&&str> = dmesg
        .iter()
        .filter(|l| !l.contains("Invalid ELF header magic"))
        .filter(|l| LOAD_ERRORS.iter().any(|e| l.contains(e)))
        .collect();
    assert!(
        bad.is_empty(),
        "module load errors in the kernel log (log {}):\n{bad:#?}",
        log_path.display()
    );
}

/// Full flow for one release: assemble + prune, check the tree, boot an initramfs
/// holding every kept module, modprobe each, and check the kernel's verdict.
fn prune_and_boot(release: &str) -> (slipway::kernel::ModuleReport, Boot) {
    let d = tempfile::tempdir().unwrap();
    let asm = assemble(d.path(), release, Some(BOOT_SET));
    let report = asm
        .modules
        .clone()
        .expect("a [kernel] recipe reports its modules");
    let k = kernel::find(&asm.tree).unwrap();
    assert_eq!(report.kernel, k.version);
    let plan = check_pruned(&asm.tree, &k, &strings(BOOT_SET));
    assert_eq!(report.kept_count, plan.keep.len());
    eprintln!(
        "{release}: {} (kept: {})",
        report.summary(),
        report.kept.join(" ")
    );
    eprintln!(
        "{release}: built in: {}",
        report
            .builtin_hits
            .iter()
            .map(|b| format!("{} ({})", b.name, b.requested_by))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut init = INIT_HEAD.to_string();
    for m in &plan.keep {
        init.push_str(&format!(
            "if out=$(modprobe {0} 2>&1); then echo \"MODPROBE-OK {0}\"; else echo \"MODPROBE-FAIL {0} $out\"; fi\n",
            m.name
        ));
    }
    init.push_str(INIT_TAIL);
    let initramfs = initramfs_tree(&asm.tree, &k, &init, None);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kernel-boot-{release}"));
    fs::create_dir_all(&dir).unwrap();
    let opts = CpioOptions { epoch: asm.epoch };
    let initrd = dir.join("initrd.cpio.xz");
    let a = cpio::write_compressed(&initramfs, opts, Compression::Xz, &initrd).unwrap();
    let again =
        cpio::write_compressed(&initramfs, opts, Compression::Xz, &dir.join("again.xz")).unwrap();
    assert_eq!(
        a.sha256, again.sha256,
        "the same tree gave two different initramfs files"
    );
    let vmlinuz = dir.join("vmlinuz");
    fs::write(&vmlinuz, file(&asm.tree, &k.vmlinuz_path)).unwrap();
    let log_path = dir.join("serial.log");
    let b = boot(&vmlinuz, &initrd, &log_path);
    eprintln!(
        "{release}: initramfs {:.2} MB (xz), /init after {:.1} s, done after {:.1} s",
        mb(a.size),
        b.to_init,
        b.total
    );
    assert!(
        b.log.contains(&format!("kernel={}", k.version)),
        "booted another kernel?\n{}",
        tail(&b.log, 20)
    );
    // Every kept module loaded, except the Hyper-V ones off Hyper-V, which must fail
    // with "No such device" and nothing else.
    let hyperv = needs_hyperv(&plan);
    let loaded = b.loaded();
    for m in &plan.keep {
        let ok = b.log.contains(&format!("MODPROBE-OK {}", m.name));
        if hyperv.contains(&m.name) {
            let fail = b
                .log
                .lines()
                .find(|l| l.contains(&format!("MODPROBE-FAIL {} ", m.name)));
            assert!(
                ok || fail.is_some_and(|l| l.contains("No such device")),
                "{}: expected to load or fail with ENODEV off Hyper-V: {fail:?}",
                m.name
            );
        } else {
            assert!(
                ok && loaded.contains(&m.name),
                "{} did not load (log {}):\n{}",
                m.name,
                log_path.display(),
                b.log
                    .lines()
                    .filter(|l| l.contains(&m.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    let failed = b.log.matches("MODPROBE-FAIL").count();
    assert_no_load_errors(&b, &log_path, failed);
    (report, b)
}

#[test]
fn trixie_cloud_kernel_pruned_boots_and_loads_every_kept_module() {
    let (report, _) = prune_and_boot("trixie");
    assert!(
        report.kept_count < report.total_count / 10,
        "{}",
        report.summary()
    );
    assert!(
        report.builtin_hits.iter().any(|b| b.name == "ext4"),
        "ext4 is built into Debian's cloud kernels"
    );
}

#[test]
fn bookworm_cloud_kernel_pruned_boots_and_loads_every_kept_module() {
    let (report, _) = prune_and_boot("bookworm");
    assert!(
        report.kept_count < report.total_count / 10,
        "{}",
        report.summary()
    );
    // On 6.1 virtio_pci is a module; on 6.12 it is built in.
    assert!(
        report.kept.iter().any(|m| m == "virtio_pci"),
        "{:?}",
        report.kept
    );
}

/// The initramfs an init loads without modprobe: the storage, root and var modules in
/// [`ModulePlan::load_order`], each loaded with insmod after its dependencies, zstd and
/// xz compressed (sizes printed), booted from the zstd one; also read back with GNU cpio.
#[test]
fn load_order_initramfs_boots_with_insmod_and_reads_back_with_gnu_cpio() {
    let d = tempfile::tempdir().unwrap();
    let asm = assemble(d.path(), "trixie", Some(ALL_FEATURES));
    let k = kernel::find(&asm.tree).unwrap();
    let report = asm.modules.clone().unwrap();
    eprintln!(
        "trixie, every feature (a containerd host): {}",
        report.summary()
    );
    let plan = check_pruned(&asm.tree, &k, &strings(ALL_FEATURES));
    let order = plan.load_order(&strings(INITRAMFS_SET)).unwrap();
    // The order loads each module after its dependencies.
    for (i, m) in order.iter().enumerate() {
        for dep in m.deps.iter().chain(m.pre.iter()) {
            let j = order.iter().position(|x| &x.name == dep).unwrap();
            assert!(j < i, "{} comes before its dependency {dep}", m.name);
        }
    }
    let hyperv = needs_hyperv(&plan);
    let mut init = INIT_HEAD.to_string();
    init.push_str(
        "load() { n=$1; p=$2; shift 2; for d in \"$@\"; do if [ -e /tmp/failed.$d ]; then echo \"INSMOD-SKIP $n needs $d\"; : > /tmp/failed.$n; return; fi; done; if out=$(insmod $p 2>&1); then echo \"INSMOD-OK $n\"; else echo \"INSMOD-FAIL $n $out\"; : > /tmp/failed.$n; fi; }\n",
    );
    for m in &order {
        init.push_str(&format!(
            "load {} /{} {}\n",
            m.name,
            m.path,
            m.deps.join(" ")
        ));
    }
    init.push_str(INIT_TAIL);
    let paths: Vec<&str> = order.iter().map(|m| m.path.as_str()).collect();
    let initramfs = initramfs_tree(&asm.tree, &k, &init, Some(&paths));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-boot-load-order");
    fs::create_dir_all(&dir).unwrap();
    let opts = CpioOptions { epoch: asm.epoch };
    let plain = cpio::write_compressed(
        &initramfs,
        opts,
        Compression::None,
        &dir.join("initrd.cpio"),
    )
    .unwrap();
    let zst = cpio::write_compressed(
        &initramfs,
        opts,
        Compression::Zstd,
        &dir.join("initrd.cpio.zst"),
    )
    .unwrap();
    let xz = cpio::write_compressed(
        &initramfs,
        opts,
        Compression::Xz,
        &dir.join("initrd.cpio.xz"),
    )
    .unwrap();
    eprintln!(
        "initramfs (storage+root+var, {} modules + busybox): cpio {:.2} MB, zstd-{} {:.2} MB, xz {:.2} MB",
        order.len(),
        mb(plain.size),
        cpio::ZSTD_LEVEL,
        mb(zst.size),
        mb(xz.size)
    );
    // GNU cpio lists the same names and extracts the same content and links.
    let bytes = fs::read(dir.join("initrd.cpio")).unwrap();
    let ours: Vec<String> = cpio::parse(&bytes)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let listed = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(fs::File::open(dir.join("initrd.cpio")).unwrap())
        .output()
        .expect("cpio (Debian: cpio; run scripts/setup-host.sh)");
    assert!(listed.status.success());
    let theirs: Vec<String> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ours, theirs);
    let x = dir.join("extracted");
    let _ = fs::remove_dir_all(&x);
    fs::create_dir_all(&x).unwrap();
    let st = Command::new("cpio")
        .args(["-i", "-d", "-m", "--quiet", "--no-absolute-filenames"])
        .current_dir(&x)
        .stdin(fs::File::open(dir.join("initrd.cpio")).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    for (p, e) in initramfs.iter() {
        let on_disk = x.join(p);
        match &e.kind {
            Kind::File(c) => assert_eq!(fs::read(&on_disk).unwrap(), c.as_slice(), "{p}"),
            Kind::Symlink(t) => assert_eq!(fs::read_link(&on_disk).unwrap(), PathBuf::from(t)),
            Kind::Hardlink(t) => {
                use std::os::unix::fs::MetadataExt;
                let a = fs::metadata(&on_disk).unwrap();
                let b = fs::metadata(x.join(t)).unwrap();
                assert_eq!(
                    (a.ino(), a.nlink()),
                    (b.ino(), 3),
                    "{p} is a hard link of {t}"
                );
            }
            Kind::CharDevice(..) => {
                use std::os::unix::fs::FileTypeExt;
                assert!(fs::symlink_metadata(&on_disk)
                    .unwrap()
                    .file_type()
                    .is_char_device());
            }
            _ => assert!(on_disk.is_dir(), "{p}"),
        }
    }
    let b = boot(
        &{
            let v = dir.join("vmlinuz");
            fs::write(&v, file(&asm.tree, &k.vmlinuz_path)).unwrap();
            v
        },
        &dir.join("initrd.cpio.zst"),
        &dir.join("serial.log"),
    );
    eprintln!(
        "load-order boot (zstd initramfs): /init after {:.1} s, done after {:.1} s",
        b.to_init, b.total
    );
    let loaded = b.loaded();
    for m in &order {
        if hyperv.contains(&m.name) {
            let line = b
                .log
                .lines()
                .find(|l| l.starts_with("INSMOD-") && l.contains(&format!(" {} ", m.name)));
            assert!(
                line.is_some_and(|l| l.starts_with("INSMOD-OK")
                    || l.starts_with("INSMOD-SKIP")
                    || l.contains("No such device")),
                "{}: expected to load or fail with ENODEV off Hyper-V: {line:?}",
                m.name
            );
            continue;
        }
        assert!(
            b.log.contains(&format!("INSMOD-OK {}", m.name)) && loaded.contains(&m.name),
            "{} did not load in order:\n{}",
            m.name,
            b.log
                .lines()
                .filter(|l| l.contains("INSMOD"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let failed = b.log.matches("INSMOD-FAIL").count();
    assert_no_load_errors(&b, &dir.join("serial.log"), failed);
}

#[test]
fn an_unknown_module_is_a_clear_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(
        d.path(),
        "bad.toml",
        "[packages]\ninclude = [\"busybox-static\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\nmodules = [\"storage\", \"virtio_blkk\"]\n",
    );
    let out = d.path().join("out");
    let t = fails(
        slipway(
            &shared_cache(),
            &[
                "build",
                r.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--format",
                "dir",
            ],
        ),
        2,
    );
    assert!(
        t.contains("bad.toml: kernel.modules: module \"virtio_blkk\" is neither a module nor built into kernel")
            && t.contains("did you mean virtio_blk"),
        "{t}"
    );
    assert!(
        !out.join("rootfs").exists(),
        "no output after a failed build"
    );
    // Without a kernel package there is no kernel to prune.
    let r = recipe(
        d.path(),
        "nokernel.toml",
        "[packages]\ninclude = [\"busybox-static\"]\n[kernel]\nmodules = [\"storage\"]\n",
    );
    let t = fails(
        slipway(
            &shared_cache(),
            &["build", r.to_str().unwrap(), "-o", out.to_str().unwrap()],
        ),
        2,
    );
    assert!(
        t.contains("nokernel.toml: kernel.modules: no kernel in the image"),
        "{t}"
    );
}

/// Numbers for the report: each feature alone and the containerd host, on both kernels.
#[test]
fn feature_sizes_on_both_kernels() {
    for release in ["trixie", "bookworm"] {
        let d = tempfile::tempdir().unwrap();
        // No [kernel] table: plan each set against the full kernel.
        let asm = assemble(d.path(), release, None);
        assert!(asm.modules.is_none());
        let k = kernel::find(&asm.tree).unwrap();
        for f in kernel::features::FEATURES {
            let t = Instant::now();
            let p = kernel::plan(&asm.tree, &k, &[f.name.to_string()]).unwrap();
            eprintln!(
                "{release} {:<15} {:>3} modules {:>6.2} MB, built in: {:<40} ({:.2} s)",
                f.name,
                p.keep.len(),
                mb(p.kept_bytes()),
                p.builtin_hits
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                t.elapsed().as_secs_f64()
            );
            for m in f.modules {
                assert!(
                    p.get(m).is_some() || p.is_builtin_hit(m),
                    "{release}: feature {} names {m}, which the kernel does not have",
                    f.name
                );
            }
        }
        let all = kernel::plan(&asm.tree, &k, &strings(ALL_FEATURES)).unwrap();
        eprintln!(
            "{release} containerd host (all features): {} of {} modules, {:.2} of {:.2} MB",
            all.keep.len(),
            all.total_count,
            mb(all.kept_bytes()),
            mb(all.total_bytes)
        );
    }
}
