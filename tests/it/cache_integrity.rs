//! Issue 16, the cache: what the cache hands to a build is verified. A byte flipped at a
//! random offset of a decoded `data.tar`, of a cached .deb or of a cached artifact is
//! repaired (from the verified .deb, the vendor directory, the artifact's URL) with one
//! warning line, and the image is byte-identical to a clean build's, also when the file
//! carries a stamp of an earlier full check (issue 19). Blobs copied from
//! host files are private. Everything runs offline on a package made here, in a cache of
//! the test's own (never the shared one, which other tests read).
#![allow(clippy::unwrap_used)]

use crate::common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A recipe with one made-up package and one `file://` artifact, its lock, a vendor
/// directory holding the package, a private cache, and a clean build's `rootfs.tar`.
struct Setup {
    dir: tempfile::TempDir,
    recipe: PathBuf,
    deb_sha: String,
    artifact_sha: String,
    clean_tar: Vec<u8>,
}

impl Setup {
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Builds into a fresh output directory; returns the output text and `rootfs.tar`.
    fn build(&self, name: &str) -> (String, Vec<u8>) {
        let out = self.dir.path().join(name);
        let vendor = self.dir.path().join("vendor");
        let t = ok(slipway(
            &self.cache(),
            &[
                "build",
                "--locked",
                "--vendor",
                vendor.to_str().unwrap(),
                self.recipe.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--format",
                "tar",
            ],
        ));
        (t, fs::read(out.join("rootfs.tar")).unwrap())
    }

    /// Builds once more, after the file system's clock has moved past the clean build's
    /// writes, so that this build's full checks stamp `files` (issue 19: a file whose
    /// stamp records it as it is is not hashed again); asserts that they are stamped.
    /// The flips that follow must be found through the stamps.
    fn stamp(&self, files: &[PathBuf]) {
        for f in files {
            age(f);
        }
        let (t, tar) = self.build("stamped");
        assert!(warnings(&t).is_empty(), "a clean cache warns:\n{t}");
        assert!(tar == self.clean_tar);
        for f in files {
            let stamp = slipway::io::hash::stamp::beside(f);
            let m = fs::metadata(&stamp)
                .unwrap_or_else(|e| panic!("{} is not stamped: {e}", f.display()));
            assert_eq!(m.mode() & 0o777, 0o600, "{}", stamp.display());
        }
    }
}

