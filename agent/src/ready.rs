//! `slipway-agent health`: the node's readiness check, run by `slipway-health.service`
//! (which `slipway-ready.target` requires) once multi-user.target is reached. It consumes
//! the running system and produces one console line, `slipway-health: ...`, printed only
//! when every condition below holds, or a `slipway-health: NOT READY: ...` line and a
//! failed unit when one does not hold in time. Once the target is reached,
//! `slipway-ready.service` prints the marker `slipway-ready (N s after the kernel
//! started)`, so a joined unit that fails keeps the marker off the console:
//!
//! - **containerd answers** (when the image has `ctr`): `ctr version` reports a server
//!   version, so the API itself answered, not merely the socket;
//! - **the network is online**: every link systemd-networkd manages is `configured`
//!   (a DHCP lease, or the static addresses of a `.network` file), none is `failed`, and
//!   one that is configured has an address other than loopback's. A machine without a
//!   NIC has no managed link and passes;
//! - **provisioning is done**: `slipway-agent provision` (or `provision --cloud`) has
//!   recorded its outcome in `/run/slipway/provisioned`, whether it applied a config,
//!   found none or reported an error.
//!
//! The boot-time benchmark (`bench/boot.sh`) and the boot tests measure a boot to this
//! line; A/B updates use the same target as their health gate (docs/provisioning.md).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The console line that marks a boot ready (printed by `slipway-ready.service`).
pub const MARKER: &str = "slipway-ready";
/// Written by provisioning when it has applied, skipped or refused a config.
pub const PROVISIONED: &str = "/run/slipway/provisioned";
/// Where networkd publishes each link's state.
const NETIF_LINKS: &str = "/run/systemd/netif/links";
/// How long each condition may take before the check fails.
const WAIT: Duration = Duration::from_secs(240);
/// Between two looks.
const POLL: Duration = Duration::from_millis(200);

/// One condition's answer: `Ok(summary)` when it holds, `Err(why not)` otherwise.
type Look = Result<String, String>;

/// Waits for every condition; returns the summary line or the first that did not hold.
pub fn check(root: &Path) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Some(ctr) = ctr_binary(root) {
        parts.push(wait_for("containerd", || containerd(&ctr))?);
    }
    parts.push(wait_for("network", || {
        network(&root.join(NETIF_LINKS.trim_start_matches('/')))
    })?);
    parts.push(wait_for("provisioning", || {
        provisioned(&root.join(PROVISIONED.trim_start_matches('/')))
    })?);
    Ok(parts.join("; "))
}

