//! Test definitions (`qemu/*.toml`): consumes a TOML file, produces a checked
//! [`Definition`] — the image to boot, the VM around it, the servers and drives the
//! harness prepares, and the [`Step`]s to run. Unknown keys are errors; every error names
//! the file and the key. The format is documented in docs/testing.md.

use crate::recipe::raw::Size;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default time a whole test may take (TCG boots take 30-60 s on 2 cores).
pub const DEFAULT_TIMEOUT: u64 = 600;

/// A test definition as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDefinition {
    description: Option<String>,
    recipe: Option<String>,
    image: Option<PathBuf>,
    memory: Option<u32>,
    cpus: Option<u32>,
    timeout: Option<u64>,
    disk_size: Option<Size>,
    corrupt: Option<Corrupt>,
    #[serde(default)]
    expect_failure: Vec<String>,
    provisioning: Option<toml::Table>,
    provisioning_raw: Option<String>,
    provisioning_via: Option<Via>,
    #[serde(default)]
    drive: Vec<RawDrive>,
    #[serde(default)]
    forward: Vec<RawForward>,
    #[serde(default)]
    step: Vec<RawStep>,
}

/// How the provisioning config reaches the guest.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// QEMU fw_cfg (`opt/org.slipway/config`).
    FwCfg,
    /// A vfat config drive labelled SLIPWAY holding `slipway.toml`.
    Drive,
}

/// One byte of the image to flip before booting (on the VM's overlay; the built image is
/// never written).
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Corrupt {
    /// The partition's GPT name as the manifest lists it, or `root` (the root file system,
    /// whatever its architecture suffix), `root-verity` or `var`.
    pub partition: String,
    /// Byte offset inside the partition.
    pub offset: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDrive {
    size: Option<Size>,
    from_dir: Option<PathBuf>,
    label: Option<String>,
}

/// An extra disk attached as virtio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drive {
    /// An empty raw disk of this many bytes.
    Blank(u64),
    /// A vfat file system holding a directory's files, with a label.
    FromDir {
        /// The directory (relative paths are relative to the definition).
        dir: PathBuf,
        /// The vfat label (default SLIPWAY, which provisioning looks for).
        label: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawForward {
    guest: String,
    serve: PathBuf,
}

/// A guest address forwarded to a static file server the harness runs on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The guest-side address (in 10.0.2.0/24).
    pub guest: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// The directory served.
    pub serve: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStep {
    name: Option<String>,
    timeout: Option<u64>,
    expect: Option<String>,
    expect_regex: Option<String>,
    at_least: Option<u64>,
    wait_for_unit: Option<String>,
    succeed: Option<Vec<String>>,
    fail: Option<Vec<String>>,
    wait_until_succeeds: Option<Vec<String>>,
    wait_for_console_text: Option<String>,
    wait_for_open_port: Option<u16>,
    read_file: Option<String>,
    copy_in: Option<Copy>,
    copy_out: Option<Copy>,
    copy_image: Option<CopyImage>,
    reboot: Option<bool>,
    shutdown: Option<bool>,
    crash: Option<bool>,
    sleep: Option<u64>,
}

/// A file copied between host and guest.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Copy {
    /// Source (host path for copy-in, relative to the definition; guest path for
    /// copy-out).
    pub from: String,
    /// Destination (guest path for copy-in; host path for copy-out, relative to the
    /// test's output directory).
    pub to: String,
    /// Mode of a file copied in (octal string, default "0644").
    pub mode: Option<String>,
}

/// A slipway base image built by the harness (once per run) and copied into the guest.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CopyImage {
    /// The base recipe (a path or a bundled name such as `base/busybox`).
    pub recipe: String,
    /// Where its `image.tar` (OCI layout + docker manifest) goes in the guest.
    pub to: String,
}

/// What a command's standard output must show.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Contains this text.
    Literal(String),
    /// Matches this regular expression.
    Regex(regex::Regex),
    /// Holds a number of at least `min`: the regular expression's first group (or its
    /// whole match) where one is given, else the whole output.
    AtLeast(Option<regex::Regex>, u64),
}

