//! A/B updates on a booted node (issue 23): one machine, one `slipway test` sequence,
//! five boots. Three versions of containerd-host (child recipes named `ab-node` with
//! `IMAGE_VERSION` 1, 2 and 3 and `[disk] tries = 1`; version 3 adds a unit that joins
//! `slipway-ready.target` and fails) are built; 2 is pushed as `fleet/ab:stable` and 3 as
//! `fleet/ab:next` into Debian's docker-registry on 127.0.0.1, which the guest reaches
//! at 10.0.2.100:5000 through the harness's `proxy` forward. The node boots version 1's
//! two-slot disk (systemd-boot, slot a) with `[update]` following `stable`:
//!
//! 1. **Tampered.** One byte of version 2's root blob is changed in the registry's
//!    storage before the run: `update` fails with a digest error, slot b stays empty.
//!    The guest copies a file out when it has seen the refusal; this test then restores
//!    the blob.
//! 2. **Interrupted.** `update` runs as a transient unit; when the console shows the
//!    root being written into slot b, QEMU is reset (no shutdown, no sync). The node
//!    boots version 1 again, and `status` shows slot b's interrupted write.
//! 3. **Updated.** `update` installs version 2 into slot b (`slipway-2+1.efi`); after a
//!    reboot, the kernel command line and the verified root's device-mapper UUID name
//!    version 2's root hash, os-release says 2, the marker written on /var in version 1
//!    is there, slipway-bless and systemd-bless-boot ran and the UKI lost its counter.
//! 4. **Rolled back.** The node's config is switched to `next`; `update` installs 3
//!    into slot a and the node reboots into it. Its health gate fails, so
//!    `slipway-update-gate` reboots it with no command from the test; systemd-boot's
//!    counter for 3 is used up and version 2 boots. `status` names 3 as failed and
//!    `update` refuses it.
//!
//! Needs `make build`, QEMU, OVMF and docker-registry (scripts/setup-host.sh). A failed
//! run keeps its directory (console, steps' times, overlay); `AB_KEEP=1` keeps a passing
//! one too.
#![allow(clippy::unwrap_used)]

use crate::common::registry::Registry;
use crate::common::{bin, fixtures, ok, shared_cache, slipway, text};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The guest's address of the registry (the `proxy` forward).
const GUEST_REGISTRY: &str = "10.0.2.100:5000";
/// The definition's name (its output directory).
const NAME: &str = "ab-updates";
const AGENT: &str = "/usr/lib/slipway/slipway-agent";

/// Version 3's failing check: it joins slipway-ready.target, so the health gate fails.
const BROKEN_UNIT: &str = "[Unit]\nDescription=ab test: a check that fails on purpose\nBefore=slipway-ready.target\n\n[Service]\nType=oneshot\nExecStart=/usr/lib/slipway/slipway-agent check /nonexistent/ab-broken.toml\n\n[Install]\nRequiredBy=slipway-ready.target\n";

/// The child recipes, written into the fixture directory (so that each is built once
/// per content); returns the directory.
fn recipes() -> PathBuf {
    let dir = fixtures::root().join("ab-updates");
    fs::create_dir_all(&dir).unwrap();
    let parent = fixtures::recipes_dir().join("containerd-host.toml");
    for v in ["1", "2", "3"] {
        let mut text = format!(
            "schema-version = 1\nextends = {:?}\n[image]\nname = \"ab-node\"\nversion = \"{v}\"\n[disk]\ntries = 1\n",
            parent.display().to_string()
        );
        if v == "3" {
            text.push_str(&format!(
                "[systemd]\nenable = [\"ab-broken.service\"]\n[[entry]]\npath = \"/usr/lib/systemd/system/ab-broken.service\"\ntype = \"file\"\ncontent = {BROKEN_UNIT:?}\n"
            ));
        }
        let p = dir.join(format!("v{v}.toml"));
        if fs::read_to_string(&p).ok().as_deref() != Some(&text) {
            let t = dir.join(format!(".v{v}.toml.{}", std::process::id()));
            fs::write(&t, &text).unwrap();
            fs::rename(&t, &p).unwrap();
        }
    }
    dir
}

