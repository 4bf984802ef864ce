//! Packages into the tree. Each locked .deb is decoded once (in parallel) and its
//! decompressed data.tar and control members are kept in the cache by the .deb's digest,
//! so a warm build reads them without decompressing again. Each entry records the sha256
//! of its files when it is decoded and is checked against it while it is read; one that
//! fails is decoded again from the .deb, itself hashed against the lock, with one warning
//! (docs/decisions/0026-verified-cache.md). Entries then land in the tree
//! in lock order with merged /usr applied; two packages shipping one path with different
//! content is a conflict unless one Replaces the other; dpkg diversions are honoured.

use crate::deb::{self, DataEntry, EntryKind};
use crate::fetch::cache::Cache;
use crate::fetch::verify;
use crate::lock::LockedPackage;
use crate::resolve::relation;
use crate::tree::{merged_usr, Content, Entry, Kind, Tree};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One package, decoded.
pub struct Unpacked {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// The .deb's sha256.
    pub sha256: String,
    /// Fields of its control file.
    pub fields: BTreeMap<String, String>,
    /// Control members (control, postinst, conffiles, md5sums, ...).
    pub control: BTreeMap<String, Vec<u8>>,
    /// Data entries, in archive order.
    pub entries: Vec<DataEntry>,
    /// The decompressed data.tar.
    pub data: Arc<Vec<u8>>,
}

