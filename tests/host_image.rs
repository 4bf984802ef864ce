//! The container-host disk image, booted: `recipes/containerd-host.toml` built with
//! slipway (the exact `disk.raw` users get) and started under QEMU (OVMF, q35, 2 vCPUs,
//! 2 GiB, TCG) on a copy-on-write overlay. The guest is driven through the test agent
//! that the provisioning config starts (nothing is baked into the image for tests).
//!
//! - `boots_runs_containers_and_persists`: two boots of one machine: (1) first boot,
//!   provisioned from fw_cfg: multi-user with zero failed units, containerd and `ctr`,
//!   `/` read-only on dm-verity, `/var` grown to the enlarged disk, a slipway busybox
//!   image imported and run with `ctr run`; (2) after `systemctl reboot`: what boot 1
//!   wrote to /var and what provisioning wrote to /etc survived, the machine-id too.
//!   (A broken config, crash recovery and config drives are in `qemu/`, run by
//!   `slipway test`.)
//! - `builds_reproducibly_and_corruption_stops_the_boot`: two builds give identical
//!   artifacts; one byte flipped in the root file system's superblock, and separately
//!   in a block of `/usr/lib/systemd/systemd`, stops the boot with a verity error (and
//!   QEMU does not reboot in a loop).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use slipway::boot::agent::AgentClient;
use slipway::boot::qemu::{Vm, VmSpec};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RECIPE: &str = "recipes/containerd-host.toml";
/// TCG boots on a loaded 2-core machine: generous, but bounded.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RECIPE)
}

/// Builds containerd-host (`--format disk`) into `out`; returns the build's seconds.
fn build_host(out: &Path) -> f64 {
    let t = Instant::now();
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            recipe_path().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "disk",
        ],
    ));
    t.elapsed().as_secs_f64()
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

/// Where console logs are kept: `target/tmp/host-image/`.
fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("host-image");
    fs::create_dir_all(&d).unwrap();
    d
}

fn keep_log(vm: &Vm, name: &str) {
    fs::write(log_dir().join(format!("{name}.log")), vm.console()).unwrap();
}

/// Console lines that mean the boot went wrong.
const BAD: &[&str] = &[
    "Kernel panic",
    "Oops",
    "BUG:",
    "Call Trace",
    "FAILED",
    "Failed to start",
    "emergency.target",
    "rescue.target",
    "Unknown symbol",
    "Failed to insert module",
    "modprobe: ERROR",
    "segfault",
    "slipway-init: boot stopped",
];

fn assert_clean(vm: &Vm, what: &str) {
    let c = vm.console();
    for bad in BAD {
        assert!(
            !c.contains(bad),
            "{what}: console shows {bad:?}:\n{}",
            vm.tail(60)
        );
    }
}

