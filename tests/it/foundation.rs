//! Issue "foundation": recipes, locks, verified fetch and the CLI, run as the real binary
//! against Debian's archive through slipway's own apt state.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use std::fs;

const SMALL: &str = "[packages]\ninclude = [\"busybox-static\", \"netbase\"]\n";

fn small_recipe(dir: &std::path::Path, release: &str) -> std::path::PathBuf {
    recipe(
        dir,
        "small.toml",
        &format!("[debian]\nrelease = \"{release}\"\n{SMALL}"),
    )
}

#[test]
fn locking_twice_gives_identical_files_on_both_releases() {
    let cache = shared_cache();
    for release in ["trixie", "bookworm"] {
        let d = tempfile::tempdir().unwrap();
        let r = small_recipe(d.path(), release);
        let r = r.to_str().unwrap();
        ok(slipway(&cache, &["lock", r]));
        let first = fs::read(format!("{r}.lock")).unwrap();
        ok(slipway(&cache, &["lock", "--update", r]));
        let second = fs::read(format!("{r}.lock")).unwrap();
        assert_eq!(first, second, "{release}: relocking changed the lock");
        let lock = String::from_utf8(first).unwrap();
        assert!(lock.contains("name = \"busybox-static\""), "{lock}");
        assert!(lock.contains(&format!("suite = \"{release}")), "{lock}");
        let t = ok(slipway(&cache, &["lock", r]));
        assert!(t.contains("up to date"), "{t}");
    }
}

#[test]
fn locked_detects_a_changed_recipe_and_a_missing_lock() {
    let cache = shared_cache();
    let d = tempfile::tempdir().unwrap();
    let r = small_recipe(d.path(), "trixie");
    let rs = r.to_str().unwrap();
    let t = fails(slipway(&cache, &["fetch", "--locked", rs]), 3);
    assert!(t.contains("does not exist"), "{t}");
    ok(slipway(&cache, &["lock", rs]));
    ok(slipway(&cache, &["fetch", "--locked", rs]));
    fs::write(
        &r,
        "schema-version = 1\n[packages]\ninclude = [\"busybox-static\", \"netbase\", \"tzdata\"]\n",
    )
    .unwrap();
    let before = fs::read(format!("{rs}.lock")).unwrap();
    let t = fails(slipway(&cache, &["fetch", "--locked", rs]), 3);
    assert!(t.contains("out of date") && t.contains("recipe"), "{t}");
    assert_eq!(
        fs::read(format!("{rs}.lock")).unwrap(),
        before,
        "--locked must not touch the lock"
    );
    let t = fails(
        slipway(
            &cache,
            &[
                "build",
                "--locked",
                rs,
                "-o",
                d.path().join("out").to_str().unwrap(),
            ],
        ),
        3,
    );
    assert!(t.contains("out of date"), "{t}");
}

#[test]
fn a_vanished_version_is_named() {
    let cache = shared_cache();
    let d = tempfile::tempdir().unwrap();
    let r = small_recipe(d.path(), "trixie");
    let rs = r.to_str().unwrap();
    ok(slipway(&cache, &["lock", rs]));
    let lock = fs::read_to_string(format!("{rs}.lock")).unwrap();
    // Pretend Debian dropped the locked netbase: a version and digest it never served.
    let start = lock.find("name = \"netbase\"").unwrap();
    let vline = start + lock[start..].find("version = ").unwrap();
    let vend = vline + lock[vline..].find('\n').unwrap();
    let sline = start + lock[start..].find("sha256 = ").unwrap();
    let send = sline + lock[sline..].find('\n').unwrap();
    let mut edited = lock[..vline].to_string();
    edited.push_str("version = \"0.1~vanished\"");
    edited.push_str(&lock[vend..sline]);
    edited.push_str(&format!("sha256 = \"{}\"", "e".repeat(64)));
    edited.push_str(&lock[send..]);
    fs::write(format!("{rs}.lock"), edited).unwrap();
    let t = fails(slipway(&cache, &["fetch", "--locked", rs]), 3);
    assert!(t.contains("netbase 0.1~vanished"), "{t}");
    assert!(t.contains("slipway lock --update"), "{t}");
    assert!(
        !t.contains("busybox-static"),
        "only the vanished package is named: {t}"
    );
    ok(slipway(&cache, &["lock", "--update", rs]));
    ok(slipway(&cache, &["fetch", "--locked", rs]));
}

