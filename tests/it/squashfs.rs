//! The native squashfs writer (`slipway::disk::squashfs`) read back by the reference
//! tools and by the kernel, entry by entry against the tree it was written from.
//!
//! - `every_kind_of_entry_reads_back_as_the_tree`: a synthetic tree with every kind of
//!   entry (owners, setuid/setgid/sticky modes, mtimes, xattrs, hard links, symlinks,
//!   character and block devices, a FIFO, a sparse file, identical files, files of one
//!   and several blocks, a directory of 1500 entries whose listing spans metadata
//!   blocks): bookworm's `unsquashfs -lln` lists the tree exactly; `unsquashfs` extracts
//!   a sample with the same bytes (the sparse file with holes, the hard links as one
//!   inode, the xattrs); the kernel mounts it and every entry's lstat, link target and
//!   content match; writing twice gives the same bytes.
//! - `as_nobody_the_image_is_the_same`: the writer run as uid/gid 65534 (this test
//!   binary re-run under `setpriv`) writes the same bytes as root.
//! - `containerd_host_root_reads_back_in_bookworm_and_trixie`: the containerd-host root
//!   tree (`disk::image::root_tree` of the assembled recipe), written natively twice
//!   (same bytes), listed by bookworm's `unsquashfs -lln` and by trixie's (squashfs-tools
//!   4.6, from a slipway-built trixie image, `tests/squashfs/unsquashfs-trixie.toml`, run
//!   under Docker with the image mounted in), each exactly the tree; the kernel mounts
//!   it and a sample of files reads back.
//! - `bench_native_beside_mksquashfs` (ignored; `bench/squashfs.sh` runs it): time and
//!   size of the native writer and of the staged tree + mksquashfs on containerd-host.
//!
//! Needs root (setpriv, loop mounts, the staged mksquashfs run), `unsquashfs`
//! (squashfs-tools) and Docker; a missing one fails the test with its name.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::*;
use slipway::disk::squashfs::{self, Options, Times};
use slipway::tree::{Entry, Kind, Tree};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// 2026-11-27 00:00:00 UTC.
const EPOCH: u64 = 1_795_737_600;

fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (setpriv, loop mounts): run the test as root, as CI does"
    );
}

fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} not found (Debian: {package}); scripts/setup-host.sh installs it"
    );
}

/// Bytes that do not compress (a sha256 chain).
fn noise(len: usize, seed: u8) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(len + 32);
    let mut h: [u8; 32] = sha2::Sha256::digest([seed]).into();
    while out.len() < len {
        h = sha2::Sha256::digest(h).into();
        out.extend_from_slice(&h);
    }
    out.truncate(len);
    out
}

fn with(mut e: Entry, uid: u32, gid: u32) -> Entry {
    e.uid = uid;
    e.gid = gid;
    e
}

fn special(kind: Kind, mode: u32) -> Entry {
    let mut e = Entry::file(Vec::new(), mode, EPOCH);
    e.kind = kind;
    e
}

