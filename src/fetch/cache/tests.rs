//! Unit tests of the blob cache: full verification, repair, modes, planted names, and
//! the sweep of killed runs' work directories.

use super::*;
use crate::io::hash::sha256_hex;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn insert_check_and_detect_corruption() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(d.path().join("c"))).unwrap();
    let src = d.path().join("f");
    fs::write(&src, b"package bytes").unwrap();
    let sha = sha256_hex(b"package bytes");
    assert_eq!(cache.check(&sha).unwrap(), BlobState::Missing);
    let p = cache.insert(&src, &sha).unwrap();
    assert_eq!(cache.check(&sha).unwrap(), BlobState::Valid);
    fs::write(&p, b"package bytez").unwrap();
    assert_eq!(cache.check(&sha).unwrap(), BlobState::Corrupt);
    assert!(!p.exists(), "a corrupt blob is removed");
}

/// A flip that keeps size, mtime and inode (what the old stamp compared) is found.
#[test]
fn a_flip_that_keeps_size_mtime_and_inode_is_found() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(d.path().join("c"))).unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let sha = sha256_hex(&body);
    let src = d.path().join("f");
    fs::write(&src, &body).unwrap();
    let p = cache.insert(&src, &sha).unwrap();
    // Old enough to be stamped by the check: the flip must be found all the same.
    crate::io::hash::stamp::age(&p);
    assert_eq!(cache.check(&sha).unwrap(), BlobState::Valid);
    let stamp = crate::io::hash::stamp::beside(&p);
    assert!(stamp.is_file(), "the full check stamped the blob");
    assert_eq!(mode(&stamp), 0o600);
    let before = fs::metadata(&p).unwrap();
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(77_777)).unwrap();
    f.write_all(&[body[77_777] ^ 0x10]).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    let after = fs::metadata(&p).unwrap();
    assert_eq!(
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        ),
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino())
    );
    assert_eq!(cache.check(&sha).unwrap(), BlobState::Corrupt);
    assert!(!p.exists() && !stamp.exists(), "blob and stamp are removed");
}

#[test]
fn insert_rejects_wrong_digest() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(d.path().join("c"))).unwrap();
    let src = d.path().join("f");
    fs::write(&src, b"x").unwrap();
    let err = cache.insert(&src, &sha256_hex(b"y")).unwrap_err();
    assert!(err.downcast_ref::<DigestMismatch>().is_some());
}

/// A world-readable source (a `file://` artifact, a vendored .deb) becomes a private blob
/// in private directories, and an old cache's open modes are closed on open.
#[test]
fn blobs_and_directories_are_private() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("c");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    fs::set_permissions(root.join("blobs"), fs::Permissions::from_mode(0o755)).unwrap();
    let cache = Cache::open(Some(root.clone())).unwrap();
    for sub in ["blobs", "tmp", "decoded", "layers"] {
        assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
    }
    let src = d.path().join("secret");
    fs::write(&src, b"host file").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let sha = sha256_hex(b"host file");
    let p = cache.insert(&src, &sha).unwrap();
    assert_eq!(mode(&p), 0o600);
    assert_eq!(mode(p.parent().unwrap()), 0o700);
    // A blob left world-readable by an older version is closed when it is checked.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(cache.check(&sha).unwrap(), BlobState::Valid);
    assert_eq!(mode(&p), 0o600);
    // A work directory's copy of a file (here through `insert` from inside the cache).
    let work = cache.temp_dir().unwrap();
    assert_eq!(mode(work.path()), 0o700);
}

/// Symlinks planted at every name the old code used for temporary files (the blob's and
/// the stamp's `.NAME.tmp-PID-N`) are not followed.
#[test]
fn planted_symlinks_at_temporary_names_are_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(d.path().join("c"))).unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, b"root-owned file").unwrap();
    let body = b"blob content";
    let sha = sha256_hex(body);
    let dir = cache.blob_path(&sha).parent().unwrap().to_path_buf();
    fs::create_dir_all(&dir).unwrap();
    let pid = std::process::id();
    for n in 0..512 {
        for name in [sha.clone(), format!("{sha}.ok")] {
            let planted = dir.join(format!(".{name}.tmp-{pid}-{n}"));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
    }
    let src = d.path().join("f");
    fs::write(&src, body).unwrap();
    cache.insert(&src, &sha).unwrap();
    assert_eq!(cache.check(&sha).unwrap(), BlobState::Valid);
    assert_eq!(fs::read(&victim).unwrap(), b"root-owned file");
    // A symlink planted at the blob's own name is not read through either.
    let other = sha256_hex(b"other");
    let at = cache.blob_path(&other);
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, &at).unwrap();
    assert_eq!(cache.check(&other).unwrap(), BlobState::Corrupt);
    assert_eq!(fs::read(&victim).unwrap(), b"root-owned file");
}

/// A work directory whose lock is not held (its process was killed) is removed by the
/// next open; a live one, locked, stays.
#[test]
fn stale_work_directories_are_removed_live_ones_stay() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("c");
    let cache = Cache::open(Some(root.clone())).unwrap();
    let live = cache.temp_dir().unwrap();
    fs::write(live.path().join("download"), b"partial").unwrap();
    let stale = root.join("tmp/work-4242-killed");
    fs::create_dir_all(stale.join("sub")).unwrap();
    fs::write(stale.join("sub/download"), b"partial").unwrap();
    let planted = root.join("tmp/work-4243-link");
    std::os::unix::fs::symlink(d.path(), &planted).unwrap();
    Cache::open(Some(root.clone())).unwrap();
    assert!(!stale.exists(), "the stale work directory is removed");
    assert!(
        fs::symlink_metadata(&planted).is_err(),
        "the planted link is removed"
    );
    assert!(d.path().exists(), "and not followed");
    assert!(live.path().join("download").exists(), "the live one stays");
    let p = live.path().to_path_buf();
    drop(live);
    assert!(!p.exists(), "a work directory is removed when dropped");
}

/// `export` (slipway vendor) writes a verified 0644 copy, replaces a link planted at the
/// final name instead of writing through it, and refuses a blob that changed.
#[test]
fn export_is_verified_and_does_not_follow_a_planted_link() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(d.path().join("c"))).unwrap();
    let src = d.path().join("f");
    fs::write(&src, b"artifact bytes").unwrap();
    let sha = sha256_hex(b"artifact bytes");
    let blob = cache.insert(&src, &sha).unwrap();
    let out = d.path().join("vendor");
    fs::create_dir(&out).unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, b"keep").unwrap();
    let dest = out.join("tool");
    std::os::unix::fs::symlink(&victim, &dest).unwrap();
    assert!(cache.export(&sha, &dest, 0o644).unwrap());
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    assert_eq!(fs::read(&dest).unwrap(), b"artifact bytes");
    assert_eq!(mode(&dest), 0o644);
    assert!(
        !cache.export(&sha, &dest, 0o644).unwrap(),
        "a good copy is kept"
    );
    fs::write(&blob, b"artifact bytez").unwrap();
    let other = out.join("other");
    let e = cache.export(&sha, &other, 0o644).unwrap_err();
    assert!(e.is::<DigestMismatch>(), "{e:#}");
    assert!(!other.exists());
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        1,
        "no temporary file is left"
    );
}
