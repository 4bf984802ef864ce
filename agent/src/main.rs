//! slipway-agent: the agent slipway puts into host images.
//!
//! Subcommands:
//! - `provision`: run once per boot by `slipway-provision.service`; decides the platform
//!   (`platform.rs`: the image's pin, else DMI), finds a config in the sources it trusts
//!   (QEMU fw_cfg, a config drive: slipway's own, or OpenStack's `config-2`) and
//!   applies it (once per distinct config; per-boot
//!   effects every boot). Problems are printed on /dev/console and stderr; it always
//!   exits 0 so a bad config never fails the boot.
//! - `check FILE`: validates a config on the build host; exit 0, or 2 with the key at
//!   fault.
//! - `test-agent [--port NAME | --device PATH]`: serves exec/read/write/ping requests
//!   over the virtio-serial port `/dev/virtio-ports/NAME` (default `org.slipway.test`,
//!   or `$SLIPWAY_TEST_AGENT_PORT`).
//! - `probe DEVICE`: prints the file-system type and label a config drive probe sees.
//! - `health`: the readiness check of `slipway-health.service` (see `ready.rs`): prints
//!   `slipway-health: ...` on the console once containerd answers, the network is online
//!   and provisioning is done; exit 1 with `slipway-health: NOT READY: ...` otherwise.
//! - `announce-ready`: run by `slipway-ready.service` once `slipway-ready.target` is
//!   reached: prints `slipway-ready` and the seconds since the kernel started.
//! - `update [--check | --reboot] [--timer] [--config FILE]`: one run of the update engine
//!   (`update/`, docs/updates.md) with the `[update]` section of FILE (a provisioning
//!   config; default `/etc/slipway/update.toml`): checks the channel, downloads and
//!   verifies the payload, writes the other slot, reboots as configured. Exit 0 when
//!   up to date, installed or refused (the reason is printed), 1 on a failure (a digest
//!   error writes nothing), 2 for a bad config. `--timer` (slipway-update.timer) checks
//!   only when the config's `interval` has passed since the last check.
//! - `status [--json]`: the running, pending and failed versions, every slot and the
//!   boot entries on the ESP.
//! - `bless`: records the running version as good (`slipway-bless.service`, once
//!   `boot-complete.target` is reached; systemd-bless-boot drops the UKI's counter).
//! - `gate`: on a trial boot, reboots when `boot-complete.target` will not be reached
//!   (`update/gate.rs`, `slipway-update-gate.service`).
//!
//! Install paths in an image (the image stage copies these):
//! - `/usr/lib/slipway/slipway-agent` (this static binary, mode 0755);
//! - `/usr/lib/systemd/system/slipway-provision.service` (from `rootfs/`), enabled
//!   by the symlink `/etc/systemd/system/sysinit.target.wants/slipway-provision.service`
//!   (or `systemctl --root=TREE enable`); on a read-only root the symlink can equally
//!   live in `/usr/lib/systemd/system/sysinit.target.wants/`;
//! - `/usr/lib/systemd/system/slipway-test-agent.service` (no [Install]; started by
//!   provision when the config has `[test-agent]`).
//!
//! The config format, sources and protocol are in docs/provisioning.md.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod http;
mod kubernetes;
mod metadata;
mod platform;
mod provision;
mod ready;
mod safe_write;
mod shipper;
mod source;
mod testagent;
mod update;

/// SHA-256 as 64 lower-case hex digits (the `sha2` crate; see decision 0029).
mod sha256 {
    use sha2::{Digest, Sha256};

    /// The digest of `data`.
    pub fn hex(data: &[u8]) -> String {
        format!("{:x}", Sha256::digest(data))
    }
}

