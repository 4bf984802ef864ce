//! The index of a decompressed tar member (`data.tar` or `control.tar`).
//!
//! Consumes the bytes of an uncompressed tar and produces one [`DataEntry`] per
//! member in archive order, each regular file described by a byte range of the tar
//! itself, so no file content is copied. Everything a hostile package could use to
//! write outside the image root is refused here, before anything is returned:
//! absolute paths, `..` components, paths that pass through a symlink or a
//! non-directory of the same package, hard links to anything but an earlier regular
//! file, duplicate paths, unsupported member types, and truncated archives.
//!
//! Tar itself is POSIX.1-2001 pax / GNU tar as written by dpkg-deb; long names come
//! from GNU `L`/`K` headers or pax `path`/`linkpath` records, both resolved by the
//! `tar` crate, whose `raw_file_position()` points past those extra headers to the
//! member's own content.

use std::collections::HashMap;
use std::io::Cursor;

use anyhow::{anyhow, bail, Result};

/// Size of a tar block; headers and content are padded to it.
const BLOCK: u64 = 512;

/// What kind of file system object a tar member describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file; its content is `offset..offset + size` of the tar.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; `link_target` holds the target as written.
    Symlink,
    /// A hard link to an earlier regular file of the same package.
    Hardlink,
    /// A character device; `device` holds (major, minor).
    CharDevice,
    /// A block device; `device` holds (major, minor).
    BlockDevice,
    /// A named pipe.
    Fifo,
}

/// One member of a tar, with its path normalized and its content located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataEntry {
    /// Path relative to the package root: no leading `./` or `/`, no trailing `/`,
    /// no `.` or `..` components, never empty, valid UTF-8.
    pub path: String,
    /// The member type.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (masked with `0o7777`).
    pub mode: u32,
    /// Numeric owner (pax `uid` overrides the header field).
    pub uid: u32,
    /// Numeric group (pax `gid` overrides the header field).
    pub gid: u32,
    /// Modification time in seconds since the epoch (pax `mtime`, truncated, wins).
    pub mtime: u64,
    /// For [`EntryKind::File`], where the content starts inside the tar; for
    /// [`EntryKind::Hardlink`], the same range as the file it links to; else 0.
    pub offset: u64,
    /// Content length in bytes, under the same rules as `offset`.
    pub size: u64,
    /// For a symlink, its target exactly as written; for a hard link, the
    /// normalized path of the regular file it links to (hard links to hard links
    /// are resolved to that file).
    pub link_target: Option<String>,
    /// For a character or block device, (major, minor).
    pub device: Option<(u32, u32)>,
}

/// Lists the members of a decompressed `data.tar`, in archive order.
///
/// `pkg` names the package in error messages. The root entry `./` is skipped. Any
/// unsafe or malformed member is an error naming `pkg`, `data.tar` and the member
/// path, and no partial list is returned.
pub fn list_data(pkg: &str, data_tar: &[u8]) -> Result<Vec<DataEntry>> {
    list_tar(pkg, "data.tar", data_tar)
}

