//! `slipway-agent provision`: applies a config found by `source` to the running image.
//!
//! Consumes: the config bytes and the name of their source, a root directory (`/` on a
//! booted image, a temporary directory in tests) and a [`System`] for what cannot be
//! done by writing files (systemctl, sethostname, /proc/sys). Produces: files under the
//! root, the record `/var/lib/slipway/provisioned`, and the lines to print on the
//! console. Order: parse and validate everything, resolve owners and users in the
//! image's /etc/passwd, and only then write. A config whose sha256 is already recorded
//! is not written again (its files persist on /var and in the /etc overlay); only the
//! per-boot effects are repeated: the kernel host name, files under /run, `start`
//! units and the test agent. See docs/provisioning.md.

use crate::config::{self, Config, ConfigError, Owner};
use crate::safe_write;
use crate::sha256;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the sha256 of the applied config is recorded.
pub const STATE: &str = "var/lib/slipway/provisioned";
/// The sysctl.d file the `[sysctl]` table becomes.
pub const SYSCTL_CONF: &str = "etc/sysctl.d/90-slipway-provision.conf";
/// Where the `[update]` table goes (`slipway-agent update`'s default `--config`).
pub const UPDATE_CONF: &str = "etc/slipway/update.toml";
/// The environment file that tells `slipway-test-agent.service` its port (per boot).
pub const TEST_AGENT_ENV: &str = "run/slipway/test-agent.env";
/// The test agent's unit.
pub const TEST_AGENT_UNIT: &str = "slipway-test-agent.service";
/// The environment file that tells `slipway-journal-shipper.service` where to send.
pub const SHIPPER_ENV: &str = "run/slipway/journal-shipper.env";
/// The journal shipper's unit.
pub const SHIPPER_UNIT: &str = "slipway-journal-shipper.service";
/// Where SSH keys go on an image without sshd (whose home directories, like /root, are
/// on the read-only root): one file per user in the /etc overlay, the layout sshd reads
/// with `AuthorizedKeysFile /etc/ssh/authorized_keys/%u`.
pub const KEYS_WITHOUT_SSHD: &str = "etc/ssh/authorized_keys";

/// The effects that are not files under the root.
pub trait System {
    /// Runs `systemctl ARGS`.
    fn systemctl(&mut self, args: &[&str]) -> Result<(), String>;
    /// Sets the kernel's host name.
    fn set_hostname(&mut self, name: &str) -> Result<(), String>;
    /// Writes `value` to /proc/sys/`proc_path`.
    fn write_sysctl(&mut self, proc_path: &str, value: &str) -> Result<(), String>;
}

/// The running system.
pub struct Live;

impl System for Live {
    fn systemctl(&mut self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("systemctl")
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running systemctl {}: {e}", args.join(" ")))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            stderr.trim()
        ))
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), String> {
        nix::unistd::sethostname(name).map_err(|e| format!("sethostname {name:?}: {e}"))
    }

    fn write_sysctl(&mut self, proc_path: &str, value: &str) -> Result<(), String> {
        let p = Path::new("/proc/sys").join(proc_path);
        fs::write(&p, value).map_err(|e| format!("writing {}: {e}", p.display()))
    }
}

/// A config with the image lookups done.
#[derive(Debug)]
pub struct Resolved {
    cfg: Config,
    /// (uid, gid) for each of `cfg.files`.
    owners: Vec<(u32, u32)>,
    /// One authorized_keys file per user, in order of first appearance.
    ssh: Vec<AuthorizedKeys>,
    /// Set when keys are configured but the image has no sshd.
    no_sshd: bool,
}

#[derive(Debug)]
struct AuthorizedKeys {
    home: PathBuf,
    uid: u32,
    gid: u32,
    lines: Vec<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn read_passwd(root: &Path) -> Vec<PasswdEntry> {
    let text = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5)?.to_string(),
            })
        })
        .collect()
}

