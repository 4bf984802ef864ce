//! The recipe and lock contract under hostile input (docs/recipes.md, "Errors"): well
//! over a hundred malformed recipes and lock files, listed and generated below, each run
//! through the real binary (`slipway build --offline`, which fails before any network or
//! package work). Each must exit 2 with a message naming the file, the key and the line
//! (the line marked `# <-` in the case, where it has one), must not panic, and must
//! leave the previous output directory as it was. Then the specific holes the hardening
//! issue found: a GECOS and a suite that inject lines, huge sizes, overlays and
//! `file://` artifacts outside the recipe's directory (refused; accepted with
//! `--allow-host-paths`), and setuid overlay files. Last, the mistakes found only once
//! the tree is assembled (the OCI configuration, preloaded images), built for real from a
//! made-up package.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every case's recipe starts with this (cases that need their own `[packages]` give the
/// whole text).
const PREFIX: &str = "schema-version = 1\n[packages]\ninclude = [\"busybox-static\"]\n";

/// A well-formed lock for [`PREFIX`]; lock cases break one value of it.
const LOCK: &str = "lock-version = 1
input-digest = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"
release = \"trixie\"
architecture = \"amd64\"

[[package]]
name = \"busybox-static\"
version = \"1:1.37.0-4\"
architecture = \"amd64\"
size = 1000
sha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"
source = \"busybox\"
source-version = \"1:1.37.0-4\"
suite = \"trixie\"
";

/// One malformed input: the recipe text, the lock text (None: no lock), the file the
/// error must name and the key it must name.
struct Case {
    name: String,
    recipe: String,
    lock: Option<String>,
    file: &'static str,
    key: String,
}

fn recipe_case(key: &str, snippet: &str) -> Case {
    Case {
        name: format!("{key}: {snippet:?}"),
        recipe: format!("{PREFIX}{snippet}\n"),
        lock: None,
        file: "r.toml",
        key: key.to_string(),
    }
}

fn whole_case(key: &str, text: &str) -> Case {
    Case {
        name: format!("{key}: {text:?}"),
        recipe: text.to_string(),
        lock: None,
        file: "r.toml",
        key: key.to_string(),
    }
}

fn lock_case(key: &str, from: &str, to: &str) -> Case {
    assert!(LOCK.contains(from), "{from}");
    let to = if to.contains("# <-") {
        to.to_string()
    } else {
        format!("{to} # <-")
    };
    let lock = LOCK.replacen(from, &to, 1);
    Case {
        name: format!("lock {key}: {to:?}"),
        recipe: PREFIX.to_string(),
        lock: Some(lock),
        file: "r.toml.lock",
        key: key.to_string(),
    }
}

/// Bad values (as TOML string bodies, escapes allowed) that no field written into a
/// colon- or line-structured system file may take.
const INJECTIONS: &[&str] = &[
    "a\\nb",
    "x\\nbackdoor::0:0::/:/bin/sh",
    "a\\rb",
    "a\\u0000b",
    "a\\u001bb",
    "a:b",
];