/// Runs `argv` in the guest; asserts exit 0; returns stdout.
fn succeed(a: &mut AgentClient, argv: &[&str]) -> String {
    let r = a.exec(argv, Duration::from_secs(180)).unwrap();
    assert!(
        r.success(),
        "{argv:?} exited {:?}:\n{}{}",
        r.exit,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

fn read(a: &mut AgentClient, path: &str) -> String {
    String::from_utf8_lossy(&a.read_file(path).unwrap()).into_owned()
}

/// Starts the VM and waits for the test agent; returns the agent and the seconds from
/// QEMU start to multi-user.target on the console.
fn boot_with_agent(spec: &VmSpec, dir: &Path, name: &str) -> (Vm, AgentClient, f64) {
    let mut vm = Vm::start(spec, dir).unwrap();
    let multi_user = vm
        .wait_console(BOOT_TIMEOUT, |c| {
            c.contains("Reached target multi-user.target") || c.contains("boot stopped")
        })
        .unwrap();
    keep_log(&vm, name);
    let Some(secs) = multi_user.filter(|_| !vm.console().contains("boot stopped")) else {
        panic!(
            "{name}: no multi-user.target within {BOOT_TIMEOUT:?}:\n{}",
            vm.tail(60)
        );
    };
    let mut a = AgentClient::connect(&vm.work.agent(), Duration::from_secs(30)).unwrap();
    a.wait_ready(Duration::from_secs(120)).unwrap_or_else(|e| {
        panic!(
            "{name}: the test agent does not answer: {e:#}\n{}",
            vm.tail(40)
        )
    });
    (vm, a, secs)
}

/// Asks systemd to reboot; QEMU runs with -no-reboot, so it exits.
fn reboot(vm: &mut Vm, a: &mut AgentClient, name: &str) {
    let _ = a.exec(&["systemctl", "reboot"], Duration::from_secs(10));
    assert!(
        vm.wait_exit(Duration::from_secs(180)),
        "{name}: QEMU did not exit after systemctl reboot:\n{}",
        vm.tail(40)
    );
    keep_log(vm, name);
}

const GOOD_CONFIG: &str = r#"schema-version = 1
hostname = "node-1"

[[file]]
path = "/etc/slipway-test/provisioned"
mode = "0640"
content = "provisioned at first boot\n"

[test-agent]
"#;

#[test]
fn boots_runs_containers_and_persists() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let secs = build_host(&out);
    eprintln!("containerd-host: built in {secs:.1} s");
    // A slipway base image for containerd in the guest.
    let bb = d.path().join("busybox");
    ok(slipway(
        &shared_cache(),
        &[
            "build",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("recipes/base/busybox.toml")
                .to_str()
                .unwrap(),
            "-o",
            bb.to_str().unwrap(),
            "--format",
            "oci-archive",
        ],
    ));
    let good = d.path().join("good.toml");
    fs::write(&good, GOOD_CONFIG).unwrap();

    let disk = out.join("disk.raw");
    let built_size = fs::metadata(&disk).unwrap().len();
    let mut spec = VmSpec::new(&disk);
    spec.agent = true;
    spec.disk_size = Some(built_size + (1 << 30));
    spec.fw_cfg_config = Some(good.clone());
    let work = d.path().join("vm");

    // Boot 1.
    let (mut vm, mut a, secs) = boot_with_agent(&spec, &work, "boot1");
    eprintln!("boot 1: QEMU start to multi-user.target: {secs:.1} s");
    let state = succeed(&mut a, &["systemctl", "is-system-running", "--wait"]);
    if state.trim() != "running" {
        let failed = succeed(&mut a, &["systemctl", "--failed", "--no-legend", "--plain"]);
        panic!("system state {state:?}; failed units:\n{failed}");
    }
    assert_eq!(
        succeed(&mut a, &["systemctl", "is-active", "containerd"]).trim(),
        "active"
    );
    let v = succeed(&mut a, &["ctr", "version"]);
    assert!(v.contains("Server:") && v.contains("Version:"), "{v}");
    // / is the verity device, read-only; /var is the ext4 partition, read-write.
    let mounts = read(&mut a, "/proc/mounts");
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/"))
        .unwrap_or_else(|| panic!("no / in\n{mounts}"));
    assert!(
        root.starts_with("/dev/mapper/root / squashfs ro,"),
        "{root}"
    );
    assert_eq!(read(&mut a, "/sys/block/dm-0/dm/name").trim(), "root");
    assert_eq!(read(&mut a, "/sys/block/dm-0/ro").trim(), "1");
    let var = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/var"))
        .unwrap_or_else(|| panic!("no /var in\n{mounts}"));
    assert!(var.contains(" ext4 rw,"), "{var}");
    let etc = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/etc"))
        .unwrap_or_else(|| panic!("no /etc in\n{mounts}"));
    assert!(etc.starts_with("overlay /etc overlay rw,"), "{etc}");
    for dir in ["/tmp", "/run"] {
        let m = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(dir))
            .unwrap_or_else(|| panic!("no {dir} in\n{mounts}"));
        assert!(m.starts_with("tmpfs "), "{m}");
    }
    // /var grew to the end of the enlarged disk: the partition ends within the GPT's
    // backup area (33 sectors + alignment) of the disk's end.
    let disk_sectors: u64 = read(&mut a, "/sys/class/block/vda/size")
        .trim()
        .parse()
        .unwrap();
    let start: u64 = read(&mut a, "/sys/class/block/vda4/start")
        .trim()
        .parse()
        .unwrap();
    let size: u64 = read(&mut a, "/sys/class/block/vda4/size")
        .trim()
        .parse()
        .unwrap();
    assert!(
        disk_sectors - (start + size) < 2048 + 34,
        "var ends at {} of {disk_sectors} sectors",
        start + size
    );
    let grown = vm
        .console()
        .lines()
        .find(|l| l.contains("grew the ext4 on /dev/vda4"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no ext4 growth on the console:\n{}", vm.tail(40)));
    let blocks: u64 = grown
        .split_whitespace()
        .rev()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        blocks * 4096 > size * 512 - (8 << 20),
        "ext4 of {blocks} blocks in a {size}-sector partition: {grown}"
    );
    assert!(size * 512 > (1 << 30), "var is only {} bytes", size * 512);
    // Provisioning: hostname and file.
    assert_eq!(read(&mut a, "/proc/sys/kernel/hostname").trim(), "node-1");
    assert_eq!(
        read(&mut a, "/etc/slipway-test/provisioned"),
        "provisioned at first boot\n"
    );
    // A slipway base image, run by containerd.
    let image = fs::read(bb.join("image.tar")).unwrap();
    a.write_file("/var/tmp/busybox.tar", 0o644, &image).unwrap();
    // The layout's ref.name annotation is the tag; --base-name gives the repository.
    succeed(
        &mut a,
        &[
            "ctr",
            "image",
            "import",
            "--base-name",
            "slipway/busybox",
            "/var/tmp/busybox.tar",
        ],
    );
    let refs = succeed(&mut a, &["ctr", "image", "ls", "-q"]);
    let r = refs
        .lines()
        .find(|l| l.contains("busybox"))
        .unwrap_or_else(|| panic!("imported image not listed: {refs:?}"))
        .to_string();
    let out_run = succeed(
        &mut a,
        &[
            "ctr",
            "run",
            "--rm",
            &r,
            "bb1",
            "/bin/echo",
            "hello from a slipway image",
        ],
    );
    assert!(
        out_run.contains("hello from a slipway image"),
        "{out_run:?}"
    );
    // State for the next boots.
    a.write_file("/var/marker", 0o644, b"written at boot 1\n")
        .unwrap();
    let machine_id = read(&mut a, "/etc/machine-id");
    assert_eq!(machine_id.trim().len(), 32, "{machine_id:?}");
    let boot1 = a.ping().unwrap().boot_id;
    assert_clean(&vm, "boot 1");
    reboot(&mut vm, &mut a, "boot1");
    drop(a);
    drop(vm);

    // Boot 2: what boot 1 left is still there. (A broken config is qemu/provisioning-broken.toml.)
    let (mut vm, mut a, secs) = boot_with_agent(&spec, &work, "boot2");
    eprintln!("boot 2 (not first): QEMU start to multi-user.target: {secs:.1} s");
    assert_ne!(a.ping().unwrap().boot_id, boot1);
    assert_eq!(read(&mut a, "/var/marker"), "written at boot 1\n");
    assert_eq!(
        read(&mut a, "/etc/slipway-test/provisioned"),
        "provisioned at first boot\n"
    );
    assert!(
        a.read_file("/etc/slipway-test/bad").is_err(),
        "the broken config was applied"
    );
    assert_eq!(read(&mut a, "/etc/machine-id"), machine_id);
    let state = succeed(&mut a, &["systemctl", "is-system-running", "--wait"]);
    assert_eq!(state.trim(), "running");
    assert_clean(&vm, "boot 2");
    vm.kill();
    keep_log(&vm, "boot2");
}

/// The size of the squashfs superblock, whose table pointers change with any file.
const SQUASHFS_SUPERBLOCK: usize = 96;

/// The first offset past the superblock at which two squashfs images differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .skip(SQUASHFS_SUPERBLOCK)
        .position(|(x, y)| x != y)
        .map(|p| p + SQUASHFS_SUPERBLOCK)
}

