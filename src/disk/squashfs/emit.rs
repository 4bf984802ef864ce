//! The inode and directory tables: walks the planned tree depth-first, writing each
//! directory's children's inodes, then its listing, then its own inode (so the root's
//! inode comes last), as mksquashfs does. A hard-linked file's inode is written once,
//! where it is first needed, and every link's directory entry points at it.

use super::compress::Compressor;
use super::data::FileData;
use super::dir::{self, DirEntry};
use super::format::{encode_dev, InodeType};
use super::inode::{self, Common};
use super::metadata::MetaWriter;
use super::plan::Plan;
use super::xattr::Xattrs;
use super::Times;
use crate::tree::{Entry, Kind};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// The writer of both tables.
pub struct Emitter<'p, 't> {
    plan: &'p Plan<'t>,
    /// Each file node's content (index into `files`).
    content: &'p HashMap<usize, usize>,
    files: &'p [FileData],
    ids: &'p HashMap<u32, u16>,
    times: Times,
    epoch: u32,
    comp: Compressor,
    /// The inode table.
    pub inodes: MetaWriter,
    /// The directory table.
    pub dirs: MetaWriter,
    /// The xattr sets.
    pub xattrs: Xattrs,
    /// Each written inode's reference, by node.
    pub refs: Vec<Option<u64>>,
}

/// What the emitter needs besides the plan.
pub struct Inputs<'p> {
    /// Each file node's content (index into `files`).
    pub content: &'p HashMap<usize, usize>,
    /// The contents.
    pub files: &'p [FileData],
    /// Each uid/gid's index in the id table.
    pub ids: &'p HashMap<u32, u16>,
    /// Which mtimes inodes get.
    pub times: Times,
    /// The epoch (seconds).
    pub epoch: u32,
    /// zstd level of the metadata.
    pub level: i32,
}

impl<'p, 't> Emitter<'p, 't> {
    /// An emitter for `plan`.
    pub fn new(plan: &'p Plan<'t>, inputs: Inputs<'p>) -> Result<Self> {
        Ok(Emitter {
            plan,
            content: inputs.content,
            files: inputs.files,
            ids: inputs.ids,
            times: inputs.times,
            epoch: inputs.epoch,
            comp: Compressor::new(inputs.level)?,
            inodes: MetaWriter::new(),
            dirs: MetaWriter::new(),
            xattrs: Xattrs::new(),
            refs: vec![None; plan.nodes.len()],
        })
    }

    /// The compressor, to finish the tables with.
    pub fn compressor(&mut self) -> &mut Compressor {
        &mut self.comp
    }

    /// Writes the whole tree; returns the root inode's reference.
    pub fn root(&mut self) -> Result<u64> {
        self.dir(0, self.plan.inodes + 1)
    }

    fn common(&mut self, node: usize) -> Result<Common> {
        let e = self.plan.entry(node);
        let path = self.plan.nodes[node].path;
        let id = |v: u32| self.ids.get(&v).copied();
        let (Some(uid), Some(gid)) = (id(e.uid), id(e.gid)) else {
            bail!("/{path}: owner missing from the id table");
        };
        let mtime = match self.times {
            Times::Epoch => self.epoch,
            Times::Clamped => u32::try_from(e.mtime).unwrap_or(u32::MAX).min(self.epoch),
        };
        Ok(Common {
            mode: (e.mode & 0o7777) as u16,
            uid,
            gid,
            mtime,
            inode: self.plan.nodes[node].inode,
            nlink: self.plan.nodes[node].nlink,
            xattr: self.xattrs.id(&mut self.comp, &e.xattrs, path)?,
        })
    }

    /// Writes directory `node` (children first); `parent` is its parent's inode number.
    fn dir(&mut self, node: usize, parent: u32) -> Result<u64> {
        let plan = self.plan;
        let me = plan.nodes[node].inode;
        let mut entries = Vec::with_capacity(plan.nodes[node].children.len());
        for &c in &plan.nodes[node].children {
            let n = &plan.nodes[c];
            let kind = type_of(plan.entry(n.target));
            let inode_ref = if kind == InodeType::Dir {
                self.dir(c, me)?
            } else {
                self.leaf(n.target)?
            };
            entries.push(DirEntry {
                name: n.name,
                inode_ref,
                inode: n.inode,
                kind,
            });
        }
        let listing = dir::write_listing(&mut self.dirs, &mut self.comp, &entries)?;
        let common = self.common(node)?;
        let bytes = inode::dir(&common, &listing, parent);
        self.put(node, &bytes)
    }

    /// Writes the inode of the non-directory `node` unless it is written already.
    fn leaf(&mut self, node: usize) -> Result<u64> {
        if let Some(r) = self.refs[node] {
            return Ok(r);
        }
        let common = self.common(node)?;
        let e = self.plan.entry(node);
        let bytes = match &e.kind {
            Kind::File(_) => {
                let Some(&i) = self.content.get(&node) else {
                    bail!(
                        "/{}: file content was not written",
                        self.plan.nodes[node].path
                    );
                };
                inode::file(&common, &self.files[i])
            }
            Kind::Symlink(t) => inode::symlink(&common, t),
            Kind::CharDevice(a, b) => {
                inode::device(&common, InodeType::CharDevice, encode_dev(*a, *b))
            }
            Kind::BlockDevice(a, b) => {
                inode::device(&common, InodeType::BlockDevice, encode_dev(*a, *b))
            }
            Kind::Fifo => inode::fifo(&common),
            Kind::Dir | Kind::Hardlink(_) => {
                bail!("/{}: not a leaf inode", self.plan.nodes[node].path)
            }
        };
        self.put(node, &bytes)
    }

    fn put(&mut self, node: usize, bytes: &[u8]) -> Result<u64> {
        let r = self.inodes.reference();
        self.inodes.write(&mut self.comp, bytes)?;
        self.refs[node] = Some(r);
        Ok(r)
    }
}

/// The squashfs type of an entry (a hard link is its target's, a regular file).
pub fn type_of(e: &Entry) -> InodeType {
    match e.kind {
        Kind::Dir => InodeType::Dir,
        Kind::File(_) | Kind::Hardlink(_) => InodeType::File,
        Kind::Symlink(_) => InodeType::Symlink,
        Kind::CharDevice(..) => InodeType::CharDevice,
        Kind::BlockDevice(..) => InodeType::BlockDevice,
        Kind::Fifo => InodeType::Fifo,
    }
}