#[test]
fn bad_recipes_get_specific_errors_and_leave_no_lock() {
    let cache = shared_cache();
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "[packages]\ninclude = [\"busybox-static\"]\nfrobnicate = true\n",
            &["packages.frobnicate", "unknown field", "line 4"],
        ),
        (
            "[packages]\ninclude = \"busybox-static\"\n",
            &["packages.include", "line 3"],
        ),
        (
            "[packages]\ninclude = [\"busybox-statik\"]\n",
            &["busybox-statik", "busybox-static"],
        ),
        (
            "[packages]\ninclude = [\"systemd-sysv\", \"sysvinit-core\"]\n",
            &["systemd-sysv", "sysvinit-core"],
        ),
        (
            "[packages]\ninclude = [\"busybox-static=0.0.1-nope\"]\n",
            &["busybox-static", "0.0.1-nope"],
        ),
    ];
    for (i, (body, wants)) in cases.iter().enumerate() {
        let r = recipe(d.path(), &format!("bad{i}.toml"), body);
        let t = fails(slipway(&cache, &["lock", r.to_str().unwrap()]), 2);
        for w in *wants {
            assert!(t.contains(w), "case {i}: expected {w:?} in:\n{t}");
        }
        assert!(
            t.contains(&format!("bad{i}.toml")),
            "case {i}: the file is named:\n{t}"
        );
        assert!(
            !d.path().join(format!("bad{i}.toml.lock")).exists(),
            "case {i}: no lock written"
        );
    }
}

/// A cache of the test's own, for a test that damages entries, so that the damage never
/// reaches a test reading the shared cache at the same time: the shared cache's package
/// lists linked in when it has them (apt replaces a list by renaming, never in place),
/// and no .debs.
fn private_cache(dir: &std::path::Path) -> std::path::PathBuf {
    let cache = dir.join("cache");
    fs::create_dir_all(&cache).unwrap();
    let lists = shared_cache().join("apt");
    if lists.is_dir() {
        run(std::process::Command::new("cp")
            .arg("-al")
            .arg(&lists)
            .arg(&cache));
    }
    cache
}

#[test]
fn corrupted_and_truncated_cache_entries_are_fetched_again() {
    let d = tempfile::tempdir().unwrap();
    let cache = private_cache(d.path());
    let r = small_recipe(d.path(), "trixie");
    let rs = r.to_str().unwrap();
    ok(slipway(&cache, &["fetch", rs]));
    let lock = fs::read_to_string(format!("{rs}.lock")).unwrap();
    let sha_of = |name: &str| {
        let s = lock.find(&format!("name = \"{name}\"")).unwrap();
        let l = s + lock[s..].find("sha256 = \"").unwrap() + 10;
        lock[l..l + 64].to_string()
    };
    let blob = |sha: &str| cache.join("blobs/sha256").join(&sha[..2]).join(sha);
    // One flipped byte in busybox, netbase cut short.
    let b = blob(&sha_of("busybox-static"));
    let mut bytes = fs::read(&b).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&b, &bytes).unwrap();
    let n = blob(&sha_of("netbase"));
    let len = fs::metadata(&n).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&n)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let t = ok(slipway(&cache, &["fetch", "--json", rs]));
    let v: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        slipway(&cache, &["fetch", "--json", rs]).stdout.as_slice(),
    ))
    .unwrap();
    assert_eq!(v["summary"]["cached"], 2, "{v}");
    assert!(t.contains("\"repaired\": 2"), "{t}");
}

#[test]
fn offline_says_exactly_what_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty-cache");
    let r = small_recipe(d.path(), "trixie");
    let t = fails(
        slipway(&empty, &["--offline", "lock", r.to_str().unwrap()]),
        4,
    );
    assert!(
        t.contains("--offline") && t.contains("no package lists"),
        "{t}"
    );
}

