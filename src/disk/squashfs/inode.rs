//! Encodes inodes (squashfs_fs.h `squashfs_*_inode_header`). Each kind has a basic form
//! and an extended one; the extended form is used only when needed: an xattr id, more
//! than one link (regular files), holes, sizes or positions past 4 GiB, or (directories)
//! an index or a listing of 64 KiB or more.

use super::data::FileData;
use super::dir::Listing;
use super::format::{InodeType, Put, NONE_U32};

/// The fields every inode has.
pub struct Common {
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u16,
    /// Index of the owner in the id table.
    pub uid: u16,
    /// Index of the group in the id table.
    pub gid: u16,
    /// Modification time.
    pub mtime: u32,
    /// Inode number.
    pub inode: u32,
    /// Link count.
    pub nlink: u32,
    /// Xattr id, or [`NONE_U32`].
    pub xattr: u32,
}

fn header(kind: InodeType, extended: bool, c: &Common) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.put16(if extended {
        kind.extended()
    } else {
        kind.basic()
    });
    // Permission bits only: the type is the inode's (squashfs_fs.h `SQUASHFS_MODE`).
    b.put16(c.mode & 0o7777);
    b.put16(c.uid);
    b.put16(c.gid);
    b.put32(c.mtime);
    b.put32(c.inode);
    b
}

/// A regular file whose content is `f`.
pub fn file(c: &Common, f: &FileData) -> Vec<u8> {
    let (frag, offset) = f.fragment.unwrap_or((NONE_U32, 0));
    let basic = c.nlink == 1
        && c.xattr == NONE_U32
        && f.sparse == 0
        && u32::try_from(f.start).is_ok()
        && u32::try_from(f.size).is_ok();
    let mut b = header(InodeType::File, !basic, c);
    if basic {
        b.put32(f.start as u32);
        b.put32(frag);
        b.put32(offset);
        b.put32(f.size as u32);
    } else {
        b.put64(f.start);
        b.put64(f.size);
        b.put64(f.sparse);
        b.put32(c.nlink);
        b.put32(frag);
        b.put32(offset);
        b.put32(c.xattr);
    }
    for s in &f.blocks {
        b.put32(*s);
    }
    b
}

/// A directory whose listing is `l`; `parent` is the parent's inode number.
pub fn dir(c: &Common, l: &Listing, parent: u32) -> Vec<u8> {
    let block = (l.start >> 16) as u32;
    let offset = (l.start & 0xffff) as u16;
    let basic = c.xattr == NONE_U32 && l.index_count == 0 && l.size <= 0xffff;
    let mut b = header(InodeType::Dir, !basic, c);
    if basic {
        b.put32(block);
        b.put32(c.nlink);
        b.put16(l.size as u16);
        b.put16(offset);
        b.put32(parent);
    } else {
        b.put32(c.nlink);
        b.put32(l.size);
        b.put32(block);
        b.put32(parent);
        b.put16(l.index_count);
        b.put16(offset);
        b.put32(c.xattr);
        b.extend_from_slice(&l.index);
    }
    b
}

/// A symbolic link to `target`.
pub fn symlink(c: &Common, target: &str) -> Vec<u8> {
    let extended = c.xattr != NONE_U32;
    let mut b = header(InodeType::Symlink, extended, c);
    b.put32(c.nlink);
    b.put32(target.len() as u32);
    b.extend_from_slice(target.as_bytes());
    if extended {
        b.put32(c.xattr);
    }
    b
}

/// A device node (`kind` block or character) with the encoded device number `rdev`.
pub fn device(c: &Common, kind: InodeType, rdev: u32) -> Vec<u8> {
    let extended = c.xattr != NONE_U32;
    let mut b = header(kind, extended, c);
    b.put32(c.nlink);
    b.put32(rdev);
    if extended {
        b.put32(c.xattr);
    }
    b
}

/// A named pipe.
pub fn fifo(c: &Common) -> Vec<u8> {
    let extended = c.xattr != NONE_U32;
    let mut b = header(InodeType::Fifo, extended, c);
    b.put32(c.nlink);
    if extended {
        b.put32(c.xattr);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(nlink: u32, xattr: u32) -> Common {
        Common {
            mode: 0o4755,
            uid: 1,
            gid: 2,
            mtime: 1_700_000_000,
            inode: 9,
            nlink,
            xattr,
        }
    }

    #[test]
    fn files_take_the_extended_form_only_when_needed() {
        let f = FileData {
            size: 300_000,
            start: 96,
            blocks: vec![1000, 2000],
            fragment: Some((3, 40)),
            sparse: 0,
        };
        let b = file(&common(1, NONE_U32), &f);
        assert_eq!(b.len(), 16 + 16 + 8);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 2);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0o4755);
        let b = file(&common(2, NONE_U32), &f);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 9);
        assert_eq!(b.len(), 16 + 40 + 8);
        assert_eq!(
            u32::from_le_bytes(b[40..44].try_into().unwrap()),
            2,
            "nlink"
        );
    }

    #[test]
    fn a_symlink_with_xattrs_carries_the_id_after_its_target() {
        let b = symlink(&common(1, 5), "../x");
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 10);
        assert_eq!(&b[24..28], b"../x");
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 5);
    }
}
