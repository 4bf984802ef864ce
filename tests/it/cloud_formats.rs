//! Cloud disk formats of the container host (`recipes/containerd-host.toml` built with
//! `--format disk` and every format of `slipway::formats::ALL`; needs root, like every
//! host disk build).
//!
//! - `every_format_passes_qemu_img_and_holds_the_raw_disk`: qemu-img reads the VHD as
//!   `vpc` (fixed footer, virtual size a whole number of MiB), the VMDK as
//!   `streamOptimized` and the qcow2 as compressed, and `check` is clean where QEMU has a
//!   check; GNU tar lists exactly one member `disk.raw` in the GCE tarball, identical to
//!   `disk.raw`; the manifest and the JSON sidecars list each file with its real size and
//!   sha256. Then every format is read the way `slipway boot` and the boot tests start a
//!   VM on it: through the qcow2 overlay `slipway::boot::qemu::prepare` makes, whose
//!   backing driver follows the file name (`vpc` for the VHD, which QEMU does not probe);
//!   `qemu-img compare` must find the guest's view identical to `disk.raw`. That is what
//!   booting each format proved beyond booting `disk.raw` (which the `qemu/` suite and
//!   other tests do): the guest sees the same bytes, so it boots the same way.
//! - `built_again_offline_under_a_moved_clock_is_identical`: a second build into
//!   another directory, with another cache (fetched on the real clock, then built
//!   `--offline` under `faketime`), gives every file byte for byte.
//! - `bad_input_fails_before_any_work` and
//!   `missing_cloud_drivers_warn_and_a_small_esp_stops_before_the_disk`.
//!
//! The first build is a fixture (`common::fixtures::build`): built once per content key
//! under a file lock, shared by the tests of this file.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use slipway::boot::qemu::{backing_format, prepare, VmSpec};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The bundled recipe (what the fixture builds) and its file (what the second build
/// of the reproducibility test names).
const RECIPE_NAME: &str = "containerd-host";
const RECIPE: &str = "recipes/containerd-host.toml";
const MIB: u64 = 1 << 20;

fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RECIPE)
}

fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloud-formats");
    fs::create_dir_all(&d).unwrap();
    d
}

