//! The `[[step]]` tables of a definition: consumes a raw step as written, produces a
//! checked [`Step`] (exactly one action, its expectation, its time limit and name).
//! Every error names the step (`step[3].succeed: ...`).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawStep {
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
    wait_for_shutdown: Option<bool>,
    sleep: Option<u64>,
    remove_drive: Option<String>,
    boot_from: Option<String>,
    drive_digest: Option<DriveDigest>,
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

/// A host-side check of a drive's bytes against a digest.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DriveDigest {
    /// The drive's `name`.
    pub drive: String,
    /// true: the drive must differ from the digest; false: it must equal it.
    pub changed: bool,
    /// The digest (hex sha256); default: the one recorded when the harness made the
    /// drive, before the first boot.
    pub sha256: Option<String>,
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

/// What the firmware boots first from the next start on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootTarget {
    /// The drive with this `name`.
    Drive(String),
    /// The network (PXE).
    Network,
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
    /// Waits until the guest powers the machine off by itself (QEMU exits).
    WaitForShutdown,
    /// Waits this long.
    Sleep(Duration),
    /// Detaches a drive (by name) while the machine is off.
    RemoveDrive(String),
    /// Boots from a drive or the network from the next start on.
    BootFrom(BootTarget),
    /// Compares a drive's sha256 with a digest, on the host.
    DriveDigest(DriveDigest),
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

/// Default step time limits, scaled for TCG.
fn default_timeout(a: &Action) -> u64 {
    match a {
        Action::WaitForUnit(_)
        | Action::WaitUntilSucceeds(..)
        | Action::WaitForConsoleText(_)
        | Action::WaitForOpenPort(_)
        | Action::WaitForShutdown
        | Action::Reboot
        | Action::Crash => 300,
        _ => 120,
    }
}

pub(super) fn regex(s: &str, key: &str) -> Result<regex::Regex> {
    regex::Regex::new(s).with_context(|| format!("{key}: {s:?} is not a regular expression"))
}

fn argv(v: Vec<String>, key: &str) -> Result<Vec<String>> {
    if v.is_empty() || v[0].is_empty() {
        bail!("{key}: expected a command as a list of arguments, e.g. [\"systemctl\", \"is-active\", \"containerd\"]");
    }
    Ok(v)
}

/// The actions a step may name, for the "exactly one" message.
const ACTIONS: &str = "wait-for-unit, succeed, fail, wait-until-succeeds, wait-for-console-text, \
     wait-for-open-port, read-file, copy-in, copy-out, copy-image, reboot, shutdown, crash, \
     wait-for-shutdown, sleep, remove-drive, boot-from, drive-digest";

impl RawStep {
    /// The output expectation from `expect`, `expect-regex` and `at-least`.
    fn expectation(&self, key: &str) -> Result<Option<Expect>> {
        Ok(match (&self.expect, &self.expect_regex, self.at_least) {
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
        })
    }

