//! Device-mapper through its ioctl interface (/dev/mapper/control,
//! <linux/dm-ioctl.h>): creates a device, loads a one-target table, suspends and
//! resumes. The buffers are laid out here as plain bytes (so they can be unit-tested);
//! `sys::dm_ioctl` passes them to the kernel.

use crate::sys::{self, DM_IOCTL_SIZE};
use std::fs::File;

const DM_VERSION: [u32; 3] = [4, 0, 0];
const DM_DEV_CREATE: u8 = 3;
const DM_DEV_SUSPEND: u8 = 6;
const DM_TABLE_LOAD: u8 = 9;
/// `DM_READONLY_FLAG`: the table (and so the device) is read-only.
pub const READONLY: u32 = 1 << 0;
/// `DM_SUSPEND_FLAG`: with DM_DEV_SUSPEND, suspend instead of resume.
pub const SUSPEND: u32 = 1 << 1;
/// `sizeof(struct dm_target_spec)`.
const TARGET_SPEC_SIZE: usize = 40;
/// Room for the kernel's answers (it sets DM_BUFFER_FULL_FLAG if they do not fit).
const ANSWER_ROOM: usize = 4096;

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A `struct dm_ioctl` header for device `name` in a buffer of `size` bytes.
pub fn header(name: &str, flags: u32, size: usize) -> Result<Vec<u8>, String> {
    if name.is_empty() || name.len() >= 128 || name.contains('/') {
        return Err(format!("bad device-mapper name {name:?}"));
    }
    let mut b = vec![0u8; size];
    for (i, v) in DM_VERSION.iter().enumerate() {
        put32(&mut b, i * 4, *v);
    }
    put32(&mut b, 12, size as u32); // data_size
    put32(&mut b, 16, DM_IOCTL_SIZE as u32); // data_start
    put32(&mut b, 28, flags);
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(b)
}

/// A DM_TABLE_LOAD buffer: one target of `sectors` 512-byte sectors.
pub fn table_load(
    name: &str,
    flags: u32,
    sectors: u64,
    target: &str,
    params: &str,
) -> Result<Vec<u8>, String> {
    if target.len() >= 16 {
        return Err(format!("target type {target:?} is too long"));
    }
    if params.contains('\0') {
        return Err("target parameters contain NUL".into());
    }
    // The spec, then the NUL-terminated parameters, padded to 8 bytes.
    let spec_len = (TARGET_SPEC_SIZE + params.len() + 1).next_multiple_of(8);
    let mut b = header(name, flags, DM_IOCTL_SIZE + spec_len)?;
    put32(&mut b, 20, 1); // target_count
    let s = DM_IOCTL_SIZE;
    put64(&mut b, s, 0); // sector_start
    put64(&mut b, s + 8, sectors); // length
    put32(&mut b, s + 20, spec_len as u32); // next
    b[s + 24..s + 24 + target.len()].copy_from_slice(target.as_bytes());
    let p = s + TARGET_SPEC_SIZE;
    b[p..p + params.len()].copy_from_slice(params.as_bytes());
    Ok(b)
}

/// Where `struct dm_ioctl` holds the UUID, and its room (with the NUL).
const UUID_AT: usize = 176;
const UUID_LEN: usize = 129;

/// A DM_DEV_CREATE buffer for `name` with UUID `uuid`.
pub fn create_buffer(name: &str, uuid: &str) -> Result<Vec<u8>, String> {
    if uuid.len() >= UUID_LEN || uuid.contains('\0') {
        return Err(format!("bad device-mapper UUID {uuid:?}"));
    }
    let mut b = header(name, 0, DM_IOCTL_SIZE + ANSWER_ROOM)?;
    b[UUID_AT..UUID_AT + uuid.len()].copy_from_slice(uuid.as_bytes());
    Ok(b)
}

/// The device number in a `struct dm_ioctl` answer (the kernel's `huge_encode_dev`)
/// as (major, minor).
pub fn answer_dev(b: &[u8]) -> (u64, u64) {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[40..48]);
    let dev = u64::from_ne_bytes(a);
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// An open /dev/mapper/control.
pub struct Control(File);

impl Control {
    /// Opens the control node (devtmpfs creates it when dm-mod loads).
    pub fn open() -> Result<Control, String> {
        let p = "/dev/mapper/control";
        File::options()
            .read(true)
            .write(true)
            .open(p)
            .map(Control)
            .map_err(|e| format!("opening {p}: {e} (is the dm-mod module loaded?)"))
    }