/// A tree with every kind of entry the writer carries.
fn every_kind() -> Tree {
    let mut t = Tree::new();
    let mut put = |p: &str, e: Entry| t.put(p, e).unwrap();
    put("tmp", Entry::dir(0o1777, EPOCH));
    put(
        "srv/shared",
        with(Entry::dir(0o2775, EPOCH - 50), 1000, 1000),
    );
    put(
        "etc/hostname",
        Entry::file(b"node\n".to_vec(), 0o644, EPOCH),
    );
    put(
        "etc/future",
        Entry::file(b"clamped".to_vec(), 0o644, EPOCH + 999),
    );
    put("usr/bin/su", Entry::file(noise(3000, 1), 0o4755, EPOCH));
    put(
        "usr/bin/wall",
        with(Entry::file(noise(2000, 2), 0o2755, EPOCH), 0, 5),
    );
    put(
        "home/user/notes",
        with(
            Entry::file(b"mine".to_vec(), 0o600, EPOCH - 86_400),
            1000,
            100,
        ),
    );
    put("var/empty", Entry::file(Vec::new(), 0o644, EPOCH));
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    put("usr/lib/text", Entry::file(text, 0o644, EPOCH));
    put(
        "usr/lib/exact",
        Entry::file(b"0123456789abcdef".repeat(8192), 0o644, EPOCH),
    );
    put(
        "usr/lib/noise",
        Entry::file(noise(300_000, 3), 0o644, EPOCH),
    );
    // 1 MiB + 100: data in the first block, seven blocks of zeros, data in the tail.
    let mut sparse = vec![0u8; (1 << 20) + 100];
    sparse[..5].copy_from_slice(b"start");
    let n = sparse.len();
    sparse[n - 3..].copy_from_slice(b"end");
    put("var/lib/sparse.img", Entry::file(sparse, 0o640, EPOCH));
    put("usr/share/dup-a", Entry::file(noise(5000, 4), 0o644, EPOCH));
    put(
        "usr/share/dup-b",
        with(Entry::file(noise(5000, 4), 0o600, EPOCH), 7, 7),
    );
    put("usr/bin/pigz", Entry::file(noise(150_000, 5), 0o755, EPOCH));
    for l in ["usr/bin/unpigz", "usr/sbin/pigz-again"] {
        put(l, special(Kind::Hardlink("usr/bin/pigz".into()), 0o755));
    }
    put("bin", Entry::symlink("usr/bin", EPOCH));
    put(
        "etc/localtime",
        Entry::symlink("/usr/share/zoneinfo/Etc/UTC", EPOCH),
    );
    put("etc/long-link", Entry::symlink(&"x/".repeat(150), EPOCH));
    put("dev/null", special(Kind::CharDevice(1, 3), 0o666));
    put(
        "dev/loop300",
        with(special(Kind::BlockDevice(7, 300), 0o660), 0, 6),
    );
    put("run/initctl", special(Kind::Fifo, 0o600));
    let mut ping = Entry::file(noise(700, 6), 0o755, EPOCH);
    ping.xattrs.insert(
        "security.capability".into(),
        vec![1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    put("usr/bin/ping", ping);
    let mut labelled = Entry::dir(0o755, EPOCH);
    labelled
        .xattrs
        .insert("user.comment".into(), b"hello".to_vec());
    labelled
        .xattrs
        .insert("trusted.overlay.opaque".into(), b"y".to_vec());
    put("etc/labelled", labelled);
    for i in 0..1500 {
        put(
            &format!("usr/share/many/entry-{i:05}"),
            Entry::file(format!("{i}").into_bytes(), 0o644, EPOCH),
        );
    }
    put(
        &format!("usr/share/{}", "n".repeat(255)),
        Entry::file(b"long name".to_vec(), 0o644, EPOCH),
    );
    t
}

fn clamped() -> Options {
    Options {
        times: Times::Clamped,
        ..Options::root(EPOCH)
    }
}

fn write_image(tree: &Tree, opts: &Options, path: &Path) -> squashfs::Summary {
    let mut f = fs::File::create(path).unwrap();
    let s = squashfs::write(tree, &mut f, opts).unwrap();
    assert_eq!(f.metadata().unwrap().len(), s.size);
    s
}

/// One line of `unsquashfs -lln`: mode, owner, size (None for directories), time, link.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    mode: String,
    owner: String,
    size: Option<String>,
    time: String,
    link: Option<String>,
}

/// `YYYY-MM-DD HH:MM` (UTC) of `secs`.
fn date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (proleptic Gregorian), as in Howard Hinnant's date algorithms.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `ls -l`'s mode string.
fn mode_string(kind: char, mode: u32) -> String {
    let mut s = String::from(kind);
    for (shift, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// What `unsquashfs -lln` must print for `tree` written with `times`.
fn expected(tree: &Tree, epoch: u64, times: Times) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    let root = Entry::dir(0o755, epoch);
    let no_path = String::new();
    let entries = std::iter::once((&no_path, tree.get("").unwrap_or(&root))).chain(tree.iter());
    for (path, e) in entries {
        let inode = match &e.kind {
            Kind::Hardlink(t) => tree.get(t).unwrap(),
            _ => e,
        };
        let (kind, size, link) = match &inode.kind {
            Kind::Dir => ('d', None, None),
            Kind::File(c) => ('-', Some(c.len().to_string()), None),
            Kind::Symlink(t) => ('l', Some(t.len().to_string()), Some(t.clone())),
            Kind::CharDevice(a, b) => ('c', Some(listed_dev(*a, *b)), None),
            Kind::BlockDevice(a, b) => ('b', Some(listed_dev(*a, *b)), None),
            Kind::Fifo => ('p', Some("0".into()), None),
            Kind::Hardlink(_) => panic!("/{path}: a hard link to a hard link"),
        };
        let mtime = match times {
            Times::Epoch => epoch,
            Times::Clamped => inode.mtime.min(epoch),
        };
        let name = if path.is_empty() {
            "squashfs-root".to_string()
        } else {
            format!("squashfs-root/{path}")
        };
        out.insert(
            name,
            Row {
                mode: mode_string(kind, inode.mode & 0o7777),
                owner: format!("{}/{}", inode.uid, inode.gid),
                size,
                time: date(mtime),
                link,
            },
        );
    }
    out
}

/// A device number as `unsquashfs -lln` prints it: the stored word (the kernel's
/// `new_encode_dev`) split as `word >> 8, word & 0xff`, which is the number itself for
/// minors up to 255 and not above (the kernel check in [`assert_kernel_reads`] sees the
/// real number).
fn listed_dev(major: u32, minor: u32) -> String {
    let word = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    format!("{}, {}", word >> 8, word & 0xff)
}

/// Parses `unsquashfs -lln` output (run with TZ=UTC).
fn parse_listing(text: &str) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(at) = line.find(" squashfs-root") else {
            continue;
        };
        let (head, rest) = line.split_at(at);
        let t: Vec<&str> = head.split_whitespace().collect();
        assert!(t.len() >= 5, "unexpected listing line {line:?}");
        let mode = t[0].to_string();
        let (path, link) = match (mode.starts_with('l'), rest[1..].split_once(" -> ")) {
            (true, Some((p, l))) => (p.to_string(), Some(l.to_string())),
            _ => (rest[1..].to_string(), None),
        };
        let size = (!mode.starts_with('d')).then(|| t[2..t.len() - 2].join(" "));
        let row = Row {
            mode,
            owner: t[1].to_string(),
            size,
            time: format!("{} {}", t[t.len() - 2], t[t.len() - 1]),
            link,
        };
        assert!(
            out.insert(path.clone(), row).is_none(),
            "{path} listed twice"
        );
    }
    out
}