/// Per field: the key, a template in which `{}` is replaced by each bad value, and the
/// bad values.
const FIELDS: &[(&str, &str, &[&str])] = &[
        (
            "user[0].gecos",
            "[[user]]\nname = \"u\"\nuid = 1000\ngecos = \"{}\" # <-",
            INJECTIONS,
        ),
        (
            "user[0].home",
            "[[user]]\nname = \"u\"\nuid = 1000\nhome = \"{}\" # <-",
            &[
                "/home/a\\nb",
                "/home/a:b",
                "relative",
                "/a b",
                "",
                "/x\\u0000",
            ],
        ),
        (
            "user[0].shell",
            "[[user]]\nname = \"u\"\nuid = 1000\nshell = \"{}\" # <-",
            &["/bin/sh\\nroot::0:0::/:/bin/sh", "/bin/a:b", "sh", ""],
        ),
        (
            "user[0].name",
            "[[user]]\nname = \"{}\" # <-\nuid = 1000",
            &[
                "a\\nb",
                "a:b",
                "",
                "-rf",
                "a b",
                "a/b",
                "1000",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ],
        ),
        (
            "group[0].name",
            "[[group]]\nname = \"{}\" # <-\ngid = 1000",
            &["a\\nb", "a:b", "", "a,b"],
        ),
        (
            "group[0].members[0]",
            "[[group]]\nname = \"g\"\ngid = 1000\nmembers = [\"{}\"] # <-",
            &["a\\nb", "a:b", "a,b", ""],
        ),
        (
            "debian.suites[1]",
            "[debian]\nsuites = [\"trixie\", \"{}\"] # <-",
            &[
                "trixie-updates\\ndeb [trusted=yes] http://evil.example/ trixie main",
                "trixie-security extra",
                "trixie-\\u0000",
                "",
                "sid",
            ],
        ),
        (
            "debian.components[0]",
            "[debian]\ncomponents = [\"{}\"] # <-",
            &["main\\ndeb http://evil/ x y", "main contrib", "", "[trusted=yes]"],
        ),
        (
            "debian.mirror",
            "[debian]\nmirror = \"{}\" # <-",
            &[
                "http://x/\\ndeb [trusted=yes] http://evil/ trixie main",
                "http://x/ trixie",
                "ftp://x/",
                "",
            ],
        ),
        (
            "debian.security-mirror",
            "[debian]\nsecurity-mirror = \"{}\" # <-",
            &["http://x/ y", "gopher://x"],
        ),
        (
            "systemd.enable[0]",
            "[systemd]\nenable = [\"{}\"] # <-",
            &[
                "a.service\\nb.service",
                "sshd",
                "../x.service",
                "a b.service",
                "",
                ".service",
            ],
        ),
        (
            "systemd.disable[0]",
            "[systemd]\ndisable = [\"{}\"] # <-",
            &["a.service\\n", "x/y.service", "apt-daily"],
        ),
        (
            "systemd.mask[0]",
            "[systemd]\nmask = [\"{}\"] # <-",
            &["../../etc/passwd", "getty", "a.service\\nb"],
        ),
        (
            "alternatives.iptables",
            "[alternatives]\niptables = \"{}\" # <-",
            &["relative", "/usr/../etc/shadow", "/usr/sbin/x\\ny", ""],
        ),
        (
            "image.version",
            "[image]\nversion = \"{}\" # <-",
            &["1\\nID=evil", "1 2", "\\\"1\\\"", "", "$(reboot)"],
        ),
        (
            "image.name",
            "[image]\nname = \"{}\" # <-",
            &["a/b", "a b", "", "a\\nb", "../x"],
        ),
        (
            "image.description",
            "[image]\ndescription = \"{}\" # <-",
            &["a\\nb", "a\\u0007"],
        ),
        (
            "disk.cmdline[0]",
            "[disk]\ncmdline = [\"{}\"] # <-",
            &["quiet\\ninit=/bin/sh", "a\\\"b", ""],
        ),
        (
            "entry[0].owner",
            "[[entry]]\npath = \"/x\"\ntype = \"dir\"\nowner = \"{}\" # <-",
            &["a\\nb", "a:b", "4294967295", "ghost", "root"],
        ),
        (
            "entry[0].path",
            "[[entry]]\npath = \"{}\" # <-\ntype = \"dir\"",
            &["relative", "/a/../../etc", "/a\\nb", "/"],
        ),
        (
            "entry[0].target",
            "[[entry]]\npath = \"/x\"\ntype = \"symlink\"\ntarget = \"{}\" # <-",
            &["a\\nb", ""],
        ),
        (
            "artifact[0].dest",
            "[[artifact]]\nurl = \"https://example.org/x\"\nsha256 = \"2222222222222222222222222222222222222222222222222222222222222222\"\ndest = \"{}\" # <-",
            &["usr/bin/x", "/usr/../../x", "/x\\ny"],
        ),
        (
            "artifact[0].url",
            "[[artifact]]\nurl = \"{}\" # <-\nsha256 = \"2222222222222222222222222222222222222222222222222222222222222222\"\ndest = \"/x\"",
            &[
                "ftp://example.org/x",
                "https://example.org/x y",
                "file:///etc/shadow",
                "file://../../../../etc/shadow",
                "",
            ],
        ),
        (
            "applets.binary",
            "[applets]\nbinary = \"{}\" # <-",
            &["busybox", "/usr/../bin/busybox", "/bin/a\\nb"],
        ),
        (
            "oci.exposed-ports[0]",
            "[oci]\nexposed-ports = [\"{}\"] # <-",
            &["0", "http", "80/icmp", "99999/tcp"],
        ),
        (
            "oci.tag",
            "[oci]\ntag = \"{}\" # <-",
            &["a:b", "-x", "a\\nb", ""],
        ),
        (
            "oci.repository",
            "[oci]\nrepository = \"{}\" # <-",
            &["Slipway/X", "a//b", "a b", "a\\nb", "/a"],
        ),
        (
            "paths.overlays[0]",
            "[paths]\noverlays = [\"{}\"] # <-",
            &["/etc", "..", "../../..", "missing", "/"],
        ),
        (
            "paths.allow-setuid[0]",
            "[paths]\nallow-setuid = [\"{}\"] # <-",
            &["usr/../etc/x", "a\\nb"],
        ),
        (
            "disk.var-size",
            "[disk]\nvar-size = \"{}\" # <-",
            &["4MiB", "1536KiB", "8000000000GiB", "300GiB", "17000000000MiB", "0MiB", "1TB", "-1GiB"],
        ),
        (
            "disk.esp-size",
            "[disk]\nesp-size = \"{}\" # <-",
            &["5GiB", "18446744073709551615KiB", "256MB", "1MiB", "2500KiB"],
        ),
        (
            "disk.slot-size",
            "[disk]\nslot-size = \"{}\" # <-",
            &["300GiB", "1536KiB", "0MiB", "1GB"],
        ),
];

