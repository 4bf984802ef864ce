//! What the node knows about its slots, kept as JSON on /var ([`STATE`]): consumes the
//! saved [`State`] and the facts of the running boot ([`Running`]: the root hash on the
//! kernel command line, the boot id); produces the state brought up to date
//! ([`State::reconcile`]) and the decision for an offered payload ([`State::decide`]).
//!
//! Each slot is `empty`, `writing` (an install that did not finish: no UKI), `pending`
//! (written, not booted yet), `trying` (booted, not blessed yet), `blessed` (reached
//! the health gate) or `failed`. A pending or trying slot that the node is no longer
//! running after a reboot rolled back: it becomes `failed` and its version is marked
//! bad, and a bad version is not installed again (a newer one is).
//!
//! The rules that keep a node bootable:
//! - the slot being written is never the running one;
//! - the slot of the only blessed version is not overwritten while the running version
//!   is not blessed (systemd#34827: the fallback must survive until the new version
//!   proved itself);
//! - a slot is found by its root hash (what the UKI's `roothash=` pins), never by which
//!   is newest (systemd#32653).

use serde::{Deserialize, Serialize};
use slipway_common::update::compare_versions;
use std::collections::BTreeMap;
use std::path::Path;

/// The state file, under the root.
pub const STATE: &str = "var/lib/slipway/update/state.json";
/// The state format's version.
pub const SCHEMA: u32 = 1;

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Nothing (or nothing known).
    #[default]
    Empty,
    /// An install started and did not finish: root or verity may be partial, no UKI.
    Writing,
    /// Written whole (the UKI last); not booted yet.
    Pending,
    /// Booted, not blessed yet.
    Trying,
    /// Booted and blessed.
    Blessed,
    /// Rolled back (its version is bad).
    Failed,
}

impl Status {
    /// Its name in status output.
    pub fn name(self) -> &'static str {
        match self {
            Status::Empty => "empty",
            Status::Writing => "writing (interrupted)",
            Status::Pending => "pending",
            Status::Trying => "trying",
            Status::Blessed => "blessed",
            Status::Failed => "failed",
        }
    }
}

/// One slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct Slot {
    /// Its status.
    pub status: Status,
    /// The image version it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The payload manifest's digest (none for the image the node was installed with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The dm-verity root hash of its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// Its UKI's file name in the ESP directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki: Option<String>,
    /// The boot that wrote it (pending) or first ran it (trying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// A version that is not installed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Bad {
    /// The version.
    pub version: String,
    /// Its payload's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why.
    pub reason: String,
}

/// The whole state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct State {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `a` and `b`.
    pub slots: BTreeMap<String, Slot>,
    /// Versions marked bad, oldest first.
    pub bad: Vec<Bad>,
    /// When the channel was last checked (seconds since the epoch; `update --timer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<u64>,
}

/// Facts of the running boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// `roothash=` of the kernel command line.
    pub root_hash: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// os-release `IMAGE_VERSION`.
    pub version: String,
}

impl Running {
    /// Reads the facts under `root` (`/` on a node).
    pub fn read(root: &Path) -> Result<Running, String> {
        let read = |rel: &str| {
            let p = root.join(rel);
            std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
        };
        let cmdline = read("proc/cmdline")?;
        let root_hash = cmdline
            .split_whitespace()
            .find_map(|a| a.strip_prefix("roothash="))
            .ok_or_else(|| {
                "the kernel command line has no roothash= (not a slipway host image?)".to_string()
            })?
            .to_string();
        let boot_id = read("proc/sys/kernel/random/boot_id")?.trim().to_string();
        let os = read("etc/os-release").or_else(|_| read("usr/lib/os-release"))?;
        let version = os
            .lines()
            .find_map(|l| l.strip_prefix("IMAGE_VERSION="))
            .map(|v| v.trim_matches('"').to_string())
            .ok_or_else(|| "os-release has no IMAGE_VERSION".to_string())?;
        Ok(Running {
            root_hash,
            boot_id,
            version,
        })
    }
}

/// What to do with an offered payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write it into this slot.
    Install(String),
    /// Nothing to do, and why (up to date, already pending).
    Nothing(String),
    /// Not installed, and why (a bad version, the only blessed slot, a downgrade).
    Refused(String),
}

/// What [`State::decide`] is offered.
pub struct Offer<'a> {
    /// The version.
    pub version: &'a str,
    /// The manifest digest.
    pub digest: &'a str,
    /// Followed by a pinned digest (a downgrade is then allowed).
    pub pinned: bool,
}

