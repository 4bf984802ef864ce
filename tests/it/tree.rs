//! Issue "image tree": assembling real package sets into trees without running
//! maintainer scripts, reproducible tar output, and hostile packages refused.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use std::fs;
use std::path::Path;

fn build(cache: &Path, recipe: &Path, out: &Path, formats: &str) -> String {
    ok(slipway(
        cache,
        &[
            "build",
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            formats,
        ],
    ))
}

fn sha256(p: &Path) -> String {
    slipway::io::hash::sha256_file(p).unwrap().0
}

#[test]
fn static_tree_has_users_ca_bundle_zoneinfo_and_no_shell_or_libc() {
    let out = fixtures::base_image("base/static");
    let root = out.join("rootfs");
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    assert!(
        passwd.lines().any(|l| l.starts_with("root:x:0:0:")),
        "{passwd}"
    );
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("nonroot:x:65532:")),
        "{group}"
    );
    let bundle = fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    let mut parsed = 0;
    for block in bundle
        .split("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
    {
        let pem = format!("{block}-----END CERTIFICATE-----\n");
        slipway::effects::certs::subject_hash(pem.as_bytes()).unwrap();
        parsed += 1;
    }
    assert!(parsed >= 100, "only {parsed} certificates parse");
    assert!(root.join("usr/share/zoneinfo/UTC").exists());
    let os = fs::read_to_string(root.join("etc/os-release")).unwrap();
    assert!(
        os.contains("ID=debian") && os.contains("VERSION_ID=") && os.contains("IMAGE_ID=static"),
        "{os}"
    );
    let tmp = fs::symlink_metadata(root.join("tmp")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&tmp.permissions()) & 0o7777,
        0o1777
    );
    assert!(root.join("home/nonroot").is_dir());
    for e in walkdir::WalkDir::new(&root) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !["sh", "bash", "dash", "busybox", "mawk", "awk"].contains(&name.as_str()),
            "shell found: {}",
            e.path().display()
        );
        assert!(
            !name.starts_with("libc.so") && !name.starts_with("ld-linux"),
            "libc found: {}",
            e.path().display()
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("report.json")).unwrap()).unwrap();
    let cuts = report["cut_edges"].as_array().unwrap();
    assert!(
        cuts.iter()
            .any(|c| c.as_str().unwrap().contains("-> openssl")),
        "cut edges are reported: {report}"
    );
    assert!(report["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s.as_str().unwrap().starts_with("ca-certificates: skipped")));
}

#[test]
fn containerd_host_set_gets_alternatives_accounts_and_units() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(
        d.path(),
        "host.toml",
        "[image]\nkind = \"host\"\n[packages]\ninclude = [\"systemd\", \"systemd-sysv\", \"udev\", \"containerd\", \"runc\", \"iproute2\", \"kmod\", \"iptables\"]\n",
    );
    let out = d.path().join("out");
    build(&shared_cache(), &r, &out, "dir");
    let root = out.join("rootfs");
    // iptables: Debian's postinst registers nft (priority 20) and legacy (10).
    let link = fs::read_link(root.join("usr/sbin/iptables")).unwrap();
    assert_eq!(link, Path::new("/etc/alternatives/iptables"));
    let alt = fs::read_link(root.join("etc/alternatives/iptables")).unwrap();
    assert_eq!(
        alt,
        Path::new("/usr/sbin/iptables-nft"),
        "highest priority wins"
    );
    assert!(root.join("usr/sbin/iptables-nft").exists());
    // Every account the packages declare through sysusers.d exists.
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    let mut declared = 0;
    for e in fs::read_dir(root.join("usr/lib/sysusers.d")).unwrap() {
        let text = fs::read_to_string(e.unwrap().path()).unwrap();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.first().map(|s| s.trim_end_matches('!')) {
                Some("u") => {
                    assert!(
                        passwd.lines().any(|p| p.starts_with(&format!("{}:", w[1]))),
                        "user {} missing:\n{passwd}",
                        w[1]
                    );
                    declared += 1;
                }
                Some("g") => {
                    assert!(
                        group.lines().any(|p| p.starts_with(&format!("{}:", w[1]))),
                        "group {} missing:\n{group}",
                        w[1]
                    );
                    declared += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        declared >= 3,
        "expected systemd's sysusers accounts, saw {declared}"
    );
    assert!(passwd.contains("systemd-network:"), "{passwd}");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/containerd.service");
    assert_eq!(
        fs::read_link(&wants).unwrap(),
        Path::new("/usr/lib/systemd/system/containerd.service")
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/machine-id")).unwrap(),
        "uninitialized\n"
    );
    assert!(fs::read_to_string(root.join("var/lib/dpkg/status"))
        .unwrap()
        .contains("Package: containerd\n"));
    assert!(
        fs::symlink_metadata(root.join("bin"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "merged /usr"
    );
}

#[test]
fn tars_are_identical_for_root_and_an_ordinary_user_and_across_caches() {
    let d = tempfile::tempdir().unwrap();
    // Each build gets its own cache and its own copy of the recipe (and so its own lock).
    let mk = |name: &str| {
        let dir = d.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        let r = recipe(&dir, "img.toml", "[packages]\ninclude = [\"busybox-static\", \"ca-certificates\", \"tzdata\", \"netbase\"]\nexclude = [\"openssl\", \"debconf\"]\n[[user]]\nname = \"nonroot\"\nuid = 65532\n[[group]]\nname = \"nonroot\"\ngid = 65532\n");
        (dir, r)
    };
    let (a_dir, a) = mk("a");
    build(&a_dir.join("cache"), &a, &a_dir.join("out"), "tar");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (b_dir, b) = mk("b");
    build(&b_dir.join("cache"), &b, &b_dir.join("out"), "tar");
    let ta = sha256(&a_dir.join("out/rootfs.tar"));
    assert_eq!(
        ta,
        sha256(&b_dir.join("out/rootfs.tar")),
        "two caches, two times: different tars"
    );
    // As nobody (65534), with a cache it owns.
    let (c_dir, c) = mk("c");
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534", c_dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let mut perm_fix = d.path().to_path_buf();
    loop {
        let _ = std::process::Command::new("chmod")
            .args(["o+x", perm_fix.to_str().unwrap()])
            .status();
        if !perm_fix.pop() || perm_fix == Path::new("/") {
            break;
        }
    }
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args([
            "build",
            c.to_str().unwrap(),
            "-o",
            c_dir.join("out").to_str().unwrap(),
            "--format",
            "tar",
        ])
        .env("SLIPWAY_CACHE", c_dir.join("cache"))
        .env("HOME", &c_dir)
        .output()
        .unwrap();
    let t = ok(o);
    assert_eq!(
        ta,
        sha256(&c_dir.join("out/rootfs.tar")),
        "root and nobody built different tars:\n{t}"
    );
    // Ownership in the tar comes from the tree, not from who built it.
    let mut ar = tar::Archive::new(fs::File::open(c_dir.join("out/rootfs.tar")).unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_ne!(
            e.header().uid().unwrap(),
            65534,
            "{:?} owned by the builder",
            e.path().unwrap()
        );
    }
}

/// A .deb with one data member built by hand, for hostile-input tests.
fn hostile_deb(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut control = tar::Builder::new(Vec::new());
    let body = b"Package: evil\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    control.append_data(&mut h, "./control", &body[..]).unwrap();
    let control = control.into_inner().unwrap();
    let mut data: Vec<u8> = Vec::new();
    for (path, kind, content, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        // Raw names: the tar crate refuses `..` and absolute paths on its own API.
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        data.extend_from_slice(h.as_bytes());
        data.extend_from_slice(content);
        data.resize(data.len().div_ceil(512) * 512, 0);
    }
    data.extend_from_slice(&[0u8; 1024]);
    let mut out = b"!<arch>\n".to_vec();
    for (name, bytes) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &control[..]),
        ("data.tar", &data[..]),
    ] {
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                100644,
                bytes.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        if bytes.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

#[test]
fn hostile_packages_are_refused_and_the_previous_output_survives() {
    use tar::EntryType::{Regular, Symlink};
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute",
            hostile_deb(&[("/etc/passwd", Regular, b"x", None)]),
        ),
        (
            "dotdot",
            hostile_deb(&[("./usr/../../etc/passwd", Regular, b"x", None)]),
        ),
        (
            "through-symlink",
            hostile_deb(&[
                ("./x", Symlink, b"", Some("/tmp")),
                ("./x/evil", Regular, b"x", None),
            ]),
        ),
        ("truncated", {
            let mut v = hostile_deb(&[("./usr/share/big", Regular, &[7u8; 4000], None)]);
            let n = v.len();
            v.truncate(n - 3000);
            v
        }),
    ];
    for (name, deb) in cases {
        let d = tempfile::tempdir().unwrap();
        let cache = slipway::fetch::cache::Cache::open(Some(d.path().join("cache"))).unwrap();
        let sha = slipway::io::hash::sha256_hex(&deb);
        let f = d.path().join("evil.deb");
        fs::write(&f, &deb).unwrap();
        cache.insert(&f, &sha).unwrap();
        let r = recipe(d.path(), "evil.toml", "[packages]\ninclude = [\"evil\"]\n");
        let rec = slipway::recipe::Recipe::load(&r).unwrap();
        let lock = slipway::lock::Lock {
            lock_version: slipway::lock::LOCK_VERSION,
            input_digest: slipway::lock::input_digest(&rec),
            release: "trixie".into(),
            architecture: "amd64".into(),
            parent: None,
            packages: vec![slipway::lock::LockedPackage {
                name: "evil".into(),
                version: "1.0".into(),
                architecture: "all".into(),
                size: deb.len() as u64,
                sha256: sha.clone(),
                source: "evil".into(),
                source_version: "1.0".into(),
                suite: "trixie".into(),
            }],
            artifacts: vec![],
            cuts: vec![],
        };
        lock.write(&rec.lock_path()).unwrap();
        let out = d.path().join("out");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("rootfs.tar"), b"previous good output").unwrap();
        let t = fails(
            slipway(
                &d.path().join("cache"),
                &[
                    "--offline",
                    "build",
                    "--locked",
                    r.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                    "--format",
                    "tar,dir",
                ],
            ),
            1,
        );
        assert!(t.contains("evil"), "{name}: the package is named:\n{t}");
        assert_eq!(
            fs::read(out.join("rootfs.tar")).unwrap(),
            b"previous good output",
            "{name}"
        );
        assert!(!out.join("rootfs").exists(), "{name}: no half-written tree");
        let stray: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(stray.len(), 1, "{name}: stray files {stray:?}");
    }
}
