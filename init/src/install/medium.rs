//! The installer's own medium: consumes the block devices (whole disks: the CD-ROM
//! `sr0`, or a USB stick `sdX` holding the hybrid ISO written raw) and the id from
//! `slipway.media=`; produces the device whose ISO 9660 primary volume descriptor (at
//! byte 32768; ECMA-119 8.4) has the Volume Set Identifier `SLIPWAY-<ID>` (offset 190,
//! 128 bytes, space padded), mounted read-only.

use crate::console::{self, fail, At, Res};
use crate::disks;
use nix::mount::{mount, MsFlags};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Where the medium is mounted.
pub const MOUNT: &str = "/run/slipway/medium";
const STEP: &str = "install-find-medium";

/// The Volume Set Identifier of a primary volume descriptor, if `pvd` is one.
pub fn volume_set(pvd: &[u8]) -> Option<String> {
    if pvd.len() < 318 || pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    let id = String::from_utf8_lossy(&pvd[190..318]);
    Some(id.trim_end_matches([' ', '\0']).to_string())
}

fn read_volume_set(name: &str) -> Option<String> {
    let f = File::open(format!("/dev/{name}")).ok()?;
    let mut pvd = [0u8; 2048];
    f.read_exact_at(&mut pvd, 32768).ok()?;
    volume_set(&pvd)
}

/// Waits up to `wait` for the device whose volume set is `SLIPWAY-<id>`; returns its
/// kernel name. Two such devices are an error naming both.
pub fn find(id: &str, wait: Duration) -> Res<String> {
    let want = format!("SLIPWAY-{id}");
    let start = Instant::now();
    let mut next_note = Duration::from_secs(5);
    loop {
        let mut hits = Vec::new();
        let mut seen = Vec::new();
        for name in disks::list() {
            match read_volume_set(&name) {
                Some(v) if v.eq_ignore_ascii_case(&want) => hits.push(name),
                Some(v) => seen.push(format!("{name} (ISO 9660, volume set {v:?})")),
                None => seen.push(name),
            }
        }
        match &hits[..] {
            [one] => return Ok(one.clone()),
            [] => {}
            many => {
                return Err(fail(
                    STEP,
                    &want,
                    format!("{} all carry it; detach all but one", many.join(" and ")),
                ))
            }
        }
        let waited = start.elapsed();
        if waited >= wait {
            return Err(fail(
                STEP,
                &want,
                format!(
                    "no block device has an ISO 9660 volume set {want:?} after {} s (is the isofs medium attached, and are its drivers in the initramfs?); seen: {}",
                    wait.as_secs(),
                    if seen.is_empty() { "no disks".into() } else { seen.join(", ") }
                ),
            ));
        }
        if waited >= next_note {
            console::notice(&format!(
                "waiting for the installer medium {want}: {} s of {}",
                next_note.as_secs(),
                wait.as_secs()
            ));
            next_note += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mounts `/dev/<name>` as ISO 9660, read-only, at [`MOUNT`].
pub fn mount_medium(name: &str) -> Res<()> {
    const STEP: &str = "install-mount-medium";
    fs::create_dir_all(MOUNT).at(STEP, MOUNT)?;
    let dev = format!("/dev/{name}");
    mount(
        Some(dev.as_str()),
        MOUNT,
        Some("iso9660"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .at(
        STEP,
        format!("{dev} (iso9660, read-only, on {MOUNT}; is isofs in the initramfs?)"),
    )
}

/// `/slipway/<name>` on the mounted medium (as written, or upper case: an ISO without
/// Rock Ridge shows its names so).
pub fn path(name: &str) -> String {
    let p = format!("{MOUNT}/slipway/{name}");
    if fs::exists(&p).unwrap_or(false) {
        return p;
    }
    let up = format!("{MOUNT}/SLIPWAY/{}", name.to_uppercase());
    if fs::exists(&up).unwrap_or(false) {
        up
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_volume_set_identifier() {
        let mut pvd = vec![0u8; 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        let id = format!("{:<128}", "SLIPWAY-0123456789abcdef0123456789abcdef");
        pvd[190..318].copy_from_slice(id.as_bytes());
        assert_eq!(
            volume_set(&pvd).as_deref(),
            Some("SLIPWAY-0123456789abcdef0123456789abcdef")
        );
        pvd[0] = 2; // a supplementary descriptor
        assert_eq!(volume_set(&pvd), None);
        assert_eq!(volume_set(&[0u8; 100]), None);
    }
}
