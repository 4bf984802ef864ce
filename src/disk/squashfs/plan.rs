//! Turns the tree into the squashfs inode graph: one node per tree entry (plus the root
//! directory), each directory's children in byte order of their names, hard links
//! resolved to the inode of their target, link counts, and inode numbers.
//!
//! Inode numbers are given in post-order (a directory after everything below it, the
//! root last), the order the writer emits inodes in, so they depend on the tree alone.

use crate::tree::{Entry, Kind, Tree};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// One entry of the image.
pub struct Node<'t> {
    /// Path in the tree ("" for the root).
    pub path: &'t str,
    /// The last component of the path.
    pub name: &'t str,
    /// The entry (None: the root, which the tree need not hold).
    entry: Option<&'t Entry>,
    /// Children, for directories, in byte order of their names.
    pub children: Vec<usize>,
    /// The node whose inode this entry is: itself, or a hard link's target.
    pub target: usize,
    /// Inode number (1-based; a hard link has its target's).
    pub inode: u32,
    /// Link count of the inode.
    pub nlink: u32,
}

/// The whole image's nodes; node 0 is the root.
pub struct Plan<'t> {
    /// The nodes, in tree order.
    pub nodes: Vec<Node<'t>>,
    /// The root directory's entry when the tree has none.
    root: Entry,
    /// Number of inodes.
    pub inodes: u32,
}

impl<'t> Plan<'t> {
    /// Plans `tree`; `root` is the root directory's entry if the tree has none.
    pub fn new(tree: &'t Tree, root: Entry) -> Result<Self> {
        let mut nodes = vec![Node {
            path: "",
            name: "",
            entry: tree.get(""),
            children: Vec::new(),
            target: 0,
            inode: 0,
            nlink: 2,
        }];
        let mut index: HashMap<&'t str, usize> = HashMap::from([("", 0)]);
        for (path, e) in tree.iter().filter(|(p, _)| !p.is_empty()) {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let Some(&p) = index.get(parent) else {
                bail!("/{path}: its parent /{parent} is not in the tree");
            };
            if p != 0 && !nodes[p].entry.is_some_and(Entry::is_dir) {
                bail!("/{path}: its parent /{parent} is not a directory");
            }
            if name.is_empty() || name.len() > super::format::NAME_MAX {
                bail!("/{path}: a squashfs name is 1 to 256 bytes");
            }
            let i = nodes.len();
            nodes[p].children.push(i);
            if e.is_dir() {
                nodes[p].nlink += 1;
            }
            index.insert(path, i);
            nodes.push(Node {
                path,
                name,
                entry: Some(e),
                children: Vec::new(),
                target: i,
                inode: 0,
                nlink: if e.is_dir() { 2 } else { 1 },
            });
        }
        resolve_links(&mut nodes, &index)?;
        let mut plan = Plan {
            nodes,
            root,
            inodes: 0,
        };
        plan.number()?;
        Ok(plan)
    }

    /// The entry of node `i`.
    pub fn entry(&self, i: usize) -> &Entry {
        self.nodes[i].entry.unwrap_or(&self.root)
    }

    /// Gives every inode its number, in post-order.
    fn number(&mut self) -> Result<()> {
        let mut next = 0u32;
        // An explicit stack: (node, children visited).
        let mut stack = vec![(0usize, false)];
        while let Some((i, visited)) = stack.pop() {
            if visited || self.nodes[i].children.is_empty() {
                next += 1;
                self.nodes[i].inode = next;
                continue;
            }
            stack.push((i, true));
            for &c in self.nodes[i].children.iter().rev() {
                if self.nodes[c].target == c {
                    stack.push((c, false));
                }
            }
        }
        for i in 0..self.nodes.len() {
            let t = self.nodes[i].target;
            self.nodes[i].inode = self.nodes[t].inode;
        }
        self.inodes = next;
        Ok(())
    }
}

/// Points every hard link at its target's node and counts the target's links.
fn resolve_links(nodes: &mut [Node], index: &HashMap<&str, usize>) -> Result<()> {
    for i in 0..nodes.len() {
        let Some(Entry {
            kind: Kind::Hardlink(first),
            ..
        }) = nodes[i].entry
        else {
            continue;
        };
        let mut to = first.as_str();
        let mut hops = 0;
        let target = loop {
            let name = crate::tree::normalize(to)
                .map_err(|e| anyhow::anyhow!("/{}: hard link: {e}", nodes[i].path))?;
            let Some(&t) = index.get(name.as_str()) else {
                bail!(
                    "/{}: hard link to /{name}, which is not in the tree",
                    nodes[i].path
                );
            };
            match nodes[t].entry.map(|e| &e.kind) {
                Some(Kind::File(_)) => break t,
                Some(Kind::Hardlink(next)) if hops < 8 => {
                    to = next;
                    hops += 1;
                }
                _ => bail!(
                    "/{}: hard link to /{name}, which is not a regular file",
                    nodes[i].path
                ),
            }
        };
        nodes[i].target = target;
        nodes[target].nlink += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_post_order_and_links_share_their_target() {
        let mut t = Tree::new();
        t.put("a/x", Entry::file(vec![1], 0o644, 0)).unwrap();
        t.put("a/y", Entry::file(vec![2], 0o644, 0)).unwrap();
        t.put("b", Entry::dir(0o755, 0)).unwrap();
        let mut link = Entry::file(vec![], 0o644, 0);
        link.kind = Kind::Hardlink("a/x".into());
        t.put("c", link).unwrap();
        let p = Plan::new(&t, Entry::dir(0o755, 0)).unwrap();
        let by_path = |s: &str| p.nodes.iter().find(|n| n.path == s).unwrap();
        // a/x=1, a/y=2, a=3, b=4, root=5; c shares a/x's inode.
        assert_eq!(
            ["a/x", "a/y", "a", "b", "", "c"].map(|s| by_path(s).inode),
            [1, 2, 3, 4, 5, 1]
        );
        assert_eq!(p.inodes, 5);
        assert_eq!(by_path("a/x").nlink, 2);
        assert_eq!(by_path("").nlink, 4);
    }

    #[test]
    fn a_link_to_nothing_names_the_link() {
        let mut t = Tree::new();
        let mut link = Entry::file(vec![], 0o644, 0);
        link.kind = Kind::Hardlink("usr/missing".into());
        t.put("usr/bin/x", link).unwrap();
        let e = Plan::new(&t, Entry::dir(0o755, 0)).err().unwrap();
        assert_eq!(
            e.to_string(),
            "/usr/bin/x: hard link to /usr/missing, which is not in the tree"
        );
    }
}