/// Cases generated from [`FIELDS`].
fn generated() -> Vec<Case> {
    let mut out = Vec::new();
    for (key, template, values) in FIELDS {
        for v in *values {
            out.push(recipe_case(key, &template.replace("{}", v)));
        }
    }
    out
}

/// Hand-written recipe cases: types, structure, duplicates, cross-references.
fn listed() -> Vec<Case> {
    let mut v = vec![
        whole_case("schema-version", "[packages]\ninclude = [\"a1\"]\n"),
        whole_case(
            "schema-version",
            "schema-version = 2 # <-\n[packages]\ninclude = [\"a1\"]\n",
        ),
        whole_case(
            "schema-version",
            "schema-version = \"1\" # <-\n[packages]\ninclude = [\"a1\"]\n",
        ),
        whole_case("packages.include", "schema-version = 1\n[packages]\n"),
        whole_case(
            "packages.include",
            "schema-version = 1\n[packages]\ninclude = \"busybox\" # <-\n",
        ),
        whole_case(
            "packages.include[0]",
            "schema-version = 1\n[packages]\ninclude = [\"Bad_Name\"] # <-\n",
        ),
        whole_case(
            "packages.include[0]",
            "schema-version = 1\n[packages]\ninclude = [\"a\\nb\"] # <-\n",
        ),
        whole_case(
            "packages.exclude[0]",
            "schema-version = 1\n[packages]\ninclude = [\"a1\"]\nexclude = [\"a1\"] # <-\n",
        ),
        whole_case(
            "packages.included",
            "schema-version = 1\n[packages]\ninclude = [\"a1\"]\nincluded = [\"b\"] # <-\n",
        ),
        whole_case(
            "packages.recommends",
            "schema-version = 1\n[packages]\ninclude = [\"a1\"]\nrecommends = \"yes\" # <-\n",
        ),
        whole_case(
            "extends",
            "schema-version = 1\nextends = \"missing.toml\" # <-\n",
        ),
        whole_case("extends", "schema-version = 1\nextends = \"r.toml\" # <-\n"),
        whole_case("extends", "schema-version = 1\nextends = 5 # <-\n"),
    ];
    v.extend(listed_tables());
    // Structure the TOML parser itself refuses: the error still names file and line.
    for (key, snippet) in [
        ("packages", "[packages] # <-\ninclude = [\"a1\"]"),
        ("", "[[user] # <-\nname = \"x\""),
        ("", "x = \"unterminated # <-"),
        ("", "a = 1\na = 2 # <-"),
    ] {
        let mut c = recipe_case(key, snippet);
        c.key = key.to_string();
        v.push(c);
    }
    v
}

