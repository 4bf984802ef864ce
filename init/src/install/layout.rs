//! The installed disk's partition table: consumes the manifest, the target's logical
//! block size and size, and fresh ids (disk GUID, ESP and var UUIDs); produces the
//! [`Table`] (slipway_common's GPT writer) and, per partition, the file to write and
//! where. Partitions follow each other from 1 MiB, each aligned to 1 MiB, in the
//! manifest's (disk) order; root and verity (and slot B's empty pair) keep the UUIDs of
//! install.json and are marked read-only (DPS attribute 60), as on the image's own disk.
//! Slot B has no file: nothing is written into it (see [`Write::file`]).

use super::manifest::{FileRef, Manifest, Role};
use slipway_common::gpt::{Partition, Table, READ_ONLY};
use slipway_common::guid::Guid;

/// Partition alignment.
pub const ALIGN: u64 = 1 << 20;

/// The ids an install makes fresh, so the installed disk never shares them with the
/// medium or another copy of the image.
#[derive(Debug, Clone, Copy)]
pub struct FreshIds {
    pub disk: Guid,
    pub esp: Guid,
    pub var: Guid,
}

/// One partition and its contents.
#[derive(Debug, Clone)]
pub struct Write {
    pub role: Role,
    pub partition: Partition,
    /// None: slot B's partitions, left as the disk had them. Whatever is there is never
    /// read: no boot entry names that slot and its UUIDs are not a root hash, and an
    /// update writes root and verity whole (from their first byte) before the UKI that
    /// points at them; zeroing a slot would cost a full write of it at install.
    pub file: Option<FileRef>,
}

/// The planned disk.
#[derive(Debug, Clone)]
pub struct Plan {
    pub table: Table,
    pub writes: Vec<Write>,
}

/// Plans the table for a disk of `size` bytes in `lba`-byte logical blocks.
pub fn plan(m: &Manifest, lba: u64, size: u64, ids: FreshIds) -> Result<Plan, String> {
    if lba != 512 && lba != 4096 {
        return Err(format!(
            "the disk has {lba}-byte logical blocks (the installer writes 512 or 4096)"
        ));
    }
    let sectors = size / lba;
    let mut next = ALIGN;
    let mut writes = Vec::new();
    for (i, p) in m.partitions.iter().enumerate() {
        let file = p.file(lba)?.cloned();
        let len = file.as_ref().map_or(0, |f| f.size);
        let bytes = p.size.max(len).div_ceil(ALIGN) * ALIGN;
        let uuid = match p.role {
            Role::Esp => ids.esp,
            Role::Var => ids.var,
            Role::Root | Role::Verity | Role::Empty => p
                .uuid
                .ok_or_else(|| format!("install.json: partition {:?} has no uuid", p.name))?,
        };
        let attributes = match p.role {
            Role::Root | Role::Verity | Role::Empty => READ_ONLY,
            _ => 0,
        };
        let partition = Partition {
            number: i as u32 + 1,
            type_guid: p.type_guid,
            uuid,
            first_lba: next / lba,
            last_lba: (next + bytes) / lba - 1,
            attributes,
            name: p.name.clone(),
            sector_size: lba,
        };
        next += bytes;
        writes.push(Write {
            role: p.role,
            partition,
            file,
        });
    }
    // The backup table needs 16 KiB + a block at the end; keep the 1 MiB tail free too.
    let need = next + ALIGN;
    if need > size {
        return Err(format!(
            "the image needs {} MiB and the disk has {} MiB",
            need >> 20,
            size >> 20
        ));
    }
    let parts: Vec<Partition> = writes.iter().map(|w| w.partition.clone()).collect();
    let table = Table::new(lba, sectors, ids.disk, &parts)?;
    Ok(Plan { table, writes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::manifest;

    fn ids() -> FreshIds {
        FreshIds {
            disk: Guid([1; 16]),
            esp: Guid([2; 16]),
            var: Guid([3; 16]),
        }
    }

    #[test]
    fn lays_out_per_block_size() {
        let m = manifest::parse(manifest::tests::sample().as_bytes()).unwrap();
        for lba in [512u64, 4096] {
            let size = 64 << 20;
            let p = plan(&m, lba, size, ids()).unwrap();
            let parts = p.table.partitions();
            assert_eq!(parts.len(), 4);
            let mib = ALIGN / lba;
            // ESP 4 MiB from 1 MiB, root 2 MiB, verity 1 MiB, var 8 MiB.
            let spans: Vec<(u64, u64)> = parts.iter().map(|q| (q.first_lba, q.last_lba)).collect();
            assert_eq!(
                spans,
                [
                    (mib, 5 * mib - 1),
                    (5 * mib, 7 * mib - 1),
                    (7 * mib, 8 * mib - 1),
                    (8 * mib, 16 * mib - 1)
                ],
                "{lba}"
            );
            assert!(parts.iter().all(|q| q.sector_size == lba));
            assert_eq!(
                p.writes[0].file.as_ref().unwrap().path,
                format!("esp-{lba}.img")
            );
            assert_eq!(parts[0].uuid, Guid([2; 16]));
            assert_eq!(parts[3].uuid, Guid([3; 16]));
            assert_eq!(
                parts[1].uuid.to_string(),
                "11111111-1111-1111-1111-111111111111"
            );
            assert_eq!(parts[1].attributes, READ_ONLY);
            assert_eq!(parts[0].attributes, 0);
            assert_eq!(p.table.disk_guid(), Guid([1; 16]));
            // The serialized table lands in this block size: the primary header at LBA 1.
            let s = p.table.serialize();
            assert_eq!(s[3].0, lba);
            assert_eq!(s[1].0, size - lba);
        }
    }

    #[test]
    fn lays_out_slot_b_before_var_with_nothing_to_write() {
        let m = manifest::parse(manifest::tests::sample_two_slots().as_bytes()).unwrap();
        let p = plan(&m, 512, 64 << 20, ids()).unwrap();
        let parts = p.table.partitions();
        assert_eq!(parts.len(), 6);
        let mib = ALIGN / 512;
        // ESP 4, root 2, verity 1, root B 2, verity B 1, var 8 (MiB, from 1 MiB).
        assert_eq!(
            (parts[3].first_lba, parts[3].last_lba),
            (8 * mib, 10 * mib - 1)
        );
        assert_eq!(
            (parts[4].first_lba, parts[4].last_lba),
            (10 * mib, 11 * mib - 1)
        );
        assert_eq!(parts[5].first_lba, 11 * mib);
        assert_eq!(
            parts[3].uuid.to_string(),
            "33333333-3333-3333-3333-333333333333"
        );
        assert_eq!(parts[3].name, "_empty");
        assert_eq!(parts[4].attributes, READ_ONLY);
        assert_eq!(parts[4].type_guid, parts[2].type_guid);
        assert!(p.writes[3].file.is_none() && p.writes[4].file.is_none());
        assert_eq!(parts[5].uuid, Guid([3; 16]));
    }

    #[test]
    fn refuses_a_small_disk_and_odd_block_sizes() {
        let m = manifest::parse(manifest::tests::sample().as_bytes()).unwrap();
        let e = plan(&m, 512, 10 << 20, ids()).unwrap_err();
        assert!(e.contains("needs 17 MiB and the disk has 10 MiB"), "{e}");
        assert!(plan(&m, 1024, 64 << 20, ids())
            .unwrap_err()
            .contains("1024-byte"));
    }
}
