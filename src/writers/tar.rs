//! Reproducible tar from the tree: entries in byte order of their paths, mtimes clamped to
//! `SOURCE_DATE_EPOCH`, numeric ids only (no user or group names), PAX headers for long
//! names and link targets and for xattrs, no atime/ctime. The same tree always gives the
//! same bytes, whoever builds it and wherever.

use crate::tree::{Entry, Kind, Tree};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Write;

/// Options for one tar stream.
#[derive(Debug, Clone, Copy)]
pub struct TarOptions {
    /// Latest mtime written; later ones are clamped to it.
    pub epoch: u64,
}

fn header(path: &str, e: &Entry, epoch: u64, entry_type: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(entry_type);
    h.set_mode(e.mode & 0o7777);
    h.set_uid(e.uid as u64);
    h.set_gid(e.gid as u64);
    h.set_mtime(e.mtime.min(epoch));
    h.set_size(size);
    let _ = path;
    h
}

/// Writes `tree` as a tar stream into `w` (which it does not finish or flush).
pub fn write_tree<W: Write>(tree: &Tree, opts: TarOptions, w: W) -> Result<W> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    // Hard links: each group is a regular file plus the links to it. The group's first
    // path in byte order carries the content, so no link precedes its target.
    let mut first_of: HashMap<String, String> = HashMap::new();
    for (path, e) in tree.iter() {
        if let Kind::Hardlink(target) = &e.kind {
            let first = first_of
                .entry(target.clone())
                .or_insert_with(|| target.clone());
            if path < first {
                *first = path.clone();
            }
        }
    }
    let first_by_path: HashMap<&str, String> = tree
        .iter()
        .filter_map(|(path, e)| match &e.kind {
            Kind::Hardlink(t) => first_of.get(t).map(|f| (path.as_str(), f.clone())),
            Kind::File(_) => first_of.get(path).map(|f| (path.as_str(), f.clone())),
            _ => None,
        })
        .collect();
    let group_of = |p: &str| -> Option<&String> { first_by_path.get(p) };
    for (path, e) in tree.iter() {
        let name = if e.is_dir() {
            format!("{path}/")
        } else {
            path.clone()
        };
        let pax = pax_records(e);
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .with_context(|| format!("writing PAX header for {path}"))?;
        }
        // A member of a hard-link group: the first one holds the content.
        if let Some(first) = group_of(path) {
            if first != path {
                let mut h = header(path, e, opts.epoch, tar::EntryType::Link, 0);
                b.append_link(&mut h, &name, first)
                    .with_context(|| format!("writing hard link {path}"))?;
                continue;
            }
            let content = match &e.kind {
                Kind::File(c) => c.clone(),
                Kind::Hardlink(t) => match tree.get(t).map(|x| &x.kind) {
                    Some(Kind::File(c)) => c.clone(),
                    _ => anyhow::bail!(
                        "hard link {path} -> {t}: the target is not a regular file in the tree"
                    ),
                },
                _ => anyhow::bail!("{path}: hard-link group member is not a file"),
            };
            let mut h = header(path, e, opts.epoch, tar::EntryType::Regular, content.len());
            b.append_data(&mut h, &name, content.as_slice())
                .with_context(|| format!("writing {path}"))?;
            continue;
        }
        match &e.kind {
            Kind::File(c) => {
                let mut h = header(path, e, opts.epoch, tar::EntryType::Regular, c.len());
                b.append_data(&mut h, &name, c.as_slice())
                    .with_context(|| format!("writing {path}"))?;
            }
            Kind::Dir => {
                let mut h = header(path, e, opts.epoch, tar::EntryType::Directory, 0);
                b.append_data(&mut h, &name, std::io::empty())
                    .with_context(|| format!("writing {path}"))?;
            }
            Kind::Symlink(t) => {
                let mut h = header(path, e, opts.epoch, tar::EntryType::Symlink, 0);
                b.append_link(&mut h, &name, t)
                    .with_context(|| format!("writing symlink {path}"))?;
            }
            Kind::Hardlink(_) => unreachable_group(path)?,
            Kind::CharDevice(ma, mi) | Kind::BlockDevice(ma, mi) => {
                let t = if matches!(e.kind, Kind::CharDevice(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = header(path, e, opts.epoch, t, 0);
                h.set_device_major(*ma).context("device major")?;
                h.set_device_minor(*mi).context("device minor")?;
                b.append_data(&mut h, &name, std::io::empty())
                    .with_context(|| format!("writing {path}"))?;
            }
            Kind::Fifo => {
                let mut h = header(path, e, opts.epoch, tar::EntryType::Fifo, 0);
                b.append_data(&mut h, &name, std::io::empty())
                    .with_context(|| format!("writing {path}"))?;
            }
        }
    }
    b.into_inner().context("finishing the tar stream")
}

/// Writes `tree` to the file `path` atomically; returns what was written.
pub fn write_file(
    tree: &Tree,
    opts: TarOptions,
    path: &std::path::Path,
) -> Result<crate::output::Output> {
    let mut f = crate::io::atomic::AtomicFile::create(path)?;
    let w =
        crate::io::hash::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f.file()));
    let w = write_tree(tree, opts, w)?;
    let (buf, sha256, size) = w.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    f.commit()?;
    Ok(crate::output::Output {
        kind: "tar".into(),
        path: path.display().to_string(),
        size,
        sha256,
    })
}

fn unreachable_group(path: &str) -> Result<()> {
    anyhow::bail!("{path}: hard link outside any group (internal error)")
}

fn pax_records(e: &Entry) -> Vec<(String, Vec<u8>)> {
    e.xattrs
        .iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.put(
            "usr/bin/zz",
            Entry::file(b"hello".to_vec(), 0o755, 2_000_000_000),
        )
        .unwrap();
        let mut link = Entry::file(vec![], 0o755, 1);
        link.kind = Kind::Hardlink("usr/bin/zz".into());
        t.put("usr/bin/aa", link).unwrap();
        let long = format!("usr/share/{}/file", "d".repeat(120));
        t.put(&long, Entry::file(b"long".to_vec(), 0o644, 5))
            .unwrap();
        t.put(
            "etc/alternatives/x",
            Entry::symlink(&format!("/usr/{}", "t".repeat(150)), 5),
        )
        .unwrap();
        t
    }

    #[test]
    fn deterministic_and_readable() {
        let a = write_tree(&sample(), TarOptions { epoch: 100 }, Vec::new()).unwrap();
        let b = write_tree(&sample(), TarOptions { epoch: 100 }, Vec::new()).unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(&a[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            assert!(e.header().mtime().unwrap() <= 100, "mtime clamped");
            if p == "usr/bin/aa" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                assert_eq!(
                    s, "hello",
                    "first of the hard-link group carries the content"
                );
            }
            if p == "usr/bin/zz" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Link);
            }
            if p.starts_with("etc/alternatives/x") {
                assert_eq!(e.link_name().unwrap().unwrap().to_string_lossy().len(), 155);
            }
            seen.push(p);
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(seen.iter().any(|p| p.len() > 100));
    }
}