/// Looks up owners and ssh users in the image's /etc/passwd.
pub fn resolve(root: &Path, cfg: Config) -> Result<Resolved, ConfigError> {
    let passwd = read_passwd(root);
    let lookup = |name: &str, key: String| {
        passwd.iter().find(|e| e.name == name).ok_or(ConfigError {
            key,
            msg: format!("user {name:?} does not exist in the image's /etc/passwd"),
        })
    };
    let mut owners = Vec::new();
    for f in &cfg.files {
        owners.push(match &f.owner {
            Owner::Ids(u, g) => (*u, *g),
            Owner::Name(n) => {
                let e = lookup(n, format!("{}.owner", f.key))?;
                (e.uid, e.gid)
            }
        });
    }
    let mut ssh: Vec<(String, AuthorizedKeys)> = Vec::new();
    for k in &cfg.ssh_keys {
        let e = lookup(&k.user, format!("{}.user", k.key_path))?;
        if !e.home.starts_with('/') || e.home == "/" || e.home.contains("..") {
            return Err(ConfigError {
                key: format!("{}.user", k.key_path),
                msg: format!(
                    "user {:?} has no usable home directory ({:?})",
                    k.user, e.home
                ),
            });
        }
        if root.join("usr/sbin/sshd").exists() && !on_writable_fs(root, Path::new(&e.home)) {
            return Err(ConfigError {
                key: format!("{}.user", k.key_path),
                msg: format!(
                    "the home directory of {:?}, {}, is on the read-only root file system \
                     (expected it under /etc, /var or /run, or a symlink there)",
                    k.user, e.home
                ),
            });
        }
        match ssh.iter_mut().find(|(u, _)| *u == k.user) {
            Some((_, a)) => a.lines.push(k.key.clone()),
            None => ssh.push((
                k.user.clone(),
                AuthorizedKeys {
                    home: PathBuf::from(&e.home),
                    uid: e.uid,
                    gid: e.gid,
                    lines: vec![k.key.clone()],
                },
            )),
        }
    }
    let no_sshd = !cfg.ssh_keys.is_empty() && !root.join("usr/sbin/sshd").exists();
    Ok(Resolved {
        cfg,
        owners,
        ssh: ssh.into_iter().map(|(_, a)| a).collect(),
        no_sshd,
    })
}

/// True when `path` (absolute in the image), or the nearest ancestor that exists, lies
/// under /etc, /var or /run once symlinks are followed: the only writable places.
fn on_writable_fs(root: &Path, path: &Path) -> bool {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut p = under(&root, path);
    loop {
        if let Ok(c) = fs::canonicalize(&p) {
            let rel = c.strip_prefix(&root).unwrap_or(&c);
            let rel = rel.strip_prefix("/").unwrap_or(rel);
            return ["etc", "var", "run"].iter().any(|d| rel.starts_with(d));
        }
        if !p.pop() {
            return false;
        }
    }
}

/// `path` (absolute in the image) under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Writes `data` to `path` atomically and symlink-safely (see `safe_write`): a fresh
/// temp file beside it, owner, mode, fsync, rename. Missing parent directories are
/// created 0755.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, owner: (u32, u32)) -> Result<(), String> {
    safe_write::write(Path::new("/"), path, data, mode, owner)
}

/// [`write_atomic`] for `path` (absolute in the image) under `root`.
fn write_in(
    root: &Path,
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: (u32, u32),
) -> Result<(), String> {
    safe_write::write(root, path, data, mode, owner)
}

/// `/REL`: a root-relative constant as a path in the image.
fn in_image(rel: &str) -> PathBuf {
    Path::new("/").join(rel)
}

/// `~user/.ssh/authorized_keys`: `.ssh` opened (or created) without following a symlink
/// the user may have planted there, then owned by the user and 0700 through its fd, and
/// the file written in it.
fn write_authorized_keys(root: &Path, a: &AuthorizedKeys) -> Result<(), String> {
    let ssh = safe_write::open_dir(root, &a.home.join(".ssh"), Some(0o755))?;
    ssh.set_owner_mode((a.uid, a.gid), 0o700)?;
    let text = a.lines.join("\n") + "\n";
    ssh.write_file(
        std::ffi::OsStr::new("authorized_keys"),
        text.as_bytes(),
        0o600,
        (a.uid, a.gid),
    )
}

/// What one run did, as console lines (without the `slipway-provision: ` prefix).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lines to print, in order; errors start with `ERROR: `, warnings with `warning: `.
    pub lines: Vec<String>,
}

impl Outcome {
    fn error(&mut self, source: &str, what: impl std::fmt::Display) {
        self.lines.push(format!("ERROR: {source}: {what}"));
    }
}

