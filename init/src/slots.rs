//! The two update slots, as the agent needs them: consumes the partition table of the
//! disk the root came from and the ESP booted from; produces, under /run (which moves
//! into the real root), the agent's slot list `/run/slipway/update-slots.json` and a
//! mount unit for that ESP at `/efi` (writable: systemd-boot's boot counting renames the
//! UKIs there, and systemd-bless-boot needs it), pulled in by local-fs.target.
//!
//! A slot is a root partition and the root-verity partition after it, in table order:
//! the first pair is slot `a`, the second slot `b` (docs/updates.md). A disk with one
//! pair gets neither file: `slipway-agent update` then says the disk has one slot.

use slipway_common::gpt::{types, Partition};
use slipway_common::guid::Guid;
use std::fs;

/// The agent's slot list.
pub const SLOTS_FILE: &str = "/run/slipway/update-slots.json";
/// Where the ESP is mounted on the running system.
pub const ESP_MOUNT: &str = "/efi";
/// The mount unit's path (systemd reads units under /run/systemd/system).
const UNIT: &str = "/run/systemd/system/efi.mount";
/// Its local-fs.target.wants link.
const WANTS: &str = "/run/systemd/system/local-fs.target.wants/efi.mount";

/// One slot: its root and verity partitions.
#[derive(Debug, PartialEq, Eq)]
pub struct Slot {
    pub root: u32,
    pub verity: u32,
}

/// The slots of `parts` (in table order): each root partition paired with the first
/// verity partition after it.
pub fn pairs(parts: &[Partition]) -> Vec<Slot> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if p.type_guid != types::ROOT_X86_64 {
            continue;
        }
        let verity = parts[i + 1..]
            .iter()
            .take_while(|q| q.type_guid != types::ROOT_X86_64)
            .find(|q| q.type_guid == types::ROOT_VERITY_X86_64);
        if let Some(v) = verity {
            out.push(Slot {
                root: p.number,
                verity: v.number,
            });
        }
    }
    out
}

/// The ESP of `parts`: the one booted from (`boot`), else the only ESP.
pub fn esp(parts: &[Partition], boot: Option<Guid>) -> Option<u32> {
    let esps: Vec<&Partition> = parts.iter().filter(|p| p.type_guid == types::ESP).collect();
    match boot {
        Some(g) => esps.iter().find(|p| p.uuid == g).map(|p| p.number),
        None if esps.len() == 1 => Some(esps[0].number),
        None => None,
    }
}

/// The slot list's JSON for slots on disk `/dev/{disk}` whose partition nodes `node`
/// names.
pub fn slots_json(disk: &str, slots: &[Slot], node: &dyn Fn(u32) -> String) -> String {
    let one = |s: &Slot| {
        format!(
            "{{\"root\": \"{}\", \"verity\": \"{}\", \"esp-dir\": \"{ESP_MOUNT}/EFI/Linux\", \
             \"disk\": \"/dev/{disk}\", \"partitions\": [{}, {}]}}",
            node(s.root),
            node(s.verity),
            s.root,
            s.verity
        )
    };
    format!("{{\"a\": {}, \"b\": {}}}\n", one(&slots[0]), one(&slots[1]))
}

/// The mount unit for the ESP at `what`.
pub fn mount_unit(what: &str) -> String {
    format!(
        "# Written by slipway-init: the ESP this boot came from (LoaderDevicePartUUID).\n\
         [Unit]\n\
         Description=EFI system partition (boot counting, updates)\n\
         DefaultDependencies=no\n\
         Before=local-fs.target umount.target\n\
         Conflicts=umount.target\n\
         \n\
         [Mount]\n\
         What={what}\n\
         Where={ESP_MOUNT}\n\
         Type=vfat\n\
         Options=umask=0077,noexec,nosuid,nodev\n"
    )
}