use slipway_common::protocol;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: slipway-agent provision [--cloud]
       slipway-agent journal-shipper
       slipway-agent check FILE
       slipway-agent test-agent [--port NAME | --device PATH]
       slipway-agent probe DEVICE
       slipway-agent health
       slipway-agent announce-ready
       slipway-agent update [--check | --reboot] [--timer] [--config FILE]
       slipway-agent status [--json]
       slipway-agent bless
       slipway-agent gate
       slipway-agent --version";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match args.as_slice() {
        ["provision"] => provision(),
        ["provision", "--cloud"] => provision_cloud(),
        ["journal-shipper"] => journal_shipper(),
        ["check", file] => check(Path::new(file)),
        ["test-agent", rest @ ..] => test_agent(rest),
        ["probe", dev] => probe(Path::new(dev)),
        ["health"] => health(),
        ["announce-ready"] => announce_ready(),
        ["update", rest @ ..] => update_cmd(rest),
        ["status"] => status(false),
        ["status", "--json"] => status(true),
        ["bless"] => bless(),
        ["gate"] => gate(),
        ["--version"] => {
            println!("slipway-agent {}", env!("CARGO_PKG_VERSION"));
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

/// Prints `slipway-provision: LINE` on the console and on stderr (the journal).
fn say(console: &mut Option<File>, line: &str) {
    let line = format!("slipway-provision: {line}\n");
    if let Some(c) = console {
        let _ = c.write_all(line.as_bytes());
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// /dev/console, unless stderr already is the console (then every line would show twice).
fn open_console() -> Option<File> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let console = File::options().write(true).open("/dev/console").ok()?;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata());
    let same = match (console.metadata(), stderr) {
        (Ok(c), Ok(e)) => e.file_type().is_char_device() && c.rdev() == e.rdev(),
        _ => false,
    };
    (!same).then_some(console)
}

/// Written by `provision` when neither fw_cfg nor a config drive has a config: the
/// condition of `slipway-metadata.service` (`provision --cloud`, after the network).
const NO_LOCAL_CONFIG: &str = "/run/slipway/no-local-config";

fn provision() -> i32 {
    let mut console = open_console();
    let choice = decide_platform(&mut console);
    let mut notes = Vec::new();
    let found = source::find(choice.platform, &mut notes).map(|f| (f.source, f.bytes));
    for n in &notes {
        say(&mut console, n);
    }
    if found.is_none() {
        let _ = std::fs::remove_file(NO_LOCAL_CONFIG);
        if let Err(e) = provision::write_atomic(Path::new(NO_LOCAL_CONFIG), b"", 0o644, (0, 0)) {
            say(&mut console, &format!("warning: {e}"));
        }
        let trusted = choice.platform.sources();
        let line = if trusted.fw_cfg {
            "no config in fw_cfg or on a config drive; cloud metadata is tried once the network is up".to_string()
        } else if trusted.openstack_drive {
            "no config on an OpenStack config drive; its metadata service is tried once the network is up".to_string()
        } else {
            format!(
                "platform {} takes no config from fw_cfg or drives; its metadata service is tried once the network is up",
                choice.platform.name()
            )
        };
        say(&mut console, &line);
        return 0;
    }
    let _ = std::fs::remove_file(NO_LOCAL_CONFIG);
    let out = provision::run(Path::new("/"), found, &mut provision::Live);
    for l in &out.lines {
        say(&mut console, l);
    }
    record_outcome(&mut console, &out.lines, &choice);
    // Always 0: a bad config is reported, never a failed unit (see docs/provisioning.md).
    0
}

/// The platform (the image's pin, else DMI), said on the console with its reason.
fn decide_platform(console: &mut Option<File>) -> platform::Choice {
    let choice = platform::detect();
    for n in &choice.notes {
        say(console, n);
    }
    say(console, &choice.line());
    choice
}

/// Records that provisioning is done (applied, found nothing, or reported an error) in
/// `/run/slipway/provisioned`, with its last line and the platform that decided the
/// sources: what `ready` waits for (and prints).
fn record_outcome(console: &mut Option<File>, lines: &[String], choice: &platform::Choice) {
    let last = lines.last().map(String::as_str).unwrap_or("done");
    let record = format!(
        "{last} (platform {}: {})\n",
        choice.platform.name(),
        choice.reason
    );
    let path = Path::new(ready::PROVISIONED);
    if let Err(e) = provision::write_atomic(path, record.as_bytes(), 0o644, (0, 0)) {
        say(console, &format!("warning: {e}"));
    }
}

/// `health`: waits for the readiness conditions; a failed unit when one does not hold.
fn health() -> i32 {
    let (line, code) = match ready::check(Path::new("/")) {
        Ok(summary) => (format!("slipway-health: {summary}"), 0),
        Err(why) => (format!("slipway-health: NOT READY: {why}"), 1),
    };
    to_console_and_stdout(&line);
    code
}

/// `announce-ready`: the boot's readiness marker, with the kernel's uptime.
fn announce_ready() -> i32 {
    let up = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    to_console_and_stdout(&format!(
        "{} ({up} s after the kernel started)",
        ready::MARKER
    ));
    0
}

fn to_console_and_stdout(line: &str) {
    if let Some(mut c) = open_console() {
        let _ = writeln!(c, "{line}");
    }
    println!("{line}");
}

/// The metadata service's base URL: 169.254.169.254, or `$SLIPWAY_METADATA_URL` (tests
/// on the build host).
fn metadata_base() -> Result<http::Url, String> {
    match std::env::var("SLIPWAY_METADATA_URL") {
        Ok(u) if !u.is_empty() => {
            http::Url::parse(&u).map_err(|e| format!("SLIPWAY_METADATA_URL: {e}"))
        }
        _ => http::Url::parse(&format!("http://{}", metadata::ADDRESS)),
    }
}

/// `provision --cloud`: the metadata sources, then the same apply as `provision`. An
/// answer from a service the platform does not trust (GCE's protocol on a node that is
/// on AWS) is not used.
fn provision_cloud() -> i32 {
    let mut console = open_console();
    let choice = decide_platform(&mut console);
    let base = match metadata_base() {
        Ok(b) => b,
        Err(e) => {
            say(&mut console, &format!("ERROR: {e}"));
            record_outcome(&mut console, &[format!("ERROR: {e}")], &choice);
            return 0;
        }
    };
    let mut notes = Vec::new();
    let found = metadata::find(&base, &mut notes)
        .filter(|m| {
            let ok = choice.platform.accepts_metadata(&m.source);
            if !ok {
                notes.push(format!(
                    "ignoring cloud metadata from {}: platform {} reads {}",
                    m.source,
                    choice.platform.name(),
                    choice.platform.describe_sources()
                ));
            }
            ok
        })
        .map(|m| {
            notes.extend(m.notes.iter().cloned());
            notes.push(format!("cloud metadata from {}: {}", m.source, m.summary()));
            let text = metadata::config_text(&m, &mut notes);
            (m.source, text.into_bytes())
        });
    for n in &notes {
        say(&mut console, n);
    }
    let out = provision::run(Path::new("/"), found, &mut provision::Live);
    for l in &out.lines {
        say(&mut console, l);
    }
    record_outcome(&mut console, &out.lines, &choice);
    0
}

fn journal_shipper() -> i32 {
    let console = open_console();
    let url = std::env::var("SLIPWAY_SHIPPER_URL").unwrap_or_default();
    let index = std::env::var("SLIPWAY_SHIPPER_INDEX")
        .ok()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| config::DEFAULT_INDEX.to_string());
    let url = match http::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("slipway-journal-shipper: SLIPWAY_SHIPPER_URL: {e}");
            return 2;
        }
    };
    if let Err(e) = config::check_index(&index) {
        eprintln!("slipway-journal-shipper: SLIPWAY_SHIPPER_INDEX: {e}");
        return 2;
    }
    match shipper::run(&shipper::Settings { url, index }, console) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("slipway-journal-shipper: ERROR: {e}");
            1
        }
    }
}

