//! The files slipway itself adds to host images, read at compile time from the
//! repository's top-level `rootfs/` (each listed in docs/host-images.md). Consumes
//! nothing; produces the table the disk and preload stages put into the tree.

/// One file of `rootfs/`: where it is in the image (and in `rootfs/`) and its bytes.
pub struct File {
    /// The path in the image, without the leading `/` (the same under `rootfs/`).
    pub path: &'static str,
    /// Its content.
    pub bytes: &'static [u8],
}

macro_rules! rootfs_file {
    ($path:literal) => {
        File {
            path: $path,
            bytes: include_bytes!(concat!("../../rootfs/", $path)),
        }
    };
}

/// The provisioning agent's units, installed with the agent into every host image.
pub const AGENT_UNITS: &[File] = &[
    rootfs_file!("usr/lib/systemd/system/slipway-provision.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-test-agent.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-metadata.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-journal-shipper.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-health.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-ready.target"),
    rootfs_file!("usr/lib/systemd/system/slipway-ready.service"),
    rootfs_file!("usr/lib/systemd/system/boot-complete.target.d/slipway.conf"),
    rootfs_file!("usr/lib/systemd/system/slipway-bless.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-update-gate.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-update.service"),
    rootfs_file!("usr/lib/systemd/system/slipway-update.timer"),
];

/// `/etc/machine-id` as shipped: `uninitialized`, so the first boot generates the id.
pub const MACHINE_ID: File = rootfs_file!("etc/machine-id");

/// The unit that imports preloaded images into containerd; the preload stage adds one
/// `ExecStart=` line per image before its `[Install]` section.
pub const PRELOAD_UNIT: File =
    rootfs_file!("usr/lib/systemd/system/slipway-preload-images.service");

/// Every file of `rootfs/`, for listing and checking.
pub fn all() -> impl Iterator<Item = &'static File> {
    AGENT_UNITS.iter().chain([&MACHINE_ID, &PRELOAD_UNIT])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `rootfs/` is in the table, and every table entry is documented
    /// by a line of docs/host-images.md.
    #[test]
    fn the_table_is_the_directory_and_each_file_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut on_disk: Vec<String> = walkdir::WalkDir::new(root.join("rootfs"))
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let p = e.path().strip_prefix(root.join("rootfs")).unwrap();
                p.to_string_lossy().into_owned()
            })
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = all().map(|f| f.path.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        let doc = std::fs::read_to_string(root.join("docs/host-images.md")).unwrap();
        for f in all() {
            assert!(
                doc.lines()
                    .any(|l| l.starts_with('|') && l.contains(&format!("`rootfs/{}`", f.path))),
                "docs/host-images.md has no line for rootfs/{}",
                f.path
            );
        }
    }
}