/// Asserts the listing equals the tree's, naming the first differences.
fn assert_same_listing(what: &str, got: &BTreeMap<String, Row>, want: &BTreeMap<String, Row>) {
    let mut diffs = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => diffs.push(format!("missing {p}")),
            Some(g) if g != w => diffs.push(format!("{p}: listed {g:?}, tree {w:?}")),
            _ => {}
        }
    }
    diffs.extend(
        got.keys()
            .filter(|p| !want.contains_key(*p))
            .map(|p| format!("extra {p}")),
    );
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} entries differ from the tree:\n{}",
        diffs.len(),
        want.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn unsquashfs_listing(img: &Path) -> BTreeMap<String, Row> {
    require_tool("unsquashfs", "squashfs-tools");
    parse_listing(&run(Command::new("unsquashfs")
        .arg("-lln")
        .arg(img)
        .env("TZ", "UTC")))
}

/// A loop mount, undone when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(img: &Path, at: &Path) -> Mount {
        fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(img)
            .arg(at));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Checks every entry of `tree` (or the `sample` of paths, when given) through the
/// kernel at `mnt`: lstat, link targets, device numbers, contents, and each directory's
/// names.
fn assert_kernel_reads(tree: &Tree, mnt: &Path, epoch: u64, times: Times, sample: Option<&[&str]>) {
    let mut checked = 0;
    for (path, e) in tree.iter() {
        if sample.is_some_and(|s| !s.contains(&path.as_str())) {
            continue;
        }
        let p = mnt.join(path);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("lstat /{path}: {err}"));
        let inode = match &e.kind {
            Kind::Hardlink(t) => tree.get(t).unwrap(),
            _ => e,
        };
        let mtime = if times == Times::Epoch {
            epoch
        } else {
            inode.mtime.min(epoch)
        };
        let what = format!("/{path}");
        assert_eq!(m.mode() & 0o7777, inode.mode & 0o7777, "{what}: mode");
        assert_eq!((m.uid(), m.gid()), (inode.uid, inode.gid), "{what}: owner");
        assert_eq!(m.mtime() as u64, mtime, "{what}: mtime");
        match &inode.kind {
            Kind::File(c) => {
                assert!(m.file_type().is_file(), "{what}: not a file");
                assert!(
                    fs::read(&p).unwrap() == c.as_slice(),
                    "{what}: content differs"
                );
            }
            Kind::Dir => {
                let mut names: Vec<String> = fs::read_dir(&p)
                    .unwrap()
                    .map(|d| d.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                let want: Vec<String> = tree
                    .under(path)
                    .filter(|(q, _)| !q[path.len() + 1..].contains('/'))
                    .map(|(q, _)| q[path.len() + 1..].to_string())
                    .collect();
                assert_eq!(names, want, "{what}: directory listing");
            }
            Kind::Symlink(t) => assert_eq!(
                fs::read_link(&p).unwrap().to_str(),
                Some(t.as_str()),
                "{what}"
            ),
            Kind::CharDevice(a, b) | Kind::BlockDevice(a, b) => {
                let ft = m.file_type();
                assert!(
                    ft.is_char_device() || ft.is_block_device(),
                    "{what}: not a device"
                );
                assert_eq!(
                    m.rdev(),
                    nix::sys::stat::makedev(u64::from(*a), u64::from(*b)),
                    "{what}: rdev"
                );
            }
            Kind::Fifo => assert!(m.file_type().is_fifo(), "{what}: not a fifo"),
            Kind::Hardlink(_) => unreachable!(),
        }
        checked += 1;
    }
    assert!(checked > 0, "no entry checked");
}

