//! Writing a payload file into its partition: consumes the file on the medium and what
//! install.json says of it (size, data extents, their sha256); zeroes the file's range
//! between the extents on the target (FALLOC_FL_ZERO_RANGE: a write-zeroes command, no
//! data moved), streams the extents in 1 MiB pieces to the target at the partition's
//! offset, hashing while writing, and compares; then, after fsync and dropping the cached
//! pages, reads the extents back from the disk and compares again. An empty /var or the
//! ESP's free space is never read, hashed or written byte by byte.

use super::manifest::FileRef;
use nix::fcntl::{fallocate, posix_fadvise, FallocateFlags, PosixFadviseAdvice};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

const CHUNK: usize = 1 << 20;
/// The alignment of zeroed ranges (the largest logical block size the installer writes).
const BLOCK: u64 = 4096;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the extents of `src` to `dst` at `offset` (the file takes at most `room`
/// bytes), zeroing the rest of its range; checks its size and the extents' sha256
/// against `want`.
pub fn copy(src: &Path, dst: &File, offset: u64, room: u64, want: &FileRef) -> Result<(), String> {
    let f = File::open(src).map_err(|e| format!("opening {}: {e}", src.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", src.display()))?
        .len();
    if len != want.size {
        return Err(format!(
            "{} is {len} bytes; install.json says {}",
            src.display(),
            want.size
        ));
    }
    if len > room {
        return Err(format!(
            "{} ({len} bytes) does not fit its partition ({room} bytes)",
            src.display()
        ));
    }
    zero_gaps(dst, offset, want, room)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    for &(start, length) in &want.data {
        let mut done = 0u64;
        while done < length {
            let n = CHUNK.min((length - done) as usize);
            let at = start + done;
            f.read_exact_at(&mut buf[..n], at)
                .map_err(|e| format!("reading {} at byte {at}: {e}", src.display()))?;
            h.update(&buf[..n]);
            dst.write_all_at(&buf[..n], offset + at)
                .map_err(|e| format!("writing at byte {}: {e}", offset + at))?;
            done += n as u64;
        }
    }
    let got = hex(&h.finalize());
    if got != want.data_sha256 {
        return Err(format!(
            "sha256 of the data of {} as written is {got}; install.json says {} (the medium is damaged)",
            src.display(),
            want.data_sha256
        ));
    }
    Ok(())
}

/// Zeroes the file's range on `dst` outside its data extents (rounded out to
/// [`BLOCK`], within `room`).
fn zero_gaps(dst: &File, offset: u64, want: &FileRef, room: u64) -> Result<(), String> {
    let mut gaps = Vec::new();
    let mut at = 0u64;
    for &(start, length) in &want.data {
        if start > at {
            gaps.push((at, start - at));
        }
        at = start + length;
    }
    if want.size > at {
        gaps.push((at, want.size - at));
    }
    // A gap starts at 0 or at an extent's (aligned) end; a tail gap may end mid-block.
    for (start, length) in gaps {
        let length = (length.div_ceil(BLOCK) * BLOCK).min(room - start);
        zero_range(dst, offset + start, length)?;
    }
    Ok(())
}

/// Zeroes `len` bytes at `offset` of a block device (or a file) without sending zeros:
/// the kernel issues write-zeroes where the device has it, else writes zero pages.
fn zero_range(dst: &File, offset: u64, len: u64) -> Result<(), String> {
    if len == 0 {
        return Ok(());
    }
    let (off, n) = (
        i64::try_from(offset).map_err(|_| "offset out of range".to_string())?,
        i64::try_from(len).map_err(|_| "length out of range".to_string())?,
    );
    let flags = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate(dst.as_raw_fd(), flags, off, n) {
        Ok(()) => Ok(()),
        // A file system without it (tmpfs, in unit tests): write the zeros.
        Err(nix::errno::Errno::EOPNOTSUPP) => zero(dst, offset, len),
        Err(e) => Err(format!(
            "zeroing {len} bytes at byte {offset} (FALLOC_FL_ZERO_RANGE): {e}"
        )),
    }
}

/// Syncs `dst`, drops its cached pages and reads the extents of `want` at `offset`
/// back, comparing their sha256 with `want`.
pub fn read_back(dst: &File, offset: u64, want: &FileRef) -> Result<(), String> {
    dst.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let len = i64::try_from(want.size).map_err(|_| "size out of range".to_string())?;
    let off = i64::try_from(offset).map_err(|_| "offset out of range".to_string())?;
    // Best effort: without it the read may come from the page cache.
    let _ = posix_fadvise(
        dst.as_raw_fd(),
        off,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    for &(start, length) in &want.data {
        let mut done = 0u64;
        while done < length {
            let n = CHUNK.min((length - done) as usize);
            let at = offset + start + done;
            dst.read_exact_at(&mut buf[..n], at)
                .map_err(|e| format!("reading back at byte {at}: {e}"))?;
            h.update(&buf[..n]);
            done += n as u64;
        }
    }
    let got = hex(&h.finalize());
    if got != want.data_sha256 {
        return Err(format!(
            "read back, the data of {} at byte {offset} has sha256 {got}; install.json says {} (the disk did not keep what was written)",
            want.path, want.data_sha256
        ));
    }
    Ok(())
}

/// Writes zeros over `len` bytes at `offset` (old signatures in the gaps between
/// partitions, and the old backup table at the end).
pub fn zero(dst: &File, offset: u64, len: u64) -> Result<(), String> {
    let buf = vec![0u8; CHUNK];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min((len - done) as usize);
        dst.write_all_at(&buf[..n], offset + done)
            .map_err(|e| format!("zeroing at byte {}: {e}", offset + done))?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex(&Sha256::digest(b))
    }

    #[test]
    fn copies_checks_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("slipway-init-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("root.img");
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 253) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let disk_path = dir.join("disk");
        let disk = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk_path)
            .unwrap();
        disk.set_len(8 << 20).unwrap();
        let want = FileRef {
            path: "root.img".into(),
            size: data.len() as u64,
            sha256: sha(&data),
            data: vec![(0, data.len() as u64)],
            data_sha256: sha(&data),
        };
        copy(&src, &disk, 4096, 4 << 20, &want).unwrap();
        read_back(&disk, 4096, &want).unwrap();
        let mut back = vec![0u8; data.len()];
        disk.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);

        // A wrong hash is named; a file that does not fit is refused before writing.
        let bad = FileRef {
            data_sha256: "0".repeat(64),
            ..want.clone()
        };
        assert!(copy(&src, &disk, 0, 4 << 20, &bad)
            .unwrap_err()
            .contains("install.json says 0000"));
        assert!(copy(&src, &disk, 0, 1 << 20, &want)
            .unwrap_err()
            .contains("does not fit"));
        // The disk changed after writing: read-back fails.
        disk.write_all_at(b"X", 4096 + 5).unwrap();
        assert!(read_back(&disk, 4096, &want)
            .unwrap_err()
            .contains("did not keep"));
        zero(&disk, 0, 8 << 20).unwrap();
        disk.read_exact_at(&mut back, 4096).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copies_only_the_extents_and_zeroes_the_rest() {
        let dir = std::env::temp_dir().join(format!("slipway-init-extents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("var.img");
        let mut data = vec![0u8; 4 * CHUNK];
        data[..4096].fill(7);
        data[2 * CHUNK..2 * CHUNK + 8192].fill(9);
        std::fs::write(&src, &data).unwrap();
        let disk_path = dir.join("disk");
        // A used disk: stale bytes everywhere.
        std::fs::write(&disk_path, vec![0xaau8; 6 * CHUNK]).unwrap();
        let disk = File::options()
            .read(true)
            .write(true)
            .open(&disk_path)
            .unwrap();
        let ext = [(0u64, 4096u64), (2 * CHUNK as u64, 8192)];
        let mut picked = data[..4096].to_vec();
        picked.extend_from_slice(&data[2 * CHUNK..2 * CHUNK + 8192]);
        let want = FileRef {
            path: "var.img".into(),
            size: data.len() as u64,
            sha256: sha(&data),
            data: ext.to_vec(),
            data_sha256: sha(&picked),
        };
        copy(&src, &disk, CHUNK as u64, 5 * CHUNK as u64, &want).unwrap();
        read_back(&disk, CHUNK as u64, &want).unwrap();
        let all = std::fs::read(&disk_path).unwrap();
        assert!(
            all[CHUNK..5 * CHUNK] == data[..],
            "the file's range is the file"
        );
        assert!(
            all[..CHUNK].iter().all(|&b| b == 0xaa),
            "before it untouched"
        );
        // A changed extent byte on the disk is caught; a changed gap byte is not read.
        disk.write_all_at(b"X", CHUNK as u64 + 2 * CHUNK as u64 + 100)
            .unwrap();
        assert!(read_back(&disk, CHUNK as u64, &want)
            .unwrap_err()
            .contains("did not keep"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