/// [`list_data`] for any tar member; `member` names it in error messages.
pub(crate) fn list_tar(pkg: &str, member: &str, tar_bytes: &[u8]) -> Result<Vec<DataEntry>> {
    let err = |path: &str, msg: std::fmt::Arguments| anyhow!("{pkg}: {member}: {path}: {msg}");
    let total = tar_bytes.len() as u64;
    let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
    // Seeking skips file content instead of reading it into a scratch buffer.
    let entries = archive
        .entries_with_seek()
        .map_err(|e| anyhow!("{pkg}: {member}: not a tar archive: {e}"))?;

    let mut out: Vec<DataEntry> = Vec::new();
    // Normalized path -> index in `out`, for the parent, duplicate and hard link checks.
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Where the next header would start after the last member read.
    let mut end = 0u64;
    let mut last_path = String::from("(start of archive)");

    for entry in entries {
        let mut entry = entry.map_err(|e| {
            anyhow!("{pkg}: {member}: corrupt or truncated tar after {last_path}: {e}")
        })?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let offset = entry.raw_file_position();
        let size = entry.size();
        let content_end = offset.checked_add(size).filter(|&e| e <= total).ok_or_else(|| {
            err(
                &shown,
                format_args!("truncated: {size} bytes of content at offset {offset} but the tar has {total} bytes"),
            )
        })?;
        end = content_end.div_ceil(BLOCK) * BLOCK;
        last_path.clone_from(&shown);

        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Char => EntryKind::CharDevice,
            tar::EntryType::Block => EntryKind::BlockDevice,
            tar::EntryType::Fifo => EntryKind::Fifo,
            // A pax global header carries defaults for later members (usually just a
            // comment such as a commit id); it describes no file.
            tar::EntryType::XGlobalHeader => continue,
            other => {
                bail!(err(
                    &shown,
                    format_args!(
                        "unsupported tar member type {:?} (byte {:?})",
                        other,
                        other.as_byte() as char
                    )
                ))
            }
        };

        let path = std::str::from_utf8(&raw_path)
            .map_err(|_| err(&shown, format_args!("member name is not valid UTF-8")))?;
        let Some(path) = normalize(path).map_err(|why| err(&shown, format_args!("{why}")))? else {
            // The root itself ("./"): fine as a directory, nonsense as anything else.
            if kind == EntryKind::Dir {
                continue;
            }
            bail!(err(
                &shown,
                format_args!("the archive root is a {kind:?}, not a directory")
            ));
        };

        check_place(&path, kind, &seen, &out, &|m| err(&shown, m))?;

        let (mode, uid, gid, mtime, device) = header_fields(&mut entry, kind, &|m| err(&shown, m))?;
        let link_raw = entry.link_name_bytes().map(|c| c.into_owned());

        let (entry_offset, entry_size, link_target) =
            link_fields(kind, link_raw, (offset, size), &seen, &out, &|m| {
                err(&shown, m)
            })?;

        seen.insert(path.clone(), out.len());
        out.push(DataEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            offset: entry_offset,
            size: entry_size,
            link_target,
            device,
        });
    }

    // The tar crate stops quietly at end of input on a header boundary; a complete
    // archive ends with zero blocks, so their absence means it was cut short.
    if total < end.saturating_add(BLOCK) {
        bail!("{pkg}: {member}: truncated: no end-of-archive marker after {last_path}");
    }
    Ok(out)
}

/// Builds the error of one member from its message.
type MemberErr<'a> = &'a dyn Fn(std::fmt::Arguments) -> anyhow::Error;

/// Checks where the member `path` of `kind` lands among the members `out` read so far
/// (`seen`: normalized path -> index): no ancestor is a symlink or a non-directory, and
/// nothing but a directory appears twice.
fn check_place(
    path: &str,
    kind: EntryKind,
    seen: &HashMap<String, usize>,
    out: &[DataEntry],
    err: MemberErr,
) -> Result<()> {
    // No ancestor may be a symlink (writing through it could land anywhere) or a
    // non-directory of this package.
    for (i, _) in path.match_indices('/') {
        let ancestor = &path[..i];
        if let Some(&j) = seen.get(ancestor) {
            let parent = &out[j];
            match parent.kind {
                EntryKind::Dir => {}
                EntryKind::Symlink => bail!(err(format_args!(
                        "parent {ancestor} is a symlink of this package (to {}); refusing to write through it",
                        parent.link_target.as_deref().unwrap_or("?")
                    )
                )),
                other => bail!(err(format_args!("parent {ancestor} is a {other:?}, not a directory")
                )),
            }
        }
    }
    if let Some(&j) = seen.get(path) {
        // The same directory twice is harmless (some tools repeat them); any
        // other repeat could swap a checked object for an unchecked one.
        if !(kind == EntryKind::Dir && out[j].kind == EntryKind::Dir) {
            bail!(err(format_args!(
                "appears twice in the archive (as {:?} then {kind:?})",
                out[j].kind
            )));
        }
    }
    Ok(())
}

/// A member's mode, uid, gid, mtime and device numbers.
type HeaderFields = (u32, u32, u32, u64, Option<(u32, u32)>);