fn wait_for(what: &str, mut look: impl FnMut() -> Look) -> Result<String, String> {
    let end = Instant::now() + WAIT;
    loop {
        match look() {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= end => {
                return Err(format!("{what}: {e} (after {} s)", WAIT.as_secs()))
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn ctr_binary(root: &Path) -> Option<std::path::PathBuf> {
    ["usr/bin/ctr", "usr/local/bin/ctr"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
}

/// `ctr version` must show the daemon's version: the client alone prints only its own.
fn containerd(ctr: &Path) -> Look {
    let out = Command::new(ctr)
        .args(["--timeout", "5s", "version"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", ctr.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let server = text
        .split("Server:")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("Version:")))
        .map(|v| v.trim().to_string());
    match (out.status.success(), server) {
        (true, Some(v)) => Ok(format!("containerd {v} answers")),
        _ => Err(format!(
            "`ctr version` got no answer from the daemon: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// One link as networkd describes it in `/run/systemd/netif/links/INDEX`.
#[derive(Debug, Clone, PartialEq)]
struct Link {
    admin: String,
    oper: String,
}

fn parse_link(text: &str) -> Link {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    Link {
        admin: get("ADMIN_STATE"),
        oper: get("OPER_STATE"),
    }
}

/// The network verdict from the links' states (`name`, link).
fn network_verdict(links: &[(String, Link)]) -> Look {
    let managed: Vec<&(String, Link)> = links
        .iter()
        .filter(|(_, l)| !matches!(l.admin.as_str(), "unmanaged" | ""))
        .collect();
    if let Some((n, _)) = managed.iter().find(|(_, l)| l.admin == "failed") {
        return Err(format!("systemd-networkd failed to configure link {n}"));
    }
    if let Some((n, l)) = managed.iter().find(|(_, l)| l.admin != "configured") {
        return Err(format!("link {n} is {} (not configured yet)", l.admin));
    }
    let up: Vec<&str> = managed
        .iter()
        .filter(|(_, l)| matches!(l.oper.as_str(), "routable" | "degraded"))
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "lo")
        .collect();
    match (managed.iter().any(|(n, _)| n != "lo"), up.is_empty()) {
        (false, _) => Ok("no managed network link".to_string()),
        (true, true) => Err("no configured link has an address yet".to_string()),
        (true, false) => Ok(format!("network online ({})", up.join(", "))),
    }
}

fn network(dir: &Path) -> Look {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // networkd is not running (or not in the image): nothing to wait for.
        return Ok("no systemd-networkd".to_string());
    };
    let mut links = Vec::new();
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let index = e.file_name().to_string_lossy().into_owned();
        links.push((link_name(&index), parse_link(&text)));
    }
    links.sort_by(|a, b| a.0.cmp(&b.0));
    network_verdict(&links)
}

/// The interface name of link `index` (from /sys), or the index itself.
fn link_name(index: &str) -> String {
    std::fs::read_dir("/sys/class/net")
        .ok()
        .and_then(|d| {
            d.flatten().find(|e| {
                std::fs::read_to_string(e.path().join("ifindex"))
                    .map(|s| s.trim() == index)
                    .unwrap_or(false)
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("#{index}"))
}

fn provisioned(file: &Path) -> Look {
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(format!("provisioning: {}", s.trim())),
        Err(_) => Err(format!("{} not written yet", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(admin: &str, oper: &str) -> Link {
        Link {
            admin: admin.into(),
            oper: oper.into(),
        }
    }

    #[test]
    fn reads_networkd_link_state() {
        let l =
            parse_link("# This is private data.\nADMIN_STATE=configured\nOPER_STATE=routable\n");
        assert_eq!(l, link("configured", "routable"));
    }

    #[test]
    fn network_waits_for_every_managed_link() {
        let lo = ("lo".to_string(), link("unmanaged", "carrier"));
        let eth = |a: &str, o: &str| ("enp0s1".to_string(), link(a, o));
        assert!(network_verdict(&[lo.clone(), eth("configuring", "carrier")]).is_err());
        assert!(network_verdict(&[lo.clone(), eth("failed", "off")])
            .unwrap_err()
            .contains("failed"));
        assert!(network_verdict(&[lo.clone(), eth("configured", "no-carrier")]).is_err());
        assert_eq!(
            network_verdict(&[lo.clone(), eth("configured", "routable")]).unwrap(),
            "network online (enp0s1)"
        );
        assert_eq!(network_verdict(&[lo]).unwrap(), "no managed network link");
    }

    #[test]
    fn provisioning_outcome_is_required() {
        let d = std::env::temp_dir().join(format!("ready-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("provisioned");
        assert!(provisioned(&f).is_err());
        std::fs::write(&f, "no config\n").unwrap();
        assert_eq!(provisioned(&f).unwrap(), "provisioning: no config");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn containerd_needs_a_server_version() {
        let d = std::env::temp_dir().join(format!("ready-ctr-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // A stand-in ctr that prints only the client part, as ctr does with no daemon.
        let ctr = d.join("ctr");
        std::fs::write(
            &ctr,
            "#!/bin/sh\necho 'Client:'\necho '  Version: 1.7'\nexit 1\n",
        )
        .unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&ctr).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&ctr, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(containerd(&ctr).is_err());
        std::fs::write(
            &ctr,
            "#!/bin/sh\nprintf 'Client:\\n  Version: 1.7\\n\\nServer:\\n  Version:  1.7.24\\n'\n",
        )
        .unwrap();
        assert_eq!(containerd(&ctr).unwrap(), "containerd 1.7.24 answers");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