/// Provisions from `found` (source name, config bytes), or reports that there is none.
pub fn run(root: &Path, found: Option<(String, Vec<u8>)>, sys: &mut dyn System) -> Outcome {
    let mut out = Outcome::default();
    let Some((source, bytes)) = found else {
        out.lines.push(
            "no config found (looked in fw_cfg, config drives labelled SLIPWAY, cidata or config-2, and cloud metadata)"
                .into(),
        );
        return out;
    };
    let digest = sha256::hex(&bytes);
    let checked = std::str::from_utf8(&bytes)
        .map_err(|_| ConfigError {
            key: "(top level)".into(),
            msg: "the config is not UTF-8 text (expected TOML)".into(),
        })
        .and_then(config::parse)
        .and_then(|cfg| resolve(root, cfg));
    let res = match checked {
        Ok(r) => r,
        Err(e) => {
            out.error(&source, e);
            out.lines.push(format!(
                "config from {source} (sha256 {}) not applied; nothing of it was changed",
                &digest[..12]
            ));
            return out;
        }
    };
    let recorded = fs::read_to_string(root.join(STATE)).unwrap_or_default();
    let again = recorded.lines().next() == Some(&format!("sha256 {digest}"));
    let mut done = Vec::new();
    let once_ok = again || apply_once(root, &res, &source, sys, &mut out, &mut done);
    let boot_ok = apply_every_boot(root, &res, &source, again, sys, &mut out, &mut done);
    let failed = !once_ok || !boot_ok;
    // Only the persistent part decides "applied": a unit that fails to start must not
    // make every later boot rewrite the files (and undo local edits).
    if !again && once_ok {
        let record = format!("sha256 {digest}\nsource {source}\n");
        if let Err(e) = write_in(root, &in_image(STATE), record.as_bytes(), 0o644, (0, 0)) {
            out.error(&source, e);
        }
    }
    let what = if done.is_empty() {
        "nothing to do".to_string()
    } else {
        done.join(", ")
    };
    let short = &digest[..12];
    out.lines.push(match (again, failed) {
        (false, false) => format!("applied config from {source} (sha256 {short}...): {what}"),
        (false, true) => format!(
            "applied config from {source} (sha256 {short}...) with errors (see above): {what}"
        ),
        (true, _) => {
            format!("config from {source} (sha256 {short}...) already applied; this boot: {what}")
        }
    });
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The persistent part: /etc/hostname, files, authorized_keys, sysctl.d, enabled units.
/// Returns false if anything failed (each failure is reported and the rest still runs).
fn apply_once(
    root: &Path,
    res: &Resolved,
    source: &str,
    sys: &mut dyn System,
    out: &mut Outcome,
    done: &mut Vec<String>,
) -> bool {
    let cfg = &res.cfg;
    let mut ok = true;
    let mut check = |r: Result<(), String>, out: &mut Outcome| {
        if let Err(e) = r {
            out.error(source, e);
            ok = false;
        }
    };
    if let Some(h) = &cfg.hostname {
        let r = write_in(
            root,
            Path::new("/etc/hostname"),
            format!("{h}\n").as_bytes(),
            0o644,
            (0, 0),
        );
        check(r.map_err(|e| format!("hostname: {e}")), out);
    }
    let mut files = 0;
    for (f, owner) in cfg.files.iter().zip(&res.owners) {
        if f.path.starts_with("/run") {
            continue; // written at every boot
        }
        let r = write_in(root, &f.path, &f.content, f.mode, *owner);
        files += usize::from(r.is_ok());
        check(r.map_err(|e| format!("{}: {e}", f.key)), out);
    }
    if files > 0 {
        done.push(plural(files, "file", "files"));
    }
    if let Some(text) = &cfg.update_file {
        // It may hold the registry's password: root only.
        let r = write_in(root, &in_image(UPDATE_CONF), text.as_bytes(), 0o600, (0, 0));
        check(r.map_err(|e| format!("update: {e}")), out);
        done.push("update settings".into());
    }
    if res.no_sshd {
        // No sshd, and homes may be on the read-only root: keep the keys in the /etc
        // overlay, where an sshd added later (AuthorizedKeysFile
        // /etc/ssh/authorized_keys/%u) or another login service finds them.
        let mut users: Vec<&str> = Vec::new();
        for k in &cfg.ssh_keys {
            if !users.contains(&k.user.as_str()) {
                users.push(&k.user);
            }
        }
        for user in users {
            let text: String = cfg
                .ssh_keys
                .iter()
                .filter(|k| k.user == user)
                .map(|k| format!("{}\n", k.key))
                .collect();
            let path = in_image(KEYS_WITHOUT_SSHD).join(user);
            let r = write_in(root, &path, text.as_bytes(), 0o644, (0, 0));
            check(r.map_err(|e| format!("ssh-authorized-key: {e}")), out);
            out.lines.push(format!(
                "{source}: ssh keys for {user} written to /{KEYS_WITHOUT_SSHD}/{user} (the image has no sshd)"
            ));
        }
        done.push(plural(cfg.ssh_keys.len(), "ssh key", "ssh keys"));
    } else if !res.ssh.is_empty() {
        for a in &res.ssh {
            let r = write_authorized_keys(root, a);
            check(r.map_err(|e| format!("ssh-authorized-key: {e}")), out);
        }
        done.push(plural(cfg.ssh_keys.len(), "ssh key", "ssh keys"));
    }
    if !cfg.sysctl.is_empty() {
        let mut text =
            String::from("# Written by slipway-provision from the provisioning config.\n");
        for s in &cfg.sysctl {
            text.push_str(&format!("{} = {}\n", s.key, s.value));
        }
        check(
            write_in(root, &in_image(SYSCTL_CONF), text.as_bytes(), 0o644, (0, 0))
                .map_err(|e| format!("sysctl: {e}")),
            out,
        );
        for s in &cfg.sysctl {
            // A key whose module is not loaded yet is set by systemd-sysctl later.
            if let Err(e) = sys.write_sysctl(&s.proc_path, &s.value) {
                out.lines.push(format!(
                    "warning: {source}: sysctl.{:?}: {e} (left to systemd-sysctl)",
                    s.key
                ));
            }
        }
        done.push(plural(cfg.sysctl.len(), "sysctl", "sysctls"));
    }
    let unit_files = cfg
        .files
        .iter()
        .any(|f| f.path.starts_with("/etc/systemd") || f.path.starts_with("/run/systemd"));
    if !cfg.enable.is_empty() {
        // `systemctl enable` reloads the manager, which also picks up new unit files.
        let mut args = vec!["enable"];
        args.extend(cfg.enable.iter().map(String::as_str));
        check(
            sys.systemctl(&args)
                .map_err(|e| format!("systemd.enable: {e}")),
            out,
        );
        done.push(plural(cfg.enable.len(), "unit enabled", "units enabled"));
    } else if unit_files {
        check(
            sys.systemctl(&["daemon-reload"])
                .map_err(|e| format!("file: {e}")),
            out,
        );
    }
    ok
}

/// The per-boot part: the kernel host name, /run files, starting units.
fn apply_every_boot(
    root: &Path,
    res: &Resolved,
    source: &str,
    again: bool,
    sys: &mut dyn System,
    out: &mut Outcome,
    done: &mut Vec<String>,
) -> bool {
    let cfg = &res.cfg;
    let mut ok = true;
    if let Some(h) = &cfg.hostname {
        match sys.set_hostname(h) {
            Ok(()) => done.insert(0, "hostname".into()),
            Err(e) => {
                out.error(source, format!("hostname: {e}"));
                ok = false;
            }
        }
    }
    let mut run_files = 0;
    for (f, owner) in cfg.files.iter().zip(&res.owners) {
        if !f.path.starts_with("/run") {
            continue;
        }
        match write_in(root, &f.path, &f.content, f.mode, *owner) {
            Ok(()) => run_files += 1,
            Err(e) => {
                out.error(source, format!("{}: {e}", f.key));
                ok = false;
            }
        }
    }
    if run_files > 0 {
        done.push(plural(run_files, "file under /run", "files under /run"));
    }
    // Units enabled now were not part of this boot's transaction: start them too.
    let mut start: Vec<&str> = Vec::new();
    if !again {
        start.extend(cfg.enable.iter().map(String::as_str));
    }
    start.extend(cfg.start.iter().map(String::as_str));
    if let Some(port) = &cfg.test_agent {
        // Its own call, so a broken user unit cannot keep the test agent from starting.
        let env = format!("SLIPWAY_TEST_AGENT_PORT={port}\n");
        let r = write_in(
            root,
            &in_image(TEST_AGENT_ENV),
            env.as_bytes(),
            0o644,
            (0, 0),
        )
        .and_then(|()| sys.systemctl(&["--no-block", "start", TEST_AGENT_UNIT]));
        match r {
            Ok(()) => done.push(format!("test agent on {port}")),
            Err(e) => {
                out.error(source, format!("test-agent: {e}"));
                ok = false;
            }
        }
    }
    if let Some(j) = &cfg.journal_shipper {
        // It may hold credentials: root only.
        let env = crate::shipper::env_file(j);
        let r = write_in(root, &in_image(SHIPPER_ENV), env.as_bytes(), 0o600, (0, 0))
            .and_then(|()| sys.systemctl(&["--no-block", "start", SHIPPER_UNIT]));
        match r {
            Ok(()) => done.push(format!("journal shipper to {}", j.url)),
            Err(e) => {
                out.error(source, format!("journal-shipper: {e}"));
                ok = false;
            }
        }
    }
    if !start.is_empty() {
        let mut args = vec!["--no-block", "start"];
        args.extend(start.iter().copied());
        if let Err(e) = sys.systemctl(&args) {
            out.error(source, format!("systemd.start: {e}"));
            ok = false;
        }
        if !cfg.start.is_empty() {
            done.push(plural(cfg.start.len(), "unit started", "units started"));
        }
    }
    ok
}

/// Also used by other modules' tests (metadata) to apply what they found.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A system that records what provisioning asked of it.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub(crate) calls: Vec<String>,
        fail_systemctl: bool,
        fail_start: bool,
    }

    impl System for Fake {
        fn systemctl(&mut self, args: &[&str]) -> Result<(), String> {
            self.calls.push(format!("systemctl {}", args.join(" ")));
            if self.fail_systemctl || (self.fail_start && args.contains(&"start")) {
                return Err("no bus".into());
            }
            Ok(())
        }
        fn set_hostname(&mut self, name: &str) -> Result<(), String> {
            self.calls.push(format!("sethostname {name}"));
            Ok(())
        }
        fn write_sysctl(&mut self, p: &str, v: &str) -> Result<(), String> {
            self.calls.push(format!("sysctl {p}={v}"));
            Ok(())
        }
    }

    /// A root with /etc/passwd (root, alice) and an sshd.
    pub(crate) fn image() -> tempfile_lite::Dir {
        let d = tempfile_lite::Dir::new();
        fs::create_dir_all(d.0.join("etc")).unwrap();
        fs::create_dir_all(d.0.join("var")).unwrap();
        fs::write(
            d.0.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/var/home/alice:/bin/sh\n",
        )
        .unwrap();
        fs::create_dir_all(d.0.join("usr/sbin")).unwrap();
        fs::write(d.0.join("usr/sbin/sshd"), "").unwrap();
        d
    }

    /// A directory removed on drop (the agent crate has no dev-dependencies).
    pub(crate) mod tempfile_lite {
        use std::path::PathBuf;
        pub struct Dir(pub PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "slipway-agent-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const CONFIG: &str = r#"schema-version = 1
hostname = "node-1"
[[file]]
path = "/etc/app/app.conf"
mode = "0640"
owner = "alice"
content = "x = 1\n"
[[file]]
path = "/run/app/flag"
content = ""
[[ssh-authorized-key]]
user = "alice"
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 alice@laptop"
[systemd]
enable = ["app.service"]
start = ["other.service"]
[sysctl]
"vm.swappiness" = 10
[test-agent]
"#;

    fn found(text: &str) -> Option<(String, Vec<u8>)> {
        Some(("fw_cfg".into(), text.as_bytes().to_vec()))
    }

    #[test]
    fn first_boot_applies_everything_and_records_the_digest() {
        let img = image();
        let root = &img.0;
        let mut sys = Fake::default();
        let out = run(root, found(CONFIG), &mut sys);
        let last = out.lines.last().unwrap();
        assert!(
            last.starts_with(&format!(
                "applied config from fw_cfg (sha256 {}...): hostname, 1 file, 1 ssh key, 1 sysctl, 1 unit enabled",
                &sha256::hex(CONFIG.as_bytes())[..12]
            )),
            "{out:?}"
        );
        assert_eq!(out.lines.len(), 1, "{out:?}");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "node-1\n"
        );
        let conf = root.join("etc/app/app.conf");
        let m = fs::metadata(&conf).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1000, 1001));
        assert_eq!(
            fs::metadata(root.join("etc/app")).unwrap().mode() & 0o7777,
            0o755
        );
        assert!(root.join("run/app/flag").exists());
        let keys = root.join("var/home/alice/.ssh/authorized_keys");
        assert_eq!(
            fs::read_to_string(&keys).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 alice@laptop\n"
        );
        assert_eq!(fs::metadata(&keys).unwrap().mode() & 0o777, 0o600);
        let ssh = fs::metadata(root.join("var/home/alice/.ssh")).unwrap();
        assert_eq!((ssh.mode() & 0o777, ssh.uid()), (0o700, 1000));
        assert!(fs::read_to_string(root.join(SYSCTL_CONF))
            .unwrap()
            .contains("vm.swappiness = 10\n"));
        assert_eq!(
            fs::read_to_string(root.join(TEST_AGENT_ENV)).unwrap(),
            "SLIPWAY_TEST_AGENT_PORT=org.slipway.test\n"
        );
        assert_eq!(
            sys.calls,
            [
                "sysctl vm/swappiness=10",
                "systemctl enable app.service",
                "sethostname node-1",
                "systemctl --no-block start slipway-test-agent.service",
                "systemctl --no-block start app.service other.service",
            ]
        );
        assert!(fs::read_to_string(root.join(STATE))
            .unwrap()
            .starts_with(&format!("sha256 {}\n", sha256::hex(CONFIG.as_bytes()))));
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(root.join("etc/app"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["app.conf"]);
    }

    /// `[update]` goes to /etc/slipway/update.toml, root only, where `update` reads it.
    #[test]
    fn the_update_table_becomes_the_update_config() {
        let img = image();
        let root = &img.0;
        let text = "schema-version = 1\n[update]\nrepository = \"10.0.2.2:5000/fleet/host\"\ntag = \"stable\"\nca-file = \"/etc/ssl/reg.pem\"\npassword = \"s3cret\"\nusername = \"n\"\n";
        let out = run(root, found(text), &mut Fake::default());
        assert!(
            out.lines.last().unwrap().contains(": update settings"),
            "{out:?}"
        );
        let p = root.join(UPDATE_CONF);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let back = crate::config::parse(&fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back.update, crate::config::parse(text).unwrap().update);
        assert!(back.hostname.is_none());
    }

    #[test]
    fn the_same_config_is_not_applied_twice_but_per_boot_effects_repeat() {
        let img = image();
        let root = &img.0;
        run(root, found(CONFIG), &mut Fake::default());
        // The admin edits a provisioned file; the next boot must not undo it.
        fs::write(root.join("etc/app/app.conf"), "edited\n").unwrap();
        fs::remove_dir_all(root.join("run")).unwrap(); // /run is a tmpfs
        let mut sys = Fake::default();
        let out = run(root, found(CONFIG), &mut sys);
        assert!(
            out.lines.last().unwrap().contains(
                "already applied; this boot: hostname, 1 file under /run, test agent on org.slipway.test, 1 unit started"
            ),
            "{out:?}"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/app/app.conf")).unwrap(),
            "edited\n"
        );
        assert!(root.join("run/app/flag").exists());
        assert!(root.join(TEST_AGENT_ENV).exists());
        assert_eq!(
            sys.calls,
            [
                "sethostname node-1",
                "systemctl --no-block start slipway-test-agent.service",
                "systemctl --no-block start other.service",
            ]
        );
        // A different config is applied again.
        let changed = CONFIG.replace("x = 1", "x = 2");
        let out = run(root, found(&changed), &mut Fake::default());
        assert!(
            out.lines.last().unwrap().starts_with("applied config"),
            "{out:?}"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/app/app.conf")).unwrap(),
            "x = 2\n"
        );
    }

    #[test]
    fn a_bad_config_changes_nothing_and_names_the_key() {
        let img = image();
        let root = &img.0;
        let bad = CONFIG.replace("owner = \"alice\"", "owner = \"bob\"");
        let mut sys = Fake::default();
        let out = run(root, found(&bad), &mut sys);
        assert_eq!(
            out.lines[0],
            "ERROR: fw_cfg: file[0].owner: user \"bob\" does not exist in the image's /etc/passwd"
        );
        assert!(out.lines[1].contains("not applied"), "{out:?}");
        assert!(sys.calls.is_empty());
        assert!(!root.join("etc/hostname").exists());
        assert!(!root.join("run").exists());
        assert!(!root.join(STATE).exists());

        let out = run(
            root,
            found("schema-version = 1\n[sysctl]\n\"a..b\" = 1\n"),
            &mut sys,
        );
        assert!(
            out.lines[0].starts_with("ERROR: fw_cfg: sysctl.\"a..b\": "),
            "{out:?}"
        );
        let out = run(
            root,
            Some(("config drive /dev/vdb".into(), vec![0xff])),
            &mut sys,
        );
        assert!(out.lines[0]
            .starts_with("ERROR: config drive /dev/vdb: (top level): the config is not UTF-8"));
    }

    /// A config whose only fault is the shipper's URL: none of the rest (host name, test
    /// agent) is applied either, and the error names the key and the value. The boot
    /// that shows a rejected config fails no unit is qemu/provisioning-broken.toml.
    #[test]
    fn a_malformed_shipper_url_rejects_the_whole_config() {
        let img = image();
        let root = &img.0;
        let text = "schema-version = 1\nhostname = \"bad-1\"\n[test-agent]\n\
                    [journal-shipper]\nurl = \"http//logs.example:9200/_bulk\"\n";
        let mut sys = Fake::default();
        let out = run(root, found(text), &mut sys);
        assert!(
            out.lines[0].starts_with(
                "ERROR: fw_cfg: journal-shipper.url: \"http//logs.example:9200/_bulk\" is not an http:// URL"
            ),
            "{out:?}"
        );
        let digest = sha256::hex(text.as_bytes());
        assert_eq!(
            out.lines[1],
            format!(
                "config from fw_cfg (sha256 {}) not applied; nothing of it was changed",
                &digest[..12]
            )
        );
        assert_eq!(out.lines.len(), 2, "{out:?}");
        assert!(sys.calls.is_empty(), "{:?}", sys.calls);
        for p in ["etc/hostname", SHIPPER_ENV, TEST_AGENT_ENV, STATE] {
            assert!(!root.join(p).exists(), "{p} was written");
        }
    }

    /// Symlinks planted where provisioning writes, by a user who owns the directory
    /// (alice's home) or at the temp names it used to take (`.NAME.tmp-PID`): none is
    /// followed; what they point at is untouched, and the rest of the config applies.
    #[test]
    fn planted_symlinks_are_not_followed() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let img = image();
        let root = &img.0;
        let outside = tempfile_lite::Dir::new();
        let victim_dir = outside.0.join("victim-dir");
        fs::create_dir_all(&victim_dir).unwrap();
        fs::set_permissions(&victim_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let victim = outside.0.join("victim");
        fs::write(&victim, "keep\n").unwrap();
        // alice's home is hers; she points ~/.ssh at a directory of root's.
        let home = root.join("var/home/alice");
        fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(1000), Some(1001)).unwrap();
        symlink(&victim_dir, home.join(".ssh")).unwrap();
        // The temp names of /etc/hostname and /etc/app/app.conf before this change.
        let pid = std::process::id();
        fs::create_dir_all(root.join("etc/app")).unwrap();
        for tmp in [
            format!("etc/.hostname.tmp-{pid}"),
            format!("etc/app/.app.conf.tmp-{pid}"),
        ] {
            symlink(&victim, root.join(tmp)).unwrap();
        }
        let out = run(root, found(CONFIG), &mut Fake::default());
        assert_eq!(
            out.lines[0],
            "ERROR: fw_cfg: ssh-authorized-key: /var/home/alice/.ssh: refusing to follow the \
             symlink /var/home/alice/.ssh (not root's own, in a directory only root may write)",
            "{out:?}"
        );
        let m = fs::metadata(&victim_dir).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o7777),
            (0, 0o755),
            "chowned through ~/.ssh"
        );
        assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "node-1\n"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/app/app.conf")).unwrap(),
            "x = 1\n"
        );
        assert!(
            fs::symlink_metadata(root.join(format!("etc/.hostname.tmp-{pid}")))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        // A real ~/.ssh with authorized_keys planted as a symlink: replaced, not written
        // through.
        fs::remove_file(home.join(".ssh")).unwrap();
        fs::create_dir(home.join(".ssh")).unwrap();
        std::os::unix::fs::chown(home.join(".ssh"), Some(1000), Some(1001)).unwrap();
        symlink(&victim, home.join(".ssh/authorized_keys")).unwrap();
        let changed = CONFIG.replace("x = 1", "x = 2");
        let out = run(root, found(&changed), &mut Fake::default());
        assert!(
            out.lines.last().unwrap().starts_with("applied config"),
            "{out:?}"
        );
        let keys = fs::symlink_metadata(home.join(".ssh/authorized_keys")).unwrap();
        assert!(keys.file_type().is_file());
        assert_eq!((keys.uid(), keys.mode() & 0o777), (1000, 0o600));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");

        // Without sshd: /etc/ssh/authorized_keys/root planted as a symlink.
        fs::remove_file(root.join("usr/sbin/sshd")).unwrap();
        fs::create_dir_all(root.join("etc/ssh/authorized_keys")).unwrap();
        symlink(&victim, root.join("etc/ssh/authorized_keys/root")).unwrap();
        let text =
            "schema-version = 1\n[[ssh-authorized-key]]\nuser = \"root\"\nkey = \"ssh-rsa AAAA\"\n";
        let out = run(root, found(text), &mut Fake::default());
        assert!(
            out.lines.last().unwrap().starts_with("applied config"),
            "{out:?}"
        );
        let keys = root.join("etc/ssh/authorized_keys/root");
        assert!(fs::symlink_metadata(&keys).unwrap().file_type().is_file());
        assert_eq!(fs::read_to_string(&keys).unwrap(), "ssh-rsa AAAA\n");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
    }

    /// No config anywhere (what `provision --cloud` hands on when no metadata service
    /// answered): one line that says where it looked, and nothing is touched.
    #[test]
    fn no_config_is_said_and_nothing_changes() {
        let img = image();
        let root = &img.0;
        let mut sys = Fake::default();
        let out = run(root, None, &mut sys);
        assert_eq!(
            out.lines,
            ["no config found (looked in fw_cfg, config drives labelled SLIPWAY, cidata or config-2, and cloud metadata)"]
        );
        assert!(sys.calls.is_empty(), "{:?}", sys.calls);
        for p in ["etc/hostname", SHIPPER_ENV, TEST_AGENT_ENV, STATE] {
            assert!(!root.join(p).exists(), "{p} was written");
        }
    }

    #[test]
    fn failures_while_applying_are_reported_and_retried_next_boot() {
        let img = image();
        let root = &img.0;
        let mut sys = Fake {
            fail_systemctl: true,
            ..Fake::default()
        };
        let out = run(root, found(CONFIG), &mut sys);
        assert!(
            out.lines[0].starts_with("ERROR: fw_cfg: systemd.enable: no bus"),
            "{out:?}"
        );
        assert!(out.lines.last().unwrap().contains("with errors"), "{out:?}");
        assert!(!root.join(STATE).exists());

        // A unit that fails to start is reported, but the files count as applied.
        let mut sys = Fake {
            fail_start: true,
            ..Fake::default()
        };
        let out = run(root, found(CONFIG), &mut sys);
        assert!(
            out.lines
                .contains(&"ERROR: fw_cfg: test-agent: no bus".to_string()),
            "{out:?}"
        );
        assert!(out.lines.last().unwrap().contains("with errors"), "{out:?}");
        assert!(root.join(STATE).exists());
    }

    #[test]
    fn the_journal_shipper_is_started_every_boot_with_its_settings() {
        let img = image();
        let root = &img.0;
        let text = "schema-version = 1\n[journal-shipper]\nurl = \"http://10.0.0.5:9200/_bulk\"\nindex = \"node-logs\"\n";
        for _boot in 0..2 {
            let mut sys = Fake::default();
            let out = run(root, found(text), &mut sys);
            assert!(
                out.lines
                    .last()
                    .unwrap()
                    .ends_with(": journal shipper to http://10.0.0.5:9200/_bulk"),
                "{out:?}"
            );
            assert_eq!(
                sys.calls,
                ["systemctl --no-block start slipway-journal-shipper.service"]
            );
            assert_eq!(
                fs::read_to_string(root.join(SHIPPER_ENV)).unwrap(),
                "SLIPWAY_SHIPPER_URL=\"http://10.0.0.5:9200/_bulk\"\nSLIPWAY_SHIPPER_INDEX=\"node-logs\"\n"
            );
            fs::remove_file(root.join(SHIPPER_ENV)).unwrap();
        }
    }

    #[test]
    fn keys_without_sshd_go_to_the_etc_overlay_and_no_config_is_said() {
        let img = image();
        let root = &img.0;
        fs::remove_file(root.join("usr/sbin/sshd")).unwrap();
        let text =
            "schema-version = 1\n[[ssh-authorized-key]]\nuser = \"root\"\nkey = \"ssh-rsa AAAA\"\n\
                    [[ssh-authorized-key]]\nuser = \"root\"\nkey = \"ssh-ed25519 AAAB x\"\n";
        let out = run(root, found(text), &mut Fake::default());
        assert!(
            out.lines[0].contains("ssh keys for root written to /etc/ssh/authorized_keys/root"),
            "{out:?}"
        );
        let keys = root.join("etc/ssh/authorized_keys/root");
        assert_eq!(
            fs::read_to_string(&keys).unwrap(),
            "ssh-rsa AAAA\nssh-ed25519 AAAB x\n"
        );
        assert_eq!(fs::metadata(&keys).unwrap().mode() & 0o777, 0o644);
        assert!(!root.join("root/.ssh").exists());
        let out = run(root, None, &mut Fake::default());
        assert_eq!(out.lines.len(), 1);
        assert!(out.lines[0].starts_with("no config found"));
    }
}
