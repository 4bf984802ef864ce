//! Issue "host image: kernel and modules": real Debian cloud kernels pruned to a recipe's
//! module features, index files regenerated with depmod, an initramfs written by
//! slipway's cpio writer, and a boot under QEMU (TCG, through the `Vm` API's
//! direct-kernel boot) that loads every kept module and fails on any module-load error
//! in the kernel log.
//!
//! The boot uses busybox-static as the initramfs's only program: `/init` is a shell
//! script that mounts /proc, /sys and /dev, loads modules, prints what happened between
//! markers, and powers off. The test reads the serial console. Two boots: trixie (the
//! storage, root and var modules insmod-ed in [`ModulePlan::load_order`] first, as an
//! init without modprobe would, then every other kept module of a containerd host
//! modprobe-d) and bookworm (every kept module of the boot set modprobe-d).
#![allow(clippy::unwrap_used)]

use crate::common::*;
use slipway::boot::qemu::{DirectKernel, Vm, VmSpec};
use slipway::kernel::{self, KernelInfo, Module, ModulePlan};
use slipway::tree::{Entry, Kind, Tree};
use slipway::writers::cpio::{self, Compression, CpioOptions};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// The stage cache gives a rebuild the same plan and index files: the first call stores
/// them, the second takes them from the entry, and a damaged entry is planned again.
fn check_stage_cache(
    tree: &Tree,
    k: &KernelInfo,
    requests: &[String],
    plan: &ModulePlan,
    index: &std::collections::BTreeMap<String, Vec<u8>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let stages = slipway::io::stage_cache::StageCache::open(dir.path()).unwrap();
    let json = |p: &ModulePlan| serde_json::to_string(p).unwrap();
    let mut warnings = Vec::new();
    for round in ["stored", "reused"] {
        let p = kernel::plan_cached(&stages, tree, k, requests, &mut warnings).unwrap();
        assert_eq!(json(&p), json(plan), "the {round} plan differs");
        let i = kernel::depmod::index_files_cached(&stages, tree, k, plan, &mut warnings).unwrap();
        assert_eq!(&i, index, "the {round} module index differs");
    }
    assert!(warnings.is_empty(), "{warnings:?}");
    let entries = |kind: &str| {
        std::fs::read_dir(dir.path().join("stages").join(kind))
            .unwrap()
            .count()
    };
    assert_eq!((entries("module-plan"), entries("depmod")), (1, 1));
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
    check_stage_cache(tree, k, requests, &plan, &a);
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
    /// Where the console was saved.
    log_path: PathBuf,
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
    /// The first console line where the word `marker` is followed by the word `name`
    /// (`INSMOD-OK virtio_blk`).
    fn marked(&self, marker: &str, name: &str) -> Option<&str> {
        self.log.lines().find(|l| {
            let mut w = l.split_whitespace().skip_while(|x| *x != marker);
            w.next().is_some() && w.next() == Some(name)
        })
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Boots `vmlinuz` with `initrd` through the Vm API (direct kernel, no disk, no NIC,
/// one vCPU, 1 GiB, TCG); the serial log is saved as `dir/serial.log`. Asserts QEMU
/// finished, /init got to its end, and no panic, oops or BUG came before.
fn boot(vmlinuz: &Path, initrd: &Path, dir: &Path) -> Boot {
    let timeout = Duration::from_secs(
        std::env::var("SLIPWAY_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60u64),
    );
    // One boot of this file at a time: TCG on a shared two-core machine is slow enough
    // alone (`$SLIPWAY_VM_LOCK` serialises VMs across test binaries when set).
    let lock =
        fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-boot.lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    // The Vm API's CPU is `-cpu max`: SSE4.2 and the other features cloud CPUs have, so
    // crc32c_intel and friends find their instructions (qemu64 lacks them: ENODEV).
    let mut spec = VmSpec::direct(DirectKernel {
        kernel: vmlinuz.to_path_buf(),
        initrd: Some(initrd.to_path_buf()),
        cmdline: "console=ttyS0 panic=-1 loglevel=4".into(),
    });
    spec.memory_mib = 1024;
    spec.cpus = 1;
    spec.network = false;
    let work = dir.join("vm");
    let _ = fs::remove_dir_all(&work);
    let mut vm = Vm::start(&spec, &work).expect("starting QEMU (run scripts/setup-host.sh)");
    let to_init = vm
        .wait_console(timeout, |c| c.contains("SLIPWAY-INIT"))
        .unwrap();
    let exited = vm.wait_exit(timeout.saturating_sub(vm.started.elapsed()));
    let total = vm.started.elapsed().as_secs_f64();
    let log = vm.kill();
    let log_path = dir.join("serial.log");
    fs::write(&log_path, &log).unwrap();
    assert!(
        exited,
        "QEMU did not finish in {timeout:?} (log {}):\n{}",
        log_path.display(),
        tail(&log, 40)
    );
    assert!(
        log.contains("SLIPWAY-DONE"),
        "/init did not finish (log {}):\n{}",
        log_path.display(),
        tail(&log, 40)
    );
    let done_at = log.find("SLIPWAY-DONE").unwrap_or(log.len());
    for bad in [
        "Kernel panic - not syncing: Attempted to kill init",
        "Oops",
        "BUG:",
        "Call Trace",
    ] {
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
        log_path,
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
fn assert_no_load_errors(b: &Boot, failed_loads: usize) {
    let dmesg = b.section("DMESG");
    assert!(!dmesg.is_empty(), "no dmesg section:\n{}", tail(&b.log, 40));
    let magic = dmesg
        .iter()
        .filter(|l| l.contains("Invalid ELF header magic"))
        .count();
    assert!(
        magic <= failed_loads,
        "{magic} \"Invalid ELF header magic\" lines for {failed_loads} expected failures (log {})",
        b.log_path.display()
    );
    let bad: Vec<&&str> = dmesg
        .iter()
        .filter(|l| !l.contains("Invalid ELF header magic"))
        .filter(|l| LOAD_ERRORS.iter().any(|e| l.contains(e)))
        .collect();
    assert!(
        bad.is_empty(),
        "module load errors in the kernel log (log {}):\n{bad:#?}",
        b.log_path.display()
    );
}

/// Asserts each of `names` was loaded by /init's `marker` (`INSMOD` or `MODPROBE`) and
/// is in /proc/modules; the Hyper-V ones must load, or fail with ENODEV ("No such
/// device"), or (insmod) be skipped because a dependency failed.
fn assert_loaded<'a>(
    b: &Boot,
    names: impl IntoIterator<Item = &'a str>,
    marker: &str,
    hyperv: &BTreeSet<String>,
) {
    let loaded = b.loaded();
    let (ok, fail, skip) = (
        format!("{marker}-OK"),
        format!("{marker}-FAIL"),
        format!("{marker}-SKIP"),
    );
    for name in names {
        let done = b.marked(&ok, name).is_some();
        if hyperv.contains(name) {
            let failed = b.marked(&fail, name);
            assert!(
                done || b.marked(&skip, name).is_some()
                    || failed.is_some_and(|l| l.contains("No such device")),
                "{name}: expected to load or fail with ENODEV off Hyper-V: {failed:?}"
            );
            continue;
        }
        assert!(
            done && loaded.contains(name),
            "{name} did not load with {marker} (log {}):\n{}",
            b.log_path.display(),
            b.log
                .lines()
                .filter(|l| l.contains(name) || l.contains(marker))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// /init lines that insmod `order`, each after its dependencies; a module whose
/// dependency failed is skipped (`INSMOD-SKIP`), a failure prints `INSMOD-FAIL`.
fn insmod_lines(order: &[&Module]) -> String {
    let mut s = String::from(
        "load() { n=$1; p=$2; shift 2; for d in \"$@\"; do if [ -e /tmp/failed.$d ]; then echo \"INSMOD-SKIP $n needs $d\"; : > /tmp/failed.$n; return; fi; done; if out=$(insmod $p 2>&1); then echo \"INSMOD-OK $n\"; else echo \"INSMOD-FAIL $n $out\"; : > /tmp/failed.$n; fi; }\n",
    );
    for m in order {
        s.push_str(&format!(
            "load {} /{} {}\n",
            m.name,
            m.path,
            m.deps.join(" ")
        ));
    }
    s
}

/// /init lines that modprobe each of `names` (`MODPROBE-OK` or `MODPROBE-FAIL`).
fn modprobe_lines<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| {
            format!(
                "if out=$(modprobe {n} 2>&1); then echo \"MODPROBE-OK {n}\"; else echo \"MODPROBE-FAIL {n} $out\"; fi\n"
            )
        })
        .collect()
}

/// A release's kernel pruned to some features, checked against its plan.
struct Pruned {
    asm: slipway::assemble::Assembled,
    k: KernelInfo,
    plan: ModulePlan,
    report: slipway::kernel::ModuleReport,
}

/// Assembles and prunes `release` to `features` in `dir`, and checks the tree
/// ([`check_pruned`]) and the build's module report against the plan.
fn prune(dir: &Path, release: &str, features: &[&str]) -> Pruned {
    fs::create_dir_all(dir).unwrap();
    let asm = assemble(dir, release, Some(features));
    let report = asm
        .modules
        .clone()
        .expect("a [kernel] recipe reports its modules");
    let k = kernel::find(&asm.tree).unwrap();
    assert_eq!(report.kernel, k.version);
    let plan = check_pruned(&asm.tree, &k, &strings(features));
    assert_eq!(report.kept_count, plan.keep.len());
    eprintln!(
        "{release} {features:?}: {} (kept: {})",
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
    Pruned {
        asm,
        k,
        plan,
        report,
    }
}

/// Boots `p`'s kernel with an initramfs holding every kept module (written twice with
/// `compression`: the same bytes), whose /init insmods `order` first and then
/// modprobes every other kept module; checks the kernel version, every load, and the
/// kernel log. `dir` keeps the files and the console.
fn boot_every_module(p: &Pruned, order: &[&Module], compression: Compression, dir: &Path) -> Boot {
    let first: BTreeSet<&str> = order.iter().map(|m| m.name.as_str()).collect();
    let rest: Vec<&str> = p
        .plan
        .keep
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| !first.contains(n))
        .collect();
    let init = format!(
        "{INIT_HEAD}{}{}{INIT_TAIL}",
        insmod_lines(order),
        modprobe_lines(rest.iter().copied())
    );
    let initramfs = initramfs_tree(&p.asm.tree, &p.k, &init, None);
    fs::create_dir_all(dir).unwrap();
    let opts = CpioOptions { epoch: p.asm.epoch };
    let initrd = dir.join("initrd.cpio.boot");
    let a = cpio::write_compressed(&initramfs, opts, compression, &initrd).unwrap();
    let again =
        cpio::write_compressed(&initramfs, opts, compression, &dir.join("again.cpio")).unwrap();
    assert_eq!(
        a.sha256, again.sha256,
        "the same tree gave two different initramfs files"
    );
    let vmlinuz = dir.join("vmlinuz");
    fs::write(&vmlinuz, file(&p.asm.tree, &p.k.vmlinuz_path)).unwrap();
    let b = boot(&vmlinuz, &initrd, dir);
    eprintln!(
        "{}: initramfs {:.2} MB ({compression:?}), {} insmod + {} modprobe, /init after {:.1} s, done after {:.1} s",
        p.k.version,
        mb(a.size),
        order.len(),
        rest.len(),
        b.to_init,
        b.total
    );
    assert!(
        b.log.contains(&format!("kernel={}", p.k.version)),
        "booted another kernel?\n{}",
        tail(&b.log, 20)
    );
    let hyperv = needs_hyperv(&p.plan);
    assert_loaded(&b, first.iter().copied(), "INSMOD", &hyperv);
    assert_loaded(&b, rest.iter().copied(), "MODPROBE", &hyperv);
    let failed = b.log.matches("INSMOD-FAIL").count() + b.log.matches("MODPROBE-FAIL").count();
    assert_no_load_errors(&b, failed);
    b
}

/// Where a release's boot files and console are kept: `target/tmp/kernel-boot-<name>/`.
fn boot_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kernel-boot-{name}"))
}

/// trixie in one boot: the containerd host's modules (every feature) pruned, the storage,
/// root and var modules insmod-ed in [`ModulePlan::load_order`] (each after its
/// dependencies, as an init without modprobe loads them), then every other kept module
/// modprobe-d, from a zstd initramfs. The recipe's boot set is pruned and checked on
/// the host too; the boot loads all of it (it is a subset of every feature).
#[test]
fn trixie_cloud_kernel_pruned_loads_in_order_and_every_kept_module() {
    let d = tempfile::tempdir().unwrap();
    let boot_set = prune(&d.path().join("boot-set"), "trixie", BOOT_SET);
    let report = &boot_set.report;
    assert!(
        report.kept_count < report.total_count / 10,
        "{}",
        report.summary()
    );
    assert!(
        report.builtin_hits.iter().any(|b| b.name == "ext4"),
        "ext4 is built into Debian's cloud kernels"
    );
    let all = prune(&d.path().join("all"), "trixie", ALL_FEATURES);
    let booted: BTreeSet<&str> = all.plan.keep.iter().map(|m| m.name.as_str()).collect();
    for m in &boot_set.plan.keep {
        assert!(
            booted.contains(m.name.as_str()),
            "{} is kept for {BOOT_SET:?} but not for every feature",
            m.name
        );
    }
    let order = all.plan.load_order(&strings(INITRAMFS_SET)).unwrap();
    // The order loads each module after its dependencies.
    for (i, m) in order.iter().enumerate() {
        for dep in m.deps.iter().chain(m.pre.iter()) {
            let j = order.iter().position(|x| &x.name == dep).unwrap();
            assert!(j < i, "{} comes before its dependency {dep}", m.name);
        }
    }
    let dir = boot_dir("trixie");
    load_order_initramfs_reads_back_with_gnu_cpio(&all, &order, &dir);
    boot_every_module(&all, &order, Compression::Zstd, &dir);
}

#[test]
fn bookworm_cloud_kernel_pruned_boots_and_loads_every_kept_module() {
    let d = tempfile::tempdir().unwrap();
    let p = prune(d.path(), "bookworm", BOOT_SET);
    boot_every_module(&p, &[], Compression::Xz, &boot_dir("bookworm"));
    assert!(
        p.report.kept_count < p.report.total_count / 10,
        "{}",
        p.report.summary()
    );
    // On 6.1 virtio_pci is a module; on 6.12 it is built in.
    assert!(
        p.report.kept.iter().any(|m| m == "virtio_pci"),
        "{:?}",
        p.report.kept
    );
}

/// The initramfs an init loads without modprobe: only the modules of `order` (the
/// storage, root and var set) and an /init that insmods them, written without
/// compression, zstd and xz (sizes printed); GNU cpio lists the same names and
/// extracts the same content, links and device node.
fn load_order_initramfs_reads_back_with_gnu_cpio(p: &Pruned, order: &[&Module], dir: &Path) {
    let init = format!("{INIT_HEAD}{}{INIT_TAIL}", insmod_lines(order));
    let paths: Vec<&str> = order.iter().map(|m| m.path.as_str()).collect();
    let initramfs = initramfs_tree(&p.asm.tree, &p.k, &init, Some(&paths));
    fs::create_dir_all(dir).unwrap();
    let opts = CpioOptions { epoch: p.asm.epoch };
    let mut sizes = Vec::new();
    for (c, name) in [
        (Compression::None, "initrd.cpio"),
        (Compression::Zstd, "initrd.cpio.zst"),
        (Compression::Xz, "initrd.cpio.xz"),
    ] {
        let w = cpio::write_compressed(&initramfs, opts, c, &dir.join(name)).unwrap();
        sizes.push(mb(w.size));
    }
    eprintln!(
        "initramfs (storage+root+var, {} modules + busybox): cpio {:.2} MB, zstd-{} {:.2} MB, xz {:.2} MB",
        order.len(),
        sizes[0],
        cpio::ZSTD_LEVEL,
        sizes[1],
        sizes[2]
    );
    let plain = dir.join("initrd.cpio");
    let ours: Vec<String> = cpio::parse(&fs::read(&plain).unwrap())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let listed = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(fs::File::open(&plain).unwrap())
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
        .stdin(fs::File::open(&plain).unwrap())
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