/// Writes both files for the two-slot disk `disk` (its `parts`, booted from `boot`);
/// returns what it did, for the console, or `None` for a one-slot disk.
pub fn write(
    disk: &str,
    parts: &[Partition],
    boot: Option<Guid>,
) -> Result<Option<String>, String> {
    let slots = pairs(parts);
    if slots.len() != 2 {
        return Ok(None);
    }
    let node = |n: u32| {
        crate::disks::partition_name(disk, n)
            .map(|p| format!("/dev/{p}"))
            .unwrap_or_else(|| format!("/dev/{disk}{n}"))
    };
    let write = |path: &str, text: &str| {
        if let Some(dir) = std::path::Path::new(path).parent() {
            fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))
    };
    write(SLOTS_FILE, &slots_json(disk, &slots, &node))?;
    let Some(esp) = esp(parts, boot) else {
        return Ok(Some(format!(
            "two slots on {disk} (partitions {}+{} and {}+{}); no ESP to mount",
            slots[0].root, slots[0].verity, slots[1].root, slots[1].verity
        )));
    };
    write(UNIT, &mount_unit(&node(esp)))?;
    if let Some(dir) = std::path::Path::new(WANTS).parent() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let _ = fs::remove_file(WANTS);
    std::os::unix::fs::symlink("../efi.mount", WANTS)
        .map_err(|e| format!("linking {WANTS}: {e}"))?;
    Ok(Some(format!(
        "two slots on {disk} (a: partitions {}+{}, b: {}+{}); the ESP {} goes on {ESP_MOUNT}",
        slots[0].root,
        slots[0].verity,
        slots[1].root,
        slots[1].verity,
        node(esp)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, type_guid: Guid, uuid: u8) -> Partition {
        Partition {
            number,
            type_guid,
            uuid: Guid([uuid; 16]),
            first_lba: 2048 * u64::from(number),
            last_lba: 2048 * u64::from(number) + 2047,
            attributes: 0,
            name: String::new(),
            sector_size: 512,
        }
    }

    fn two_slots() -> Vec<Partition> {
        vec![
            part(1, types::ESP, 1),
            part(2, types::ROOT_X86_64, 2),
            part(3, types::ROOT_VERITY_X86_64, 3),
            part(4, types::ROOT_X86_64, 4),
            part(5, types::ROOT_VERITY_X86_64, 5),
            part(6, types::VAR, 6),
        ]
    }

    #[test]
    fn slots_pair_each_root_with_the_verity_after_it() {
        let p = two_slots();
        assert_eq!(
            pairs(&p),
            [Slot { root: 2, verity: 3 }, Slot { root: 4, verity: 5 }]
        );
        // One slot (today's layout): one pair.
        let one = [p[0].clone(), p[1].clone(), p[2].clone(), p[5].clone()];
        assert_eq!(pairs(&one).len(), 1);
        // A root without its verity partition is no slot.
        let lone = [p[0].clone(), p[1].clone(), p[3].clone(), p[4].clone()];
        assert_eq!(pairs(&lone), [Slot { root: 4, verity: 5 }]);
    }

    #[test]
    fn the_slot_list_names_devices_and_numbers() {
        let p = two_slots();
        let json = slots_json("vda", &pairs(&p), &|n| format!("/dev/vda{n}"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["a"]["root"], "/dev/vda2");
        assert_eq!(v["b"]["verity"], "/dev/vda5");
        assert_eq!(v["b"]["partitions"], serde_json::json!([4, 5]));
        assert_eq!(v["a"]["esp-dir"], "/efi/EFI/Linux");
        assert_eq!(v["a"]["disk"], "/dev/vda");
    }

    #[test]
    fn the_esp_is_the_booted_one() {
        let mut p = two_slots();
        assert_eq!(esp(&p, None), Some(1));
        assert_eq!(esp(&p, Some(Guid([1; 16]))), Some(1));
        assert_eq!(esp(&p, Some(Guid([9; 16]))), None);
        p.push(part(7, types::ESP, 7));
        assert_eq!(esp(&p, None), None);
        assert_eq!(esp(&p, Some(Guid([7; 16]))), Some(7));
        assert!(mount_unit("/dev/vda1").contains("What=/dev/vda1\nWhere=/efi\nType=vfat\n"));
    }
}