/// The extended attributes of `p`, read by Python's os.listxattr/getxattr (the host has
/// no getfattr; std has no xattr calls).
fn xattrs_of(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let script = "import os,sys\nfor n in sorted(os.listxattr(sys.argv[1], follow_symlinks=False)):\n    print(n, os.getxattr(sys.argv[1], n, follow_symlinks=False).hex())";
    let out = run(Command::new("python3").args(["-c", script]).arg(p));
    out.lines()
        .map(|l| {
            let (n, v) = l.split_once(' ').unwrap();
            (n.to_string(), slipway::io::hash::unhex(v).unwrap())
        })
        .collect()
}

#[test]
fn every_kind_of_entry_reads_back_as_the_tree() {
    require_root("reading the image through the kernel");
    let d = tempfile::tempdir().unwrap();
    let tree = every_kind();
    let img = d.path().join("every.sqfs");
    let s = write_image(&tree, &clamped(), &img);
    assert_eq!(s.duplicates, 1, "{s:?}");
    assert_eq!(s.sparse, 7 << 17, "seven all-zero blocks are holes: {s:?}");
    assert_eq!(s.xattr_sets, 2, "{s:?}");
    assert_eq!(s.ids, 6, "owners 0, 5, 6, 7, 100, 1000: {s:?}");

    // Twice, the same bytes.
    let again = d.path().join("again.sqfs");
    write_image(&tree, &clamped(), &again);
    assert!(
        fs::read(&img).unwrap() == fs::read(&again).unwrap(),
        "a second write differs"
    );
    // The atomic file writer gives the same bytes, and says what it wrote.
    let (o, _) = squashfs::write_file(&tree, &d.path().join("atomic.sqfs"), &clamped()).unwrap();
    assert_eq!(
        o.sha256,
        slipway::io::hash::sha256_hex(&fs::read(&img).unwrap())
    );
    assert_eq!((o.size, o.size % 4096), (s.size, 0));

    // bookworm's unsquashfs lists exactly the tree.
    assert_same_listing(
        "unsquashfs -lln",
        &unsquashfs_listing(&img),
        &expected(&tree, EPOCH, Times::Clamped),
    );

    // It extracts a sample with the same bytes, holes, links and xattrs.
    let x = d.path().join("x");
    let sample = [
        "usr/lib/text",
        "usr/lib/noise",
        "var/lib/sparse.img",
        "usr/bin/pigz",
        "usr/bin/unpigz",
        "usr/share/dup-b",
        "usr/bin/ping",
        "etc/labelled",
    ];
    run(Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(&x)
        .arg(&img)
        .args(sample));
    for p in &sample[..6] {
        let Some(Kind::File(c)) = tree.get(p).map(|e| match &e.kind {
            Kind::Hardlink(t) => tree.get(t).unwrap().kind.clone(),
            k => k.clone(),
        }) else {
            panic!("{p} is not a file in the tree");
        };
        assert!(
            fs::read(x.join(p)).unwrap() == c.as_slice(),
            "/{p}: extracted content differs"
        );
    }
    let sparse = fs::metadata(x.join("var/lib/sparse.img")).unwrap();
    assert!(
        sparse.blocks() * 512 < 512 << 10,
        "the sparse file was extracted without holes ({} blocks)",
        sparse.blocks()
    );
    assert_eq!(
        fs::metadata(x.join("usr/bin/pigz")).unwrap().ino(),
        fs::metadata(x.join("usr/bin/unpigz")).unwrap().ino(),
        "hard links extracted as two files"
    );
    for p in ["usr/bin/ping", "etc/labelled"] {
        assert_eq!(
            xattrs_of(&x.join(p)),
            tree.get(p).unwrap().xattrs,
            "/{p}: extracted xattrs"
        );
    }

    // The kernel reads every entry as the tree has it (lookups through the directory
    // index of usr/share/many, holes, fragments, link counts).
    let mnt = Mount::new(&img, &d.path().join("mnt"));
    assert_kernel_reads(&tree, &mnt.0, EPOCH, Times::Clamped, None);
    drop(mnt);

    // With tail packing (mksquashfs -tailends), the tails of large files go into
    // fragment blocks too: another layout, and still the tree through the kernel.
    let tails = d.path().join("tails.sqfs");
    let opts = Options {
        tail_ends: true,
        ..clamped()
    };
    let t = write_image(&tree, &opts, &tails);
    assert!(
        t.bytes_used != s.bytes_used,
        "tail packing changed nothing: {t:?}"
    );
    assert_same_listing(
        "unsquashfs -lln (tail packing)",
        &unsquashfs_listing(&tails),
        &expected(&tree, EPOCH, Times::Clamped),
    );
    let mnt = Mount::new(&tails, &d.path().join("mnt-tails"));
    assert_kernel_reads(&tree, &mnt.0, EPOCH, Times::Clamped, None);
    assert_eq!(
        fs::metadata(mnt.0.join("usr/sbin/pigz-again"))
            .unwrap()
            .nlink(),
        3
    );
    assert_eq!(
        xattrs_of(&mnt.0.join("usr/bin/ping")),
        tree.get("usr/bin/ping").unwrap().xattrs
    );
}

