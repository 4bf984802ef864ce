//! What is in an image and what changed between two: sizes by package and by directory,
//! and the package and file differences of two assembled trees. Consumes trees and locks;
//! produces plain data the CLI prints as text or JSON.

use crate::lock::LockedPackage;
use crate::tree::{Entry, Kind, Tree};
use serde::Serialize;
use std::collections::BTreeMap;

/// Files and bytes of one group.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// Entries.
    pub entries: usize,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Where an image's bytes are.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// Total.
    pub total: Usage,
    /// By package (`(generated)` for files slipway wrote, `(recipe)`-less overlays too).
    pub by_package: Vec<(String, Usage)>,
    /// By directory, down to the depth asked for.
    pub by_dir: Vec<(String, Usage)>,
}

/// The sizes of `tree`, directories cut at `depth` components.
pub fn sizes(tree: &Tree, depth: usize) -> Sizes {
    let mut by_pkg: BTreeMap<String, Usage> = BTreeMap::new();
    let mut by_dir: BTreeMap<String, Usage> = BTreeMap::new();
    let mut total = Usage::default();
    for (path, e) in tree.iter() {
        if path.is_empty() {
            continue;
        }
        let size = e.size();
        total.entries += 1;
        total.bytes += size;
        let pkg = e
            .package
            .as_deref()
            .map(str::to_string)
            .unwrap_or_else(|| "(generated or overlay)".into());
        let u = by_pkg.entry(pkg).or_default();
        u.entries += 1;
        u.bytes += size;
        let comps: Vec<&str> = path.split('/').collect();
        let keep = if e.is_dir() {
            comps.len().min(depth)
        } else {
            (comps.len() - 1).min(depth)
        };
        let dir = format!("/{}", comps[..keep].join("/"));
        let u = by_dir.entry(dir).or_default();
        u.entries += 1;
        u.bytes += size;
    }
    let mut by_package: Vec<_> = by_pkg.into_iter().collect();
    by_package.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
    let mut by_dir: Vec<_> = by_dir.into_iter().collect();
    by_dir.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
    Sizes {
        total,
        by_package,
        by_dir,
    }
}

/// A package that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PackageChange {
    /// Name.
    pub name: String,
    /// Version in A (None: added).
    pub from: Option<String>,
    /// Version in B (None: removed).
    pub to: Option<String>,
}

/// A path that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileChange {
    /// Path (absolute).
    pub path: String,
    /// `added`, `removed`, `content`, `metadata` or `type`.
    pub change: String,
    /// Size in A.
    pub from_bytes: u64,
    /// Size in B.
    pub to_bytes: u64,
}

/// The differences between two images.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// Packages added, removed or at another version.
    pub packages: Vec<PackageChange>,
    /// Paths added, removed or changed.
    pub files: Vec<FileChange>,
    /// Content bytes of A and of B.
    pub bytes: (u64, u64),
}

fn kind_name(e: &Entry) -> &'static str {
    match e.kind {
        Kind::File(_) => "file",
        Kind::Dir => "dir",
        Kind::Symlink(_) => "symlink",
        Kind::Hardlink(_) => "hardlink",
        Kind::CharDevice(..) => "char",
        Kind::BlockDevice(..) => "block",
        Kind::Fifo => "fifo",
    }
}

/// What changed from `a` (with packages `la`) to `b` (with `lb`). Directory mtimes alone are not reported.
pub fn diff(a: &Tree, la: &[LockedPackage], b: &Tree, lb: &[LockedPackage]) -> Diff {
    let va: BTreeMap<&str, &str> = la
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let vb: BTreeMap<&str, &str> = lb
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let mut packages = Vec::new();
    for name in va
        .keys()
        .chain(vb.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (x, y) = (va.get(name), vb.get(name));
        if x != y {
            packages.push(PackageChange {
                name: name.to_string(),
                from: x.map(|s| s.to_string()),
                to: y.map(|s| s.to_string()),
            });
        }
    }
    let mut files = Vec::new();
    let paths: std::collections::BTreeSet<&String> = a
        .iter()
        .map(|(p, _)| p)
        .chain(b.iter().map(|(p, _)| p))
        .collect();
    for p in paths {
        if p.is_empty() {
            continue;
        }
        let change = match (a.get(p), b.get(p)) {
            (Some(x), None) => Some(("removed", x.size(), 0)),
            (None, Some(y)) => Some(("added", 0, y.size())),
            (Some(x), Some(y)) => {
                if kind_name(x) != kind_name(y) {
                    Some(("type", x.size(), y.size()))
                } else if crate::writers::oci::layers::same_entry(x, y)
                    || (x.is_dir() && x.mode == y.mode && x.uid == y.uid && x.gid == y.gid)
                {
                    None
                } else {
                    let same_content = match (&x.kind, &y.kind) {
                        (Kind::File(c1), Kind::File(c2)) => c1.as_slice() == c2.as_slice(),
                        (Kind::Symlink(t1), Kind::Symlink(t2))
                        | (Kind::Hardlink(t1), Kind::Hardlink(t2)) => t1 == t2,
                        _ => true,
                    };
                    Some((
                        if same_content { "metadata" } else { "content" },
                        x.size(),
                        y.size(),
                    ))
                }
            }
            (None, None) => None,
        };
        if let Some((c, f, t)) = change {
            files.push(FileChange {
                path: format!("/{p}"),
                change: c.into(),
                from_bytes: f,
                to_bytes: t,
            });
        }
    }
    Diff {
        packages,
        files,
        bytes: (a.content_size(), b.content_size()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_diff() {
        let mut a = Tree::new();
        let mut f = Entry::file(vec![0; 100], 0o644, 1);
        f.package = Some("p".into());
        a.put("usr/lib/x.so", f.clone()).unwrap();
        a.put("etc/conf", Entry::file(b"a".to_vec(), 0o644, 1))
            .unwrap();
        let s = sizes(&a, 2);
        assert_eq!(s.total.bytes, 101);
        assert_eq!(s.by_package[0].0, "p");
        assert_eq!(
            s.by_dir[0],
            (
                "/usr/lib".to_string(),
                Usage {
                    entries: 2,
                    bytes: 100
                }
            )
        );
        let mut b = a.clone();
        b.put("etc/conf", Entry::file(b"bb".to_vec(), 0o644, 1))
            .unwrap();
        b.put("etc/new", Entry::file(b"n".to_vec(), 0o644, 1))
            .unwrap();
        b.remove("usr/lib/x.so");
        let d = diff(&a, &[], &b, &[]);
        let got: Vec<(&str, &str)> = d
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.change.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/etc/conf", "content"),
                ("/etc/new", "added"),
                ("/usr/lib/x.so", "removed")
            ]
        );
    }
}