/// Hand-written cases inside the recipe's tables.
fn listed_tables() -> Vec<Case> {
    vec![
        recipe_case("frobnicate", "frobnicate = true # <-"),
        recipe_case("debian.release", "[debian]\nrelease = \"jessie\" # <-"),
        recipe_case(
            "debian.architecture",
            "[debian]\narchitecture = \"vax\" # <-",
        ),
        recipe_case("debian.suites", "[debian]\nsuites = \"trixie\" # <-"),
        recipe_case("image.kind", "[image]\nkind = \"vm\" # <-"),
        recipe_case(
            "user[1].uid",
            "[[user]]\nname = \"a\"\nuid = 1000\n[[user]]\nname = \"b\"\nuid = 1000 # <-",
        ),
        recipe_case("user[0].uid", "[[user]]\nname = \"a\"\nuid = -1 # <-"),
        recipe_case(
            "user[0].uid",
            "[[user]]\nname = \"a\"\nuid = 4294967295 # <-",
        ),
        recipe_case(
            "user[0].gid",
            "[[user]]\nname = \"a\"\nuid = 1\ngid = 65535 # <-",
        ),
        recipe_case("user[0].uid", "[[user]]\nname = \"a\"\nuid = \"0\" # <-"),
        recipe_case(
            "user[0].password",
            "[[user]]\nname = \"a\"\nuid = 1\npassword = \"x\" # <-",
        ),
        recipe_case(
            "group[1].gid",
            "[[group]]\nname = \"a\"\ngid = 7\n[[group]]\nname = \"b\"\ngid = 7 # <-",
        ),
        recipe_case(
            "entry[0].type",
            "[[entry]]\npath = \"/x\"\ntype = \"fifo\" # <-",
        ),
        recipe_case(
            "entry[0].mode",
            "[[entry]]\npath = \"/x\"\ntype = \"dir\"\nmode = \"999\" # <-",
        ),
        recipe_case(
            "entry[0].mode",
            "[[entry]]\npath = \"/x\"\ntype = \"dir\"\nmode = \"17777\" # <-",
        ),
        recipe_case(
            "entry[0].content",
            "[[entry]]\npath = \"/x\"\ntype = \"file\"",
        ),
        recipe_case(
            "entry[0].target",
            "[[entry]]\npath = \"/x\"\ntype = \"symlink\"",
        ),
        recipe_case(
            "artifact[0].sha256",
            "[[artifact]]\nurl = \"https://x/y\"\nsha256 = \"abc\" # <-\ndest = \"/y\"",
        ),
        recipe_case(
            "artifact[0]",
            "[[artifact]]\nurl = \"https://x/y\"\ndest = \"/y\"",
        ),
        recipe_case("paths.drop[0]", "[paths]\ndrop = [\"[\"] # <-"),
        recipe_case("paths.keep[1]", "[paths]\nkeep = [\"a\", \"b[\"] # <-"),
        recipe_case(
            "kernel.modules[0]",
            "[kernel]\nmodules = [\"bad name\"] # <-",
        ),
        recipe_case("disk.root-fs", "[disk]\nroot-fs = \"btrfs\" # <-"),
        recipe_case("disk.root-fs", "[disk]\nroot-fs = \"erofs\" # <-"),
        recipe_case(
            "preload[0].recipe",
            "[[preload]]\nrecipe = \"nope.toml\" # <-\nbase-name = \"x\"",
        ),
        recipe_case("oci.env.A=B", "[oci]\nenv = { \"A=B\" = \"1\" } # <-"),
        recipe_case("oci.layers", "[oci]\nlayers = -1 # <-"),
        recipe_case(
            "applets.links",
            "[applets]\nbinary = \"/bin/busybox\"\nlinks = [] # <-",
        ),
        recipe_case("systemd.enable", "[systemd]\nenable = \"a.service\" # <-"),
        recipe_case(
            "preload[1].base-name",
            "[[preload]]\nrecipe = \"r.toml\"\nbase-name = \"a/p\"\n[[preload]]\nrecipe = \"r.toml\"\nbase-name = \"b/p\" # <-",
        ),
    ]
}