impl Unpacked {
    /// A control member as text ("" when absent).
    pub fn script(&self, name: &str) -> String {
        self.control
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
    /// The newest mtime of its files.
    pub fn newest_mtime(&self) -> u64 {
        self.entries.iter().map(|e| e.mtime).max().unwrap_or(0)
    }
}

/// Decodes every package (from the decoded cache when present), using all cores.
pub fn unpack_all(cache: &Cache, pkgs: &[LockedPackage]) -> Result<Vec<Unpacked>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Unpacked>>>> =
        Mutex::new((0..pkgs.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(pkgs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pkgs.len() {
                    break;
                }
                let r = unpack_one(cache, &pkgs[i])
                    .with_context(|| format!("package {} {}", pkgs[i].name, pkgs[i].version));
                if let Ok(mut v) = results.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    let v = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a decoding thread panicked"))?;
    v.into_iter()
        .map(|r| r.unwrap_or_else(|| bail!("a package was not decoded")))
        .collect()
}

fn unpack_one(cache: &Cache, p: &LockedPackage) -> Result<Unpacked> {
    let dir = cache.decoded_dir().join(&p.sha256);
    let (control, data) = match read_decoded(cache, &dir)? {
        Decoded::Valid { control, data } => (read_control_tar(&control)?, data),
        Decoded::Absent => decode_and_store(cache, p, &dir, false)?,
        Decoded::Bad(why) => {
            crate::fetch::cache::warn(&format!(
                "cache: {} {}: decoded {why}; decoding it again from the verified .deb",
                p.name, p.version
            ));
            decode_and_store(cache, p, &dir, true)?
        }
    };
    let entries = deb::list_data(&p.name, &data)?;
    let fields = deb::parse_control(&String::from_utf8_lossy(
        control.get("control").map_or(&[][..], |v| v),
    ))
    .with_context(|| format!("{}: control file", p.name))?;
    Ok(Unpacked {
        name: p.name.clone(),
        version: p.version.clone(),
        architecture: p.architecture.clone(),
        sha256: p.sha256.clone(),
        fields,
        control,
        entries,
        data: Arc::new(data),
    })
}

/// Control members by name.
type Control = BTreeMap<String, Vec<u8>>;

/// The record of a decoded entry: one `SHA256 SIZE NAME` line per file, written when the
/// entry was decoded and checked against the files whenever they are read.
const SUMS: &str = "sums";
/// The files of a decoded entry, in the order of its `sums`.
const DECODED_FILES: [&str; 2] = ["data.tar", "control.tar"];

/// What the decoded cache holds for one package.
enum Decoded {
    /// Both files, each matching the digest recorded when it was decoded.
    Valid { control: Vec<u8>, data: Vec<u8> },
    /// Nothing, or an entry from a version that recorded no digests.
    Absent,
    /// An entry that does not match its record (the reason, naming the file).
    Bad(String),
}

/// Reads the decoded entry `dir`, verifying each file against `sums` while reading it
/// (or by its stamp, [`Cache::read_verified`]).
fn read_decoded(cache: &Cache, dir: &Path) -> Result<Decoded> {
    let sums_path = dir.join(SUMS);
    let sums = match std::fs::read_to_string(&sums_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Decoded::Absent),
        Err(e) => return Ok(Decoded::Bad(format!("{}: {e}", sums_path.display()))),
    };
    let Some(record) = parse_sums(&sums) else {
        return Ok(Decoded::Bad(format!(
            "{}: not a list of sha256, size and name",
            sums_path.display()
        )));
    };
    let mut files = Vec::with_capacity(DECODED_FILES.len());
    for ((sha, size), name) in record.into_iter().zip(DECODED_FILES) {
        let path = dir.join(name);
        match cache.read_verified(&path, &sha, size) {
            Ok(Ok(bytes)) => files.push(bytes),
            Ok(Err(m)) => return Ok(Decoded::Bad(format!("{}: {m}", path.display()))),
            Err(e) => return Ok(Decoded::Bad(format!("{e:#}"))),
        }
    }
    let control = files.pop().context("two decoded files")?;
    let data = files.pop().context("two decoded files")?;
    Ok(Decoded::Valid { control, data })
}

/// The (sha256, size) of each of [`DECODED_FILES`] from a `sums` file, in that order.
fn parse_sums(text: &str) -> Option<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for (line, want) in text.lines().zip(DECODED_FILES) {
        let mut w = line.split(' ');
        let (sha, size, name) = (w.next()?, w.next()?, w.next()?);
        if name != want || w.next().is_some() || !crate::io::hash::is_sha256_hex(sha) {
            return None;
        }
        out.push((sha.to_string(), size.parse().ok()?));
    }
    (out.len() == DECODED_FILES.len() && text.lines().count() == out.len()).then_some(out)
}

/// Decodes the package's .deb (hashed against the lock first) and stores the result as
/// the decoded entry `dir` (`replace`: the one there failed its check). Returns (control,
/// data.tar).
fn decode_and_store(
    cache: &Cache,
    p: &LockedPackage,
    dir: &Path,
    replace: bool,
) -> Result<(Control, Vec<u8>)> {
    let blob = cache.blob_path(&p.sha256);
    let mut f = verify::open_nofollow(&blob).with_context(|| {
        format!(
            "opening {} (run the build again to fetch it again)",
            blob.display()
        )
    })?;
    let hint = f.metadata().map_or(p.size, |m| m.len());
    let (bytes, digest) = verify::read_hashing(&mut f, hint)
        .with_context(|| format!("reading {}", blob.display()))?;
    if digest != p.sha256 {
        // Changed since the fetch checked it: drop it so that the next run fetches it.
        let _ = cache.check(&p.sha256);
        bail!(crate::fetch::cache::DigestMismatch {
            what: format!("{} (run the build again to fetch it again)", blob.display()),
            expected: p.sha256.clone(),
            actual: digest,
        });
    }
    let d = deb::read_deb_bytes(&blob.display().to_string(), &bytes)?;
    drop(bytes);
    store_decoded(cache, dir, &d, replace)?;
    Ok((d.control, d.data_tar))
}

/// Writes `d` as a decoded entry in a work directory of the cache (files created with
/// `O_EXCL|O_NOFOLLOW`, 0600, hashed while written) and renames it to `dir`. The entry at
/// `dir` is moved aside first when it is to be `replace`d or has no `sums` (an older
/// version's). The files are not fsynced: a torn write after a crash fails its `sums`
/// check and is decoded again.
fn store_decoded(cache: &Cache, dir: &Path, d: &deb::Deb, replace: bool) -> Result<()> {
    let work = cache.temp_dir()?;
    let staged = work.path().join("decoded");
    std::fs::DirBuilder::new()
        .mode(verify::DIR_MODE)
        .create(&staged)
        .with_context(|| format!("creating {}", staged.display()))?;
    let control = control_tar(d)?;
    let mut sums = String::new();
    for (name, bytes) in DECODED_FILES.iter().zip([&d.data_tar, &control]) {
        let path = staged.join(name);
        let file = verify::create_new(&path, verify::FILE_MODE)?;
        let mut w = crate::io::hash::HashingWriter::new(file);
        w.write_all(bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        let (_, sha, size) = w.finish();
        sums.push_str(&format!("{sha} {size} {name}\n"));
    }
    let sums_path = staged.join(SUMS);
    verify::create_new(&sums_path, verify::FILE_MODE)?
        .write_all(sums.as_bytes())
        .with_context(|| format!("writing {}", sums_path.display()))?;
    // A bad or old entry goes into the work directory, removed with it. A complete one
    // (another build's, stored since this one looked) stays: moving it could make a
    // third build's read of it fail half-way.
    let complete = dir.join(SUMS).is_file();
    if !complete || replace {
        match std::fs::rename(dir, work.path().join("old")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("moving aside {}", dir.display())),
        }
    }
    // Fails when another build stored it in between: theirs is checked like ours when
    // it is read.
    let _ = std::fs::rename(&staged, dir);
    Ok(())
}

/// The control members as a plain tar, the form the decoded cache keeps them in.
fn control_tar(d: &deb::Deb) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in &d.control {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, bytes.as_slice())
            .context("writing decoded control")?;
    }
    b.into_inner().context("finishing decoded control")
}

