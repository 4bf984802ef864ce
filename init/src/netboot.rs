//! A diskless (netboot) root: consumes `/slipway/root.img` and `/slipway/verity.img`,
//! files of the initramfs (a second initrd the boot server sends), and optionally
//! `/slipway/config.toml` (a per-machine config, another initrd); produces the [`Root`]
//! on two read-only loop devices, a tmpfs /var, and the config handed to the agent at
//! `/run/slipway/netboot-config.toml`.
//!
//! The files are trusted only through `roothash=` on the UKI's command line: dm-verity
//! checks every block read from the loop device against it. The config is exactly as
//! trusted as the boot server that sent it (docs/initramfs.md).

use crate::console::{self, fail, At, Res};
use crate::{disks, sys, Root};
use nix::mount::{mount, MsFlags};
use std::fs::{self, File};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

/// The root file system image in the initramfs.
pub const ROOT_IMG: &str = "/slipway/root.img";
/// Its verity hash tree.
pub const VERITY_IMG: &str = "/slipway/verity.img";
/// The per-machine config in the initramfs.
pub const CONFIG: &str = "/slipway/config.toml";
/// Where the agent reads it (under /run, which moves into the new root).
pub const HANDED_CONFIG: &str = "/run/slipway/netboot-config.toml";

const STEP: &str = "netboot-root";

/// Attaches `path` read-only to a free loop device; returns its name (`loop0`).
fn attach(path: &str) -> Res<String> {
    let backing = File::open(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            " (slipway.root=initrd: the boot server must send the root cpio as a second initrd)"
        } else {
            ""
        };
        fail(STEP, path, format!("{e}{why}"))
    })?;
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .at(
            STEP,
            "/dev/loop-control (is the loop module in the initramfs?)",
        )?;
    let n = sys::loop_get_free(&control).at(STEP, "/dev/loop-control: LOOP_CTL_GET_FREE")?;
    let name = format!("loop{n}");
    let node = format!("/dev/{name}");
    let dev = File::open(&node).at(STEP, &node)?;
    sys::loop_set_fd(&dev, &backing).at(STEP, format!("{node}: LOOP_SET_FD {path}"))?;
    console::info(&format!("{path} on {node} (read-only)"));
    Ok(name)
}

/// The root and verity images on loop devices.
pub fn find_root(roothash: &str) -> Res<Root> {
    let root_dev = attach(ROOT_IMG)?;
    let verity_dev = attach(VERITY_IMG)?;
    let root_bytes = disks::size_bytes(&root_dev).at(STEP, &root_dev)?;
    Ok(Root {
        disk: None,
        root_bytes,
        root_what: format!("{root_dev} ({ROOT_IMG} from the initrd)"),
        root_dev,
        verity_dev,
        roothash: roothash.to_string(),
    })
}

/// Mounts a tmpfs on `<sysroot>/var` (a diskless node keeps nothing across boots).
pub fn mount_var_tmpfs(sysroot: &str) -> Res<()> {
    let target = format!("{sysroot}/var");
    mount(
        Some("tmpfs"),
        target.as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .at("mount-var", format!("tmpfs on {target}"))?;
    console::info(&format!("mounted a tmpfs on {target} (slipway.var=tmpfs)"));
    Ok(())
}

/// Copies the per-machine config, if the initramfs has one, to [`HANDED_CONFIG`]
/// (0600, root), where the agent reads it on the `metal` platform.
pub fn hand_over_config() -> Res<()> {
    const STEP: &str = "netboot-config";
    let bytes = match fs::read(CONFIG) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(STEP, CONFIG, e)),
    };
    fs::create_dir_all("/run/slipway").at(STEP, "/run/slipway")?;
    fs::set_permissions("/run/slipway", fs::Permissions::from_mode(0o755))
        .at(STEP, "/run/slipway")?;
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(HANDED_CONFIG)
        .at(STEP, HANDED_CONFIG)?;
    std::io::Write::write_all(&mut f, &bytes).at(STEP, HANDED_CONFIG)?;
    console::mark(&format!(
        "per-machine config {CONFIG} ({} bytes) handed to the agent as {HANDED_CONFIG}",
        bytes.len()
    ));
    Ok(())
}