/// `disk` and every format slipway has: `disk,qcow2,vhd,vmdk,gce`.
fn formats() -> String {
    std::iter::once("disk")
        .chain(slipway::formats::ALL.iter().map(|f| f.name()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The disk files, by manifest kind: `disk.raw` and each format's file.
fn files_by_kind() -> Vec<(&'static str, &'static str)> {
    std::iter::once(("disk-raw", "disk.raw"))
        .chain(
            slipway::formats::ALL
                .iter()
                .map(|f| (f.name(), f.file_name())),
        )
        .collect()
}

fn build_args(out: &Path) -> Vec<String> {
    vec![
        "build".into(),
        recipe_path().display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--format".into(),
        formats(),
    ]
}

/// The shared build's output directory (a fixture: built once per content key, under a
/// lock, so parallel tests wait for it).
fn shared_build() -> PathBuf {
    let t = Instant::now();
    let out = fixtures::build(RECIPE_NAME, &["--format", &formats()]);
    eprintln!(
        "containerd-host, {}: ready in {:.1} s",
        formats(),
        t.elapsed().as_secs_f64()
    );
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

/// VHD: QEMU does not probe fixed VHDs (the footer is at the end), so say vpc. Returns
/// the virtual size.
fn check_vhd(vhd: &Path, raw_len: u64) -> u64 {
    let info = qemu_img_info("vpc", vhd);
    assert_eq!(info["format"], "vpc");
    let vsize = info["virtual-size"].as_u64().unwrap();
    assert_eq!(vsize % MIB, 0, "VHD virtual size {vsize} is not whole MiB");
    assert!(vsize >= raw_len);
    let bytes = fs::read(vhd).unwrap();
    assert_eq!(
        bytes.len() as u64,
        vsize + 512,
        "fixed: data then one footer"
    );
    let footer = slipway::formats::vhd::parse_footer(&bytes[bytes.len() - 512..]).unwrap();
    assert_eq!(footer.disk_type, 2, "disk type fixed");
    assert_eq!(footer.size, vsize);
    vsize
}

/// VMDK: stream-optimized, compressed, clean.
fn check_vmdk(vmdk: &Path, raw_len: u64) {
    let info = qemu_img_info("vmdk", vmdk);
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    assert_eq!(
        info["format-specific"]["data"]["extents"][0]["compressed"],
        true
    );
    assert_eq!(info["virtual-size"].as_u64().unwrap(), raw_len);
    let check = run(Command::new("qemu-img").arg("check").arg(vmdk));
    assert!(check.contains("No errors were found"), "{check}");
}

/// qcow2: compressed clusters, clean.
fn check_qcow2(qcow2: &Path) {
    let info = qemu_img_info("qcow2", qcow2);
    assert_eq!(info["format-specific"]["data"]["compression-type"], "zlib");
    let check = run(Command::new("qemu-img").arg("check").arg(qcow2));
    assert!(check.contains("No errors were found"), "{check}");
    let compressed: f64 = check
        .split("% compressed clusters")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no compressed share in {check}"));
    // Clusters that do not shrink (the zstd-compressed root) are stored as they are.
    assert!(compressed > 10.0, "{check}");
}

/// GCE: GNU tar sees exactly one member, disk.raw, holding disk.raw; returns the
/// extracted file (the disk GCE makes from the tarball) inside `x`.
fn check_gce(tgz: &Path, raw: &Path, x: &Path) -> PathBuf {
    let list = run(Command::new("tar").arg("-tzf").arg(tgz));
    assert_eq!(list, "disk.raw\n");
    run(Command::new("tar").arg("-xzf").arg(tgz).arg("-C").arg(x));
    let got = x.join("disk.raw");
    assert_eq!(
        slipway::io::hash::sha256_file(&got).unwrap(),
        slipway::io::hash::sha256_file(raw).unwrap(),
        "the tarball's disk.raw differs"
    );
    got
}

/// Manifest and sidecars: every file with its real size and sha256, and each cloud's
/// registration.
fn check_manifest(out: &Path, vhd_vsize: u64) {
    let m = json(&out.join("manifest.json"));
    for (kind, name) in files_by_kind() {
        let (sha, size) = slipway::io::hash::sha256_file(&out.join(name)).unwrap();
        let a = m["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the manifest"));
        assert_eq!(a["kind"], kind);
        assert_eq!(a["sha256"], sha.as_str(), "{name}");
        assert_eq!(a["size"], size, "{name}");
        let s = json(&out.join(format!("{name}.json")));
        assert_eq!(s["file"], name);
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
    let sidecar = |name: &str| json(&out.join(format!("{name}.json")));
    assert_eq!(
        sidecar("disk.vhd")["virtual_size"].as_u64(),
        Some(vhd_vsize)
    );
    for (name, platform) in [
        ("disk.vhd", "azure"),
        ("disk.vmdk", "aws"),
        ("disk.tar.gz", "gce"),
    ] {
        assert_eq!(sidecar(name)["register"]["platform"], platform, "{name}");
    }
}

/// What a guest booted on `disk` by the `Vm` API sees: the qcow2 overlay
/// [`prepare`] creates in `dir` over `disk`, read by `qemu-img compare` through QEMU's
/// block layer (the overlay, then the backing file with the driver `backing_format`
/// picked), must be `disk.raw` byte for byte. `driver` is the driver the file needs.
fn assert_guest_sees_raw(disk: &Path, driver: &str, raw: &Path, dir: &Path) {
    assert_eq!(backing_format(disk), driver, "{}", disk.display());
    let w = prepare(&VmSpec::new(disk), dir).unwrap();
    let chain = run(Command::new("qemu-img")
        .args(["info", "--backing-chain", "--output", "json", "-f", "qcow2"])
        .arg(w.overlay()));
    let chain: serde_json::Value = serde_json::from_str(&chain).unwrap();
    assert_eq!(chain[0]["backing-filename-format"], driver, "{chain:#}");
    assert_eq!(chain[1]["format"], driver, "{chain:#}");
    assert_eq!(
        chain[1]["filename"],
        fs::canonicalize(disk).unwrap().to_str().unwrap(),
        "{chain:#}"
    );
    // Exit 0 only when the guest-visible contents are identical (with different sizes,
    // the larger one's extra bytes must be zero).
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(w.overlay())
        .arg(raw)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: a guest would not see disk.raw:\n{}",
        disk.display(),
        text(&o)
    );
}

#[test]
fn every_format_passes_qemu_img_and_holds_the_raw_disk() {
    let out = shared_build();
    let raw = out.join("disk.raw");
    let raw_len = fs::metadata(&raw).unwrap().len();
    let d = tempfile::tempdir_in(work_dir()).unwrap();

    let vhd_vsize = check_vhd(&out.join("disk.vhd"), raw_len);
    check_vmdk(&out.join("disk.vmdk"), raw_len);
    check_qcow2(&out.join("disk.qcow2"));
    let gce_raw = check_gce(&out.join("disk.tar.gz"), &raw, d.path());
    check_manifest(&out, vhd_vsize);
    // containerd-host has every cloud's drivers: no driver warning.
    let log = fs::read_to_string(out.join(".build.log")).unwrap();
    assert!(
        !log.contains(" is for "),
        "unexpected driver warning:\n{log}"
    );

    // Every format, as a VM would be started on it. A format added to slipway without
    // a line here fails the test.
    for f in slipway::formats::ALL {
        let (disk, driver) = match f.name() {
            "vhd" => (out.join(f.file_name()), "vpc"),
            "vmdk" => (out.join(f.file_name()), "vmdk"),
            "qcow2" => (out.join(f.file_name()), "qcow2"),
            // GCE boots the raw disk it unpacks from the tarball.
            "gce" => (gce_raw.clone(), "raw"),
            other => panic!("format {other}: no guest-view check in this test"),
        };
        let t = Instant::now();
        assert_guest_sees_raw(&disk, driver, &raw, &d.path().join(f.name()));
        eprintln!(
            "{}: guest view = disk.raw ({driver}), {:.1} s",
            f.name(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// Every file of `dir` (names and bytes), sorted; not the fixture's own dot files.
fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn built_again_by_nobody_offline_under_a_moved_clock_is_identical() {
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
    // The second build runs as nobody (uid 65534), not root: host disks need no root
    // (the root file system is written natively, issue 20), and an ordinary user's build
    // must give the same bytes. Nobody owns the second cache (its package blobs copied
    // from the shared cache's) and the output's parent.
    let owned_by_nobody = |p: &Path| {
        run(Command::new("find").arg(p).args([
            "-type",
            "d",
            "-exec",
            "chown",
            "65534:65534",
            "{}",
            "+",
        ]));
    };
    owned_by_nobody(&cache_b);
    // The blobs are private to their owner (0600): nobody gets copies of its own.
    let linked = cache_b.join("blobs");
    let copied = cache_b.join("blobs.copy");
    run(Command::new("cp").arg("-r").arg(&linked).arg(&copied));
    fs::remove_dir_all(&linked).unwrap();
    fs::rename(&copied, &linked).unwrap();
    run(Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&linked));
    owned_by_nobody(d.path());
    let mut up = d.path().to_path_buf();
    while up.pop() && up != Path::new("/") {
        run(Command::new("chmod").arg("o+x").arg(&up));
    }
    let b = d.path().join("elsewhere/b");
    let t = Instant::now();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("faketime")
        .arg("+3 days")
        .arg(bin())
        .args(["--quiet", "--offline"])
        .args(build_args(&b))
        .env("SLIPWAY_CACHE", &cache_b)
        .env("HOME", d.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    ok(o);
    eprintln!(
        "second build (as nobody, other cache, clock +3 days, offline): {:.1} s",
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
    for (_, name) in files_by_kind() {
        assert!(fa.iter().any(|(n, _)| n == name), "{name} was not built");
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
                // The overlay is reached through a symlink to the bundled recipe's
                // directory, outside this recipe's own tree (docs/recipes.md#host-paths).
                "--allow-host-paths",
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
