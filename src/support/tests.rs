//! Unit tests for the end-of-life table and the pin check, on fixed dates.

use super::*;

fn day(s: &str) -> Date {
    s.parse().unwrap()
}

/// A host recipe in `dir` on `release`, including `packages`, with `artifacts` (URLs).
fn recipe(dir: &Path, release: &str, packages: &[&str], artifacts: &[&str]) -> Recipe {
    let mut s = format!(
        "schema-version = 1\n[image]\nname = \"t\"\nkind = \"host\"\n[debian]\nrelease = \"{release}\"\n[packages]\ninclude = {packages:?}\n"
    );
    for (i, url) in artifacts.iter().enumerate() {
        s.push_str(&format!(
            "[[artifact]]\nurl = \"{url}\"\nsha256 = \"{}\"\ndest = \"/usr/bin/a{i}\"\nmode = \"0755\"\n",
            "0".repeat(64)
        ));
    }
    let p = dir.join("t.toml");
    std::fs::write(&p, s).unwrap();
    Recipe::load(&p).unwrap()
}

#[test]
fn dates_parse_print_and_count_days() {
    for s in [
        "1970-01-01",
        "2000-02-29",
        "2026-12-06",
        "2028-04-30",
        "2400-12-31",
    ] {
        assert_eq!(day(s).to_string(), s);
    }
    assert_eq!(day("1970-01-01").days, 0);
    assert_eq!(day("2026-12-06").days_until(day("2027-06-28")), 204);
    assert_eq!(day("2026-12-06").days_until(day("2026-09-30")), -67);
    assert_eq!(day("2024-02-28").days_until(day("2024-03-01")), 2);
    for bad in [
        "2026-02-29",
        "2026-13-01",
        "2026-1-01",
        "26-01-01x",
        "2026-00-10",
        "2026/01/01",
        "+026-01-01",
    ] {
        assert!(bad.parse::<Date>().is_err(), "{bad}");
    }
    assert!(Date::today() > day("2025-01-01"));
}

#[test]
fn the_bundled_table_is_valid_and_has_a_line_for_every_bundled_pin_kind() {
    let t = Table::bundled().unwrap();
    for (product, version) in [
        ("kubernetes", "1.36.4"),
        ("cri-tools", "1.36.0"),
        ("containerd", "2.3.4"),
        ("runc", "1.4.3"),
        ("containerd", "1.7.24"),
    ] {
        assert!(t.line(product, version).is_some(), "{product} {version}");
    }
    assert!(t.debian.iter().any(|d| d.release == "trixie"));
    // Every date has a source.
    assert!(t.lines.iter().all(|l| l.source.starts_with("https://")));
    assert!(t.debian.iter().all(|d| d.source.starts_with("https://")));
}

#[test]
fn table_errors_name_file_and_key() {
    let e = |text: &str| format!("{:#}", Table::parse("x.toml", text).unwrap_err());
    assert!(e("schema-version = 2").contains("x.toml: schema-version: 2 is not 1"));
    let msg = e("schema-version = 1\n[[product]]\nname = \"a\"\nurl = '^x'\n");
    assert!(
        msg.contains("product[0].url: has no (?P<version>...) group"),
        "{msg}"
    );
    let msg = e("schema-version = 1\n[[line]]\nproduct = \"b\"\nline = \"1\"\nend-of-life = \"2026-01-01\"\nsource = \"s\"\n");
    assert!(
        msg.contains("line[0].product: \"b\" is no [[product]]"),
        "{msg}"
    );
    let msg = e("schema-version = 1\n[[product]]\nname = \"b\"\nurl = '(?P<version>x)'\n[[line]]\nproduct = \"b\"\nline = \"1\"\nend-of-life = \"2026-02-30\"\nsource = \"s\"\n");
    assert!(
        msg.contains("line[0].end-of-life: \"2026-02-30\" is not a date"),
        "{msg}"
    );
    assert!(e("schema-version = 1\nsurprise = 1").contains("x.toml"));
}

#[test]
fn an_upstream_pin_past_its_end_of_life_warns_and_a_current_one_does_not() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(
        d.path(),
        "trixie",
        &["systemd"],
        &[
            "https://dl.k8s.io/release/v1.33.8/bin/linux/amd64/kubelet",
            "https://github.com/containerd/containerd/releases/download/v2.3.4/containerd-2.3.4-linux-amd64.tar.gz",
            "https://example.org/unknown-1.0.tar.gz",
            "https://github.com/opencontainers/runc/releases/download/v1.9.0/runc.amd64",
        ],
    );
    let f = check(&Table::bundled().unwrap(), &r, day("2026-12-06"));
    let by = |pin: &str| f.iter().find(|x| x.pin == pin).unwrap();
    let k = by("kubelet");
    assert_eq!(k.status, Status::Unsupported);
    assert_eq!(
        (k.line.as_str(), k.version.as_str()),
        ("kubernetes 1.33", "1.33.8")
    );
    assert_eq!(k.days_left, Some(-161));
    assert_eq!(k.after, "no one");
    let c = by("containerd-2.3.4-linux-amd64.tar.gz");
    assert_eq!(c.status, Status::Upstream);
    assert_eq!(c.days_left, Some(511));
    assert_eq!(by("unknown-1.0.tar.gz").status, Status::Unknown);
    // A product the table knows, in a line it does not: a warning too.
    assert_eq!(by("runc.amd64").status, Status::Unknown);
    assert_eq!(by("runc.amd64").line, "runc 1.9");
    let d13 = by("Debian 13 (trixie)");
    assert_eq!(d13.status, Status::Upstream);
    assert_eq!(f.iter().filter(|x| x.status.warns()).count(), 3);
}