fn json_of(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// The root hash of a build (its manifest.json).
fn root_hash(build: &Path) -> String {
    json_of(&build.join("manifest.json"))["root_hash"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The registry's file of the root blob of the payload in `layout`.
fn root_blob_in(reg: &Registry, layout: &Path) -> PathBuf {
    let index = json_of(&layout.join("index.json"));
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = json_of(&layout.join("blobs/sha256").join(&m[7..]));
    let d = manifest["layers"][0]["digest"].as_str().unwrap();
    let hex = &d[7..];
    reg.storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Flips one byte of `file` (at 1 MiB); flipping it again restores it.
fn flip(file: &Path) {
    let mut b = fs::read(file).unwrap();
    b[1 << 20] ^= 0xff;
    fs::write(file, b).unwrap();
}

/// The update config the guest follows (`tag`).
fn update_table(tag: &str) -> String {
    format!(
        "repository = \"{GUEST_REGISTRY}/fleet/ab\"\ntag = \"{tag}\"\ninsecure = true\nhealth-timeout = \"3m\"\n"
    )
}

/// The definition: the sequence of the module doc, with the root hashes of 1 and 2.
fn definition(v1: &Path, hashes: [&str; 2], port: u16) -> String {
    let [h1, h2] = hashes;
    let stable = update_table("stable");
    format!(
        r#"description = "A/B updates: tampered, interrupted, updated, rolled back"
image = {v1:?}
timeout = 900
# No expect-reboots: QEMU runs with -no-reboot, so every reboot and the reset end QEMU
# and the harness starts the same machine again (a cold start boots in about 21 s under
# TCG; a reset in place took 40 to 57 s).
# Version 3's check fails on purpose, and what requires it with it.
expect-failure = ['ab-broken', 'Dependency failed for .*(slipway|[Bb]oot|Entry)']

[provisioning]
[provisioning.update]
{stable}
[[forward]]
guest = "{GUEST_REGISTRY}"
proxy = "127.0.0.1:{port}"

# Version 1 from slot a, blessed; a marker on /var. The boot id copied out first tells
# this test a run started (slipway test runs a definition again after `Oops: int3`), so
# that it changes the blob again for it.
[[step]]
copy-out = {{ from = "/proc/sys/kernel/random/boot_id", to = "started.txt" }}
[[step]]
read-file = "/proc/cmdline"
expect = "roothash={h1}"
[[step]]
wait-for-unit = "slipway-bless.service"
[[step]]
succeed = ["{AGENT}", "status"]
expect = "current: version 1 (slot a, blessed)"
[[step]]
copy-in = {{ from = "files/marker.txt", to = "/var/lib/ab-marker" }}

# 1. Tampered: refused with a digest error, nothing written.
[[step]]
fail = ["{AGENT}", "update"]
expect = "digest error: the root blob"
[[step]]
succeed = ["{AGENT}", "status", "--json"]
expect = '"b":{{"status":"empty"}}'
[[step]]
copy-out = {{ from = "/var/lib/slipway/update/state.json", to = "refused.json" }}

# 2. Interrupted: reset while the root goes into slot b; version 1 boots again.
[[step]]
succeed = ["systemd-run", "--unit=ab-update", "{AGENT}", "update"]
[[step]]
wait-for-console-text = 'writing the root to /dev/vda4'
timeout = 300
[[step]]
crash = true
# The agent answers before the network is up; the update below needs it.
[[step]]
wait-for-unit = "slipway-ready.service"
[[step]]
read-file = "/proc/cmdline"
expect = "roothash={h1}"
[[step]]
succeed = ["{AGENT}", "status"]
expect-regex = "slot b: writing \\(interrupted\\) 2"

# 3. Updated: version 2 in slot b, booted, healthy, blessed; /var kept.
[[step]]
succeed = ["{AGENT}", "update"]
expect = "installed version 2 into slot b"
timeout = 300
[[step]]
succeed = ["{AGENT}", "status"]
expect = "slipway-2+1.efi"
[[step]]
reboot = true
[[step]]
read-file = "/proc/cmdline"
expect = "roothash={h2}"
[[step]]
read-file = "/sys/block/dm-0/dm/uuid"
expect = "SLIPWAY-VERITY-{h2}"
[[step]]
read-file = "/etc/os-release"
expect-regex = 'IMAGE_VERSION="?2"?\n'
[[step]]
read-file = "/var/lib/ab-marker"
expect = "written by version 1"
[[step]]
wait-for-unit = "slipway-bless.service"
[[step]]
wait-until-succeeds = ["{AGENT}", "status"]
expect = "boot entry: slipway-2.efi"
[[step]]
succeed = ["{AGENT}", "status"]
expect = "current: version 2 (slot b, blessed)"

# 4. Rolled back: 3 from the next channel fails its health gate; the node reboots by
#    itself and boot counting brings back 2.
[[step]]
copy-in = {{ from = "files/next.toml", to = "/etc/slipway/update.toml", mode = "0600" }}
[[step]]
succeed = ["{AGENT}", "update"]
expect = "installed version 3 into slot a"
timeout = 300
[[step]]
reboot = true
[[step]]
wait-for-console-text = 'health gate: the boot finished .* without reaching boot-complete.target'
timeout = 300
# The node reboots itself (QEMU exits under -no-reboot; the next step starts it again).
[[step]]
wait-for-shutdown = true
[[step]]
wait-for-unit = "slipway-ready.service"
[[step]]
read-file = "/proc/cmdline"
expect = "roothash={h2}"
[[step]]
succeed = ["{AGENT}", "status"]
expect-regex = "(?s)current: version 2 \\(slot b, blessed\\).*failed:  version 3 \\(rolled back"
[[step]]
succeed = ["{AGENT}", "update"]
expect = "version 3 is marked bad"
"#
    )
}

/// When `p` was last written (a run's copy-out may repeat an earlier run's bytes).
fn stamp(p: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Keeps version 2's root blob changed while a run of the definition has not reported
/// the refusal, in a thread until `done`: the blob is changed before the start; the
/// guest's copy-out of its state (`refused.json`) restores it; a new run (a new
/// `started.txt`, after slipway test ran the definition again) changes it again.
/// Returns how many times it was restored.
fn tamper_per_run(
    out: PathBuf,
    blob: PathBuf,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let (started, refused) = (
            out.join(NAME).join("started.txt"),
            out.join(NAME).join("refused.json"),
        );
        let (mut seen_start, mut seen_refused) = (None, None);
        let (mut tampered, mut restores) = (true, 0);
        while !done.load(Ordering::SeqCst) {
            let s = fs::read(&started).ok();
            if s.is_some() && s != seen_start {
                seen_start = s;
                seen_refused = stamp(&refused);
                if !tampered {
                    flip(&blob);
                    tampered = true;
                }
            }
            let r = stamp(&refused);
            if tampered && seen_start.is_some() && r.is_some() && r != seen_refused {
                flip(&blob);
                tampered = false;
                restores += 1;
                seen_refused = r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        restores
    })
}

#[test]
fn a_node_refuses_a_tampered_update_survives_an_interrupted_one_updates_and_rolls_back() {
    let dir = recipes();
    let build = |v: &str| {
        fixtures::build(
            &dir.join(format!("v{v}.toml")).display().to_string(),
            &["--format", "disk,update"],
        )
    };
    let (v1, v2, v3) = (build("1"), build("2"), build("3"));
    let reg = Registry::anonymous();
    for (b, tag) in [(&v2, "stable"), (&v3, "next")] {
        ok(slipway(
            &shared_cache(),
            &[
                "push",
                &b.join("update").display().to_string(),
                &format!("{}/fleet/ab:{tag}", reg.host()),
            ],
        ));
    }
    let blob = root_blob_in(&reg, &v2.join("update"));
    flip(&blob);

    let tmp = tempfile::Builder::new()
        .prefix("ab-updates-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let defs = tmp.path().join("defs");
    let out = tmp.path().join("out");
    // Files for copy-in, beside the definition (a .toml in defs/ would be one).
    fs::create_dir_all(defs.join("files")).unwrap();
    fs::write(defs.join("files/marker.txt"), "written by version 1\n").unwrap();
    fs::write(
        defs.join("files/next.toml"),
        format!("schema-version = 1\n[update]\n{}", update_table("next")),
    )
    .unwrap();
    let (h1, h2) = (root_hash(&v1), root_hash(&v2));
    fs::write(
        defs.join(format!("{NAME}.toml")),
        definition(&v1, [&h1, &h2], reg.port),
    )
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let restorer = tamper_per_run(out.clone(), blob, done.clone());
    let o = std::process::Command::new(bin())
        .args(["test", "--dir"])
        .arg(&defs)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    done.store(true, Ordering::SeqCst);
    let t = text(&o);
    println!("{t}");
    if !o.status.success() || std::env::var_os("AB_KEEP").is_some() {
        // Kept for a look: the console, the steps' times, the VM's overlay.
        eprintln!("kept {}", tmp.keep().display());
    }
    assert!(
        o.status.success() && t.contains(&format!("PASS {NAME} (")),
        "{t}\n{}",
        fs::read_to_string(out.join(NAME).join("steps.tsv")).unwrap_or_default()
    );
    assert!(
        restorer.join().unwrap() >= 1,
        "the guest never reported the refusal"
    );
}