fn read_control_tar(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().context("reading decoded control")? {
        let mut e = e.context("reading decoded control")?;
        let name = e
            .path()
            .context("decoded control member name")?
            .to_string_lossy()
            .into_owned();
        let mut v = Vec::new();
        e.read_to_end(&mut v)
            .context("reading decoded control member")?;
        out.insert(name, v);
    }
    Ok(out)
}

/// A dpkg diversion: `from` shipped by any package but `owner` lands at `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diversion {
    pub from: String,
    pub to: String,
    pub owner: String,
}

/// The `dpkg-divert --add ... --divert TO FROM` calls of a maintainer script.
pub fn parse_diversions(pkg: &str, script: &str) -> Vec<Diversion> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let Some(pos) = line.find("dpkg-divert") else {
            continue;
        };
        let words: Vec<&str> = line[pos..]
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
            .collect();
        if words.iter().any(|w| {
            *w == "--remove" || *w == "--list" || *w == "--truename" || *w == "--listpackage"
        }) {
            continue;
        }
        let (mut to, mut owner, mut from) = (None, pkg.to_string(), None);
        let mut i = 1;
        while i < words.len() {
            match words[i] {
                "--divert" => {
                    to = words.get(i + 1).copied();
                    i += 1;
                }
                "--package" => {
                    if let Some(p) = words.get(i + 1) {
                        owner = p.to_string();
                    }
                    i += 1;
                }
                "--admindir" | "--instdir" | "--root" => i += 1,
                w if w.starts_with('/') => from = Some(w),
                w if w.starts_with("--") => {}
                _ => break,
            }
            i += 1;
        }
        if let (Some(to), Some(from)) = (to, from) {
            if !to.contains('$') && !from.contains('$') {
                out.push(Diversion {
                    from: merged_usr(from.trim_start_matches('/')),
                    to: merged_usr(to.trim_start_matches('/')),
                    owner,
                });
            }
        }
    }
    out
}

fn replaces(u: &Unpacked, other: &Unpacked) -> bool {
    let Some(field) = u.fields.get("Replaces") else {
        return false;
    };
    let Ok(groups) = relation::parse(field) else {
        return false;
    };
    groups
        .iter()
        .flatten()
        .any(|a| a.name == other.name && a.version_ok(&other.version))
}