/// Lock files with one value broken.
fn locks() -> Vec<Case> {
    let sha = "1111111111111111111111111111111111111111111111111111111111111111";
    let mut v = vec![
        lock_case("lock-version", "lock-version = 1", "lock-version = 9"),
        lock_case("lock-version", "lock-version = 1", "lock-version = \"1\""),
        lock_case(
            "input-digest",
            "input-digest = \"sha256:0000",
            "input-digest = \"md5:0000",
        ),
        lock_case("release", "release = \"trixie\"", "release = \"jessie\""),
        lock_case(
            "architecture",
            "architecture = \"amd64\"\n\n[[package]]",
            "architecture = \"vax\" # <-\n\n[[package]]",
        ),
        lock_case("package[0].size", "size = 1000", "size = -1"),
        lock_case("package[0].size", "size = 1000", "size = \"big\""),
        lock_case("package[0].extra", "size = 1000", "size = 1000\nextra = 1"),
        lock_case(
            "mystery",
            "release = \"trixie\"",
            "release = \"trixie\"\nmystery = 1",
        ),
        lock_case(
            "package[0].sha256",
            &format!("sha256 = \"{sha}\""),
            "sha256 = \"abc\"",
        ),
        lock_case(
            "package[0].sha256",
            &format!("sha256 = \"{sha}\""),
            &format!("sha256 = \"../../{}\"", &sha[..58]),
        ),
    ];
    for (key, from, bad) in [
        (
            "package[0].name",
            "name = \"busybox-static\"",
            &["../../etc/x", "a b", "A", "a\\nb", "x=1"][..],
        ),
        (
            "package[0].version",
            "version = \"1:1.37.0-4\"",
            &["1 2", "../x", "1\\n2", "", "1/2"],
        ),
        (
            "package[0].architecture",
            "architecture = \"amd64\"\nsize",
            &["vax", "amd64 ", "../x"],
        ),
        (
            "package[0].source",
            "source = \"busybox\"",
            &["a b", "../x"],
        ),
        (
            "package[0].source-version",
            "source-version = \"1:1.37.0-4\"",
            &["1 2", ""],
        ),
        (
            "package[0].suite",
            "suite = \"trixie\"",
            &["trixie main", "a\\nb", ""],
        ),
    ] {
        let field = from.split(' ').next().unwrap();
        for b in bad {
            let to = if from.ends_with("size") {
                format!("{field} = \"{b}\"\nsize")
            } else {
                format!("{field} = \"{b}\"")
            };
            let mut c = lock_case(key, from, &to);
            if from.ends_with("size") {
                // The marker went after `size`; the bad value is on the line before.
                c.lock = Some(LOCK.replacen(from, &format!("{field} = \"{b}\" # <-\nsize"), 1));
            }
            v.push(c);
        }
    }
    v
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slipway"))
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("SLIPWAY_CACHE", dir.join("cache"))
        .env_remove("SLIPWAY_MIRROR")
        .env_remove("SLIPWAY_RECIPES")
        .output()
        .unwrap()
}

/// Every file under `dir` with its bytes, for comparing before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                v.push((p, Vec::new()));
            } else {
                let b = std::fs::read(&p).unwrap();
                v.push((p, b));
            }
        }
    }
    v.sort();
    v
}

/// A fresh directory with a previous output in `out/`.
fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    std::fs::create_dir_all(out.join("rootfs/etc")).unwrap();
    std::fs::write(out.join("rootfs.tar"), b"the previous good build").unwrap();
    std::fs::write(out.join("rootfs/etc/os-release"), b"ID=previous\n").unwrap();
    std::fs::write(out.join("report.json"), b"{}").unwrap();
    d
}