/// Writes [`every_kind`] to `$SLIPWAY_SQUASHFS_CHILD` when set (run by
/// [`as_nobody_the_image_is_the_same`] as uid 65534); otherwise does nothing.
#[test]
fn child_writes_every_kind() {
    let Some(out) = std::env::var_os("SLIPWAY_SQUASHFS_CHILD") else {
        return;
    };
    write_image(&every_kind(), &clamped(), Path::new(&out));
}

#[test]
fn as_nobody_the_image_is_the_same() {
    require_root("running the writer as uid 65534");
    require_tool("setpriv", "util-linux");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("nobody");
    fs::create_dir(&dir).unwrap();
    nix::unistd::chown(&dir, Some(65534.into()), Some(65534.into())).unwrap();
    let theirs = dir.join("image.sqfs");
    run(Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "squashfs::child_writes_every_kind",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SLIPWAY_SQUASHFS_CHILD", &theirs)
        .env("HOME", &dir)
        .env("TMPDIR", &dir));
    assert_eq!(
        fs::metadata(&theirs).unwrap().uid(),
        65534,
        "the child did not run as 65534"
    );
    let ours = d.path().join("root.sqfs");
    write_image(&every_kind(), &clamped(), &ours);
    assert!(
        fs::read(&ours).unwrap() == fs::read(&theirs).unwrap(),
        "uid 65534 wrote other bytes than root"
    );
}

/// The containerd-host root tree as the disk stage makes it (`disk::image::root_tree`
/// of the assembled recipe, with the agent), and its epoch.
fn containerd_host_root() -> (Tree, u64) {
    let t = Instant::now();
    let (tree, epoch) =
        host_root_tree(&common::fixtures::recipes_dir().join("containerd-host.toml"));
    eprintln!(
        "containerd-host root tree: {} entries, {:.1} MB, assembled in {:.1} s",
        tree.len(),
        tree.content_size() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    (tree, epoch)
}

/// `docker load -i archive`: the image's name.
fn docker_load(archive: &Path) -> String {
    require_tool("docker", "docker.io");
    let o = run(Command::new("docker").args(["load", "-i"]).arg(archive));
    o.lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("docker load printed no image: {o}"))
        .trim()
        .to_string()
}

/// The Docker image of `tests/squashfs/unsquashfs-trixie.toml` (built through the fixture
/// cache, loaded once per test).
fn trixie_image() -> String {
    let recipe =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/squashfs/unsquashfs-trixie.toml");
    let out = common::fixtures::build(recipe.to_str().unwrap(), &["--format", "oci-archive"]);
    docker_load(&out.join("image.tar"))
}

