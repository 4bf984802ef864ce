//! The update engine (`slipway-agent update`, `status`, `bless`): consumes the
//! `[update]` settings, the node's slots and its state; produces a new version in the
//! other slot, written in the safe order, and the state that says so. One run:
//!
//! 1. [`state`]: bring the state up to date with the running boot (a version the node
//!    is no longer running after a reboot rolled back: it is marked bad);
//! 2. [`registry`]: fetch the manifest of the channel tag or pinned digest, and
//!    [`payload`]: check it;
//! 3. [`State::decide`]: up to date, refused (a bad version, the only blessed slot, a
//!    downgrade) or install into the other slot;
//! 4. [`download`]: every blob, resumable, each verified against its digest before
//!    anything is written;
//! 5. [`signature`]: with Secure Boot on, the UKI must be signed by a key in the
//!    node's `db`, or the version is refused with nothing written;
//! 6. [`slots`]: root, verity, then the UKI last; the state records `writing` before
//!    and `pending` after;
//! 7. reboot now, in the window, or not (`update --reboot` does it).
//!
//! Everything is read under a root directory: `/` on a node, a directory of files on
//! the build host in the tests (`SLIPWAY_UPDATE_ROOT`), where the slots are files and
//! no reboot is ever run. The design and the threat model are in docs/updates.md.

pub mod der;
pub mod download;
pub mod gate;
pub mod payload;
pub mod pe;
pub mod registry;
pub mod settings;
pub mod signature;
pub mod slots;
pub mod state;

use settings::{Follow, Reboot, Settings};
use state::{Decision, Offer, Running, Slot, State, Status};
use std::path::{Path, PathBuf};

/// Where downloads go, under the root.
pub const STORE: &str = "var/lib/slipway/update/blobs";

/// How `update` was asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode {
    /// `--check`: report what would be installed; download and write nothing.
    pub check: bool,
    /// `--reboot`: reboot into a pending version whatever `reboot` says.
    pub reboot: bool,
    /// `--timer` (slipway-update.timer): check only when `interval` has passed since
    /// the last check.
    pub timer: bool,
}

/// How a run ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (up to date, already pending).
    Nothing,
    /// Not installed, with the reason.
    Refused,
    /// `--check` found a version to install.
    Available,
    /// A version was written into a slot.
    Installed,
}

/// Why a run failed.
#[derive(Debug)]
pub enum Failure {
    /// A blob or manifest did not match its digest; nothing was written.
    Digest(String),
    /// Secure Boot is on and the UKI is not signed by a key in `db`; nothing was written.
    Signature(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Digest(m) | Failure::Signature(m) | Failure::Other(m) => f.write_str(m),
        }
    }
}

impl From<String> for Failure {
    fn from(m: String) -> Failure {
        Failure::Other(m)
    }
}

/// The state brought up to date with the running boot, and the booted slot's name.
pub fn current(
    root: &Path,
    say: &mut dyn FnMut(String),
) -> Result<(State, Running, String), String> {
    let slots = slots::load(root)?;
    let names: Vec<&str> = slots.keys().map(String::as_str).collect();
    let run = Running::read(root)?;
    let mut st = State::load(root)?;
    let before = st.clone();
    for n in st.reconcile(&run, &names)? {
        say(n);
    }
    if st != before {
        st.save(root)?;
    }
    let booted = st.booted(&run).unwrap_or("a").to_string();
    Ok((st, run, booted))
}