/// `check FILE`: what the node would make of FILE, read only up to the node's limit
/// ([`source::MAX_CONFIG`]), so `check /dev/zero` fails at once.
fn check(file: &Path) -> i32 {
    let text = match source::read_limited(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return 2;
        }
    };
    let parsed = std::str::from_utf8(&text)
        .map_err(|_| "(top level): the config is not UTF-8 text (expected TOML)".to_string())
        .and_then(|t| config::parse(t).map_err(|e| e.to_string()));
    match parsed {
        Ok(_) => {
            println!("{}: ok (sha256 {})", file.display(), sha256::hex(&text));
            0
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            2
        }
    }
}

fn test_agent(args: &[&str]) -> i32 {
    let target = match args {
        [] => {
            let port = std::env::var("SLIPWAY_TEST_AGENT_PORT")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| protocol::DEFAULT_PORT.to_string());
            testagent::Target::Port(port)
        }
        ["--port", name] if !name.contains('/') => testagent::Target::Port(name.to_string()),
        ["--device", path] => testagent::Target::Device(PathBuf::from(path)),
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match testagent::serve(&target) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("slipway-test-agent: {e}");
            1
        }
    }
}

/// The root the update engine reads under: `/`, or `$SLIPWAY_UPDATE_ROOT` (tests on the
/// build host, where slots are files and nothing reboots).
fn update_root() -> PathBuf {
    std::env::var_os("SLIPWAY_UPDATE_ROOT")
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// The default `update --config`, under the root.
const UPDATE_CONFIG: &str = provision::UPDATE_CONF;

/// `update [--check | --reboot] [--config FILE]`.
fn update_cmd(args: &[&str]) -> i32 {
    let root = update_root();
    let mut mode = update::Mode::default();
    let mut file = root.join(UPDATE_CONFIG);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (*a, it.clone().next()) {
            ("--check", _) if !mode.reboot => mode.check = true,
            ("--reboot", _) if !mode.check => mode.reboot = true,
            ("--timer", _) => mode.timer = true,
            ("--config", Some(f)) => {
                file = PathBuf::from(f);
                it.next();
            }
            _ => {
                eprintln!("{USAGE}");
                return 2;
            }
        }
    }
    let settings = match update_settings(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("slipway-agent update: {}: {e}", file.display());
            return 2;
        }
    };
    let mut say = |l: String| println!("{l}");
    match update::update(&settings, &root, mode, &mut say) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("slipway-agent update: ERROR: {e}");
            1
        }
    }
}