    fn run(&self, what: &str, nr: u8, mut buf: Vec<u8>) -> Result<Vec<u8>, String> {
        sys::dm_ioctl(&self.0, nr, &mut buf)
            .map_err(|e| format!("{what}: {e} (the kernel messages above say why)"))?;
        Ok(buf)
    }

    /// Creates an empty device `name` with the device-mapper UUID `uuid` (shown in
    /// /sys/block/dm-N/dm/uuid); returns its (major, minor).
    pub fn create(&self, name: &str, uuid: &str) -> Result<(u64, u64), String> {
        let b = self.run("DM_DEV_CREATE", DM_DEV_CREATE, create_buffer(name, uuid)?)?;
        Ok(answer_dev(&b))
    }

    /// Loads a one-target table into the inactive slot of `name`.
    pub fn load(
        &self,
        name: &str,
        flags: u32,
        sectors: u64,
        target: &str,
        params: &str,
    ) -> Result<(), String> {
        let buf = table_load(name, flags, sectors, target, params)?;
        self.run("DM_TABLE_LOAD", DM_TABLE_LOAD, buf).map(|_| ())
    }

    /// Suspends `name` (flushing and freezing a mounted file system).
    pub fn suspend(&self, name: &str) -> Result<(), String> {
        let b = header(name, SUSPEND, DM_IOCTL_SIZE + ANSWER_ROOM)?;
        self.run("DM_DEV_SUSPEND (suspend)", DM_DEV_SUSPEND, b)
            .map(|_| ())
    }

    /// Resumes `name`, making a loaded table live.
    pub fn resume(&self, name: &str) -> Result<(), String> {
        let b = header(name, 0, DM_IOCTL_SIZE + ANSWER_ROOM)?;
        self.run("DM_DEV_SUSPEND (resume)", DM_DEV_SUSPEND, b)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }

    #[test]
    fn table_buffer_layout() {
        let params = "1 254:1 254:2 4096 4096 10 1 sha256 00 -";
        let b = table_load("root", READONLY, 80, "verity", params).unwrap();
        assert_eq!(b.len() % 8, 0);
        assert_eq!(u32_at(&b, 0), 4);
        assert_eq!(u32_at(&b, 12) as usize, b.len());
        assert_eq!(u32_at(&b, 16) as usize, DM_IOCTL_SIZE);
        assert_eq!(u32_at(&b, 20), 1);
        assert_eq!(u32_at(&b, 28), READONLY);
        assert_eq!(&b[48..53], b"root\0");
        let s = DM_IOCTL_SIZE;
        assert_eq!(u64::from_ne_bytes(b[s + 8..s + 16].try_into().unwrap()), 80);
        assert_eq!(u32_at(&b, s + 20) as usize, b.len() - s);
        assert_eq!(&b[s + 24..s + 31], b"verity\0");
        let p = &b[s + 40..];
        let end = p.iter().position(|&c| c == 0).unwrap();
        assert_eq!(std::str::from_utf8(&p[..end]).unwrap(), params);
    }

    #[test]
    fn the_create_buffer_carries_the_uuid_after_the_name() {
        let uuid = format!("SLIPWAY-VERITY-{}", "ab".repeat(32));
        let b = create_buffer("root", &uuid).unwrap();
        assert_eq!(&b[48..53], b"root\0");
        assert_eq!(&b[UUID_AT..UUID_AT + uuid.len()], uuid.as_bytes());
        assert_eq!(b[UUID_AT + uuid.len()], 0);
        assert!(create_buffer("root", &"u".repeat(129)).is_err());
    }

    #[test]
    fn rejects_bad_names_and_targets() {
        assert!(header("", 0, DM_IOCTL_SIZE).is_err());
        assert!(header("a/b", 0, DM_IOCTL_SIZE).is_err());
        assert!(header(&"x".repeat(128), 0, DM_IOCTL_SIZE).is_err());
        assert!(table_load("r", 0, 1, "a-very-long-target", "").is_err());
    }

    #[test]
    fn decodes_the_answer_device_number() {
        let mut b = vec![0u8; DM_IOCTL_SIZE];
        // huge_encode_dev(MKDEV(254, 0x123)) = minor low 8 | major << 8 | minor high << 12
        let dev: u64 = 0x23 | (254 << 8) | (0x100 << 12);
        b[40..48].copy_from_slice(&dev.to_ne_bytes());
        assert_eq!(answer_dev(&b), (254, 0x123));
    }
}