/// The mode, owner, mtime (pax `mtime` applied) and device numbers of `entry`.
fn header_fields(
    entry: &mut tar::Entry<'_, Cursor<&[u8]>>,
    kind: EntryKind,
    err: MemberErr,
) -> Result<HeaderFields> {
    let header = entry.header();
    let mode = header
        .mode()
        .map_err(|e| err(format_args!("bad mode field: {e}")))?
        & 0o7777;
    let uid = header
        .uid()
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| err(format_args!("bad or too large uid")))?;
    let gid = header
        .gid()
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| err(format_args!("bad or too large gid")))?;
    let mut mtime = header
        .mtime()
        .map_err(|e| err(format_args!("bad mtime field: {e}")))?;
    let device = match kind {
        EntryKind::CharDevice | EntryKind::BlockDevice => {
            let major = header.device_major().ok().flatten();
            let minor = header.device_minor().ok().flatten();
            match (major, minor) {
                (Some(major), Some(minor)) => Some((major, minor)),
                _ => bail!(err(format_args!(
                    "device member without valid device numbers"
                ))),
            }
        }
        _ => None,
    };

    // pax `mtime` may carry more range or precision than the header field; the
    // tar crate does not apply it, so do it here (seconds, fraction dropped).
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| err(format_args!("bad pax header: {e}")))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| err(format_args!("bad pax record: {e}")))?;
            if ext.key_bytes() == b"mtime" {
                let value = ext.value().unwrap_or("");
                let secs = value.split('.').next().unwrap_or("");
                // Negative (pre-1970) times clamp to 0; Debian has none.
                mtime = if secs.starts_with('-') {
                    0
                } else {
                    secs.parse()
                        .map_err(|_| err(format_args!("bad pax mtime {value:?}")))?
                };
            }
        }
    }
    Ok((mode, uid, gid, mtime, device))
}

/// The content range (`content`: offset and size of the member's own data) and link
/// target of a member of `kind`: a hard link shares the range of the earlier file it
/// links to.
fn link_fields(
    kind: EntryKind,
    link_raw: Option<Vec<u8>>,
    content: (u64, u64),
    seen: &HashMap<String, usize>,
    out: &[DataEntry],
    err: MemberErr,
) -> Result<(u64, u64, Option<String>)> {
    let (mut entry_offset, mut entry_size, mut link_target) = (0, 0, None);
    match kind {
        EntryKind::File => (entry_offset, entry_size) = content,
        EntryKind::Symlink => {
            let target = link_raw
                .filter(|t| !t.is_empty())
                .ok_or_else(|| err(format_args!("symlink without a target")))?;
            let target = String::from_utf8(target)
                .map_err(|_| err(format_args!("symlink target is not valid UTF-8")))?;
            link_target = Some(target);
        }
        EntryKind::Hardlink => {
            let target = link_raw.ok_or_else(|| err(format_args!("hard link without a target")))?;
            let target = std::str::from_utf8(&target)
                .map_err(|_| err(format_args!("hard link target is not valid UTF-8")))?;
            let normal = normalize(target)
                .map_err(|why| err(format_args!("hard link target {target:?}: {why}")))?
                .ok_or_else(|| err(format_args!("hard link to the archive root")))?;
            let file = seen.get(&normal).map(|&j| &out[j]);
            let file = match file {
                Some(f) if f.kind == EntryKind::File => f,
                // A link to a link is a link to the same file.
                Some(f) if f.kind == EntryKind::Hardlink => f,
                _ => bail!(err(format_args!(
                    "hard link to {target:?}, which is not an earlier regular file of this package"
                ))),
            };
            let resolved = match file.kind {
                EntryKind::Hardlink => file.link_target.clone().unwrap_or_default(),
                _ => normal,
            };
            (entry_offset, entry_size) = (file.offset, file.size);
            link_target = Some(resolved);
        }
        _ => {}
    }
    Ok((entry_offset, entry_size, link_target))
}