/// The offset, inside the root file system image, of a block holding the start of
/// `/usr/lib/systemd/systemd`: the root image is rebuilt in-process from the same tree
/// (which must give the partition's bytes exactly), then again with that file's first
/// bytes changed; the first byte that differs belongs to the file's first block.
fn systemd_block_offset(out: &Path, root_bytes: &[u8]) -> u64 {
    let r = slipway::recipe::Recipe::load(&recipe_path()).unwrap();
    let ctx = slipway::pipeline::Context {
        cache: slipway::fetch::cache::Cache::open(Some(shared_cache())).unwrap(),
        rep: slipway::io::progress::Reporter::quiet(),
        offline: false,
        locked: false,
        artifact_dirs: vec![],
        vendor: None,
    };
    let (asm, _) = slipway::pipeline::assembled(&ctx, &r).unwrap();
    let bundled = slipway::disk::image::Bundled::find().unwrap();
    let mut tree = slipway::disk::image::root_tree(&asm.tree, &bundled.agent, asm.epoch).unwrap();
    let write = |t: &slipway::assemble::tree::Tree, name: &str| {
        let p = out.join(name);
        slipway::disk::erofs::write_root(
            t,
            slipway::disk::erofs::RootFs::SquashfsZstd,
            asm.epoch,
            &[0; 16],
            "amd64",
            &p,
        )
        .unwrap();
        fs::read(p).unwrap()
    };
    let same = write(&tree, "root-again.img");
    assert!(
        same == root_bytes,
        "the root file system rebuilt from the same tree differs from the disk's"
    );
    let path = slipway::assemble::tree::normalize("usr/lib/systemd/systemd").unwrap();
    let e = tree.get_mut(&path).unwrap();
    let slipway::assemble::tree::Kind::File(c) = &e.kind else {
        panic!("systemd is not a file");
    };
    let mut bytes = c.as_slice().to_vec();
    for b in bytes.iter_mut().take(64) {
        *b ^= 0x5a;
    }
    e.kind = slipway::assemble::tree::Kind::File(slipway::assemble::tree::Content::bytes(bytes));
    let changed = write(&tree, "root-changed.img");
    first_difference(&same, &changed).expect("changing systemd changed nothing") as u64
}