/// Puts every package's entries into `tree`. Returns the diversions applied.
pub fn insert(tree: &mut Tree, pkgs: &[Unpacked]) -> Result<Vec<Diversion>> {
    let mut diversions: Vec<Diversion> = Vec::new();
    for u in pkgs {
        for s in ["preinst", "postinst"] {
            diversions.extend(parse_diversions(&u.name, &u.script(s)));
        }
    }
    let diverted: HashMap<&str, &Diversion> =
        diversions.iter().map(|d| (d.from.as_str(), d)).collect();
    let index: HashMap<&str, &Unpacked> = pkgs.iter().map(|u| (u.name.as_str(), u)).collect();
    for u in pkgs {
        let name: Arc<str> = Arc::from(u.name.as_str());
        for e in &u.entries {
            // Top-level /bin, /lib... (directories or base-files' own links): merged /usr
            // makes them links to usr/ at the end, whatever the package shipped.
            if crate::tree::MERGED_DIRS.contains(&e.path.as_str()) {
                continue;
            }
            let mut path = merged_usr(&e.path);
            if let Some(d) = diverted.get(path.as_str()) {
                if d.owner != u.name {
                    path = d.to.clone();
                }
            }
            let kind = match e.kind {
                EntryKind::File => Kind::File(Content::slice(
                    u.data.clone(),
                    e.offset as usize,
                    e.size as usize,
                )?),
                EntryKind::Dir => Kind::Dir,
                EntryKind::Symlink => Kind::Symlink(e.link_target.clone().unwrap_or_default()),
                EntryKind::Hardlink => {
                    Kind::Hardlink(merged_usr(e.link_target.as_deref().unwrap_or_default()))
                }
                EntryKind::CharDevice => {
                    let (a, b) = e.device.unwrap_or((0, 0));
                    Kind::CharDevice(a, b)
                }
                EntryKind::BlockDevice => {
                    let (a, b) = e.device.unwrap_or((0, 0));
                    Kind::BlockDevice(a, b)
                }
                EntryKind::Fifo => Kind::Fifo,
            };
            let entry = Entry {
                kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
                xattrs: BTreeMap::new(),
                package: Some(name.clone()),
            };
            // A top-level /bin, /lib... directory itself: merged /usr makes it a link later.
            if path.is_empty() {
                continue;
            }
            if let Some(old) = tree.get(&path) {
                if old.is_dir() && entry.is_dir() {
                    continue;
                }
                let same = match (&old.kind, &entry.kind) {
                    (Kind::File(a), Kind::File(b)) => a.as_slice() == b.as_slice(),
                    (Kind::Symlink(a), Kind::Symlink(b)) => a == b,
                    (Kind::Hardlink(a), Kind::Hardlink(b)) => a == b,
                    _ => false,
                };
                if same {
                    continue;
                }
                let owner = old.package.clone();
                let old_pkg = owner.as_deref().and_then(|o| index.get(o)).copied();
                match old_pkg {
                    Some(o) if replaces(u, o) => {}
                    Some(o) if replaces(o, u) => continue,
                    _ => bail!(
                        "file conflict: /{path} is shipped by {} and {} with different content, and neither Replaces the other",
                        owner.as_deref().unwrap_or("(unknown)"),
                        u.name
                    ),
                }
            }
            tree.put(&path, entry)
                .with_context(|| format!("{}: /{}", u.name, e.path))?;
        }
    }
    Ok(diversions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hash::sha256_hex;

    fn member(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        b.append_data(&mut h, path, body).unwrap();
    }

    /// A cache holding one small .deb, and its lock entry.
    fn cache_with_deb() -> (tempfile::TempDir, Cache, LockedPackage) {
        let mut control = tar::Builder::new(Vec::new());
        member(
            &mut control,
            "./control",
            b"Package: p\nVersion: 1\nArchitecture: all\n",
        );
        let mut data = tar::Builder::new(Vec::new());
        let body: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 253) as u8).collect();
        member(&mut data, "./p.bin", &body);
        let mut deb = b"!<arch>\n".to_vec();
        for (name, bytes) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", control.into_inner().unwrap()),
            ("data.tar", data.into_inner().unwrap()),
        ] {
            let head = format!(
                "{name:<16}0           0     0     100644  {:<10}`\n",
                bytes.len()
            );
            deb.extend_from_slice(head.as_bytes());
            deb.extend_from_slice(&bytes);
        }
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(d.path().join("c"))).unwrap();
        let sha = sha256_hex(&deb);
        let f = d.path().join("p.deb");
        std::fs::write(&f, &deb).unwrap();
        cache.insert(&f, &sha).unwrap();
        let p = LockedPackage {
            name: "p".into(),
            version: "1".into(),
            architecture: "all".into(),
            size: deb.len() as u64,
            sha256: sha,
            source: "p".into(),
            source_version: "1".into(),
            suite: "trixie".into(),
        };
        (d, cache, p)
    }

    #[test]
    fn a_changed_decoded_data_tar_is_decoded_again() {
        let (_d, cache, p) = cache_with_deb();
        let first = unpack_all(&cache, std::slice::from_ref(&p)).unwrap();
        let path = cache.decoded_dir().join(&p.sha256).join("data.tar");
        let good = std::fs::read(&path).unwrap();
        assert_eq!(good, *first[0].data);
        for at in [0, 700, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let again = unpack_all(&cache, std::slice::from_ref(&p)).unwrap();
            assert_eq!(again[0].data, first[0].data, "byte {at}");
            assert_eq!(std::fs::read(&path).unwrap(), good, "repaired in the cache");
        }
        // An entry without a record (an older version's) is decoded again too.
        std::fs::remove_file(cache.decoded_dir().join(&p.sha256).join(SUMS)).unwrap();
        unpack_all(&cache, std::slice::from_ref(&p)).unwrap();
        assert!(cache.decoded_dir().join(&p.sha256).join(SUMS).is_file());
    }

    /// Directory symlinks planted at every name the old code staged a decode under
    /// (`decoded/.SHA.tmp-PID-N`) are not written through.
    #[test]
    fn planted_symlinks_at_decode_staging_names_are_not_followed() {
        let (d, cache, p) = cache_with_deb();
        let victim = d.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let pid = std::process::id();
        for n in 0..512 {
            let planted = cache
                .decoded_dir()
                .join(format!(".{}.tmp-{pid}-{n}", p.sha256));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        unpack_all(&cache, std::slice::from_ref(&p)).unwrap();
        assert!(
            std::fs::read_dir(&victim).unwrap().next().is_none(),
            "nothing was written through a planted link"
        );
        assert!(cache.decoded_dir().join(&p.sha256).join(SUMS).is_file());
    }

    #[test]
    fn diversions_parse() {
        let s = "if [ \"$1\" = install ]; then\n  dpkg-divert --package foo --add --rename \\\n    --divert /usr/bin/tool.distrib /usr/bin/tool\nfi\ndpkg-divert --remove /x\n";
        let d = parse_diversions("bar", s);
        assert_eq!(
            d,
            [Diversion {
                from: "usr/bin/tool".into(),
                to: "usr/bin/tool.distrib".into(),
                owner: "foo".into()
            }]
        );
    }
}
