//! The raw ioctls slipway-init needs that nix does not wrap: device-mapper commands,
//! BLKPG partition resize, EXT4_IOC_RESIZE_FS, BLKRRPART, loop devices (LOOP_CTL_GET_FREE,
//! LOOP_SET_FD) and getrandom(2). This is the only module of the crate
//! that may use `unsafe`; every call passes a buffer or struct it owns for the duration
//! of the call, with the size the request number encodes.
#![allow(unsafe_code)]

use nix::libc;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `sizeof(struct dm_ioctl)` from <linux/dm-ioctl.h>.
pub const DM_IOCTL_SIZE: usize = 312;

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
const fn dm_request(nr: u8) -> u64 {
    (3 << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | nr as u64
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs device-mapper command `nr` on `control` with `buf`: a `struct dm_ioctl` header
/// followed by the command's payload; the header's `data_size` must equal `buf.len()`.
/// The kernel writes its answer back into `buf`.
pub fn dm_ioctl(control: &File, nr: u8, buf: &mut [u8]) -> io::Result<()> {
    let declared = buf
        .get(12..16)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if buf.len() < DM_IOCTL_SIZE || declared != Some(buf.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "device-mapper buffer size does not match its data_size",
        ));
    }
    // SAFETY: `buf` is a live, exclusively borrowed allocation of `data_size` bytes
    // (checked above); the kernel reads and writes at most `data_size` bytes of it and
    // keeps no reference after the call returns.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), dm_request(nr) as _, buf.as_mut_ptr()) };
    check(r)
}

/// `struct blkpg_partition` from <linux/blkpg.h>.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg` from <linux/blkpg.h>.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

const BLKPG: u64 = 0x1269; // _IO(0x12, 105)
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

/// Tells the kernel partition `number` of `disk` now spans `length` bytes from `start`
/// (BLKPG_RESIZE_PARTITION; works while other partitions of the disk are in use, which
/// BLKRRPART refuses).
pub fn blkpg_resize(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "value out of range");
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(invalid)?,
        length: i64::try_from(length).map_err(invalid)?,
        pno: libc::c_int::try_from(number).map_err(invalid)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the `part` it points to are live locals of the types the BLKPG
    // request expects; the kernel copies them in and keeps no reference.
    let r = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg as *mut BlkpgIoctlArg) };
    check(r)
}

const EXT4_IOC_RESIZE_FS: u64 = 0x4008_6610; // _IOW('f', 16, __u64)

/// Grows the mounted ext4 file system that `dir` (opened on its mount point) belongs
/// to, to `blocks` file-system blocks (online resize).
pub fn ext4_resize(dir: &File, blocks: u64) -> io::Result<()> {
    let count: u64 = blocks;
    // SAFETY: the request reads one u64 through the pointer, which points to a live
    // local for the whole call.
    let r = unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            EXT4_IOC_RESIZE_FS as _,
            &count as *const u64,
        )
    };
    check(r)
}

const BLKRRPART: u64 = 0x125f; // _IO(0x12, 95)

/// Makes the kernel re-read the partition table of `disk` (a whole disk none of whose
/// partitions is in use), so the partition devices of a table just written appear.
pub fn blkrrpart(disk: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    let r = unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as _, 0) };
    check(r)
}

const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;

/// The number of a free loop device (made on demand) from /dev/loop-control.
pub fn loop_get_free(control: &File) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the number.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _, 0) };
    check(r)?;
    u32::try_from(r).map_err(|_| io::Error::other("negative loop number"))
}

/// Attaches `backing` to the loop device `dev`; read-only when `backing` was opened
/// read-only.
pub fn loop_set_fd(dev: &File, backing: &File) -> io::Result<()> {
    // SAFETY: LOOP_SET_FD takes the backing file descriptor by value; the kernel takes
    // its own reference to the file.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
    check(r)
}

/// Fills `buf` from the kernel's random number generator (getrandom(2), blocking until
/// it is seeded).
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, a live,
        // exclusively borrowed slice.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += r as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // DM_DEV_CREATE and DM_TABLE_LOAD as the kernel headers expand them on x86-64.
        assert_eq!(dm_request(3), 0xC138_FD03);
        assert_eq!(dm_request(9), 0xC138_FD09);
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }

    #[test]
    fn getrandom_fills_the_buffer() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        getrandom(&mut a).unwrap();
        getrandom(&mut b).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn refuses_a_buffer_whose_size_disagrees() {
        let f = File::open("/dev/null").unwrap();
        let mut buf = vec![0u8; DM_IOCTL_SIZE];
        let e = dm_ioctl(&f, 0, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