#[test]
fn artifacts_are_verified_cached_and_taken_from_a_directory() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let body = b"#!/bin/sh\necho pinned artifact\n".to_vec();
    let sha = slipway::io::hash::sha256_hex(&body);
    let base = http_server(body.clone(), 8);
    let art = |url: &str, sha: &str| {
        format!("{SMALL}[[artifact]]\nurl = \"{url}\"\nsha256 = \"{sha}\"\ndest = \"/usr/local/bin/hello\"\nmode = \"0755\"\n")
    };
    // Wrong sha256: fails before any package work, naming URL and expected digest.
    let wrong = "0".repeat(64);
    let r = recipe(
        d.path(),
        "wrong.toml",
        &art(&format!("{base}/hello"), &wrong),
    );
    let t = fails(slipway(&cache, &["fetch", r.to_str().unwrap()]), 4);
    assert!(
        t.contains(&format!("{base}/hello")) && t.contains(&wrong) && t.contains(&sha),
        "{t}"
    );
    assert!(t.contains("--artifact-dir"), "{t}");
    assert!(
        !t.contains("updating package lists"),
        "no package work before artifacts: {t}"
    );
    // Unreachable URL.
    let r = recipe(
        d.path(),
        "unreachable.toml",
        &art("http://127.0.0.1:9/hello", &sha),
    );
    let t = fails(slipway(&cache, &["fetch", r.to_str().unwrap()]), 4);
    assert!(
        t.contains("http://127.0.0.1:9/hello") && t.contains("cannot fetch"),
        "{t}"
    );
    // The same unreachable URL works air-gapped from a directory holding the file.
    let dir = d.path().join("artifacts");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("whatever-name"), &body).unwrap();
    let t = ok(slipway(
        &cache,
        &[
            "lock",
            "--artifact-dir",
            dir.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
    ));
    assert!(t.contains("wrote"), "{t}");
    let lock = fs::read_to_string(d.path().join("unreachable.toml.lock")).unwrap();
    assert!(
        lock.contains(&sha) && lock.contains("/usr/local/bin/hello"),
        "{lock}"
    );
    // And over HTTP into a fresh cache.
    let r = recipe(d.path(), "good.toml", &art(&format!("{base}/hello"), &sha));
    ok(slipway(
        &d.path().join("cache2"),
        &["fetch", r.to_str().unwrap()],
    ));
    assert_eq!(
        fs::read(
            d.path()
                .join("cache2/blobs/sha256")
                .join(&sha[..2])
                .join(&sha)
        )
        .unwrap(),
        body
    );
}