impl Expect {
    /// Whether `out` satisfies the expectation.
    pub fn matches(&self, out: &str) -> bool {
        match self {
            Expect::Literal(s) => out.contains(s.as_str()),
            Expect::Regex(r) => r.is_match(out),
            Expect::AtLeast(r, min) => match r {
                None => number_at_least(out, *min),
                Some(r) => r.captures_iter(out).any(|c| {
                    let m = c.get(1).or_else(|| c.get(0)).map_or("", |m| m.as_str());
                    number_at_least(m, *min)
                }),
            },
        }
    }
}

/// Whether `text`, trimmed, is a decimal number of at least `min`.
fn number_at_least(text: &str, min: u64) -> bool {
    text.trim().parse::<u64>().is_ok_and(|n| n >= min)
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Literal(s) => write!(f, "{s:?}"),
            Expect::Regex(r) => write!(f, "/{}/", r.as_str()),
            Expect::AtLeast(None, min) => write!(f, "a number of at least {min}"),
            Expect::AtLeast(Some(r), min) => {
                write!(f, "/{}/ with a number of at least {min}", r.as_str())
            }
        }
    }
}

/// One action of a test, as in the NixOS test driver.
#[derive(Debug, Clone)]
pub enum Action {
    /// Waits until a unit is active; fails at once if it failed or does not exist.
    WaitForUnit(String),
    /// Runs a command that must exit 0.
    Succeed(Vec<String>, Option<Expect>),
    /// Runs a command that must exit non-zero.
    Fail(Vec<String>, Option<Expect>),
    /// Runs a command until it exits 0 (and its output matches).
    WaitUntilSucceeds(Vec<String>, Option<Expect>),
    /// Waits for a console line matching a regular expression (and, with `at-least`,
    /// holding a large enough number: see [`Expect::AtLeast`]).
    WaitForConsoleText(Expect),
    /// Waits until a TCP port listens in the guest.
    WaitForOpenPort(u16),
    /// Reads a guest file (the image has no `cat`); its content must match.
    ReadFile(String, Option<Expect>),
    /// Copies a host file into the guest.
    CopyIn(Copy),
    /// Copies a guest file to the output directory.
    CopyOut(Copy),
    /// Builds a base image (once per run) and copies its `image.tar` into the guest.
    CopyImage(CopyImage),
    /// `systemctl reboot`, then boots the same machine again.
    Reboot,
    /// `systemctl poweroff`; a later step that needs the VM starts it again.
    Shutdown,
    /// A hard reset through QMP (`system_reset`), then the same machine boots again.
    Crash,
    /// Waits this long.
    Sleep(Duration),
}

/// A step: an action with its name and time limit.
#[derive(Debug, Clone)]
pub struct Step {
    /// What the failure output calls it: `step[3] succeed ["ctr", ...]` or the name given.
    pub name: String,
    /// The action.
    pub action: Action,
    /// Its time limit.
    pub timeout: Duration,
}

/// A checked test definition.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The test's name: the file name without `.toml`.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// One line about the test.
    pub description: String,
    /// The image to boot.
    pub image: ImageSource,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// The whole test's time limit.
    pub timeout: Duration,
    /// Grow the disk the guest sees.
    pub disk_size: Option<u64>,
    /// A byte to flip before booting.
    pub corrupt: Option<Corrupt>,
    /// Console lines that would fail the test but are expected here (regexes).
    pub expect_failure: Vec<regex::Regex>,
    /// The provisioning config (TOML text) the guest gets; None: none.
    pub provisioning: Option<String>,
    /// Whether the config starts the test agent.
    pub agent: bool,
    /// Whether the config is checked before booting (not for `provisioning-raw`).
    pub check_config: bool,
    /// How the config reaches the guest.
    pub via: Via,
    /// Extra drives.
    pub drives: Vec<Drive>,
    /// Guest -> host forwards to static file servers.
    pub forwards: Vec<Forward>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// Where the disk image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A host recipe, built once per run.
    Recipe(PathBuf),
    /// A build output directory holding `disk.raw`.
    Dir(PathBuf),
}