/// `slipway-agent update`: one run of the engine.
pub fn update(
    s: &Settings,
    root: &Path,
    mode: Mode,
    say: &mut dyn FnMut(String),
) -> Result<Outcome, Failure> {
    let (mut st, run, booted) = current(root, say)?;
    let now = unix_now();
    if let Some(last) = st.last_check.filter(|_| mode.timer) {
        let next = last.saturating_add(s.interval.as_secs());
        if now < next && now >= last {
            say(format!("next check in {} s (interval)", next - now));
            return Ok(Outcome::Nothing);
        }
    }
    let mut reg = registry::Registry::new(s)?;
    let (bytes, digest) = reg.manifest(s.follow.reference())?;
    if !mode.check {
        st.last_check = Some(now);
        st.save(root)?;
    }
    let p = payload::parse(&bytes, &digest)?;
    say(format!(
        "{} is {} version {} ({digest}, {:.1} MB)",
        s.describe(),
        p.image,
        p.version,
        p.size() as f64 / 1e6
    ));
    let offer = Offer {
        version: &p.version,
        digest: &p.digest,
        pinned: matches!(s.follow, Follow::Digest(_)),
    };
    let target = match st.decide(&booted, &offer) {
        Decision::Nothing(why) => {
            say(why);
            reboot_if_due(s, &st, root, mode, say)?;
            return Ok(Outcome::Nothing);
        }
        Decision::Refused(why) => {
            say(format!("not installed: {why}"));
            return Ok(Outcome::Refused);
        }
        Decision::Install(t) => t,
    };
    if mode.check {
        say(format!(
            "update available: version {} would go into slot {target} (checked every {} s; reboot {:?})",
            p.version,
            s.interval.as_secs(),
            s.reboot
        ));
        return Ok(Outcome::Available);
    }
    let store = root.join(STORE);
    let mut files = Vec::new();
    for b in &p.blobs {
        files.push(download::fetch(&mut reg, &store, b, say)?);
    }
    match signature::check(root, &files[2], &p.version) {
        Ok(signature::Verdict::NotChecked(why)) => say(why),
        Ok(signature::Verdict::Signed(by)) => say(format!(
            "the UKI of version {} is signed by {by}, a certificate in the node's db",
            p.version
        )),
        Err(why) => {
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            return Err(Failure::Signature(why));
        }
    }
    install(&mut st, root, &target, &p, &files, &run, say)?;
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    reboot_if_due(s, &st, root, mode, say)?;
    Ok(Outcome::Installed)
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The UKI's file name for `version` in the ESP directory, with `tries` boots left
/// (systemd-boot's boot counting: `+N`; blessing drops the counter).
pub fn uki_name(version: &str, tries: u32) -> String {
    format!("slipway-{version}+{tries}.efi")
}

/// Writes the verified `files` into slot `target`, recording `writing` before and
/// `pending` after.
fn install(
    st: &mut State,
    root: &Path,
    target: &str,
    p: &payload::Payload,
    files: &[PathBuf],
    run: &Running,
    say: &mut dyn FnMut(String),
) -> Result<(), String> {
    let all = slots::load(root)?;
    let t = &all[target];
    let old_version = st.slots.get(target).and_then(|s| s.version.clone());
    let slot = Slot {
        status: Status::Writing,
        version: Some(p.version.clone()),
        digest: Some(p.digest.clone()),
        root_hash: Some(p.root_hash.clone()),
        uki: None,
        boot_id: Some(run.boot_id.clone()),
    };
    st.slots.insert(target.to_string(), slot.clone());
    st.save(root)?;
    // No boot entry may point at the root about to be overwritten.
    if let Some(v) = old_version {
        slots::remove_uki(t, &v)?;
    }
    slots::remove_uki(t, &p.version)?;
    let name = uki_name(&p.version, p.tries);
    slots::write(
        t,
        [&files[0], &files[1], &files[2]],
        (&name, &p.root_hash),
        say,
    )?;
    st.slots.insert(
        target.to_string(),
        Slot {
            status: Status::Pending,
            uki: Some(name),
            ..slot
        },
    );
    st.save(root)?;
    say(format!(
        "installed version {} into slot {target}; it runs after a reboot",
        p.version
    ));
    Ok(())
}

/// Reboots when a version is pending and the settings (or `--reboot`) say now.
fn reboot_if_due(
    s: &Settings,
    st: &State,
    root: &Path,
    mode: Mode,
    say: &mut dyn FnMut(String),
) -> Result<(), String> {
    if !st.slots.values().any(|x| x.status == Status::Pending) {
        return Ok(());
    }
    let due = match s.reboot {
        _ if mode.reboot => true,
        Reboot::Now => true,
        Reboot::Never => false,
        Reboot::Window(a, b) => {
            let now = unix_now();
            settings::in_window(((now % 86400) / 60) as u16, a, b)
        }
    };
    if !due {
        say("reboot: not now (the update runs after the next reboot)".into());
        return Ok(());
    }
    if root != Path::new("/") {
        say(format!(
            "reboot: due, not done: {} is not the running system",
            root.display()
        ));
        return Ok(());
    }
    say("reboot: now".into());
    let done = std::process::Command::new("systemctl")
        .args(["--check-inhibitors=no", "reboot"])
        .status()
        .map_err(|e| format!("systemctl reboot: {e}"))?;
    if !done.success() {
        return Err(format!("systemctl reboot: {done}"));
    }
    Ok(())
}

/// The UKIs in the ESP directory of the slots (sorted), each with what boot counting
/// makes of its name: `slipway-2.efi` good, `+N` tries left, `+0-D` none left (bad).
pub fn boot_entries(root: &Path) -> Vec<(String, String)> {
    let Ok(all) = slots::load(root) else {
        return Vec::new();
    };
    let Some(dir) = all.values().next().map(|t| t.esp_dir.clone()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("slipway-") && n.ends_with(".efi"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let counter = n
                .trim_end_matches(".efi")
                .rsplit_once('+')
                .map(|(_, c)| c.to_string());
            let what = match counter
                .as_deref()
                .map(|c| c.split_once('-').unwrap_or((c, "0")))
            {
                None => "good".to_string(),
                Some(("0", done)) => format!("bad: no tries left, {done} used"),
                Some((left, "0")) => format!("{left} tries left, not booted yet"),
                Some((left, done)) => format!("{left} tries left, {done} used"),
            };
            (n, what)
        })
        .collect()
}

/// `status` as JSON: the running slot, a pending version, failed versions, every slot.
pub fn status_json(st: &State, booted: &str) -> serde_json::Value {
    let slot = |n: &str, s: &Slot| {
        serde_json::json!({
            "slot": n, "version": s.version, "status": s.status, "digest": s.digest,
            "root-hash": s.root_hash,
        })
    };
    let pending = st
        .slots
        .iter()
        .find(|(_, s)| s.status == Status::Pending)
        .map(|(n, s)| slot(n, s));
    serde_json::json!({
        "current": st.slots.get(booted).map(|s| slot(booted, s)),
        "pending": pending,
        "failed": st.bad,
        "slots": st.slots,
    })
}

/// `status` as text lines.
pub fn status_text(st: &State, booted: &str) -> Vec<String> {
    let mut out = Vec::new();
    let v = |s: &Slot| s.version.clone().unwrap_or_else(|| "-".into());
    if let Some(s) = st.slots.get(booted) {
        out.push(format!(
            "current: version {} (slot {booted}, {})",
            v(s),
            s.status.name()
        ));
    }
    for (n, s) in &st.slots {
        if s.status == Status::Pending {
            out.push(format!(
                "pending: version {} (slot {n}; runs after a reboot)",
                v(s)
            ));
        }
    }
    for b in &st.bad {
        out.push(format!("failed:  version {} ({})", b.version, b.reason));
    }
    for (n, s) in &st.slots {
        out.push(
            format!(
                "slot {n}: {} {} {}",
                s.status.name(),
                v(s),
                s.digest.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::tests::tempfile_lite::Dir;

    #[test]
    fn boot_entries_say_what_boot_counting_makes_of_each_name() {
        let d = Dir::new();
        let esp = d.0.join("esp");
        std::fs::create_dir_all(d.0.join("run/slipway")).unwrap();
        std::fs::create_dir_all(&esp).unwrap();
        let one = format!(
            r#"{{"root": "/r", "verity": "/v", "esp-dir": {:?}}}"#,
            esp.display().to_string()
        );
        std::fs::write(
            d.0.join(slots::SLOTS),
            format!(r#"{{"a": {one}, "b": {one}}}"#),
        )
        .unwrap();
        for n in [
            "slipway-2.efi",
            "slipway-3+0-1.efi",
            "slipway-4+3.efi",
            "slipway-5+1-2.efi",
            "other.efi",
        ] {
            std::fs::write(esp.join(n), b"MZ").unwrap();
        }
        let got: Vec<String> = boot_entries(&d.0)
            .into_iter()
            .map(|(n, w)| format!("{n} ({w})"))
            .collect();
        assert_eq!(
            got,
            [
                "slipway-2.efi (good)",
                "slipway-3+0-1.efi (bad: no tries left, 1 used)",
                "slipway-4+3.efi (3 tries left, not booted yet)",
                "slipway-5+1-2.efi (1 tries left, 2 used)",
            ]
        );
    }
}