/// Runs one case; returns what is wrong with the outcome, if anything.
fn check(c: &Case) -> Option<String> {
    let d = workdir();
    std::fs::write(d.path().join("r.toml"), &c.recipe).unwrap();
    let text = match &c.lock {
        Some(l) => {
            std::fs::write(d.path().join("r.toml.lock"), l).unwrap();
            l
        }
        None => &c.recipe,
    };
    let before = snapshot(&d.path().join("out"));
    let o = run(
        d.path(),
        &[
            "build",
            "r.toml",
            "-o",
            "out",
            "--offline",
            "--format",
            "tar,dir",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let mut wrong = Vec::new();
    if o.status.code() != Some(2) {
        wrong.push(format!("exit {:?}, not 2", o.status.code()));
    }
    if err.contains("panicked") {
        wrong.push("panicked".into());
    }
    if !err.contains(&format!("{}:", c.file)) {
        wrong.push(format!("does not name {}", c.file));
    }
    if !c.key.is_empty() && !err.contains(&c.key) {
        wrong.push(format!("does not name the key {}", c.key));
    }
    let marked = text.lines().position(|l| l.contains("# <-")).map(|i| i + 1);
    let want_line = match marked {
        Some(n) => format!("line {n}"),
        None => "line ".to_string(),
    };
    if !err.contains(&want_line) {
        wrong.push(format!("does not name the {want_line}"));
    }
    if snapshot(&d.path().join("out")) != before {
        wrong.push("changed the previous output".into());
    }
    if wrong.is_empty() {
        None
    } else {
        Some(format!(
            "{}: {}\n    stderr: {}",
            c.name,
            wrong.join(", "),
            err.trim()
        ))
    }
}

#[test]
fn malformed_recipes_and_locks_exit_2_with_file_key_and_line() {
    let t = std::time::Instant::now();
    let mut cases = generated();
    cases.extend(listed());
    cases.extend(locks());
    assert!(cases.len() >= 100, "{} cases", cases.len());
    // The cases are process starts more than CPU work: a few threads more than CPUs.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()) * 2;
    let threads = threads.clamp(4, 16);
    let failures: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<_> = cases
            .chunks(cases.len().div_ceil(threads))
            .map(|chunk| s.spawn(move || chunk.iter().filter_map(check).collect::<Vec<_>>()))
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!("{} cases in {:.1}s", cases.len(), t.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The two injections the issue found: a GECOS adding a uid-0 line to /etc/passwd, and a
/// suite adding a trusted source to slipway's apt sources.
#[test]
fn gecos_and_suite_injections_are_refused() {
    for (snippet, key) in [
        (
            "[[user]]\nname = \"nonroot\"\nuid = 65532\ngecos = \"x\\nbackdoor::0:0::/:/bin/sh\"",
            "user[0].gecos",
        ),
        (
            "[debian]\nsuites = [\"trixie\", \"trixie-updates\\ndeb [trusted=yes] http://evil.example/ trixie main\"]",
            "debian.suites[1]",
        ),
    ] {
        let d = workdir();
        std::fs::write(d.path().join("r.toml"), format!("{PREFIX}{snippet}\n")).unwrap();
        let o = run(d.path(), &["lock", "r.toml", "--offline"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("r.toml: {key}: ")), "{err}");
        assert!(err.contains("(line "), "{err}");
    }
}

#[test]
fn huge_sizes_are_refused() {
    for (size, key, why) in [
        ("8000000000GiB", "disk.var-size", "too large"),
        ("300GiB", "disk.var-size", "too large (at most"),
        ("8GiB", "disk.esp-size", "too large (at most"),
    ] {
        let d = workdir();
        let key_name = key.trim_start_matches("disk.");
        let text = format!("{PREFIX}[image]\nkind = \"host\"\n[disk]\n{key_name} = \"{size}\"\n");
        std::fs::write(d.path().join("r.toml"), text).unwrap();
        let o = run(d.path(), &["build", "r.toml", "-o", "out", "--offline"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(key) && err.contains(why) && err.contains("line 7"),
            "{err}"
        );
    }
}

/// erofs roots were retired (decision 0034): a recipe that still asks for one is told
/// why and what to use instead, not just that the value is unknown.
#[test]
fn retired_erofs_root_is_refused_with_the_way_forward() {
    let d = workdir();
    let text = format!("{PREFIX}[image]\nkind = \"host\"\n[disk]\nroot-fs = \"erofs\"\n");
    std::fs::write(d.path().join("r.toml"), text).unwrap();
    let o = run(d.path(), &["build", "r.toml", "-o", "out", "--offline"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for want in [
        "r.toml: disk.root-fs: ",
        "\"erofs\"",
        "erofs roots were retired (decision 0034): use squashfs",
        "line 7",
    ] {
        assert!(err.contains(want), "no {want:?} in: {err}");
    }
}

/// Writes a recipe in `d/recipes/` whose overlay or artifact names `target`.
fn host_path_recipe(d: &Path, overlay: Option<&str>, url: Option<&str>) -> PathBuf {
    let dir = d.join("recipes");
    std::fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
    std::fs::write(dir.join("rootfs/etc/motd"), b"hi\n").unwrap();
    std::fs::write(dir.join("blob.bin"), b"blob").unwrap();
    let mut text = PREFIX.to_string();
    if let Some(o) = overlay {
        text.push_str(&format!("[paths]\noverlays = [\"{o}\"]\n"));
    }
    if let Some(u) = url {
        text.push_str(&format!(
            "[[artifact]]\nurl = \"{u}\"\nsha256 = \"{}\"\ndest = \"/x\"\n",
            "3".repeat(64)
        ));
    }
    let p = dir.join("r.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn host_paths_outside_the_recipe_are_refused_unless_allowed() {
    let d = workdir();
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"s").unwrap();
    // A symlink inside the recipe's directory that leads out of it counts as outside.
    std::fs::create_dir_all(d.path().join("recipes")).unwrap();
    std::os::unix::fs::symlink(&outside, d.path().join("recipes/escape")).unwrap();
    let secret = format!("file://{}", outside.join("secret").display());
    let refused: [(Option<&str>, Option<&str>, &str); 6] = [
        (Some("/etc"), None, "paths.overlays[0]"),
        (Some("../outside"), None, "paths.overlays[0]"),
        (Some("escape"), None, "paths.overlays[0]"),
        (None, Some(&secret), "artifact[0].url"),
        (None, Some("file://../outside/secret"), "artifact[0].url"),
        (None, Some("file://escape/secret"), "artifact[0].url"),
    ];
    for (overlay, url, key) in refused {
        let r = host_path_recipe(d.path(), overlay, url);
        let r = r.to_str().unwrap();
        let o = run(d.path(), &["lock", r, "--offline"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{overlay:?} {url:?}: {err}");
        assert!(
            err.contains(key)
                && err.contains("outside the recipe's directory")
                && err.contains("line "),
            "{err}"
        );
        // With --allow-host-paths the recipe loads; the offline lock then fails for
        // want of package lists (exit 4), past the recipe.
        let o = run(d.path(), &["lock", r, "--offline", "--allow-host-paths"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(2), "{overlay:?} {url:?}: {err}");
        assert!(!err.contains("outside the recipe's directory"), "{err}");
    }
    // Inside the tree: accepted without the flag.
    for (overlay, url) in [(Some("rootfs"), None), (None, Some("file://blob.bin"))] {
        let r = host_path_recipe(d.path(), overlay, url);
        let o = run(d.path(), &["lock", r.to_str().unwrap(), "--offline"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(2), "{err}");
    }
}

#[test]
fn build_commands_document_allow_host_paths() {
    for cmd in ["build", "lock", "fetch"] {
        let o = Command::new(bin()).args([cmd, "--help"]).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("--allow-host-paths"), "{cmd}: {out}");
    }
}

/// (key, file, recipe body, other recipe files with their bodies).
type AssembledCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Recipe mistakes found only once the tree is assembled: the key and the file the error
/// must name, the body of `r.toml`, and the case's other recipe files. Every case builds
/// its OCI image, or for a host recipe its tar, from one made-up package; `# <-` marks
/// the line.
const ASSEMBLED: &[AssembledCase] = &[
    ("oci.user", "r.toml", "[oci]\nuser = \"www-data\" # <-", &[]),
    (
        "oci.entrypoint[0]",
        "r.toml",
        "[oci]\nentrypoint = [\"/usr/bin/nope\"] # <-",
        &[],
    ),
    ("oci.cmd[0]", "r.toml", "[oci]\ncmd = [\"nope\"] # <-", &[]),
    (
        "oci.working-dir",
        "r.toml",
        "[oci]\nworking-dir = \"/srv/none\" # <-",
        &[],
    ),
    // Inherited: the parent's file and line, where the value was written.
    (
        "oci.working-dir",
        "p.toml",
        "extends = \"p.toml\"\n[paths]\ndrop = [\"srv/app\"]",
        &[(
            "p.toml",
            "[oci]\nworking-dir = \"/srv/app\" # <-\n[[entry]]\npath = \"/srv/app\"\ntype = \"dir\"",
        )],
    ),
    // Modules a parent asks for, that the child's image lacks a kernel for.
    (
        "kernel.modules",
        "p.toml",
        "extends = \"p.toml\"",
        &[("p.toml", "[kernel]\nmodules = [\"storage\"] # <-")],
    ),
    (
        "preload[0].recipe",
        "r.toml",
        "[image]\nkind = \"host\"\n[[preload]]\nrecipe = \"b.toml\" # <-\nbase-name = \"x/b\"",
        &[("b.toml", "[image]\nkind = \"host\"")],
    ),
    (
        "preload[0].recipe",
        "r.toml",
        "[image]\nkind = \"host\"\n[[preload]]\nrecipe = \"b.toml\" # <-\nbase-name = \"x/b\"",
        &[("b.toml", "[debian]\narchitecture = \"arm64\"")],
    ),
];

/// The made-up package: a .deb of plain tars holding one file.
fn tiny_deb() -> Vec<u8> {
    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if path.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            b.append_data(&mut h, path, *body).unwrap();
        }
        b.into_inner().unwrap()
    }
    let control = tar_of(&[(
        "./control",
        b"Package: tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n",
    )]);
    let data = tar_of(&[
        ("./usr/", b""),
        ("./usr/bin/", b""),
        ("./usr/bin/tiny", b"#!/bin/sh\n"),
    ]);
    common::deb_of(&control, &data)
}

/// Writes `name` (a recipe of the made-up package plus `body`) and its lock in `d`; the
/// lock of a recipe that extends another names the parent's, which must be written first.
fn locked_recipe(d: &Path, name: &str, body: &str, deb: &[u8]) {
    let path = d.join(name);
    // `extends` belongs above the first table.
    let (first, rest) = body.split_once('\n').unwrap_or((body, ""));
    let (top, body) = if first.starts_with("extends") {
        (format!("{first}\n"), rest)
    } else {
        (String::new(), body)
    };
    let text = format!("schema-version = 1\n{top}[packages]\ninclude = [\"tiny\"]\n{body}\n");
    std::fs::write(&path, text).unwrap();
    let opts = slipway::recipe::LoadOptions {
        allow_host_paths: true,
    };
    let r = slipway::recipe::Recipe::load_with(&path, opts).unwrap();
    let parent = r.parent.as_ref().map(|p| slipway::lock::ParentRef {
        recipe: p.path.file_name().unwrap().to_string_lossy().into_owned(),
        input_digest: slipway::lock::input_digest(p),
    });
    slipway::lock::Lock {
        lock_version: slipway::lock::LOCK_VERSION,
        input_digest: slipway::lock::input_digest(&r),
        release: "trixie".into(),
        architecture: r.debian.architecture.clone(),
        parent,
        packages: vec![slipway::lock::LockedPackage {
            name: "tiny".into(),
            version: "1.0".into(),
            architecture: "all".into(),
            size: deb.len() as u64,
            sha256: slipway::io::hash::sha256_hex(deb),
            source: "tiny".into(),
            source_version: "1.0".into(),
            suite: "trixie".into(),
        }],
        artifacts: vec![],
        cuts: vec![],
    }
    .write(&r.lock_path())
    .unwrap();
}

/// Builds one [`ASSEMBLED`] case; returns what is wrong with the outcome, if anything.
fn check_assembled(case: &AssembledCase, deb: &[u8]) -> Option<String> {
    let (key, file, body, others) = *case;
    let d = workdir();
    let debs = d.path().join("vendor/debs");
    std::fs::create_dir_all(&debs).unwrap();
    std::fs::write(debs.join("tiny_1.0_all.deb"), deb).unwrap();
    for (name, text) in others {
        locked_recipe(d.path(), name, text, deb);
    }
    locked_recipe(d.path(), "r.toml", body, deb);
    let host = body.contains("kind = \"host\"");
    let before = snapshot(&d.path().join("out"));
    let o = run(
        d.path(),
        &[
            "build",
            "r.toml",
            "-o",
            "out",
            "--offline",
            "--locked",
            "--vendor",
            "vendor",
            "--format",
            if host { "tar" } else { "oci" },
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let text = std::fs::read_to_string(d.path().join(file)).unwrap();
    let line = text.lines().position(|l| l.contains("# <-")).unwrap() + 1;
    let mut wrong = Vec::new();
    if o.status.code() != Some(2) {
        wrong.push(format!("exit {:?}, not 2", o.status.code()));
    }
    if !err.contains(&format!("{file}: {key}: ")) {
        wrong.push(format!("does not name {file}: {key}"));
    }
    if !err.contains(&format!("(line {line})")) {
        wrong.push(format!("does not name line {line}"));
    }
    if snapshot(&d.path().join("out")) != before {
        wrong.push("changed the previous output".into());
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{key} in {file}: {}\n    stderr: {}",
            wrong.join(", "),
            err.trim()
        )
    })
}

#[test]
fn mistakes_found_at_assembly_exit_2_with_file_key_and_line() {
    let deb = tiny_deb();
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = ASSEMBLED
            .iter()
            .map(|c| s.spawn(|| check_assembled(c, &deb)))
            .collect();
        runs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--allow-host-paths` reaches the base recipes a host recipe preloads: without it, a
/// preloaded recipe's overlay outside its directory is refused (naming that recipe);
/// with it, the build goes through.
#[test]
fn preloaded_recipes_are_loaded_with_the_host_recipes_options() {
    let deb = tiny_deb();
    let d = workdir();
    let debs = d.path().join("vendor/debs");
    std::fs::create_dir_all(&debs).unwrap();
    std::fs::write(debs.join("tiny_1.0_all.deb"), &deb).unwrap();
    std::fs::create_dir_all(d.path().join("shared/etc")).unwrap();
    std::fs::write(d.path().join("shared/etc/motd"), b"hi\n").unwrap();
    std::fs::create_dir_all(d.path().join("base")).unwrap();
    locked_recipe(
        d.path(),
        "base/b.toml",
        "[paths]\noverlays = [\"../shared\"] # <-",
        &deb,
    );
    locked_recipe(
        d.path(),
        "r.toml",
        "[image]\nkind = \"host\"\n[[preload]]\nrecipe = \"base/b.toml\"\nbase-name = \"x/b\"",
        &deb,
    );
    let build = |extra: &[&str]| {
        let mut args = vec![
            "build",
            "r.toml",
            "-o",
            "out",
            "--offline",
            "--locked",
            "--vendor",
            "vendor",
            "--format",
            "tar",
        ];
        args.extend_from_slice(extra);
        run(d.path(), &args)
    };
    let o = build(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("b.toml: paths.overlays[0]") && err.contains("(line 5)"),
        "{err}"
    );
    let o = build(&["--allow-host-paths"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
}