/// Default step time limits, scaled for TCG.
fn default_timeout(a: &Action) -> u64 {
    match a {
        Action::WaitForUnit(_)
        | Action::WaitUntilSucceeds(..)
        | Action::WaitForConsoleText(_)
        | Action::WaitForOpenPort(_)
        | Action::Reboot
        | Action::Crash => 300,
        Action::Shutdown => 120,
        _ => 120,
    }
}

fn regex(s: &str, key: &str) -> Result<regex::Regex> {
    regex::Regex::new(s).with_context(|| format!("{key}: {s:?} is not a regular expression"))
}

fn argv(v: Vec<String>, key: &str) -> Result<Vec<String>> {
    if v.is_empty() || v[0].is_empty() {
        bail!("{key}: expected a command as a list of arguments, e.g. [\"systemctl\", \"is-active\", \"containerd\"]");
    }
    Ok(v)
}

impl RawStep {
    fn check(self, i: usize, base: &Path) -> Result<Step> {
        let key = format!("step[{i}]");
        let expect = match (&self.expect, &self.expect_regex, self.at_least) {
            (Some(_), Some(_), _) => bail!("{key}: give expect or expect-regex, not both"),
            (Some(_), None, Some(_)) => {
                bail!("{key}: at-least takes the number from expect-regex's first group, not from expect")
            }
            (Some(s), None, None) => Some(Expect::Literal(s.clone())),
            (None, Some(r), min) => {
                let r = regex(r, &format!("{key}.expect-regex"))?;
                Some(match min {
                    Some(m) => Expect::AtLeast(Some(r), m),
                    None => Expect::Regex(r),
                })
            }
            (None, None, Some(m)) => Some(Expect::AtLeast(None, m)),
            (None, None, None) => None,
        };
        let mut actions: Vec<(&str, Action)> = Vec::new();
        let k = |n: &str| format!("{key}.{n}");
        if let Some(u) = self.wait_for_unit {
            actions.push(("wait-for-unit", Action::WaitForUnit(u)));
        }
        if let Some(a) = self.succeed {
            actions.push((
                "succeed",
                Action::Succeed(argv(a, &k("succeed"))?, expect.clone()),
            ));
        }
        if let Some(a) = self.fail {
            actions.push(("fail", Action::Fail(argv(a, &k("fail"))?, expect.clone())));
        }
        if let Some(a) = self.wait_until_succeeds {
            actions.push((
                "wait-until-succeeds",
                Action::WaitUntilSucceeds(argv(a, &k("wait-until-succeeds"))?, expect.clone()),
            ));
        }
        if let Some(t) = self.wait_for_console_text {
            let r = regex(&t, &k("wait-for-console-text"))?;
            let e = match self.at_least {
                Some(m) if self.expect_regex.is_none() => Expect::AtLeast(Some(r), m),
                _ => Expect::Regex(r),
            };
            actions.push(("wait-for-console-text", Action::WaitForConsoleText(e)));
        }
        if let Some(p) = self.wait_for_open_port {
            actions.push(("wait-for-open-port", Action::WaitForOpenPort(p)));
        }
        if let Some(p) = self.read_file {
            guest_path(&p, &k("read-file"))?;
            actions.push(("read-file", Action::ReadFile(p, expect.clone())));
        }
        if let Some(mut c) = self.copy_in {
            let from = base.join(&c.from);
            if !from.is_file() {
                bail!("{}: {} is not a file", k("copy-in.from"), from.display());
            }
            c.from = from.display().to_string();
            if let Some(m) = &c.mode {
                parse_mode(m).with_context(|| k("copy-in.mode"))?;
            }
            guest_path(&c.to, &k("copy-in.to"))?;
            actions.push(("copy-in", Action::CopyIn(c)));
        }
        if let Some(c) = self.copy_out {
            guest_path(&c.from, &k("copy-out.from"))?;
            actions.push(("copy-out", Action::CopyOut(c)));
        }
        if let Some(c) = self.copy_image {
            guest_path(&c.to, &k("copy-image.to"))?;
            actions.push(("copy-image", Action::CopyImage(c)));
        }
        for (flag, name, a) in [
            (self.reboot, "reboot", Action::Reboot),
            (self.shutdown, "shutdown", Action::Shutdown),
            (self.crash, "crash", Action::Crash),
        ] {
            match flag {
                Some(true) => actions.push((name, a)),
                Some(false) => bail!("{}: write `{name} = true` or leave the step out", k(name)),
                None => {}
            }
        }
        if let Some(s) = self.sleep {
            actions.push(("sleep", Action::Sleep(Duration::from_secs(s))));
        }
        if actions.len() != 1 {
            let names: Vec<&str> = actions.iter().map(|(n, _)| *n).collect();
            bail!(
                "{key}: expected exactly one action (wait-for-unit, succeed, fail, wait-until-succeeds, \
                 wait-for-console-text, wait-for-open-port, read-file, copy-in, copy-out, copy-image, reboot, \
                 shutdown, crash, sleep), found {}",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            );
        }
        let (aname, action) = actions.remove(0);
        let console_at_least = matches!(action, Action::WaitForConsoleText(_))
            && self.at_least.is_some()
            && self.expect.is_none()
            && self.expect_regex.is_none();
        if expect.is_some()
            && !console_at_least
            && !matches!(
                action,
                Action::Succeed(..)
                    | Action::Fail(..)
                    | Action::WaitUntilSucceeds(..)
                    | Action::ReadFile(..)
            )
        {
            bail!("{key}: expect, expect-regex and at-least apply to succeed, fail, wait-until-succeeds and read-file (at-least also to wait-for-console-text), not {aname}");
        }
        let timeout = Duration::from_secs(self.timeout.unwrap_or_else(|| default_timeout(&action)));
        let name = self
            .name
            .unwrap_or_else(|| format!("step[{i}] {aname}{}", describe(&action)));
        Ok(Step {
            name,
            action,
            timeout,
        })
    }
}

