//! Oracle test: slipway's resolver must pick exactly what apt picks.
//!
//! For each release and package set, builds an isolated apt state (empty dpkg status,
//! no Recommends, amd64 only) under Cargo's target tmp dir, runs
//! `apt-get install --simulate`, parses its `Inst NAME (VERSION ...` lines and compares
//! them with `slipway::resolve::resolve` over the very index files apt downloaded.
//! The only allowed difference is slipway's `usr-is-merged` substitution, which is
//! handed to apt on its command line when slipway notes it.
//!
//! Needs network access to the Debian archive for the first `apt-get update` per
//! release (later runs reuse the lists). The mirror URIs come from the host's
//! `/etc/apt/sources.list.d/debian.sources`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use slipway::resolve::{self, IndexFile, Request, Universe};

const SETS: &[&str] = &[
    "busybox-static",
    "systemd systemd-sysv udev",
    "containerd runc",
    "python3-minimal python3-flask",
    "nginx-light",
    "systemd systemd-sysv udev containerd runc iproute2 kmod iptables",
];

/// Extra sets per release that exercise apt's choice among several providers of a
/// virtual package (Priority and package-order tie-breaks) and, on bookworm, the
/// `usrmerge | usr-is-merged` substitution (init-system-helpers).
fn extra_sets(release: &str) -> &'static [&'static str] {
    match release {
        "trixie" => &[
            "tcl-itcl4",
            "tk-itk4",
            "golang-github-containers-common",
            "php8.4-amqp",
            "vim-ocaml-merlin",
        ],
        "bookworm" => &[
            "init-system-helpers",
            "cream",
            "golang-github-containers-common",
            "php8.2-amqp",
            "notmuch-vim",
        ],
        _ => &[],
    }
}

/// `(main mirror URI, security mirror URI)` from the host's deb822 sources.
fn host_mirrors() -> (String, String) {
    let path = "/etc/apt/sources.list.d/debian.sources";
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}; the oracle test needs the host's Debian sources"));
    let (mut main, mut security) = (None, None);
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let (Some(suites), Some(uris)) = (field("Suites"), field("URIs")) else {
            continue;
        };
        let uri = uris.split_whitespace().next().unwrap().to_string();
        for s in suites.split_whitespace() {
            match s {
                "bookworm" => main = Some(uri.clone()),
                "bookworm-security" => security = Some(uri.clone()),
                _ => {}
            }
        }
    }
    (
        main.unwrap_or_else(|| panic!("{path}: no stanza with Suites: bookworm")),
        security.unwrap_or_else(|| panic!("{path}: no stanza with Suites: bookworm-security")),
    )
}

/// An isolated apt state for one release.
struct AptState {
    conf: PathBuf,
}

impl AptState {
    fn new(release: &str) -> AptState {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("apt-oracle-{release}"));
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("var/lib/dpkg/status"), "").unwrap();
        let (mirror, security) = host_mirrors();
        let key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
        std::fs::write(
            d.join("etc/apt/sources.list"),
            format!(
                "deb {key} {mirror} {release} main\ndeb {key} {mirror} {release}-updates main\ndeb {key} {security} {release}-security main\n"
            ),
        )
        .unwrap();
        let dir = d.display();
        let conf = d.join("apt.conf");
        std::fs::write(
            &conf,
            format!(
                "Dir \"{dir}/\";\nDir::State::status \"{dir}/var/lib/dpkg/status\";\nAPT::Architecture \"amd64\";\nAPT::Architectures {{ \"amd64\"; }};\nAPT::Install-Recommends \"false\";\nAcquire::Languages \"none\";\nAcquire::GzipIndexes \"false\";\nAPT::Sandbox::User \"root\";\n"
            ),
        )
        .unwrap();
        let state = AptState { conf };
        // Reuse lists from an earlier run: both sides read the same files, so their age
        // does not matter for the comparison.
        if state.index_files().len() < 3 {
            state.apt(&["update"]);
        }
        assert_eq!(
            state.index_files().len(),
            3,
            "apt-get update did not produce 3 Packages indices"
        );
        state
    }

    fn apt(&self, args: &[&str]) -> String {
        let out = Command::new("apt-get")
            .args(args)
            .env("APT_CONFIG", &self.conf)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .expect("running apt-get (Debian: apt)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "APT_CONFIG={} apt-get {} failed ({}):\n{stdout}\n{}",
            self.conf.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn index_files(&self) -> Vec<IndexFile> {
        let out = self.apt(&[
            "indextargets",
            "--format",
            "$(FILENAME)|$(SUITE)|$(COMPONENT)",
            "Created-By: Packages",
        ]);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| {
                let mut it = l.split('|');
                let (path, suite, component) = (it.next()?, it.next()?, it.next()?);
                Path::new(path).exists().then(|| IndexFile {
                    path: path.into(),
                    suite: suite.into(),
                    component: component.into(),
                })
            })
            .collect()
    }

    /// name -> version of apt's `Inst` lines.
    fn simulate(&self, pkgs: &[&str]) -> BTreeMap<String, String> {
        let mut args = vec!["install", "--simulate", "-q"];
        args.extend_from_slice(pkgs);
        parse_inst(&self.apt(&args))
    }
}

