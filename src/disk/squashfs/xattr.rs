//! Extended attributes: each distinct set of an inode's attributes is stored once in the
//! xattr metadata area (entries of prefix id, name without its prefix, value), and an
//! xattr id table gives, per id, where the set starts, how many attributes it holds and
//! their size as listxattr/getxattr count it. Inodes carry the id.
//!
//! squashfs knows three name prefixes (`user.`, `trusted.`, `security.`); any other
//! attribute is an error naming the file, never silently dropped.

use super::compress::Compressor;
use super::format::{Put, NONE_U32};
use super::metadata::MetaWriter;
use anyhow::{bail, Result};
use std::collections::{BTreeMap, HashMap};

const PREFIXES: [(&str, u16); 3] = [("user.", 0), ("trusted.", 1), ("security.", 2)];

/// The xattr sets of an image being written.
#[derive(Default)]
pub struct Xattrs {
    kv: MetaWriter,
    /// Per id: reference of the set in the kv area, count, size.
    ids: Vec<(u64, u32, u32)>,
    seen: HashMap<Vec<u8>, u32>,
}

/// The finished tables.
pub struct XattrTables {
    /// The key/value metadata area.
    pub kv: Vec<u8>,
    /// The id table's entries (16 bytes each), before they are cut into metadata blocks.
    pub ids: Vec<u8>,
    /// Number of ids.
    pub count: u32,
}

impl Xattrs {
    /// No sets yet.
    pub fn new() -> Self {
        Xattrs::default()
    }

    /// The id of `set` (the attributes of `/path`), adding it if new; [`NONE_U32`] for
    /// none.
    pub fn id(
        &mut self,
        c: &mut Compressor,
        set: &BTreeMap<String, Vec<u8>>,
        path: &str,
    ) -> Result<u32> {
        if set.is_empty() {
            return Ok(NONE_U32);
        }
        let mut encoded = Vec::new();
        let mut size = 0u64;
        for (name, value) in set {
            let Some((prefix, kind)) = PREFIXES.iter().find(|(p, _)| name.starts_with(p)) else {
                bail!(
                    "/{path}: extended attribute {name:?}: squashfs stores only user., trusted. and security. attributes"
                );
            };
            let rest = &name.as_bytes()[prefix.len()..];
            if rest.is_empty() || name.len() > 255 || value.len() > 65536 {
                bail!("/{path}: extended attribute {name:?} has an empty or too long name, or a value over 64 KiB");
            }
            encoded.put16(*kind);
            encoded.put16(rest.len() as u16);
            encoded.extend_from_slice(rest);
            encoded.put32(value.len() as u32);
            encoded.extend_from_slice(value);
            size += (name.len() + 1 + value.len()) as u64;
        }
        if let Some(&id) = self.seen.get(&encoded) {
            return Ok(id);
        }
        let id = self.ids.len() as u32;
        self.ids
            .push((self.kv.reference(), set.len() as u32, size as u32));
        self.kv.write(c, &encoded)?;
        self.seen.insert(encoded, id);
        Ok(id)
    }

    /// The tables, or None when no inode has attributes.
    pub fn finish(self, c: &mut Compressor) -> Result<Option<XattrTables>> {
        if self.ids.is_empty() {
            return Ok(None);
        }
        let (kv, _) = self.kv.finish(c)?;
        let mut ids = Vec::with_capacity(self.ids.len() * 16);
        for (r, count, size) in &self.ids {
            ids.put64(*r);
            ids.put32(*count);
            ids.put32(*size);
        }
        Ok(Some(XattrTables {
            kv,
            ids,
            count: self.ids.len() as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_shared_and_foreign_prefixes_refused() {
        let mut c = Compressor::new(3).unwrap();
        let mut x = Xattrs::new();
        let caps = BTreeMap::from([("security.capability".to_string(), vec![1, 2, 3])]);
        let user = BTreeMap::from([("user.a".to_string(), b"b".to_vec())]);
        assert_eq!(x.id(&mut c, &BTreeMap::new(), "p").unwrap(), NONE_U32);
        assert_eq!(x.id(&mut c, &caps, "a").unwrap(), 0);
        assert_eq!(x.id(&mut c, &user, "b").unwrap(), 1);
        assert_eq!(x.id(&mut c, &caps, "c").unwrap(), 0);
        let acl = BTreeMap::from([("system.posix_acl_access".to_string(), vec![2])]);
        let e = x.id(&mut c, &acl, "etc/x").unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/x: extended attribute \"system.posix_acl_access\""),
            "{e}"
        );
        let t = x.finish(&mut c).unwrap().unwrap();
        assert_eq!(t.count, 2);
        // The second set starts after the first: 2+2+10 name + 4+3 value = 21 bytes.
        assert_eq!(u64::from_le_bytes(t.ids[16..24].try_into().unwrap()), 21);
        // Size as listxattr counts it: "security.capability\0" + 3 bytes.
        assert_eq!(u32::from_le_bytes(t.ids[12..16].try_into().unwrap()), 23);
    }
}