impl State {
    /// Loads the state under `root`, or an empty one when there is none.
    pub fn load(root: &Path) -> Result<State, String> {
        let p = root.join(STATE);
        match std::fs::read(&p) {
            Ok(b) => {
                let s: State =
                    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))?;
                if s.schema != SCHEMA {
                    return Err(format!(
                        "{}: schema {} (expected {SCHEMA})",
                        p.display(),
                        s.schema
                    ));
                }
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("reading {}: {e}", p.display())),
        }
    }

    /// Writes the state under `root` (temporary file, sync, rename).
    pub fn save(&self, root: &Path) -> Result<(), String> {
        let p = root.join(STATE);
        let dir = p.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".state.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", p.display()))
    }

    /// The slot the node runs (found by its root hash).
    pub fn booted(&self, run: &Running) -> Option<&str> {
        self.slots
            .iter()
            .find(|(_, s)| {
                s.root_hash.as_deref() == Some(run.root_hash.as_str())
                    && s.status != Status::Writing
            })
            .map(|(n, _)| n.as_str())
    }

    /// The other slot than `name`.
    pub fn other(&self, name: &str) -> Option<&str> {
        self.slots.keys().map(String::as_str).find(|n| *n != name)
    }

    /// Brings the state up to date with the running boot; returns what changed, as lines.
    pub fn reconcile(&mut self, run: &Running, names: &[&str]) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        if self.slots.is_empty() {
            self.schema = SCHEMA;
            for (i, n) in names.iter().enumerate() {
                let slot = if i == 0 {
                    Slot {
                        status: Status::Blessed,
                        version: Some(run.version.clone()),
                        root_hash: Some(run.root_hash.clone()),
                        ..Slot::default()
                    }
                } else {
                    Slot::default()
                };
                self.slots.insert(n.to_string(), slot);
            }
            notes.push(format!(
                "first run: slot {} holds the running version {} (the image the node was installed with)",
                names.first().unwrap_or(&"a"),
                run.version
            ));
        }
        let booted = self
            .booted(run)
            .ok_or_else(|| {
                format!(
                    "the running root hash {} is in no slot the state knows",
                    run.root_hash
                )
            })?
            .to_string();
        let booted_version = self.slots[&booted].version.clone().unwrap_or_default();
        let mut bad = Vec::new();
        for (name, s) in self.slots.iter_mut() {
            let moved_on = s.boot_id.as_deref() != Some(run.boot_id.as_str());
            if *name == booted {
                if s.status == Status::Pending {
                    s.status = Status::Trying;
                    s.boot_id = Some(run.boot_id.clone());
                    notes.push(format!(
                        "slot {name}: booted version {}, not blessed yet",
                        s.version.as_deref().unwrap_or("?")
                    ));
                }
            } else if matches!(s.status, Status::Pending | Status::Trying) && moved_on {
                let version = s.version.clone().unwrap_or_default();
                let reason = format!(
                    "rolled back: the node restarted on slot {booted} (version {booted_version}) instead of slot {name}"
                );
                notes.push(format!("version {version} failed: {reason}"));
                s.status = Status::Failed;
                bad.push(Bad {
                    version,
                    digest: s.digest.clone(),
                    reason,
                });
            }
        }
        for b in bad {
            if !self.bad.iter().any(|x| x.version == b.version) {
                self.bad.push(b);
            }
        }
        Ok(notes)
    }

    /// Marks the running slot blessed; returns a line saying so.
    pub fn bless(&mut self, run: &Running) -> Result<String, String> {
        let booted = self
            .booted(run)
            .ok_or("the running root hash is in no slot")?
            .to_string();
        let s = self.slots.get_mut(&booted).ok_or("no such slot")?;
        let was = s.status;
        s.status = Status::Blessed;
        Ok(format!(
            "slot {booted}: version {} blessed (was {})",
            s.version.as_deref().unwrap_or("?"),
            was.name()
        ))
    }

    /// What to do with `offer`, the node running slot `booted`.
    pub fn decide(&self, booted: &str, offer: &Offer) -> Decision {
        let running = &self.slots[booted];
        let running_version = running.version.as_deref().unwrap_or("");
        if running.digest.as_deref() == Some(offer.digest) || running_version == offer.version {
            return Decision::Nothing(format!(
                "up to date: version {running_version} runs (slot {booted})"
            ));
        }
        let Some(target) = self.other(booted) else {
            return Decision::Refused("there is no other slot".into());
        };
        let t = &self.slots[target];
        if t.status == Status::Pending && t.version.as_deref() == Some(offer.version) {
            return Decision::Nothing(format!(
                "version {} is already installed in slot {target}; it runs after a reboot",
                offer.version
            ));
        }
        if let Some(b) = self.bad.iter().find(|b| b.version == offer.version) {
            return Decision::Refused(format!(
                "version {} is marked bad ({}); it is not installed again, waiting for a newer version",
                b.version, b.reason
            ));
        }
        if !offer.pinned && compare_versions(offer.version, running_version).is_lt() {
            return Decision::Refused(format!(
                "the channel's version {} is older than the running {running_version} (pin its digest to go back)",
                offer.version
            ));
        }
        if t.status == Status::Blessed && running.status != Status::Blessed {
            return Decision::Refused(format!(
                "slot {target} holds version {}, the only blessed version, and the running version \
                 {running_version} is not blessed yet: writing over it would leave no version known to boot",
                t.version.as_deref().unwrap_or("?")
            ));
        }
        Decision::Install(target.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(hash: &str, boot: &str, version: &str) -> Running {
        Running {
            root_hash: hash.into(),
            boot_id: boot.into(),
            version: version.into(),
        }
    }

    fn offer<'a>(version: &'a str, digest: &'a str) -> Offer<'a> {
        Offer {
            version,
            digest,
            pinned: false,
        }
    }

    fn written(s: &mut State, slot: &str, version: &str, hash: &str, boot: &str) {
        let x = s.slots.get_mut(slot).unwrap();
        *x = Slot {
            status: Status::Pending,
            version: Some(version.into()),
            digest: Some(format!("d{version}")),
            root_hash: Some(hash.into()),
            uki: None,
            boot_id: Some(boot.into()),
        };
    }

    /// Version 1 installed; 2 written and booted but not blessed: 3 must not overwrite
    /// slot a (the only blessed version) until 2 is blessed.
    #[test]
    fn the_only_blessed_slot_is_kept_until_the_running_version_is_blessed() {
        let mut s = State::default();
        s.reconcile(&run("h1", "boot1", "1"), &["a", "b"]).unwrap();
        assert_eq!(
            s.decide("a", &offer("2", "d2")),
            Decision::Install("b".into())
        );
        written(&mut s, "b", "2", "h2", "boot1");
        assert!(matches!(
            s.decide("a", &offer("2", "d2")),
            Decision::Nothing(_)
        ));
        let r2 = run("h2", "boot2", "2");
        s.reconcile(&r2, &["a", "b"]).unwrap();
        assert_eq!(s.slots["b"].status, Status::Trying);
        let d = s.decide("b", &offer("3", "d3"));
        assert!(
            matches!(&d, Decision::Refused(m) if m.contains("only blessed")),
            "{d:?}"
        );
        s.bless(&r2).unwrap();
        assert_eq!(
            s.decide("b", &offer("3", "d3")),
            Decision::Install("a".into())
        );
    }

    /// 2 written; the node restarts on slot a: 2 failed, is bad, and is refused; 3 is not.
    #[test]
    fn a_rolled_back_version_is_bad_until_a_newer_one_appears() {
        let mut s = State::default();
        s.reconcile(&run("h1", "boot1", "1"), &["a", "b"]).unwrap();
        written(&mut s, "b", "2", "h2", "boot1");
        // Same boot: still pending.
        assert!(s
            .reconcile(&run("h1", "boot1", "1"), &["a", "b"])
            .unwrap()
            .is_empty());
        let notes = s.reconcile(&run("h1", "boot2", "1"), &["a", "b"]).unwrap();
        assert!(
            notes[0].contains("version 2 failed: rolled back"),
            "{notes:?}"
        );
        assert_eq!(s.slots["b"].status, Status::Failed);
        assert_eq!(s.bad[0].version, "2");
        let d = s.decide("a", &offer("2", "d2-rebuilt"));
        assert!(
            matches!(&d, Decision::Refused(m) if m.contains("marked bad")),
            "{d:?}"
        );
        assert_eq!(
            s.decide("a", &offer("3", "d3")),
            Decision::Install("b".into())
        );
        // Older than the running version: refused unless pinned.
        assert!(matches!(
            s.decide("a", &offer("0.9", "d0")),
            Decision::Refused(_)
        ));
        let pinned = Offer {
            version: "0.9",
            digest: "d0",
            pinned: true,
        };
        assert_eq!(s.decide("a", &pinned), Decision::Install("b".into()));
    }

    /// A trying version the node left after a reboot rolled back too.
    #[test]
    fn a_tried_version_left_behind_is_bad() {
        let mut s = State::default();
        s.reconcile(&run("h1", "boot1", "1"), &["a", "b"]).unwrap();
        written(&mut s, "b", "3", "h3", "boot1");
        s.reconcile(&run("h3", "boot2", "3"), &["a", "b"]).unwrap();
        assert_eq!(s.slots["b"].status, Status::Trying);
        s.reconcile(&run("h1", "boot3", "1"), &["a", "b"]).unwrap();
        assert_eq!(s.slots["b"].status, Status::Failed);
        assert_eq!(s.bad.len(), 1);
        assert!(s
            .reconcile(&run("h9", "boot4", "9"), &["a", "b"])
            .unwrap_err()
            .contains("h9"));
    }
}