/// trixie's `unsquashfs -lln` of `img`, from `image` under Docker.
fn trixie_listing(image: &str, img: &Path) -> BTreeMap<String, Row> {
    let text = run(Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-e", "TZ=UTC", "-v"])
        .arg(format!("{}:/image.sqfs:ro", img.display()))
        .arg(image)
        .args(["-lln", "/image.sqfs"]));
    assert!(
        text.contains("squashfs-root"),
        "trixie's unsquashfs listed nothing:\n{text}"
    );
    parse_listing(&text)
}

/// Set only inside the trixie container: where [`root_written_in_this_userland`] writes.
const TRIXIE_OUT: &str = "SLIPWAY_SQUASHFS_TEST_OUT";

/// Not a test of its own: run by `containerd_host_root_reads_back_in_bookworm_and_trixie_and_is_written_alike_there`
/// inside Debian trixie's userland (this test binary, the checkout and its caches mounted
/// at their own paths, no network), it writes the containerd-host root there.
#[test]
#[ignore = "run inside the trixie container by containerd_host_root_reads_back_in_bookworm_and_trixie_and_is_written_alike_there"]
fn root_written_in_this_userland() {
    let out = std::env::var_os(TRIXIE_OUT).expect("SLIPWAY_SQUASHFS_TEST_OUT is not set");
    let (tree, epoch) = containerd_host_root();
    write_image(&tree, &Options::root(epoch), Path::new(&out));
}

