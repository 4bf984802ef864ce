//! Verification stamps: consumes a file just hashed in full and found to hold the bytes
//! it should, produces a one-line record (its stamp) of the file's identity as the file
//! system reports it (device, inode, size, modification and change times to the
//! nanosecond) and the sha256 it had. A later use that finds the file with the same
//! identity takes the recorded sha256 without reading the file again.
//!
//! Why that is sound (docs/decisions/0044-verification-stamps.md): every change of a
//! file's bytes, size, mode or links sets its change time (ctime) to the file system's
//! clock, and no call sets a ctime to a chosen value. A stamp is written only when the
//! file's identity is the same after the read as before it, and its ctime is strictly
//! older than the ctime of a file created just before the read, on the same file system
//! (git's "racily clean" rule, with the file system's own clock: no clock skew, no
//! coarse-tick race). Any change after that creation gets a later ctime than the one
//! recorded, so the stamp no longer matches and the file is hashed again. The file's data
//! are synced before its stamp is written: a crash cannot leave a stamp beside bytes
//! that never reached the disk. Damage below the file system (a bad sector, a write to
//! the raw device) keeps the ctime: a stamp is trusted for [`MAX_AGE`] only.

use super::{hex, sha256_reader};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How long a stamp is trusted after the full hash that wrote it; then the file is
/// hashed in full again (and stamped again). Bounds how long damage that keeps the
/// file's ctime (bit rot, a bad disk) can go unseen.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The first word of a stamp, naming its format.
const MAGIC: &str = "slipway-stamp-1";
/// The suffix of the stamp kept beside a file ([`beside`]).
pub const SUFFIX: &str = ".verified";