fn describe(a: &Action) -> String {
    match a {
        Action::WaitForUnit(u) => format!(" {u}"),
        Action::Succeed(v, _) | Action::Fail(v, _) | Action::WaitUntilSucceeds(v, _) => {
            format!(" {}", crate::tool::shell_quote(&v.join(" ")))
        }
        Action::WaitForConsoleText(e) => format!(" {e}"),
        Action::WaitForOpenPort(p) => format!(" {p}"),
        Action::ReadFile(p, _) => format!(" {p}"),
        Action::CopyIn(c) | Action::CopyOut(c) => format!(" {} -> {}", c.from, c.to),
        Action::CopyImage(c) => format!(" {} -> {}", c.recipe, c.to),
        Action::Sleep(d) => format!(" {} s", d.as_secs()),
        Action::Reboot | Action::Shutdown | Action::Crash => String::new(),
    }
}

/// Parses an octal mode string ("0644").
pub fn parse_mode(s: &str) -> Result<u32> {
    if !(3..=4).contains(&s.len()) {
        bail!("{s:?} is not an octal mode (3 or 4 octal digits, e.g. \"0644\")");
    }
    u32::from_str_radix(s, 8).map_err(|_| {
        anyhow::anyhow!("{s:?} is not an octal mode (3 or 4 octal digits, e.g. \"0644\")")
    })
}

fn guest_path(p: &str, key: &str) -> Result<()> {
    if !p.starts_with('/') {
        bail!("{key}: {p:?} is not an absolute path in the guest");
    }
    Ok(())
}