/// Waits until a file created beside `path` gets a later ctime than `path` has (the file
/// system's clock ticks every few milliseconds): only then may `path` be stamped.
fn age(path: &Path) {
    let old = fs::metadata(path).unwrap();
    let probe = path.with_file_name(".age-probe");
    for _ in 0..1000 {
        fs::write(&probe, b"").unwrap();
        let now = fs::metadata(&probe).unwrap();
        fs::remove_file(&probe).unwrap();
        if (now.ctime(), now.ctime_nsec()) > (old.ctime(), old.ctime_nsec()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("the clock of {} did not move", path.display());
}

/// Pseudo-random bytes (xorshift), so the package's content is not all padding.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A seed that differs between runs; printed by every assertion that uses it.
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn tar_member(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, body: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(if body.is_empty() && path.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_size(body.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append_data(&mut h, path, body).unwrap();
}

/// A .deb (plain tars inside, so that the decoded `data.tar` is a copy of its member).
fn deb() -> Vec<u8> {
    let mut control = tar::Builder::new(Vec::new());
    let body = b"Package: cached\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n";
    tar_member(&mut control, "./control", 0o644, body);
    let control = control.into_inner().unwrap();
    let mut data = tar::Builder::new(Vec::new());
    tar_member(&mut data, "./usr/", 0o755, b"");
    tar_member(&mut data, "./usr/share/", 0o755, b"");
    tar_member(&mut data, "./usr/share/cached/", 0o755, b"");
    tar_member(
        &mut data,
        "./usr/share/cached/a.bin",
        0o644,
        &noise(1, 40_000),
    );
    tar_member(&mut data, "./usr/share/cached/b.txt", 0o644, b"hello\n");
    tar_member(
        &mut data,
        "./usr/share/cached/c.bin",
        0o644,
        &noise(2, 20_000),
    );
    let data = data.into_inner().unwrap();
    deb_of(&control, &data)
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deb = deb();
    let deb_sha = slipway::io::hash::sha256_hex(&deb);
    let vendor_debs = d.join("vendor/debs");
    fs::create_dir_all(&vendor_debs).unwrap();
    fs::write(vendor_debs.join("cached_1.0_all.deb"), &deb).unwrap();
    let rdir = d.join("recipe");
    fs::create_dir_all(&rdir).unwrap();
    let secret = noise(3, 30_000);
    let artifact_sha = slipway::io::hash::sha256_hex(&secret);
    let secret_path = rdir.join("tool.bin");
    fs::write(&secret_path, &secret).unwrap();
    fs::set_permissions(&secret_path, fs::Permissions::from_mode(0o644)).unwrap();
    let body = format!(
        "[packages]\ninclude = [\"cached\"]\n\n[[artifact]]\nurl = \"file://{}\"\nsha256 = \"{artifact_sha}\"\ndest = \"/usr/local/bin/tool\"\nmode = \"0755\"\n",
        secret_path.display()
    );
    let recipe = recipe(&rdir, "cached.toml", &body);
    let rec = slipway::recipe::Recipe::load(&recipe).unwrap();
    let lock = slipway::lock::Lock {
        lock_version: slipway::lock::LOCK_VERSION,
        input_digest: slipway::lock::input_digest(&rec),
        release: "trixie".into(),
        architecture: "amd64".into(),
        parent: None,
        packages: vec![slipway::lock::LockedPackage {
            name: "cached".into(),
            version: "1.0".into(),
            architecture: "all".into(),
            size: deb.len() as u64,
            sha256: deb_sha.clone(),
            source: "cached".into(),
            source_version: "1.0".into(),
            suite: "trixie".into(),
        }],
        artifacts: vec![slipway::lock::LockedArtifact {
            url: format!("file://{}", secret_path.display()),
            sha256: artifact_sha.clone(),
            size: secret.len() as u64,
            dest: "/usr/local/bin/tool".into(),
        }],
        cuts: vec![],
    };
    lock.write(&rec.lock_path()).unwrap();
    let mut s = Setup {
        dir,
        recipe,
        deb_sha,
        artifact_sha,
        clean_tar: Vec::new(),
    };
    let (t, tar) = s.build("clean");
    assert!(!t.contains("warning: cache"), "a clean build warns:\n{t}");
    s.clean_tar = tar;
    s
}

/// Flips one byte of `path` at an offset drawn from `seed`, keeping its size, mtime and
/// inode (all that the old blob stamp compared). Returns the offset.
fn flip(path: &Path, seed: u64) -> u64 {
    use std::io::{Read, Seek, SeekFrom, Write};
    let meta = fs::metadata(path).unwrap();
    let at = seed % meta.len();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ (1 << ((seed >> 32) % 8))]).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    drop(f);
    assert_eq!(fs::metadata(path).unwrap().ino(), meta.ino());
    at
}

fn warnings(t: &str) -> Vec<&str> {
    t.lines().filter(|l| l.contains("warning: cache")).collect()
}

fn blob(cache: &Path, sha: &str) -> PathBuf {
    cache.join("blobs/sha256").join(&sha[..2]).join(sha)
}

#[test]
fn a_flipped_byte_in_a_decoded_data_tar_is_repaired_not_shipped() {
    let s = setup();
    let data = s.cache().join("decoded").join(&s.deb_sha).join("data.tar");
    s.stamp(std::slice::from_ref(&data));
    let seed = seed();
    let at = flip(&data, seed);
    let (t, tar) = s.build("after-flip");
    let w = warnings(&t);
    assert_eq!(
        w.len(),
        1,
        "one warning for the byte flipped at {at} (seed {seed}):\n{t}"
    );
    assert!(
        w[0].contains("cached 1.0") && w[0].contains("data.tar"),
        "{}",
        w[0]
    );
    assert!(
        tar == s.clean_tar,
        "the flipped byte at {at} (seed {seed}) reached rootfs.tar"
    );
    let (t, tar) = s.build("repaired");
    assert!(warnings(&t).is_empty(), "repaired once and for all:\n{t}");
    assert!(tar == s.clean_tar);
}

#[test]
fn a_flipped_byte_in_a_cached_deb_or_artifact_is_repaired_not_shipped() {
    let s = setup();
    let cache = s.cache();
    s.stamp(&[blob(&cache, &s.deb_sha), blob(&cache, &s.artifact_sha)]);
    let seed = seed();
    let at_deb = flip(&blob(&cache, &s.deb_sha), seed);
    let at_art = flip(&blob(&cache, &s.artifact_sha), seed.rotate_left(17));
    // Without its decoded entry, the .deb itself must be read again.
    fs::remove_dir_all(cache.join("decoded").join(&s.deb_sha)).unwrap();
    let (t, tar) = s.build("after-flip");
    let w = warnings(&t);
    assert_eq!(
        w.len(),
        2,
        "one warning each for the .deb (byte {at_deb}) and the artifact (byte {at_art}), seed {seed}:\n{t}"
    );
    assert!(
        w.iter()
            .any(|l| l.contains("cached 1.0") && l.contains(".deb")),
        "{t}"
    );
    assert!(
        w.iter().any(|l| l.contains("artifact /usr/local/bin/tool")),
        "{t}"
    );
    assert!(
        tar == s.clean_tar,
        "a flipped byte (.deb at {at_deb}, artifact at {at_art}, seed {seed}) reached rootfs.tar"
    );
    for sha in [&s.deb_sha, &s.artifact_sha] {
        let (digest, _) = slipway::io::hash::sha256_file(&blob(&cache, sha)).unwrap();
        assert_eq!(&digest, sha, "the blob is repaired in the cache");
    }
}

/// Also: the work directory of a killed download (its lock is free) is removed by the
/// next build, and a symlink planted among the work directories is not followed.
#[test]
fn cached_blobs_of_host_files_are_not_world_readable() {
    let s = setup();
    let cache = s.cache();
    let killed = cache.join("tmp/work-999999-killed");
    fs::create_dir_all(&killed).unwrap();
    fs::write(killed.join("download"), b"half a download").unwrap();
    let outside = s.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep"), b"x").unwrap();
    std::os::unix::fs::symlink(&outside, cache.join("tmp/work-999998-link")).unwrap();
    s.build("again");
    assert!(
        !killed.exists(),
        "the killed run's work directory is removed"
    );
    assert!(
        outside.join("keep").exists(),
        "a planted link is not followed"
    );
    let art = blob(&cache, &s.artifact_sha);
    assert_eq!(
        fs::metadata(&art).unwrap().mode() & 0o777,
        0o600,
        "artifact blob"
    );
    for e in walkdir::WalkDir::new(&cache) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&cache).unwrap();
        if rel.starts_with("apt") || rel.as_os_str().is_empty() {
            continue;
        }
        let mode = e.metadata().unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
    }
    assert!(
        fs::read_dir(cache.join("tmp")).unwrap().next().is_none(),
        "no work directory is left behind"
    );
}