/// A file's identity as `fstat` reports it: any change of its bytes changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    /// The identity of the file `m` describes.
    pub fn of(m: &fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The identity of the open file `f`.
    pub fn of_file(f: &File) -> std::io::Result<Identity> {
        f.metadata().map(|m| Identity::of(&m))
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The stamp kept beside `file`: `FILE.verified`.
pub fn beside(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(SUFFIX);
    PathBuf::from(s)
}

/// The text of a stamp: one line of space-separated fields.
fn format(id: &Identity, sha256: &str, at: u64) -> String {
    format!(
        "{MAGIC} {sha256} {} {} {} {} {} {} {} {at}\n",
        id.size, id.dev, id.ino, id.mtime.0, id.mtime.1, id.ctime.0, id.ctime.1
    )
}

/// The identity, sha256 and time of verification a stamp's text records.
fn parse(text: &str) -> Option<(Identity, String, u64)> {
    let line = text.strip_suffix('\n')?;
    let mut w = line.split(' ');
    if w.next()? != MAGIC {
        return None;
    }
    let sha = w.next()?;
    if !super::is_sha256_hex(sha) {
        return None;
    }
    let mut n = [0i64; 8];
    for v in &mut n {
        *v = w.next()?.parse().ok()?;
    }
    if w.next().is_some() {
        return None;
    }
    let id = Identity {
        size: u64::try_from(n[0]).ok()?,
        dev: u64::try_from(n[1]).ok()?,
        ino: u64::try_from(n[2]).ok()?,
        mtime: (n[3], n[4]),
        ctime: (n[5], n[6]),
    };
    Some((id, sha.to_string(), u64::try_from(n[7]).ok()?))
}

fn unix_now() -> Option<u64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// The sha256 the stamp at `stamp` records for a file whose identity is now `id`; None
/// when there is no readable stamp, it records another identity, or it is older than
/// [`MAX_AGE`] (or from the future: the clock was set back).
pub fn recorded(stamp: &Path, id: &Identity) -> Option<String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(stamp)
        .ok()?;
    let mut text = String::new();
    f.take(512).read_to_string(&mut text).ok()?;
    let (was, sha, at) = parse(&text)?;
    let now = unix_now()?;
    (was == *id && at <= now && now - at <= MAX_AGE.as_secs()).then_some(sha)
}

/// Removes the stamp `stamp`, if there is one.
pub fn remove(stamp: &Path) {
    let _ = fs::remove_file(stamp);
}

/// A full hash about to start, for a stamp after it: holds the stamp's new file, whose
/// creation read the file system's clock.
pub struct Pending {
    tmp: PathBuf,
    file: Option<File>,
    /// The new file's ctime: the file system's clock before the hashed file was read.
    start: (i64, i64),
    before: Identity,
    _cleanup: crate::io::signals::Registered,
}

impl Pending {
    /// Creates the stamp's new file `tmp` (`O_EXCL|O_NOFOLLOW`, 0600, in a private work
    /// directory on the file system of the file to stamp), for a file whose identity is
    /// `before`. Called before that file is read.
    pub fn begin(tmp: PathBuf, before: Identity) -> Result<Pending> {
        Pending::begin_apart(tmp, before, 0)
    }

    /// [`Pending::begin`] for a file that may live on another file system than `tmp`
    /// (another clock, say a network file system's server): it must also have been
    /// last changed at least `margin` seconds before.
    pub fn begin_apart(tmp: PathBuf, before: Identity, margin: i64) -> Result<Pending> {
        let cleanup = crate::io::signals::register(&tmp);
        let file = crate::io::atomic::create_new(&tmp, 0o600)?;
        let m = file
            .metadata()
            .with_context(|| format!("reading {}", tmp.display()))?;
        Ok(Pending {
            tmp,
            file: Some(file),
            start: (m.ctime().saturating_sub(margin), m.ctime_nsec()),
            before,
            _cleanup: cleanup,
        })
    }

    /// Whether a file that had identity `before` when the hash began and has `after`
    /// now may be stamped: unchanged while it was read, and last changed before the
    /// stamp's file was created.
    fn stampable(&self, after: &Identity) -> bool {
        *after == self.before && self.before.ctime < self.start
    }

    /// After `file` (the hashed file, still open) was read in full and found to have
    /// the expected `sha256`: syncs its data and writes the stamp `stamp` (the new file
    /// renamed onto it), when [`Pending::stampable`]. Returns whether it did. A stamp is
    /// only ever an optimisation: a failure to write one is not an error of the caller.
    pub fn finish(mut self, file: &File, sha256: &str, stamp: &Path) -> bool {
        let Ok(after) = Identity::of_file(file) else {
            return false;
        };
        if !self.stampable(&after) || file.sync_data().is_err() {
            return false;
        }
        let Some(mut f) = self.file.take() else {
            return false;
        };
        let text = format(&after, sha256, unix_now().unwrap_or(0));
        if f.write_all(text.as_bytes()).is_err() {
            return false;
        }
        drop(f);
        fs::rename(&self.tmp, stamp).is_ok()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Renamed away on success; removed otherwise.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// How much older than the stamp's new file a file on another file system must be to
/// be stamped by [`sha256_stamped`]: more than any tick and any sane clock skew.
const APART: i64 = 5;

/// The sha256 of the file at `path`: the one its stamp `stamp` records when that
/// matches the file as it is now; else the file is hashed in full and stamped (through
/// the new file `tmp`, on the same file system as `stamp`, maybe not as `path`: a file
/// changed in the last [`APART`] seconds is not stamped).
pub fn sha256_stamped(path: &Path, stamp: &Path, tmp: PathBuf) -> Result<String> {
    stamped_digest(path, stamp, tmp, APART)
}

/// [`sha256_stamped`], stamping a file last changed `margin` seconds before the stamp's
/// new file was made, or earlier.
fn stamped_digest(path: &Path, stamp: &Path, tmp: PathBuf, margin: i64) -> Result<String> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let id = Identity::of_file(&file).with_context(|| format!("reading {}", path.display()))?;
    if let Some(sha) = recorded(stamp, &id) {
        return Ok(sha);
    }
    let pending = Pending::begin_apart(tmp, id, margin).ok();
    let (sha, _) = sha256_reader(std::io::BufReader::with_capacity(1 << 20, &file))
        .with_context(|| format!("reading {}", path.display()))?;
    if let Some(p) = pending {
        p.finish(&file, &sha, stamp);
    }
    Ok(sha)
}

/// A stamp name for the file at `path` in a directory of stamps: the sha256 of the path.
pub fn name_for(path: &Path) -> String {
    let mut h = Sha256::new();
    h.update(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()));
    format!("{}{SUFFIX}", &hex(&h.finalize())[..32])
}

/// Waits until the file system's clock (the ctime of a new file beside `path`) has moved
/// past `path`'s ctime, so that `path` may be stamped: ticks are a few milliseconds.
#[cfg(test)]
pub(crate) fn age(path: &Path) {
    let c = Identity::of(&fs::metadata(path).expect("stat")).ctime;
    let d = path.parent().expect("a parent directory");
    for i in 0..1000 {
        let probe = d.join(format!(".age-probe-{i}"));
        fs::write(&probe, b"").expect("writing a probe");
        let m = fs::metadata(&probe).expect("stat");
        fs::remove_file(&probe).expect("removing a probe");
        if (m.ctime(), m.ctime_nsec()) > c {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("the file system's clock did not move");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_and_refuses_bad_text() {
        let id = Identity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (4, 5),
            ctime: (-6, 7),
        };
        let sha = crate::io::hash::sha256_hex(b"x");
        let text = format(&id, &sha, 99);
        assert_eq!(parse(&text), Some((id, sha.clone(), 99)));
        assert_eq!(parse(text.trim_end()), None, "a torn stamp");
        assert_eq!(parse(&text.replace(MAGIC, "slipway-stamp-0")), None);
        assert_eq!(parse(&text.replace(&sha, &sha[1..])), None);
        assert_eq!(parse(&text.replace(" 99\n", " 99 1\n")), None);
    }

    #[test]
    fn a_stamped_file_is_trusted_until_it_changes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("data.tar");
        fs::write(&f, b"verified bytes").unwrap();
        let sha = crate::io::hash::sha256_hex(b"verified bytes");
        let stamp = beside(&f);
        age(&f);
        // Changed milliseconds ago: on another file system's clock, seconds apart are
        // asked for; the digest is the file's all the same.
        assert_eq!(
            sha256_stamped(&f, &stamp, d.path().join("t1")).unwrap(),
            sha
        );
        assert!(!stamp.exists(), "stamped across clocks within {APART} s");
        let got = stamped_digest(&f, &stamp, d.path().join("t2"), 0).unwrap();
        assert_eq!(got, sha);
        let id = Identity::of(&fs::metadata(&f).unwrap());
        assert_eq!(recorded(&stamp, &id), Some(sha.clone()), "stamped once old");
        assert!(
            !d.path().join("t2").exists(),
            "the new file became the stamp"
        );
        // The stamp is what is read now: a wrong digest in it is believed (which is why
        // only the cache's owner may write the cache, docs/security.md).
        let fake = crate::io::hash::sha256_hex(b"fake");
        fs::write(&stamp, format(&id, &fake, unix_now().unwrap())).unwrap();
        assert_eq!(
            stamped_digest(&f, &stamp, d.path().join("t3"), 0).unwrap(),
            fake
        );
        // A flipped byte that keeps the size, mtime and inode changes the ctime.
        let m = fs::metadata(&f).unwrap();
        let w = fs::OpenOptions::new().write(true).open(&f).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&w, b"V", 0).unwrap();
        w.set_modified(m.modified().unwrap()).unwrap();
        drop(w);
        assert_eq!(
            recorded(&stamp, &Identity::of(&fs::metadata(&f).unwrap())),
            None
        );
        let got = stamped_digest(&f, &stamp, d.path().join("t4"), 0).unwrap();
        assert_eq!(got, crate::io::hash::sha256_hex(b"Verified bytes"));
    }

    #[test]
    fn an_old_or_future_stamp_is_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"x").unwrap();
        let id = Identity::of(&fs::metadata(&f).unwrap());
        let sha = crate::io::hash::sha256_hex(b"x");
        let stamp = beside(&f);
        let now = unix_now().unwrap();
        fs::write(&stamp, format(&id, &sha, now)).unwrap();
        assert_eq!(recorded(&stamp, &id), Some(sha.clone()));
        fs::write(&stamp, format(&id, &sha, now - MAX_AGE.as_secs() - 1)).unwrap();
        assert_eq!(recorded(&stamp, &id), None, "too old");
        fs::write(&stamp, format(&id, &sha, now + 3600)).unwrap();
        assert_eq!(recorded(&stamp, &id), None, "from the future");
    }

    #[test]
    fn a_file_changed_while_it_is_read_is_not_stamped() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"before").unwrap();
        age(&f);
        let open = fs::File::open(&f).unwrap();
        let before = Identity::of_file(&open).unwrap();
        let p = Pending::begin(d.path().join("t"), before).unwrap();
        fs::write(&f, b"during").unwrap();
        let stamp = beside(&f);
        assert!(!p.finish(&open, &crate::io::hash::sha256_hex(b"before"), &stamp));
        assert!(!stamp.exists());
        assert!(!d.path().join("t").exists(), "the new file is removed");
    }
}