#[test]
fn a_debian_package_past_upstream_end_of_life_is_reported_not_warned() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(d.path(), "trixie", &["containerd", "runc"], &[]);
    let t = Table::bundled().unwrap();
    let f = check(&t, &r, day("2026-12-06"));
    let c = f
        .iter()
        .find(|x| x.pin == "containerd (Debian package)")
        .unwrap();
    assert_eq!(c.line, "containerd 1.7");
    assert!(c.days_left.unwrap() < 0);
    assert_eq!(
        c.status,
        Status::Debian {
            by: "Debian security",
            until: day("2028-08-09")
        }
    );
    assert!(!c.status.warns());
    assert!(f.iter().all(|x| !x.status.warns()), "{f:#?}");
    // Past Debian LTS, no one supports it.
    let later = check(&t, &r, day("2030-07-01"));
    assert!(
        later.iter().all(|x| x.status == Status::Unsupported),
        "{later:#?}"
    );
    // Between the security team and LTS.
    let lts = check(&t, &r, day("2029-01-01"));
    let c = lts
        .iter()
        .find(|x| x.pin == "runc (Debian package)")
        .unwrap();
    assert_eq!(
        c.status,
        Status::Debian {
            by: "Debian LTS",
            until: day("2030-06-30")
        }
    );
}

#[test]
fn an_excluded_package_is_no_pin_and_an_unknown_release_warns() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("p.toml");
    std::fs::write(&p, "schema-version = 1\n[image]\nname = \"p\"\nkind = \"host\"\n[debian]\nrelease = \"trixie\"\n[packages]\ninclude = [\"containerd\", \"systemd\"]\n").unwrap();
    std::fs::write(d.path().join("c.toml"), "schema-version = 1\nextends = \"p.toml\"\n[image]\nname = \"c\"\n[packages]\nexclude = [\"containerd\"]\n").unwrap();
    let c = Recipe::load(&d.path().join("c.toml")).unwrap();
    let f = check(&Table::bundled().unwrap(), &c, day("2026-12-06"));
    assert!(!f.iter().any(|x| x.pin.starts_with("containerd")), "{f:#?}");
    let r = recipe(d.path(), "forky", &["systemd"], &[]);
    let f = check(&Table::bundled().unwrap(), &r, day("2026-12-06"));
    assert_eq!(f[0].status, Status::Unknown);
}

#[test]
fn the_rendered_table_shows_days_and_status() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(
        d.path(),
        "trixie",
        &["containerd"],
        &["https://dl.k8s.io/release/v1.36.4/bin/linux/amd64/kubectl"],
    );
    let f = check(&Table::bundled().unwrap(), &r, day("2026-12-06"));
    let s = render(&f, day("2026-12-06"));
    assert!(s.starts_with("pins checked on 2026-12-06 "), "{s}");
    let row = s.lines().find(|l| l.contains("kubectl")).unwrap();
    assert!(
        row.contains("kubernetes 1.36")
            && row.contains("2027-06-28")
            && row.contains(" 204 ")
            && row.ends_with(" ok"),
        "{row}"
    );
    let row = s
        .lines()
        .find(|l| l.contains("containerd (Debian package)"))
        .unwrap();
    assert!(row.ends_with("reported: Debian security only"), "{row}");
}

#[test]
fn trixies_nodejs_20_is_past_upstream_and_debian_security_supports_it() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(d.path(), "trixie", &["nodejs"], &[]);
    let t = Table::bundled().unwrap();
    let by = |today: &str| {
        check(&t, &r, day(today))
            .into_iter()
            .find(|x| x.pin == "nodejs (Debian package)")
            .unwrap()
    };
    // The major line "20" holds every 20.x.
    let before = by("2026-04-30");
    assert_eq!(before.line, "nodejs 20");
    assert_eq!(before.status, Status::Upstream);
    let after = by("2026-05-01");
    assert_eq!(
        after.status,
        Status::Debian {
            by: "Debian security",
            until: day("2028-08-09")
        }
    );
    assert!(!after.status.warns());
    assert!(t.line("nodejs", "20.19.2").is_some());
    assert!(t.line("nodejs", "22.1.0").is_none());
    assert!(
        t.line("kubernetes", "1.3.0").is_none(),
        "no major-only match"
    );
}
