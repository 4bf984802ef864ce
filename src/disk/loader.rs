//! What the ESP holds: consumes the UKI, the image version, systemd-boot (two slots) and
//! the Secure Boot enrollment files, produces the ESP's file list (path, bytes), which
//! the disk's ESP and the installer's 4096-byte-sector ESP are both made of.
//!
//! - One slot: the UKI at the removable-media path `EFI/BOOT/BOOTX64.EFI`, booted
//!   directly by the firmware.
//! - Two slots: systemd-boot at `EFI/BOOT/BOOTX64.EFI` (from the image's own
//!   `systemd-boot-efi` package), `loader/loader.conf` and the UKI as a Boot Loader
//!   Specification type #2 entry, `EFI/Linux/slipway-VERSION.efi`. The factory version
//!   carries no `+N` boot counter: it is good. The agent installs later versions as
//!   `slipway-VERSION+TRIES.efi`; systemd-boot counts their tries down, boots the newest
//!   entry by version that is not bad, and `systemd-bless-boot` drops the counter once
//!   the boot is good (<https://uapi-group.org/specifications/specs/boot_loader_specification/>,
//!   <https://systemd.io/AUTOMATIC_BOOT_ASSESSMENT/>).

/// Where systemd-boot is in the tree (package systemd-boot-efi).
pub const SYSTEMD_BOOT: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The firmware's removable-media boot path.
pub const REMOVABLE: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's configuration on the ESP.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// The directory of type #2 boot entries (UKIs).
pub const ENTRIES_DIR: &str = "EFI/Linux";

/// loader.conf(5): no menu (`timeout 0`; a key held at boot still shows it) and no
/// command-line editor (the command line pins the root hash). No `default`: the entry
/// is the newest version that is not bad, as systemd-boot sorts them.
pub const LOADER_CONF_TEXT: &str = "timeout 0\neditor no\n";

/// The ESP path of the UKI of `version` (no boot counter).
pub fn uki_path(version: &str) -> String {
    format!("{ENTRIES_DIR}/slipway-{version}.efi")
}

/// The boot files of the ESP: the UKI alone (`boot_loader` None: one slot), or
/// systemd-boot, its configuration and the UKI of `version`; then `extra` (enrollment).
pub fn esp_files(
    uki: &[u8],
    version: &str,
    boot_loader: Option<&[u8]>,
    extra: &[(String, Vec<u8>)],
) -> Vec<(String, Vec<u8>)> {
    let mut files = match boot_loader {
        None => vec![(REMOVABLE.to_string(), uki.to_vec())],
        Some(sd_boot) => vec![
            (REMOVABLE.to_string(), sd_boot.to_vec()),
            (
                LOADER_CONF.to_string(),
                LOADER_CONF_TEXT.as_bytes().to_vec(),
            ),
            (uki_path(version), uki.to_vec()),
        ],
    };
    files.extend(extra.iter().cloned());
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_slots_boot_systemd_boot_and_the_uki_is_an_entry() {
        let f = esp_files(
            b"uki",
            "7",
            Some(b"sdboot"),
            &[("keys/db".into(), b"k".to_vec())],
        );
        let names: Vec<&str> = f.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "EFI/BOOT/BOOTX64.EFI",
                "loader/loader.conf",
                "EFI/Linux/slipway-7.efi",
                "keys/db"
            ]
        );
        assert_eq!(f[0].1, b"sdboot");
        assert!(!LOADER_CONF_TEXT.contains("default"));
        let f = esp_files(b"uki", "7", None, &[]);
        assert_eq!(f, [("EFI/BOOT/BOOTX64.EFI".to_string(), b"uki".to_vec())]);
    }
}
