//! Writing a payload file into its partition: consumes the file on the medium and what
//! install.json says of it (size, sha256); streams it in 1 MiB pieces to the target at
//! the partition's offset, hashing while writing, and compares; then, after fsync and
//! dropping the cached pages, reads the range back from the disk and compares again.

use super::manifest::FileRef;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

const CHUNK: usize = 1 << 20;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `src` to `dst` at `offset` (at most `room` bytes); checks its size and sha256
/// against `want`.
pub fn copy(src: &Path, dst: &File, offset: u64, room: u64, want: &FileRef) -> Result<(), String> {
    let mut f = File::open(src).map_err(|e| format!("opening {}: {e}", src.display()))?;
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
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("reading {} at byte {done}: {e}", src.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        dst.write_all_at(&buf[..n], offset + done)
            .map_err(|e| format!("writing at byte {}: {e}", offset + done))?;
        done += n as u64;
    }
    if done != want.size {
        return Err(format!(
            "{} ended after {done} bytes; install.json says {}",
            src.display(),
            want.size
        ));
    }
    let got = hex(&h.finalize());
    if got != want.sha256 {
        return Err(format!(
            "sha256 of {} as written is {got}; install.json says {} (the medium is damaged)",
            src.display(),
            want.sha256
        ));
    }
    Ok(())
}

/// Syncs `dst`, drops its cached pages and reads `want.size` bytes at `offset` back,
/// comparing their sha256 with `want`.
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
    let mut done = 0u64;
    while done < want.size {
        let n = CHUNK.min((want.size - done) as usize);
        dst.read_exact_at(&mut buf[..n], offset + done)
            .map_err(|e| format!("reading back at byte {}: {e}", offset + done))?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    let got = hex(&h.finalize());
    if got != want.sha256 {
        return Err(format!(
            "read back, {} bytes at byte {offset} have sha256 {got}; {} has {} (the disk did not keep what was written)",
            want.size, want.path, want.sha256
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
        };
        copy(&src, &disk, 4096, 4 << 20, &want).unwrap();
        read_back(&disk, 4096, &want).unwrap();
        let mut back = vec![0u8; data.len()];
        disk.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);

        // A wrong hash is named; a file that does not fit is refused before writing.
        let bad = FileRef {
            sha256: "0".repeat(64),
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
}