#[test]
fn two_concurrent_fetches_share_one_cache() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let r = recipe(
        d.path(),
        "c.toml",
        "[packages]\ninclude = [\"busybox-static\", \"tzdata\", \"netbase\", \"media-types\"]\n",
    );
    let rs = r.to_str().unwrap().to_string();
    ok(slipway(&cache, &["lock", &rs]));
    let spawn = || {
        std::process::Command::new(bin())
            .args(["fetch", &rs])
            .env("SLIPWAY_CACHE", &cache)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    ok(a.wait_with_output().unwrap());
    ok(b.wait_with_output().unwrap());
    let t = ok(slipway(&cache, &["--offline", "fetch", "--locked", &rs]));
    assert!(
        t.contains(" cached, 0 downloaded, 0 vendored, 0 repaired"),
        "{t}"
    );
    let leftovers: Vec<_> = fs::read_dir(cache.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn vendor_then_build_offline_from_an_empty_cache() {
    let cache = shared_cache();
    let d = tempfile::tempdir().unwrap();
    let r = small_recipe(d.path(), "bookworm");
    let rs = r.to_str().unwrap();
    let vdir = d.path().join("vendor");
    ok(slipway(&cache, &["vendor", rs, vdir.to_str().unwrap()]));
    let fresh = d.path().join("fresh-cache");
    let t = ok(slipway(
        &fresh,
        &[
            "--offline",
            "fetch",
            "--locked",
            "--vendor",
            vdir.to_str().unwrap(),
            rs,
        ],
    ));
    assert!(t.contains("2 vendored"), "{t}");
}

#[test]
fn a_child_recipe_inherits_its_parents_lock() {
    let cache = shared_cache();
    let d = tempfile::tempdir().unwrap();
    recipe(
        d.path(),
        "parent.toml",
        "[packages]\ninclude = [\"libc6\"]\n",
    );
    let c = recipe(
        d.path(),
        "child.toml",
        "extends = \"parent.toml\"\n[packages]\ninclude = [\"zlib1g\"]\n",
    );
    ok(slipway(&cache, &["lock", c.to_str().unwrap()]));
    let parent: slipway::lock::Lock =
        toml::from_str(&fs::read_to_string(d.path().join("parent.toml.lock")).unwrap()).unwrap();
    let child: slipway::lock::Lock =
        toml::from_str(&fs::read_to_string(d.path().join("child.toml.lock")).unwrap()).unwrap();
    for p in &parent.packages {
        assert!(
            child.packages.contains(p),
            "child lock lacks parent's {} {}",
            p.name,
            p.version
        );
    }
    assert!(child.package("zlib1g").is_some());
    assert_eq!(
        child.parent.as_ref().unwrap().input_digest,
        parent.input_digest
    );
}

#[test]
fn help_documents_exit_codes_and_doctor_names_packages() {
    let t = ok(std::process::Command::new(bin())
        .arg("--help")
        .output()
        .unwrap());
    assert!(
        t.contains("Exit codes") && t.contains("3  the lock is out of date"),
        "{t}"
    );
    let t = text(
        &std::process::Command::new(bin())
            .arg("doctor")
            .output()
            .unwrap(),
    );
    assert!(t.contains("apt-get") && t.contains("squashfs-tools"), "{t}");
    // erofs roots were retired (decision 0034): doctor no longer asks for erofs-utils.
    assert!(!t.contains("erofs"), "{t}");
}

/// An error given an exit code keeps its causes: the message prints each cause once, in
/// order, and the process exits with the code (issue 19: no cause flattened into a string).
#[test]
fn a_coded_error_prints_its_whole_chain_once() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let layout = d.path().to_str().unwrap();
    let out = std::process::Command::new(bin())
        .args(["push", layout, "127.0.0.1:9/x:y"])
        .output()
        .unwrap();
    let t = fails(out, 2);
    let index = format!("reading {layout}/index.json: No such file or directory");
    assert_eq!(t.matches(&index).count(), 1, "{t}");
    assert_eq!(t.matches("error:").count(), 1, "{t}");

    let out = std::process::Command::new(bin())
        .args(["doctor", "--recipes", "--today", "2026-02-30"])
        .output()
        .unwrap();
    let t = fails(out, 2);
    assert_eq!(
        t.trim(),
        r#"error: --today: "2026-02-30" is not a date (use YYYY-MM-DD)"#
    );
}

/// scripts/setup-host.sh pipes its `apt-get -s` plan through scripts/apt-plan-check.sh:
/// a plan that removes a package (as installing bookworm's QEMU once removed the
/// machine's backports qemu-utils) is refused, naming it; a plan without removals passes.
#[test]
fn setup_refuses_an_install_plan_that_removes_a_package() {
    use std::io::Write;
    let check = |plan: &str| {
        let mut child = std::process::Command::new("scripts/apt-plan-check.sh")
            .arg("qemu-system-x86/bookworm")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("scripts/apt-plan-check.sh runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(plan.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let removing = "Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian:12.13/stable [amd64])\n\
                    Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
                    Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian:12.13/stable [amd64])\n";
    let (code, err) = check(removing);
    assert_eq!(code, Some(1), "a removing plan must be refused: {err}");
    assert!(
        err.contains("would remove: qemu-utils") && err.contains("qemu-system-x86/bookworm"),
        "the refusal names the package removed and what was asked: {err}"
    );
    let plain = "Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian:12.13/stable [amd64])\n";
    let (code, err) = check(plain);
    assert_eq!(code, Some(0), "a plan without removals passes: {err}");
}