    /// The guest-command actions.
    fn command_actions(
        &mut self,
        k: &dyn Fn(&str) -> String,
        expect: Option<&Expect>,
        out: &mut Vec<(&'static str, Action)>,
    ) -> Result<()> {
        if let Some(u) = self.wait_for_unit.take() {
            out.push(("wait-for-unit", Action::WaitForUnit(u)));
        }
        if let Some(a) = self.succeed.take() {
            out.push((
                "succeed",
                Action::Succeed(argv(a, &k("succeed"))?, expect.cloned()),
            ));
        }
        if let Some(a) = self.fail.take() {
            out.push(("fail", Action::Fail(argv(a, &k("fail"))?, expect.cloned())));
        }
        if let Some(a) = self.wait_until_succeeds.take() {
            let a = argv(a, &k("wait-until-succeeds"))?;
            out.push((
                "wait-until-succeeds",
                Action::WaitUntilSucceeds(a, expect.cloned()),
            ));
        }
        if let Some(t) = self.wait_for_console_text.take() {
            let r = regex(&t, &k("wait-for-console-text"))?;
            let e = match self.at_least {
                Some(m) if self.expect_regex.is_none() => Expect::AtLeast(Some(r), m),
                _ => Expect::Regex(r),
            };
            out.push(("wait-for-console-text", Action::WaitForConsoleText(e)));
        }
        if let Some(p) = self.wait_for_open_port.take() {
            out.push(("wait-for-open-port", Action::WaitForOpenPort(p)));
        }
        if let Some(p) = self.read_file.take() {
            guest_path(&p, &k("read-file"))?;
            out.push(("read-file", Action::ReadFile(p, expect.cloned())));
        }
        Ok(())
    }

    /// The file-copying actions.
    fn copy_actions(
        &mut self,
        k: &dyn Fn(&str) -> String,
        base: &Path,
        out: &mut Vec<(&'static str, Action)>,
    ) -> Result<()> {
        if let Some(mut c) = self.copy_in.take() {
            let from = base.join(&c.from);
            if !from.is_file() {
                bail!("{}: {} is not a file", k("copy-in.from"), from.display());
            }
            c.from = from.display().to_string();
            if let Some(m) = &c.mode {
                parse_mode(m).with_context(|| k("copy-in.mode"))?;
            }
            guest_path(&c.to, &k("copy-in.to"))?;
            out.push(("copy-in", Action::CopyIn(c)));
        }
        if let Some(c) = self.copy_out.take() {
            guest_path(&c.from, &k("copy-out.from"))?;
            out.push(("copy-out", Action::CopyOut(c)));
        }
        if let Some(c) = self.copy_image.take() {
            guest_path(&c.to, &k("copy-image.to"))?;
            out.push(("copy-image", Action::CopyImage(c)));
        }
        Ok(())
    }

    /// The machine actions: power, time, drives and boot order.
    fn machine_actions(
        &mut self,
        k: &dyn Fn(&str) -> String,
        out: &mut Vec<(&'static str, Action)>,
    ) -> Result<()> {
        for (flag, name, a) in [
            (self.reboot, "reboot", Action::Reboot),
            (self.shutdown, "shutdown", Action::Shutdown),
            (self.crash, "crash", Action::Crash),
            (
                self.wait_for_shutdown,
                "wait-for-shutdown",
                Action::WaitForShutdown,
            ),
        ] {
            match flag {
                Some(true) => out.push((name, a)),
                Some(false) => bail!("{}: write `{name} = true` or leave the step out", k(name)),
                None => {}
            }
        }
        if let Some(s) = self.sleep {
            out.push(("sleep", Action::Sleep(Duration::from_secs(s))));
        }
        if let Some(d) = self.remove_drive.take() {
            out.push(("remove-drive", Action::RemoveDrive(d)));
        }
        if let Some(b) = self.boot_from.take() {
            let t = if b == "network" {
                BootTarget::Network
            } else {
                BootTarget::Drive(b)
            };
            out.push(("boot-from", Action::BootFrom(t)));
        }
        if let Some(d) = self.drive_digest.take() {
            if let Some(h) = &d.sha256 {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!(
                        "{}: {h:?} is not a sha256 (64 hex digits)",
                        k("drive-digest.sha256")
                    );
                }
            }
            out.push(("drive-digest", Action::DriveDigest(d)));
        }
        Ok(())
    }

    /// Checks the step; `i` is its index, `base` the definition's directory.
    pub(super) fn check(mut self, i: usize, base: &Path) -> Result<Step> {
        let key = format!("step[{i}]");
        let expect = self.expectation(&key)?;
        let k = |n: &str| format!("{key}.{n}");
        let mut actions = Vec::new();
        self.command_actions(&k, expect.as_ref(), &mut actions)?;
        self.copy_actions(&k, base, &mut actions)?;
        self.machine_actions(&k, &mut actions)?;
        if actions.len() != 1 {
            let names: Vec<&str> = actions.iter().map(|(n, _)| *n).collect();
            bail!(
                "{key}: expected exactly one action ({ACTIONS}), found {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
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
        Action::RemoveDrive(d) => format!(" {d}"),
        Action::BootFrom(BootTarget::Drive(d)) => format!(" {d}"),
        Action::BootFrom(BootTarget::Network) => " network".into(),
        Action::DriveDigest(d) => format!(
            " {} {}",
            d.drive,
            if d.changed { "changed" } else { "unchanged" }
        ),
        Action::Reboot | Action::Shutdown | Action::Crash | Action::WaitForShutdown => {
            String::new()
        }
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