/// The containerd-host root written by this test binary inside `image` (trixie's
/// userland: its glibc, its /etc, no host tool of bookworm's) into `dir`.
fn root_written_in_trixie(image: &str, dir: &Path) -> Vec<u8> {
    let exe = std::env::current_exe().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("trixie-root.sqfs");
    let mut cmd = Command::new("docker");
    // The image's PATH is a base image's (no sbin); the build runs depmod from /usr/sbin.
    cmd.args(["run", "--rm", "--network", "none", "-e", "TZ=UTC"])
        .args(["-e", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        .arg("-e")
        .arg(format!("{TRIXIE_OUT}={}", out.display()))
        .args(["-v", &format!("{0}:{0}", repo.display())])
        .args(["-v", &format!("{0}:{0}", dir.display())]);
    for var in ["SLIPWAY_INIT", "SLIPWAY_AGENT", "SLIPWAY_NODE"] {
        if let Some(v) = std::env::var_os(var) {
            let p = PathBuf::from(&v);
            if !p.starts_with(repo) {
                cmd.args(["-v", &format!("{0}:{0}:ro", p.display())]);
            }
            cmd.arg("-e").arg(format!("{var}={}", p.display()));
        }
    }
    cmd.args(["--entrypoint", exe.to_str().unwrap()])
        .arg(image)
        .args([
            "--exact",
            "squashfs::root_written_in_this_userland",
            "--ignored",
            "--nocapture",
        ]);
    let log = run(&mut cmd);
    fs::read(&out).unwrap_or_else(|e| panic!("no root image from trixie ({e}):\n{log}"))
}

#[test]
fn containerd_host_root_reads_back_in_bookworm_and_trixie_and_is_written_alike_there() {
    require_root("reading the image through the kernel");
    let (tree, epoch) = containerd_host_root();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("root.sqfs");
    let opts = Options::root(epoch);
    let t = Instant::now();
    let s = write_image(&tree, &opts, &img);
    eprintln!("native: {s:?} in {:.2} s", t.elapsed().as_secs_f64());
    let again = d.path().join("again.sqfs");
    write_image(&tree, &opts, &again);
    assert!(
        fs::read(&img).unwrap() == fs::read(&again).unwrap(),
        "a second write differs"
    );
    fs::remove_file(&again).unwrap();

    let want = expected(&tree, epoch, Times::Epoch);
    let t = Instant::now();
    assert_same_listing(
        "bookworm's unsquashfs -lln",
        &unsquashfs_listing(&img),
        &want,
    );
    eprintln!(
        "bookworm listing checked in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let image = trixie_image();
    assert_same_listing(
        "trixie's unsquashfs -lln",
        &trixie_listing(&image, &img),
        &want,
    );
    eprintln!(
        "trixie listing checked in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let theirs = root_written_in_trixie(&image, d.path());
    if theirs != fs::read(&img).unwrap() {
        let (a, b) = (
            unsquashfs_listing(&img),
            unsquashfs_listing(&d.path().join("trixie-root.sqfs")),
        );
        let differ: Vec<_> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .take(20)
            .collect();
        let extract = |img: &Path, to: &str| {
            let dir = d.path().join(to);
            run(Command::new("unsquashfs")
                .args(["-no-xattrs", "-q", "-d"])
                .arg(&dir)
                .arg(img));
            dir
        };
        let (x, y) = (
            extract(&img, "here"),
            extract(&d.path().join("trixie-root.sqfs"), "trixie"),
        );
        let diff = Command::new("diff")
            .arg("-rq")
            .arg(&x)
            .arg(&y)
            .output()
            .unwrap();
        panic!(
            "the root written in trixie's userland differs from the one written here; entries \
             that differ in size, mode or owner: {differ:?}; in content:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }
    eprintln!(
        "the same root written in trixie's userland in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mnt = Mount::new(&img, &d.path().join("mnt"));
    assert_kernel_reads(&tree, &mnt.0, epoch, Times::Epoch, None);
    eprintln!(
        "kernel read everything in {:.2} s",
        t.elapsed().as_secs_f64()
    );
}

/// Median of `runs` timings of `f` (seconds), and its last result.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], last.unwrap())
}

/// Time and size of the native writer beside mksquashfs on containerd-host's root:
/// `bench/squashfs.sh` runs it and prints its `bench:` lines. mksquashfs runs with the
/// host image's flags (`disk::erofs::write_root`), alone on a staged tree, and as the
/// whole path it replaces (staging + mksquashfs + padding).
#[test]
#[ignore = "a benchmark: bench/squashfs.sh"]
fn bench_native_beside_mksquashfs() {
    require_root("staging the tree with its owners for mksquashfs");
    require_tool("mksquashfs", "squashfs-tools");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (tree, epoch) = containerd_host_root();
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let native = d.path().join("native.sqfs");
    let (native_s, summary) = timed(runs, || write_image(&tree, &Options::root(epoch), &native));
    let staged = d.path().join("staged");
    let (stage_s, _) = timed(1, || {
        slipway::writers::dir::write_tree(&tree, &staged).unwrap()
    });
    let tool = d.path().join("mksquashfs.sqfs");
    let (tool_s, ()) = timed(runs, || {
        run(Command::new("mksquashfs")
            .arg(&staged)
            .arg(&tool)
            .args(["-comp", "zstd", "-Xcompression-level", "3", "-b", "131072"])
            .args([
                "-noappend",
                "-no-xattrs",
                "-reproducible",
                "-quiet",
                "-no-progress",
            ])
            .env("SOURCE_DATE_EPOCH", epoch.to_string()));
    });
    let path = d.path().join("path.sqfs");
    let (path_s, _) = timed(runs, || {
        slipway::disk::erofs::write_root(
            &tree,
            slipway::disk::erofs::RootFs::SquashfsZstd,
            epoch,
            &[0; 16],
            "amd64",
            &path,
        )
        .unwrap()
    });
    let tool_size = fs::metadata(&tool).unwrap().len();
    let version = run(Command::new("mksquashfs").arg("-version"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tool_name = version
        .lines()
        .next()
        .unwrap_or("mksquashfs")
        .replace(" version", "");
    let path_size = fs::metadata(&path).unwrap().len();
    println!(
        "bench: containerd-host root: {} entries, {:.1} MB of files; {cpus} CPUs; median of {runs}",
        tree.len(),
        tree.content_size() as f64 / 1e6
    );
    let line = |what: &str, size: String, secs: f64, note: &str| {
        println!("bench: {what:<34} {size:>16} {secs:6.2} s  {note}");
    };
    line(
        "native writer",
        format!("{} bytes", summary.size),
        native_s,
        "",
    );
    line(
        &tool_name,
        format!("{tool_size} bytes"),
        tool_s,
        "(on the staged tree)",
    );
    line("staging the tree", String::new(), stage_s, "(once)");
    line(
        "today's path",
        format!("{path_size} bytes"),
        path_s,
        "(stage + mksquashfs + pad)",
    );
    println!(
        "bench: native / mksquashfs: size {:.3}x, time {:.2}x; native / today's path: time {:.2}x",
        summary.size as f64 / tool_size as f64,
        native_s / tool_s,
        native_s / path_s
    );
}