/// Normalizes a member path: drops `.` and empty components (so `./usr//bin/` is
/// `usr/bin`), refuses absolute paths and `..`. `Ok(None)` is the root itself.
fn normalize(raw: &str) -> std::result::Result<Option<String>, &'static str> {
    if raw.is_empty() {
        return Err("empty member name");
    }
    if raw.starts_with('/') {
        return Err("absolute path (members must be relative to the package root)");
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path contains a '..' component"),
            p => parts.push(p),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a tar from (path, kind, content or link target) in a raw way that
    /// lets tests write names the `tar` crate's safe setters would refuse.
    pub(crate) fn tar_of(members: &[(&str, EntryKind, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_device_major(0).unwrap();
            h.set_device_minor(0).unwrap();
            let (ty, body): (_, &[u8]) = match kind {
                EntryKind::File => (tar::EntryType::Regular, data),
                EntryKind::Dir => (tar::EntryType::Directory, b""),
                EntryKind::Symlink => (tar::EntryType::Symlink, b""),
                EntryKind::Hardlink => (tar::EntryType::Link, b""),
                EntryKind::CharDevice => (tar::EntryType::Char, b""),
                EntryKind::BlockDevice => (tar::EntryType::Block, b""),
                EntryKind::Fifo => (tar::EntryType::Fifo, b""),
            };
            h.set_entry_type(ty);
            h.set_size(body.len() as u64);
            if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink) {
                let name = &mut h.as_old_mut().linkname;
                name[..data.len()].copy_from_slice(data);
            }
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn list(members: &[(&str, EntryKind, &[u8])]) -> Result<Vec<DataEntry>> {
        list_data("pkg", &tar_of(members))
    }

    fn err_of(members: &[(&str, EntryKind, &[u8])]) -> String {
        format!("{:#}", list(members).unwrap_err())
    }

    #[test]
    fn normalizes_paths_and_skips_root() {
        use EntryKind::*;
        let tar = tar_of(&[
            ("./", Dir, b""),
            ("./usr/", Dir, b""),
            ("./usr/bin/", Dir, b""),
            ("./usr/bin/hello", File, b"hello world"),
            ("usr//lib/./x", File, b"x"),
        ]);
        let got = list_data("pkg", &tar).unwrap();
        let paths: Vec<_> = got.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["usr", "usr/bin", "usr/bin/hello", "usr/lib/x"]);
        let f = &got[2];
        assert_eq!(
            &tar[f.offset as usize..(f.offset + f.size) as usize],
            b"hello world"
        );
        assert_eq!((f.mode, f.mtime), (0o644, 1_700_000_000));
    }

    #[test]
    fn refuses_absolute_and_dotdot() {
        use EntryKind::*;
        let e = err_of(&[("/etc/passwd", File, b"x")]);
        assert!(
            e.contains("pkg: data.tar: /etc/passwd: absolute path"),
            "{e}"
        );
        let e = err_of(&[("./usr/../../etc/passwd", File, b"x")]);
        assert!(e.contains("'..'"), "{e}");
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        use EntryKind::*;
        let e = err_of(&[("./x", Symlink, b"/tmp"), ("./x/evil", File, b"boom")]);
        assert!(e.contains("./x/evil: parent x is a symlink"), "{e}");
        let e = err_of(&[
            ("./a/", Dir, b""),
            ("./a/b", Symlink, b"../../.."),
            ("./a/b/c/d", File, b""),
        ]);
        assert!(e.contains("parent a/b is a symlink"), "{e}");
        let e = err_of(&[("./f", File, b""), ("./f/g", File, b"")]);
        assert!(e.contains("parent f is a File"), "{e}");
    }

    #[test]
    fn refuses_duplicates_except_directories() {
        use EntryKind::*;
        assert!(list(&[("./d/", Dir, b""), ("./d/", Dir, b"")]).is_ok());
        let e = err_of(&[("./d/", Dir, b""), ("./d", Symlink, b"/")]);
        assert!(e.contains("appears twice"), "{e}");
    }

    #[test]
    fn hard_links() {
        use EntryKind::*;
        let got = list(&[
            ("./a", File, b"content"),
            ("./b", Hardlink, b"./a"),
            ("./c", Hardlink, b"b"),
        ])
        .unwrap();
        assert_eq!(got[1].link_target.as_deref(), Some("a"));
        assert_eq!(got[2].link_target.as_deref(), Some("a"));
        assert_eq!((got[1].offset, got[1].size), (got[0].offset, got[0].size));
        let e = err_of(&[("./b", Hardlink, b"./a"), ("./a", File, b"")]);
        assert!(e.contains("not an earlier regular file"), "{e}");
        let e = err_of(&[("./b", Hardlink, b"/etc/shadow")]);
        assert!(e.contains("absolute path"), "{e}");
        let e = err_of(&[("./b", Hardlink, b"../../etc/shadow")]);
        assert!(e.contains("'..'"), "{e}");
        let e = err_of(&[("./d/", Dir, b""), ("./b", Hardlink, b"d")]);
        assert!(e.contains("not an earlier regular file"), "{e}");
    }

    #[test]
    fn devices_fifos_and_symlinks() {
        use EntryKind::*;
        let got = list(&[
            ("./null", CharDevice, b""),
            ("./p", Fifo, b""),
            ("./l", Symlink, b"../x y"),
        ])
        .unwrap();
        assert_eq!(got[0].device, Some((0, 0)));
        assert_eq!(got[1].kind, Fifo);
        assert_eq!(got[2].link_target.as_deref(), Some("../x y"));
    }

    #[test]
    fn refuses_non_utf8_and_unsupported_types() {
        let mut tar = tar_of(&[("./ab", EntryKind::File, b"")]);
        tar[2] = 0xff;
        let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
        h.set_cksum();
        tar[..512].copy_from_slice(h.as_bytes());
        let e = format!("{:#}", list_data("pkg", &tar).unwrap_err());
        assert!(e.contains("not valid UTF-8"), "{e}");

        let mut tar = tar_of(&[("./s", EntryKind::File, b"")]);
        let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
        h.set_entry_type(tar::EntryType::new(b'V'));
        h.set_cksum();
        tar[..512].copy_from_slice(h.as_bytes());
        let e = format!("{:#}", list_data("pkg", &tar).unwrap_err());
        assert!(e.contains("unsupported tar member type"), "{e}");
    }

    #[test]
    fn truncation_is_detected() {
        let tar = tar_of(&[
            ("./a", EntryKind::File, &[1u8; 2000]),
            ("./b", EntryKind::File, b"x"),
        ]);
        // Cut inside content, at a header boundary, and right before the trailer.
        for cut in [1000, 512 * 5, 512 * 7] {
            let e = format!("{:#}", list_data("pkg", &tar[..cut]).unwrap_err());
            assert!(e.contains("truncated"), "cut {cut}: {e}");
        }
        assert!(list_data("pkg", &tar).is_ok());
    }

    #[test]
    fn long_names_through_gnu_and_pax() {
        let long = format!("./usr/share/{}/file.txt", "d".repeat(150));
        let target = format!("../{}", "t".repeat(140));
        // GNU long name headers.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, &long, &b"12345"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "./l", &target).unwrap();
        let gnu = b.into_inner().unwrap();
        // pax headers.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("path", long.as_bytes()),
            ("mtime", b"1234567890.5".as_slice()),
            ("uid", b"4000000000".as_slice()),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o4755);
        h.set_path("short").unwrap();
        h.set_cksum();
        b.append(&h, &b"12345"[..]).unwrap();
        let pax = b.into_inner().unwrap();

        for (name, tar) in [("gnu", &gnu), ("pax", &pax)] {
            let got = list_data("pkg", tar).unwrap();
            let f = &got[0];
            assert_eq!(f.path, long.trim_start_matches("./"), "{name}");
            assert_eq!(f.mode, 0o4755, "{name}");
            assert_eq!(
                &tar[f.offset as usize..(f.offset + f.size) as usize],
                b"12345",
                "{name}"
            );
        }
        let got = list_data("pkg", &gnu).unwrap();
        assert_eq!(got[1].link_target.as_deref(), Some(target.as_str()));
        let got = list_data("pkg", &pax).unwrap();
        assert_eq!((got[0].mtime, got[0].uid), (1_234_567_890, 4_000_000_000));
    }
}