impl Definition {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Definition> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(path, &text).with_context(|| path.display().to_string())
    }

    /// Checks the text of a definition; `path` names it and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Definition> {
        let de = toml::Deserializer::new(text);
        let raw: RawDefinition = serde_path_to_error::deserialize(de).map_err(|e| {
            let p = e.path().to_string();
            anyhow::anyhow!(
                "{}{}",
                if p == "." {
                    String::new()
                } else {
                    format!("{p}: ")
                },
                e.into_inner().message().trim()
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .context("a definition file needs a name")?;
        let image = match (raw.recipe, raw.image) {
            (Some(r), None) => {
                let p = base.join(&r);
                ImageSource::Recipe(if p.is_file() {
                    p
                } else {
                    crate::recipe::find::find(&r).context("recipe")?
                })
            }
            (None, Some(d)) => ImageSource::Dir(base.join(d)),
            _ => bail!("give exactly one of recipe (a host recipe to build) and image (a build output directory)"),
        };
        let check_config = raw.provisioning_raw.is_none();
        let (provisioning, agent) = match (raw.provisioning, raw.provisioning_raw) {
            (Some(_), Some(_)) => bail!("give provisioning or provisioning-raw, not both"),
            (Some(mut t), None) => {
                if t.contains_key("test-agent") {
                    bail!("provisioning.test-agent: the harness adds [test-agent] itself; leave it out");
                }
                t.entry("schema-version").or_insert(toml::Value::Integer(1));
                t.insert("test-agent".into(), toml::Value::Table(toml::Table::new()));
                (
                    Some(toml::to_string(&t).context("writing the provisioning config")?),
                    true,
                )
            }
            // Unchecked and used as written (a broken config is a valid test); it starts
            // the test agent only if it says so itself.
            (None, Some(s)) => {
                let agent = s.lines().any(|l| l.trim() == "[test-agent]");
                (Some(s), agent)
            }
            // No config of the test's own: the test agent still has to run.
            (None, None) => (
                Some("schema-version = 1\n\n[test-agent]\n".to_string()),
                true,
            ),
        };
        let drives = raw
            .drive
            .into_iter()
            .enumerate()
            .map(|(i, d)| match (d.size, d.from_dir) {
                (Some(s), None) if d.label.is_none() => Ok(Drive::Blank(s.0)),
                (None, Some(dir)) => {
                    let dir = base.join(dir);
                    if !dir.is_dir() {
                        bail!("drive[{i}].from-dir: {} is not a directory", dir.display());
                    }
                    Ok(Drive::FromDir {
                        dir,
                        label: d.label.unwrap_or_else(|| "SLIPWAY".into()),
                    })
                }
                _ => bail!("drive[{i}]: give size (a blank disk) or from-dir (a vfat drive, with an optional label)"),
            })
            .collect::<Result<Vec<_>>>()?;
        let forwards = raw
            .forward
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let (ip, port) = f
                    .guest
                    .split_once(':')
                    .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u16>().ok()?)))
                    .filter(|(a, _)| a.octets()[..3] == [10, 0, 2])
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "forward[{i}].guest: {:?} is not ADDRESS:PORT in 10.0.2.0/24, e.g. \"10.0.2.100:80\"",
                            f.guest
                        )
                    })?;
                let serve = base.join(&f.serve);
                if !serve.is_dir() {
                    bail!("forward[{i}].serve: {} is not a directory", serve.display());
                }
                Ok(Forward {
                    guest: ip,
                    port,
                    serve,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let steps = raw
            .step
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.check(i, &base))
            .collect::<Result<Vec<_>>>()?;
        if steps.is_empty() {
            bail!("step: a test needs at least one [[step]]");
        }
        let expect_failure = raw
            .expect_failure
            .iter()
            .enumerate()
            .map(|(i, s)| regex(s, &format!("expect-failure[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Definition {
            name,
            path: path.to_path_buf(),
            description: raw.description.unwrap_or_default(),
            image,
            memory_mib: raw.memory.unwrap_or(2048),
            cpus: raw.cpus.unwrap_or(2),
            timeout: Duration::from_secs(raw.timeout.unwrap_or(DEFAULT_TIMEOUT)),
            disk_size: raw.disk_size.map(|s| s.0),
            corrupt: raw.corrupt,
            expect_failure,
            provisioning,
            agent,
            check_config,
            via: raw.provisioning_via.unwrap_or(Via::FwCfg),
            drives,
            forwards,
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Definition> {
        Definition::parse(Path::new("qemu/t.toml"), text)
    }

    #[test]
    fn a_full_definition() {
        let d = parse(
            r#"
image = "out/x"
memory = 1024
timeout = 60
expect-failure = ["device-mapper: verity"]
corrupt = { partition = "root", offset = 0 }
[provisioning]
hostname = "n1"
[[step]]
wait-for-unit = "multi-user.target"
[[step]]
succeed = ["hostname"]
expect = "n1"
[[step]]
crash = true
timeout = 10
"#,
        )
        .unwrap();
        assert_eq!(d.name, "t");
        assert_eq!(d.image, ImageSource::Dir(PathBuf::from("qemu/out/x")));
        let cfg = d.provisioning.unwrap();
        assert!(
            cfg.contains("schema-version = 1") && cfg.contains("[test-agent]"),
            "{cfg}"
        );
        assert_eq!(d.steps.len(), 3);
        assert_eq!(d.steps[1].name, "step[1] succeed hostname");
        assert_eq!(d.steps[2].timeout, Duration::from_secs(10));
        assert_eq!(d.corrupt.unwrap().offset, 0);
    }

    /// The tests slipway ships parse (cargo runs unit tests in the package root).
    #[test]
    fn shipped_definitions_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu");
        let defs = crate::testing::runner::discover(&dir, None).unwrap();
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
            .count();
        assert!(files > 0 && defs.len() == files, "{files} files: {defs:?}");
        assert!(defs
            .iter()
            .all(|d| matches!(d.image, ImageSource::Recipe(_))));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, want) in [
            ("image = \"x\"\nbogus = 1\n[[step]]\ncrash = true", "unknown field `bogus`"),
            ("image = \"x\"\n[[step]]\nsucceed = []", "step[0].succeed: expected a command"),
            ("image = \"x\"\n[[step]]\ncrash = true\nreboot = true", "step[0]: expected exactly one action"),
            ("image = \"x\"\n[[step]]\nwait-for-unit = \"a\"\nexpect = \"b\"", "expect, expect-regex and at-least apply"),
            ("image = \"x\"\n[[step]]\nwait-for-unit = \"a\"\nat-least = 3", "and at-least apply to"),
            ("image = \"x\"\n[[step]]\nread-file = \"/a\"\nexpect = \"b\"\nat-least = 3", "step[0]: at-least takes the number"),
            ("image = \"x\"\n[[step]]\nwait-for-console-text = \"(\"", "step[0].wait-for-console-text"),
            ("image = \"x\"\n[[forward]]\nguest = \"1.2.3.4:80\"\nserve = \".\"\n[[step]]\ncrash = true", "forward[0].guest"),
            ("image = \"x\"", "at least one [[step]]"),
            ("[[step]]\ncrash = true", "exactly one of recipe"),
            ("image = \"x\"\n[provisioning]\n[provisioning.test-agent]\n[[step]]\ncrash = true", "provisioning.test-agent"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn at_least_reads_the_number_from_the_output_or_the_first_group() {
        let d = parse(
            r#"
image = "x"
[[step]]
read-file = "/sys/class/block/vda4/size"
at-least = 1000
[[step]]
succeed = ["df"]
expect-regex = 'size (\d+) KiB'
at-least = 1000
[[step]]
wait-for-console-text = 'grew .* to (\d+) blocks'
at-least = 1000
"#,
        )
        .unwrap();
        let e = |i: usize| match &d.steps[i].action {
            Action::ReadFile(_, Some(e)) | Action::Succeed(_, Some(e)) => e.clone(),
            Action::WaitForConsoleText(e) => e.clone(),
            a => panic!("{a:?}"),
        };
        assert!(e(0).matches("1000\n"));
        assert!(!e(0).matches("999\n"));
        assert!(!e(0).matches("many"));
        assert!(e(1).matches("size 20 KiB\nsize 4096 KiB\n"));
        assert!(!e(1).matches("size 20 KiB\n"));
        assert!(e(2).matches("grew the ext4 from 10 to 1001 blocks"));
        assert!(!e(2).matches("grew the ext4 from 5000 to 999 blocks"));
        assert!(e(2).to_string().contains("at least 1000"), "{}", e(2));
    }
}
