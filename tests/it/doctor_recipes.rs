//! `slipway doctor --recipes` (src/support.rs, decision 0025), run as a user runs it, on
//! a fixed day (`--today`) so that the result does not depend on the calendar, except in
//! the last test, which is the CI check on today's date.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// The day the table in src/support.toml was last checked against its sources.
const DAY: &str = "2026-12-06";

fn doctor(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("doctor")
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap()
}

/// A host recipe on trixie in `dir`, with `body` appended.
fn test_recipe(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "schema-version = 1\n[image]\nname = \"{name}\"\nkind = \"host\"\n[debian]\nrelease = \"trixie\"\n{body}"
        ),
    )
    .unwrap();
    p.display().to_string()
}

fn row<'a>(out: &'a str, recipe: &str, pin: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(recipe) && l.contains(pin))
        .unwrap_or_else(|| panic!("no row for {recipe} {pin}:\n{out}"))
}

#[test]
fn an_unsupported_pin_in_a_recipe_is_a_warning_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let r = test_recipe(
        d.path(),
        "old-node",
        "[packages]\ninclude = [\"systemd\"]\n[[artifact]]\nurl = \"https://dl.k8s.io/release/v1.33.8/bin/linux/amd64/kubelet\"\nsha256 = \"1caa69c5328cfa774218f75f0621a6f10a1b97e095af85015f468aeb8fdf956a\"\ndest = \"/usr/bin/kubelet\"\nmode = \"0755\"\n",
    );
    let o = doctor(&["--recipes", &r, "--today", DAY]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let k = row(&out, "old-node", "kubelet");
    assert!(
        k.contains("kubernetes 1.33") && k.contains("2026-06-28") && k.contains(" -161 "),
        "{k}"
    );
    assert!(k.ends_with("WARN: supported by no one"), "{k}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 pin(s) supported by no one on 2026-12-06"),
        "{}",
        text(&o)
    );
    // The same recipe before Kubernetes 1.33's end of life: no warning, the days left.
    let o = doctor(&["--recipes", &r, "--today", "2026-06-01"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(row(&out, "old-node", "kubelet").contains(" 27 "), "{out}");
}

#[test]
fn a_pin_only_debian_security_supports_is_reported_not_warned() {
    let d = tempfile::tempdir().unwrap();
    let r = test_recipe(
        d.path(),
        "debian-runtime",
        "[packages]\ninclude = [\"systemd\", \"containerd\"]\n",
    );
    let o = doctor(&["--recipes", &r, "--today", DAY, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pins = v["pins"].as_array().unwrap();
    let c = pins
        .iter()
        .find(|p| p["pin"] == "containerd (Debian package)")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(c["line"], "containerd 1.7");
    assert_eq!(c["end-of-life"], "2026-09-30");
    assert_eq!(c["days-left"], -67);
    assert_eq!(c["status"], "reported: Debian security only");
    assert_eq!(c["warn"], false);
    assert!(c["source"]
        .as_str()
        .unwrap()
        .starts_with("https://github.com/containerd/"));
    assert!(pins.iter().all(|p| p["warn"] == false), "{v:#}");
}

#[test]
fn no_bundled_recipe_warns_on_the_fixed_day() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let o = doctor(&["--recipes", dir.to_str().unwrap(), "--today", DAY]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!out.contains("WARN"), "{out}");
    // Every upstream artifact of the node is listed with its line.
    for (pin, line) in [
        ("containerd-2.3.4-linux-amd64.tar.gz", "containerd 2.3"),
        ("runc.amd64", "runc 1.4"),
        ("kubelet", "kubernetes 1.36"),
        ("kubeadm", "kubernetes 1.36"),
        ("kubectl", "kubernetes 1.36"),
        ("crictl-v1.36.0-linux-amd64.tar.gz", "cri-tools 1.36"),
        ("Debian 13 (trixie)", "Debian 13"),
    ] {
        assert!(row(&out, "k8s-node ", pin).contains(line), "{pin}: {out}");
    }
    // The host keeps Debian's containerd 1.7: reported, Debian security supports it.
    assert!(row(&out, "containerd-host ", "containerd (Debian package)")
        .ends_with("reported: Debian security only"));
    // An overlay's config.toml is no recipe.
    assert!(!out.contains("config"), "{out}");
}

/// The CI check (decision 0025): on the day the tests run, no bundled recipe pins
/// something no one supports. This is the one test that reads the calendar, on purpose:
/// it fails on the day a pin loses all support, naming the pin.
#[test]
fn no_bundled_recipe_pins_anything_unsupported_today() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let o = doctor(&["--recipes", dir.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a bundled recipe pins something no one supports any more: move the pin \
         (docs/kubernetes.md, \"Support\") or fix src/support.toml\n{}",
        text(&o)
    );
}

#[test]
fn a_bad_date_or_table_is_bad_input() {
    let o = doctor(&["--recipes", "--today", "2026-02-30"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--today"), "{}", text(&o));
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("t.toml");
    std::fs::write(&t, "schema-version = 1\n[[debian]]\nrelease = \"trixie\"\n").unwrap();
    let o = doctor(&["--recipes", "--support-table", t.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("t.toml"), "{}", text(&o));
}
