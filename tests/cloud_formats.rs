//! Cloud disk formats of the container host (`recipes/containerd-host.toml` built with
//! `--format disk,qcow2,vhd,vmdk,gce`; needs root, like every host disk build).
//!
//! - `every_format_passes_qemu_img_and_holds_the_raw_disk`: qemu-img reads the VHD as
//!   `vpc` (fixed footer, virtual size a whole number of MiB), the VMDK as
//!   `streamOptimized` and the qcow2 as compressed, `check` is clean where QEMU has a
//!   check, and `compare` finds each identical to `disk.raw`; GNU tar lists exactly one
//!   member `disk.raw` in the GCE tarball, identical to `disk.raw`; the manifest and the
//!   JSON sidecars list each file with its real size and sha256.
//! - `built_again_offline_under_a_moved_clock_is_identical`: a second build into
//!   another directory, with another cache (fetched on the real clock, then built
//!   `--offline` under `faketime`), gives every file byte for byte.
//! - `each_format_boots_to_multi_user`: one boot per format under OVMF (TCG), on a
//!   qcow2 overlay over the file itself (vpc, vmdk, qcow2) or over the raw disk
//!   extracted from the GCE tarball: multi-user.target, `systemctl is-system-running`
//!   says running, no console badness.
//! - `bad_input_fails_before_any_work` and
//!   `missing_cloud_drivers_warn_and_a_small_esp_stops_before_the_disk`.
//!
//! The first test to run builds the shared output (`target/tmp/cloud-formats/a`) under
//! a file lock; the others reuse it while the slipway binary is the same.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use slipway::boot::agent::AgentClient;
use slipway::boot::qemu::{Vm, VmSpec};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RECIPE: &str = "recipes/containerd-host.toml";
const FORMATS: &str = "disk,qcow2,vhd,vmdk,gce";
/// The disk files, by manifest kind.
const FILES: &[(&str, &str)] = &[
    ("disk-raw", "disk.raw"),
    ("qcow2", "disk.qcow2"),
    ("vhd", "disk.vhd"),
    ("vmdk", "disk.vmdk"),
    ("gce", "disk.tar.gz"),
];
/// TCG boots on a loaded 2-core machine: generous, but bounded.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const MIB: u64 = 1 << 20;

fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RECIPE)
}

fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloud-formats");
    fs::create_dir_all(&d).unwrap();
    d
}

fn build_args(out: &Path) -> Vec<String> {
    vec![
        "build".into(),
        recipe_path().display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--format".into(),
        FORMATS.into(),
    ]
}

