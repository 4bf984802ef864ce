//! The partition the firmware booted from: consumes the EFI variable
//! `LoaderDevicePartUUID` (systemd's Boot Loader Interface; systemd-stub sets it to the
//! unique GUID of the ESP it was loaded from, when that is a GPT partition), read through
//! efivarfs; produces that GUID, or `None` (no EFI, a kernel EFI stub boot, an El Torito
//! CD-ROM boot, a network boot).
//!
//! An efivarfs file is a 4-byte attribute word followed by the variable's data; this
//! variable's data is the GUID as UTF-16LE text (36 characters, usually upper case,
//! optionally NUL-terminated). See
//! <https://systemd.io/BOOT_LOADER_INTERFACE/>.

use nix::mount::{mount, umount, MsFlags};
use slipway_common::guid::Guid;
use std::fs;

/// Where the kernel shows EFI variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// The variable, as efivarfs names it (name-vendor GUID).
pub const LOADER_DEVICE_PART_UUID: &str =
    "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Parses the bytes of the efivarfs file: the GUID, or an error saying what is wrong.
pub fn parse(file: &[u8]) -> Result<Guid, String> {
    let data = file.get(4..).filter(|d| d.len() % 2 == 0).ok_or_else(|| {
        format!(
            "{} bytes: not an attribute word and UTF-16 text",
            file.len()
        )
    })?;
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|u| u16::from_le_bytes([u[0], u[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let text = String::from_utf16(&units).map_err(|_| "not UTF-16 text".to_string())?;
    Guid::parse(text.trim()).ok_or_else(|| format!("{text:?} is not a GUID"))
}

/// The ESP partition GUID the firmware booted from, if the firmware (systemd-stub) said.
/// Mounts efivarfs read-only for the read and unmounts it again (systemd mounts its own).
/// `Err` only for a variable that exists but cannot be read or parsed.
pub fn boot_partition() -> Result<Option<Guid>, String> {
    if !fs::exists("/sys/firmware/efi").unwrap_or(false) {
        return Ok(None);
    }
    let path = format!("{EFIVARS}/{LOADER_DEVICE_PART_UUID}");
    let mounted_here = mount(
        Some("efivarfs"),
        EFIVARS,
        Some("efivarfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .is_ok();
    let read = fs::read(&path);
    if mounted_here {
        let _ = umount(EFIVARS);
    }
    match read {
        Ok(b) => parse(&b).map(Some).map_err(|e| format!("{path}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(text: &str, nul: bool) -> Vec<u8> {
        let mut b = vec![0x06, 0, 0, 0]; // boot-service and runtime access
        for u in text.encode_utf16().chain(nul.then_some(0)) {
            b.extend(u.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_the_variable_as_systemd_stub_writes_it() {
        let want = "5a7e4d1b-0c8f-4b1e-9a2d-3f6e8c7b9d01";
        for (text, nul) in [(want.to_uppercase(), true), (want.to_string(), false)] {
            assert_eq!(parse(&var(&text, nul)).unwrap().to_string(), want);
        }
        assert!(parse(&[6, 0, 0]).is_err());
        assert!(parse(&var("not-a-guid", true))
            .unwrap_err()
            .contains("not a GUID"));
        let mut odd = var(want, true);
        odd.push(0);
        assert!(parse(&odd).is_err());
    }
}