/// Parses `Inst NAME (VERSION ...` lines of `apt-get --simulate`.
fn parse_inst(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(" (")?;
            let version = rest.split_whitespace().next()?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// A readable diff, or None when equal.
fn diff(apt: &BTreeMap<String, String>, ours: &BTreeMap<String, String>) -> Option<String> {
    let mut lines = Vec::new();
    for (n, v) in apt {
        match ours.get(n) {
            None => lines.push(format!("  only in apt:      {n} {v}")),
            Some(o) if o != v => lines.push(format!("  version differs:  {n} apt {v} slipway {o}")),
            Some(_) => {}
        }
    }
    for (n, v) in ours {
        if !apt.contains_key(n) {
            lines.push(format!("  only in slipway:  {n} {v}"));
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn check_release(release: &str) {
    let apt = AptState::new(release);
    let files = apt.index_files();
    let t = Instant::now();
    let u = Universe::load(&files, "amd64").unwrap();
    eprintln!(
        "{release}: loaded {} package versions in {:?}",
        u.len(),
        t.elapsed()
    );
    let mut failures = Vec::new();
    for set in SETS.iter().chain(extra_sets(release)) {
        let names: Vec<&str> = set.split_whitespace().collect();
        for merged_usr in [true, false] {
            let req = Request {
                install: names.iter().map(|s| s.to_string()).collect(),
                merged_usr,
                ..Request::default()
            };
            let t = Instant::now();
            let res = match resolve::resolve(&u, &req) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!(
                        "{release} [{set}] merged_usr={merged_usr}: slipway failed: {e:#}"
                    ));
                    continue;
                }
            };
            let took = t.elapsed();
            let ours: BTreeMap<String, String> = res
                .packages
                .iter()
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect();
            let mut apt_args = names.clone();
            let substituted = res.notes.iter().any(|n| n.contains("usr-is-merged"));
            if substituted {
                apt_args.push("usr-is-merged");
            }
            let theirs = apt.simulate(&apt_args);
            eprintln!(
                "{release} [{set}] merged_usr={merged_usr}: apt {} slipway {} packages (resolved in {took:?}){}",
                theirs.len(),
                ours.len(),
                if substituted { ", usr-is-merged substituted" } else { "" }
            );
            if let Some(d) = diff(&theirs, &ours) {
                failures.push(format!("{release} [{set}] merged_usr={merged_usr}:\n{d}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "slipway and apt disagree:\n{}",
        failures.join("\n")
    );
}

#[test]
fn oracle_trixie() {
    check_release("trixie");
}

#[test]
fn oracle_bookworm() {
    check_release("bookworm");
}

#[test]
fn diff_reports_every_kind_of_difference() {
    let apt =
        parse_inst("Inst a (1 Debian:13/stable [amd64])\nConf a (1)\nInst b (2 x [all]) []\n");
    assert_eq!(apt.get("b").map(String::as_str), Some("2"));
    let ours: BTreeMap<String, String> =
        [("b".into(), "3".into()), ("c".into(), "1".into())].into();
    let d = diff(&apt, &ours).unwrap();
    assert!(d.contains("only in apt:      a 1"));
    assert!(d.contains("version differs:  b apt 2 slipway 3"));
    assert!(d.contains("only in slipway:  c 1"));
    assert!(diff(&apt, &apt).is_none());
}