/// The `[update]` settings of the config `file`.
fn update_settings(file: &Path) -> Result<update::settings::Settings, String> {
    source::read_limited(file)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string()))
        .and_then(|t| config::parse(&t).map_err(|e| e.to_string()))
        .and_then(|c| {
            c.update
                .ok_or_else(|| "has no [update] section".to_string())
        })
}

/// `gate`: the health gate's watchdog of a trial boot (`update::gate`), with the
/// `health-timeout` of /etc/slipway/update.toml (10 minutes without one). Its lines go
/// to the console and the journal.
fn gate() -> i32 {
    let file = update_root().join(UPDATE_CONFIG);
    let timeout = match update_settings(&file) {
        Ok(s) => s.health_timeout,
        Err(_) => update::settings::DEFAULT_HEALTH_TIMEOUT,
    };
    let mut console = open_console();
    let mut out = |l: String| {
        let line = format!("slipway-gate: {l}\n");
        if let Some(c) = &mut console {
            let _ = c.write_all(line.as_bytes());
        }
        let _ = std::io::stderr().write_all(line.as_bytes());
    };
    out(format!(
        "trial boot: {} must be reached within {} s",
        update::gate::GATE,
        timeout.as_secs()
    ));
    let poll = std::time::Duration::from_secs(1);
    match update::gate::watch(&mut update::gate::Live, timeout, poll, &mut out) {
        Ok(update::gate::Verdict::Healthy(t)) => {
            out(format!(
                "{} reached after {:.0} s: this boot is healthy",
                update::gate::GATE,
                t.as_secs_f64()
            ));
            0
        }
        Ok(update::gate::Verdict::Rebooted(_)) => 0,
        Err(e) => {
            out(format!("ERROR: {e}"));
            1
        }
    }
}

/// `status [--json]`.
fn status(json: bool) -> i32 {
    let root = update_root();
    let mut notes = Vec::new();
    match update::current(&root, &mut |l| notes.push(l)) {
        Ok((st, _, booted)) => {
            let entries = update::boot_entries(&root);
            if json {
                let mut v = update::status_json(&st, &booted);
                v["boot-entries"] = entries
                    .iter()
                    .map(|(n, w)| serde_json::json!({"file": n, "state": w}))
                    .collect();
                println!("{v}");
            } else {
                for l in notes.iter().chain(&update::status_text(&st, &booted)) {
                    println!("{l}");
                }
                for (n, w) in &entries {
                    println!("boot entry: {n} ({w})");
                }
            }
            0
        }
        Err(e) => {
            eprintln!("slipway-agent status: {e}");
            1
        }
    }
}

/// `bless`: the running slot's version is good.
fn bless() -> i32 {
    let root = update_root();
    let r = update::current(&root, &mut |l| println!("{l}")).and_then(|(mut st, run, _)| {
        let line = st.bless(&run)?;
        st.save(&root)?;
        Ok(line)
    });
    match r {
        Ok(l) => {
            println!("{l}");
            0
        }
        Err(e) => {
            eprintln!("slipway-agent bless: {e}");
            1
        }
    }
}

fn probe(dev: &Path) -> i32 {
    match File::open(dev) {
        Ok(f) => match source::probe(&f) {
            Some(p) => {
                println!("{} {}", p.fstype, p.label);
                0
            }
            None => {
                println!("unknown");
                1
            }
        },
        Err(e) => {
            eprintln!("{}: {e}", dev.display());
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` stops at the node's limit: an endless file fails at once, and a config
    /// the node would refuse for its size is refused here too.
    #[test]
    fn check_reads_at_most_the_nodes_limit() {
        assert_eq!(check(Path::new("/dev/zero")), 2);
        let d = provision::tests::tempfile_lite::Dir::new();
        let ok = "schema-version = 1\nhostname = \"n\"\n";
        let small = d.0.join("small.toml");
        std::fs::write(&small, ok).unwrap();
        assert_eq!(check(&small), 0);
        let big = d.0.join("big.toml");
        let padding = "# padding\n".repeat((5 << 20) / 10);
        std::fs::write(&big, format!("{ok}{padding}")).unwrap();
        assert_eq!(check(&big), 2);
        assert!(source::read_limited(&big)
            .unwrap_err()
            .to_string()
            .contains("4 MiB, the node's limit"));
    }
}
