//! Sparse copies: consumes bytes or a file, produces them at an offset of another file
//! without writing its all-zero 4 KiB blocks (the target is pre-sized, so those read as
//! zeros and stay holes). Used to lay partitions into `disk.raw` and to copy stage-cache
//! entries across file systems.

use anyhow::{Context, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copies `data` to `f` at `offset`, skipping all-zero 4 KiB blocks.
pub fn write_at(f: &std::fs::File, data: &[u8], offset: u64, what: &str) -> Result<()> {
    for (i, block) in data.chunks(4096).enumerate() {
        if block.iter().all(|b| *b == 0) {
            continue;
        }
        f.write_all_at(block, offset + (i as u64) * 4096)
            .with_context(|| format!("writing {what}"))?;
    }
    Ok(())
}

/// Copies the file `src` into `f` at `offset` without holding it in memory: only its
/// data regions are read (`SEEK_DATA`/`SEEK_HOLE`; the whole file where the file system
/// cannot say), in 1 MiB pieces, and all-zero blocks are skipped as in [`write_at`].
pub fn copy_at(f: &std::fs::File, src: &Path, offset: u64, what: &str) -> Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let s = std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = s.metadata()?.len();
    let fd = s.as_raw_fd();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let start = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(_) => pos,                          // no SEEK_DATA here: read it all
        };
        let end = lseek(fd, start as i64, Whence::SeekHole).map_or(len, |h| h as u64);
        let mut p = start;
        while p < end {
            let n = ((end - p) as usize).min(buf.len());
            s.read_exact_at(&mut buf[..n], p)
                .with_context(|| format!("reading {}", src.display()))?;
            write_at(f, &buf[..n], offset + p, what)?;
            p += n as u64;
        }
        pos = end;
    }
    Ok(())
}

/// Copies `src` to the new file `dst` (mode `mode`), keeping its holes.
pub fn copy_file(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    let len = std::fs::metadata(src)
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    let f = crate::io::atomic::create_new(dst, mode)?;
    f.set_len(len)
        .with_context(|| format!("sizing {}", dst.display()))?;
    copy_at(&f, src, 0, &dst.display().to_string())?;
    f.sync_all()
        .with_context(|| format!("syncing {}", dst.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_is_copied_by_its_data_and_stays_sparse() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        // 64 MiB with data at the start, at 5 MiB (crossing a 1 MiB piece) and at the end.
        let src = d.path().join("var.img");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&[7u8; 8192], (5 << 20) - 4096).unwrap();
        f.write_all_at(b"end", (64 << 20) - 3).unwrap();
        drop(f);
        let dst = d.path().join("disk.raw");
        let out = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&dst)
            .unwrap();
        out.set_len((64 << 20) + (1 << 20)).unwrap();
        copy_at(&out, &src, 1 << 20, "the test file system").unwrap();
        let got = std::fs::read(&dst).unwrap();
        let want = std::fs::read(&src).unwrap();
        assert!(got[..1 << 20].iter().all(|b| *b == 0));
        assert!(
            got[1 << 20..] == want[..],
            "the copy differs from its source"
        );
        // Only the written blocks are allocated (st_blocks counts 512-byte units).
        let allocated = std::fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(
            allocated < 1 << 20,
            "{allocated} bytes allocated: not sparse"
        );
        // A whole-file copy is the same bytes, and sparse too.
        let copy = d.path().join("copy.img");
        copy_file(&src, &copy, 0o600).unwrap();
        assert!(std::fs::read(&copy).unwrap() == want);
        assert!(std::fs::metadata(&copy).unwrap().blocks() * 512 < 1 << 20);
    }
}
