//! The root slots of a two-slot host disk (`[disk] slots = 2`, the default): consumes
//! the recipe and the built root image and verity tree, produces the size of each slot's
//! root and verity partitions (docs/host-images.md, decision 0047).
//!
//! Headroom: a slot is `[disk] slot-size` if the recipe sets it (refused, naming the key,
//! when the root image does not fit), else the root image rounded up to whole MiB × 1.5,
//! rounded up to whole MiB, so that a later version may grow by half before the disk
//! has to be reinstalled. A verity partition holds the hash tree over a *full* slot:
//! dm-verity (4096-byte blocks, sha256) keeps 128 hashes per block, so each level is
//! 1/128 of the one below it (the levels together about 1/127 of the data), plus one
//! partly used block per level and the 4096-byte superblock; rounded up to whole MiB.

use crate::disk::verity::BLOCK;
use crate::recipe::Recipe;
use anyhow::Result;

/// The partition sizes of one root slot (both slots have the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSizes {
    /// The root partition, bytes (whole MiB).
    pub root: u64,
    /// The verity partition, bytes (whole MiB).
    pub verity: u64,
}

const MIB: u64 = 1 << 20;

fn mib_up(n: u64) -> u64 {
    n.div_ceil(MIB) * MIB
}

/// Bytes of the dm-verity hash device (superblock and every level of the tree, as
/// [`crate::disk::verity::format`] writes it) for `data` bytes of data.
pub fn verity_bytes(data: u64) -> u64 {
    let per = (BLOCK / 32) as u64;
    let block = BLOCK as u64;
    let mut blocks = data.div_ceil(block).max(1);
    let mut total = block; // the superblock, padded to a block
    loop {
        let level = blocks.div_ceil(per);
        total += level * block;
        if level == 1 {
            return total;
        }
        blocks = level;
    }
}

/// The slot of `r` for a root image of `root_len` bytes and a verity tree of
/// `verity_len` bytes, or `None` for a one-slot disk.
pub fn sizes(r: &Recipe, root_len: u64, verity_len: u64) -> Result<Option<SlotSizes>> {
    if r.disk.slot_count() < 2 {
        return Ok(None);
    }
    let root = match r.disk.slot_size {
        Some(s) if s.0 < root_len => {
            return Err(r.origin_of("disk.slot-size").err(format!(
                "{} MiB cannot hold the root image ({:.1} MiB; use at least {} MiB)",
                s.0 >> 20,
                root_len as f64 / MIB as f64,
                root_len.div_ceil(MIB)
            )))
        }
        Some(s) => mib_up(s.0),
        None => mib_up(mib_up(root_len) * 3 / 2),
    };
    let verity = mib_up(verity_bytes(root).max(verity_len));
    Ok(Some(SlotSizes { root, verity }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(disk: &str) -> (tempfile::TempDir, Recipe) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(
            &p,
            format!(
                "schema-version = 1\n[image]\nkind = \"host\"\n[packages]\ninclude = [\"a1\"]\n[disk]\n{disk}"
            ),
        )
        .unwrap();
        let r = Recipe::load(&p).unwrap();
        (d, r)
    }

    /// The formula agrees with the tree the verity writer makes, for sizes around the
    /// level boundaries.
    #[test]
    fn verity_bytes_match_the_writer() {
        for blocks in [1u64, 2, 127, 128, 129, 128 * 128, 128 * 128 + 1, 3000] {
            let data = vec![0u8; (blocks * BLOCK as u64) as usize];
            let v = crate::disk::verity::format(&data, &[1; 32], &[2; 16]).unwrap();
            assert_eq!(
                v.hash_image.len() as u64,
                verity_bytes(blocks * 4096),
                "{blocks}"
            );
        }
    }

    #[test]
    fn the_default_slot_is_one_and_a_half_roots_and_its_verity_covers_all_of_it() {
        let (_d, r) = host("");
        // 100.5 MiB of root: 101 MiB × 1.5 = 151.5, up to 152 MiB.
        let s = sizes(&r, 100 * MIB + MIB / 2, 900 << 10).unwrap().unwrap();
        assert_eq!(s.root, 152 * MIB);
        // 152 MiB / 4096 = 38912 blocks: 304 + 3 + 1 blocks + superblock = 1.2 MiB.
        assert_eq!(verity_bytes(s.root), (304 + 3 + 1 + 1) * 4096);
        assert_eq!(s.verity, 2 * MIB);
        let (_d, r) = host("slots = 1\n");
        assert_eq!(sizes(&r, MIB, 4096).unwrap(), None);
    }

    #[test]
    fn a_slot_size_too_small_names_the_key() {
        let (_d, r) = host("slot-size = \"64MiB\"\n");
        let s = sizes(&r, 10 * MIB, 4096).unwrap().unwrap();
        assert_eq!(s.root, 64 * MIB);
        let e = sizes(&r, 65 * MIB, 4096).unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("disk.slot-size: 64 MiB cannot hold the root image (65.0 MiB"),
            "{m}"
        );
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
    }
}