/// Boots `disk` until slipway-init gives up or the kernel panics; returns the console.
fn boot_corrupt(disk: &Path, dir: &Path, name: &str) -> String {
    let mut spec = VmSpec::new(disk);
    spec.network = false;
    let mut vm = Vm::start(&spec, dir).unwrap();
    let seen = vm
        .wait_console(BOOT_TIMEOUT, |c| {
            c.contains("slipway-init: boot stopped") || c.contains("end Kernel panic")
        })
        .unwrap();
    // Watch a little longer: nothing may follow (no reboot loop, no second boot).
    std::thread::sleep(Duration::from_secs(3));
    keep_log(&vm, name);
    let c = vm.kill();
    assert!(
        seen.is_some(),
        "{name}: the boot did not stop:\n{}",
        vm.tail(60)
    );
    assert_eq!(
        c.matches("Linux version").count(),
        1,
        "{name}: the machine booted again:\n{}",
        vm.tail(60)
    );
    c
}

#[test]
fn builds_reproducibly_and_corruption_stops_the_boot() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let b = d.path().join("b");
    build_host(&a);
    let secs = build_host(&b);
    eprintln!("containerd-host: second (warm) build {secs:.1} s");
    let (ma, mb) = (manifest(&a), manifest(&b));
    assert_eq!(ma["artifacts"], mb["artifacts"], "two builds differ");
    assert_eq!(ma["root_hash"], mb["root_hash"]);
    let disk = fs::read(a.join("disk.raw")).unwrap();
    assert_eq!(disk, fs::read(b.join("disk.raw")).unwrap());

    let root = &ma["partitions"][1];
    assert_eq!(root["type_guid"], "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    let root_off = root["offset"].as_u64().unwrap();
    let root_len = root["content"].as_u64().unwrap();
    let root_bytes = &disk[root_off as usize..(root_off + root_len) as usize];
    let sys_off = systemd_block_offset(d.path(), root_bytes);
    eprintln!("systemd's first block is at root offset {sys_off}");

    // One byte of the squashfs superblock (its magic).
    let sb = d.path().join("sb.raw");
    fs::write(&sb, &disk).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&sb).unwrap();
    f.write_all_at(&[disk[root_off as usize] ^ 0xff], root_off)
        .unwrap();
    drop(f);
    let c = boot_corrupt(&sb, &d.path().join("vm-sb"), "corrupt-superblock");
    assert!(
        c.contains("device-mapper: verity") && c.contains("is corrupted"),
        "no verity error on the console"
    );
    assert!(
        c.contains("slipway-init: mount-root"),
        "not stopped at mount-root"
    );

    // One byte in systemd's first block: the root mounts, exec of systemd hits it.
    let sys = d.path().join("sys.raw");
    fs::write(&sys, &disk).unwrap();
    let off = root_off + sys_off;
    let f = fs::OpenOptions::new().write(true).open(&sys).unwrap();
    f.write_all_at(&[disk[off as usize] ^ 0xff], off).unwrap();
    drop(f);
    let c = boot_corrupt(&sys, &d.path().join("vm-sys"), "corrupt-systemd");
    assert!(
        c.contains("slipway-init: root ready"),
        "the corrupt block was hit before the root was ready"
    );
    assert!(
        c.contains("device-mapper: verity") && c.contains("is corrupted"),
        "no verity error on the console"
    );
    assert!(
        c.contains("dm-verity device corrupted"),
        "no verity panic on the console"
    );
}

#[test]
fn bad_input_fails_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // A base recipe cannot make a disk.
    let t = fails(
        slipway(
            &shared_cache(),
            &[
                "build",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("recipes/base/static.toml")
                    .to_str()
                    .unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--format",
                "disk",
            ],
        ),
        2,
    );
    assert!(t.contains("need a host recipe"), "{t}");
    // A bad [disk] size names the file and key.
    let r = recipe(
        d.path(),
        "bad-disk.toml",
        "[image]\nkind = \"host\"\n[packages]\ninclude = [\"systemd\"]\n[disk]\nesp-size = \"64MB\"\n",
    );
    let t = fails(slipway(&shared_cache(), &["build", r.to_str().unwrap()]), 2);
    assert!(
        t.contains("bad-disk.toml") && t.contains("esp-size") && t.contains("not a size"),
        "{t}"
    );
    // Not root: refused before locking or fetching, with the reason.
    let nobody = d.path().join("nobody");
    fs::create_dir(&nobody).unwrap();
    fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(&nobody, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["build", recipe_path().to_str().unwrap(), "-o"])
        .arg(nobody.join("out"))
        .env("SLIPWAY_CACHE", nobody.join("cache"))
        .output()
        .unwrap();
    let t = fails(o, 2);
    assert!(t.contains("needs root"), "{t}");
    assert!(!nobody.join("out").exists());
    assert!(!out.exists());
}