/// The shared build's output directory: built once per slipway binary (the binary's
/// sha256 is the marker), under an exclusive lock so parallel tests wait for it.
fn shared_build() -> PathBuf {
    let dir = work_dir();
    let lock = fs::File::create(dir.join("lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let out = dir.join("a");
    let marker = dir.join("a.built-by");
    let (bin_sha, _) = slipway::io::hash::sha256_file(&bin()).unwrap();
    if fs::read_to_string(&marker).ok().as_deref() == Some(bin_sha.as_str()) && out.is_dir() {
        return out;
    }
    let _ = fs::remove_file(&marker);
    let _ = fs::remove_dir_all(&out);
    let t = Instant::now();
    let args = build_args(&out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = ok(slipway(&shared_cache(), &args));
    eprintln!(
        "containerd-host, {FORMATS}: built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    fs::write(dir.join("a.log"), &text).unwrap();
    fs::write(&marker, bin_sha).unwrap();
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn qemu_img_info(fmt: &str, path: &Path) -> serde_json::Value {
    let out = run(Command::new("qemu-img")
        .args(["info", "-f", fmt, "--output", "json"])
        .arg(path));
    serde_json::from_str(&out).unwrap()
}

/// `qemu-img compare` exits 0 only when the guest-visible contents are identical
/// (with different sizes, the larger one's extra bytes must be zero).
fn assert_same_as_raw(fmt: &str, path: &Path, raw: &Path) {
    let o = Command::new("qemu-img")
        .args(["compare", "-f", fmt, "-F", "raw"])
        .arg(path)
        .arg(raw)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: differs from disk.raw:\n{}",
        path.display(),
        text(&o)
    );
}

#[test]
fn every_format_passes_qemu_img_and_holds_the_raw_disk() {
    let out = shared_build();
    let raw = out.join("disk.raw");
    let raw_len = fs::metadata(&raw).unwrap().len();

    // VHD: QEMU does not probe fixed VHDs (the footer is at the end), so say vpc.
    let vhd = out.join("disk.vhd");
    let info = qemu_img_info("vpc", &vhd);
    assert_eq!(info["format"], "vpc");
    let vsize = info["virtual-size"].as_u64().unwrap();
    assert_eq!(vsize % MIB, 0, "VHD virtual size {vsize} is not whole MiB");
    assert!(vsize >= raw_len);
    let bytes = fs::read(&vhd).unwrap();
    assert_eq!(
        bytes.len() as u64,
        vsize + 512,
        "fixed: data then one footer"
    );
    let footer = slipway::formats::vhd::parse_footer(&bytes[bytes.len() - 512..]).unwrap();
    assert_eq!(footer.disk_type, 2, "disk type fixed");
    assert_eq!(footer.size, vsize);
    drop(bytes);
    assert_same_as_raw("vpc", &vhd, &raw);

    // VMDK: stream-optimized, compressed, clean.
    let vmdk = out.join("disk.vmdk");
    let info = qemu_img_info("vmdk", &vmdk);
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    assert_eq!(
        info["format-specific"]["data"]["extents"][0]["compressed"],
        true
    );
    assert_eq!(info["virtual-size"].as_u64().unwrap(), raw_len);
    let check = run(Command::new("qemu-img").arg("check").arg(&vmdk));
    assert!(check.contains("No errors were found"), "{check}");
    assert_same_as_raw("vmdk", &vmdk, &raw);

    // qcow2: compressed clusters, clean.
    let qcow2 = out.join("disk.qcow2");
    let info = qemu_img_info("qcow2", &qcow2);
    assert_eq!(info["format-specific"]["data"]["compression-type"], "zlib");
    let check = run(Command::new("qemu-img").arg("check").arg(&qcow2));
    assert!(check.contains("No errors were found"), "{check}");
    let compressed: f64 = check
        .split("% compressed clusters")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no compressed share in {check}"));
    // Clusters that do not shrink (the zstd-compressed root) are stored as they are.
    assert!(compressed > 10.0, "{check}");
    assert_same_as_raw("qcow2", &qcow2, &raw);

    // GCE: GNU tar sees exactly one member, disk.raw, holding disk.raw.
    let tgz = out.join("disk.tar.gz");
    let list = run(Command::new("tar").arg("-tzf").arg(&tgz));
    assert_eq!(list, "disk.raw\n");
    let x = tempfile::tempdir_in(work_dir()).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(x.path()));
    assert_eq!(
        slipway::io::hash::sha256_file(&x.path().join("disk.raw")).unwrap(),
        slipway::io::hash::sha256_file(&raw).unwrap(),
        "the tarball's disk.raw differs"
    );

    // Manifest and sidecars: every file with its real size and sha256.
    let m = json(&out.join("manifest.json"));
    for (kind, name) in FILES {
        let (sha, size) = slipway::io::hash::sha256_file(&out.join(name)).unwrap();
        let a = m["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == *name)
            .unwrap_or_else(|| panic!("{name} not in the manifest"));
        assert_eq!(a["kind"], *kind);
        assert_eq!(a["sha256"], sha.as_str(), "{name}");
        assert_eq!(a["size"], size, "{name}");
        let s = json(&out.join(format!("{name}.json")));
        assert_eq!(s["file"], *name);
        assert_eq!(s["sha256"], sha.as_str(), "{name}.json");
        assert_eq!(s["size"], size, "{name}.json");
        assert_eq!(s["boot_mode"], "uefi");
        assert_eq!(s["architecture"], "x86_64");
        assert_eq!(s["root_hash"], m["root_hash"]);
        assert!(s["name"]
            .as_str()
            .unwrap()
            .starts_with("containerd-host-1-"));
        assert_eq!(s["description"], m["description"]);
    }
    assert_eq!(
        json(&out.join("disk.vhd.json"))["virtual_size"].as_u64(),
        Some(vsize)
    );
    assert_eq!(
        json(&out.join("disk.vhd.json"))["register"]["platform"],
        "azure"
    );
    assert_eq!(
        json(&out.join("disk.vmdk.json"))["register"]["platform"],
        "aws"
    );
    assert_eq!(
        json(&out.join("disk.tar.gz.json"))["register"]["platform"],
        "gce"
    );
    // containerd-host has every cloud's drivers: no driver warning.
    let log = fs::read_to_string(work_dir().join("a.log")).unwrap();
    assert!(
        !log.contains(" is for "),
        "unexpected driver warning:\n{log}"
    );
}

/// Every file of `dir` (names and bytes), sorted.
fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

#[test]
fn built_again_offline_under_a_moved_clock_is_identical() {
    let a = shared_build();
    let d = tempfile::tempdir_in(work_dir()).unwrap();
    let cache_b = d.path().join("cache-b");
    // The .debs are content-addressed: link them in (the fetch below checks them);
    // everything else (package lists, initramfs archives) is made anew.
    let blobs = shared_cache().join("blobs");
    if blobs.is_dir() {
        fs::create_dir_all(&cache_b).unwrap();
        run(Command::new("cp").arg("-al").arg(&blobs).arg(&cache_b));
    }
    ok(Command::new(bin())
        .args(["--quiet", "fetch"])
        .arg(recipe_path())
        .env("SLIPWAY_CACHE", &cache_b)
        .output()
        .unwrap());
    let b = d.path().join("elsewhere/b");
    let t = Instant::now();
    let o = Command::new("faketime")
        .arg("+3 days")
        .arg(bin())
        .args(["--quiet", "--offline"])
        .args(build_args(&b))
        .env("SLIPWAY_CACHE", &cache_b)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    ok(o);
    eprintln!(
        "second build (other cache, clock +3 days, offline): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (fa, fb) = (files(&a), files(&b));
    let names = |v: &[(String, PathBuf)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb), "the two builds wrote other files");
    for ((name, pa), (_, pb)) in fa.iter().zip(&fb) {
        if name == "report.json" {
            continue; // paths and timings
        }
        let (x, y) = (
            slipway::io::hash::sha256_file(pa).unwrap(),
            slipway::io::hash::sha256_file(pb).unwrap(),
        );
        assert_eq!(x, y, "{name} differs between the two builds");
    }
    for (_, name) in FILES {
        assert!(fa.iter().any(|(n, _)| n == name), "{name} was not built");
    }
}

/// Besides the library's kola-strict check: slipway-init giving up.
const BAD: &[&str] = &["slipway-init: boot stopped"];

const AGENT_CONFIG: &str = "schema-version = 1\nhostname = \"cloud-node\"\n\n[test-agent]\n";

/// Boots `disk` on an overlay; asserts multi-user, a running system and a clean
/// console; returns the seconds from QEMU start to multi-user.target.
fn boot(disk: &Path, dir: &Path, name: &str) -> f64 {
    let cfg = dir.join("config.toml");
    fs::create_dir_all(dir).unwrap();
    fs::write(&cfg, AGENT_CONFIG).unwrap();
    let mut spec = VmSpec::new(disk);
    spec.agent = true;
    spec.fw_cfg_config = Some(cfg);
    let logs = work_dir().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut vm = Vm::start(&spec, &dir.join("vm")).unwrap();
    let seen = vm
        .wait_console(BOOT_TIMEOUT, |c| {
            c.contains("Reached target multi-user.target") || c.contains("boot stopped")
        })
        .unwrap();
    let keep = |vm: &Vm| fs::write(logs.join(format!("{name}.log")), vm.console()).unwrap();
    keep(&vm);
    let Some(secs) = seen.filter(|_| !vm.console().contains("boot stopped")) else {
        panic!("{name}: no multi-user.target:\n{}", vm.tail(60));
    };
    let mut a = AgentClient::connect(&vm.work.agent(), Duration::from_secs(30)).unwrap();
    a.wait_ready(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{name}: no test agent: {e:#}\n{}", vm.tail(40)));
    let r = a
        .exec(
            &["systemctl", "is-system-running", "--wait"],
            Duration::from_secs(180),
        )
        .unwrap();
    let state = String::from_utf8_lossy(&r.stdout).trim().to_string();
    if state != "running" {
        let f = a
            .exec(
                &["systemctl", "--failed", "--no-legend", "--plain"],
                Duration::from_secs(60),
            )
            .unwrap();
        panic!(
            "{name}: system {state:?}; failed units:\n{}",
            String::from_utf8_lossy(&f.stdout)
        );
    }
    drop(a);
    vm.kill();
    keep(&vm);
    assert_console_clean(&vm.console(), name, BAD, &vm.tail(60));
    secs
}

#[test]
fn each_format_boots_to_multi_user() {
    let out = shared_build();
    let d = tempfile::tempdir_in(work_dir()).unwrap();
    // GCE: the raw disk as GCE unpacks it from the tarball.
    let gce = d.path().join("gce");
    fs::create_dir_all(&gce).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(out.join("disk.tar.gz"))
        .arg("-C")
        .arg(&gce));
    // One VM at a time.
    for (name, disk) in [
        ("vhd", out.join("disk.vhd")),
        ("vmdk", out.join("disk.vmdk")),
        ("qcow2", out.join("disk.qcow2")),
        ("gce", gce.join("disk.raw")),
    ] {
        let secs = boot(&disk, &d.path().join(name), name);
        eprintln!("{name}: QEMU start to multi-user.target: {secs:.1} s");
    }
}

#[test]
fn bad_input_fails_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = out.to_str().unwrap();
    let r = recipe_path();
    let r = r.to_str().unwrap();
    // An unknown format: the valid ones are listed.
    let t = fails(
        slipway(
            &shared_cache(),
            &["build", r, "-o", o, "--format", "disk,vdi"],
        ),
        2,
    );
    for want in ["vdi", "qcow2", "vhd", "vmdk", "gce"] {
        assert!(t.contains(want), "{want} not in: {t}");
    }
    // A /var too small for its file system.
    let small = recipe(
        d.path(),
        "small-var.toml",
        "[image]\nkind = \"host\"\n[packages]\ninclude = [\"systemd\"]\n[disk]\nvar-size = \"4MiB\"\n",
    );
    let t = fails(
        slipway(
            &shared_cache(),
            &["build", small.to_str().unwrap(), "-o", o, "--format", "vhd"],
        ),
        2,
    );
    assert!(
        t.contains("small-var.toml") && t.contains("disk.var-size") && t.contains("4 MiB"),
        "{t}"
    );
    // A missing host tool (qemu-img for qcow2): every other tool is on PATH.
    let path = d.path().join("bin");
    fs::create_dir(&path).unwrap();
    let mut tools: Vec<&str> =
        slipway::disk::image::tools(&slipway::recipe::Recipe::load(&recipe_path()).unwrap());
    tools.push("depmod");
    for t in tools {
        let found = run(Command::new("sh").args(["-c", &format!("command -v {t}")]));
        let _ = std::os::unix::fs::symlink(found.trim(), path.join(t));
    }
    let o2 = Command::new(bin())
        .args(["build", r, "-o", o, "--format", "vhd,qcow2"])
        .env("SLIPWAY_CACHE", shared_cache())
        .env("PATH", &path)
        .output()
        .unwrap();
    let t = fails(o2, 2);
    assert!(t.contains("qemu-img") && t.contains("qemu-utils"), "{t}");
    assert!(!out.exists(), "a failed build created {}", out.display());
}

#[test]
fn missing_cloud_drivers_warn_and_a_small_esp_stops_before_the_disk() {
    let d = tempfile::tempdir().unwrap();
    // containerd-host without the network and storage features, and an ESP too small
    // for its kernel; its lock still applies (modules and disk do not change it).
    let text = fs::read_to_string(recipe_path()).unwrap();
    let text = text
        .replace(
            "modules = [\"storage\", \"root\", \"var\", \"network\",",
            "modules = [\"root\", \"var\",",
        )
        .replace("[disk]\n", "[disk]\nesp-size = \"8MiB\"\n");
    assert!(text.contains("modules = [\"root\", \"var\","));
    let r = d.path().join("thin-host.toml");
    fs::write(&r, text).unwrap();
    fs::copy(
        recipe_path().with_extension("toml.lock"),
        d.path().join("thin-host.toml.lock"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        recipe_path().parent().unwrap().join("containerd-host"),
        d.path().join("containerd-host"),
    )
    .unwrap();
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
                "vhd,vmdk,gce",
            ],
        ),
        2,
    );
    for want in [
        "--format vhd is for azure",
        "hv_netvsc, hv_storvsc",
        "--format vmdk is for aws",
        "ena",
        "--format gce is for gce",
        "gve, virtio_net, virtio_scsi",
        "disk.esp-size: 8 MiB cannot hold the UKI",
    ] {
        assert!(t.contains(want), "{want:?} not in:\n{t}");
    }
    assert!(!out.exists(), "the disk stage ran");
}
