//! Which disk the root comes from: consumes the partition tables of the disks seen so
//! far, the ESP partition GUID the firmware booted from (`LoaderDevicePartUUID`, if
//! any) and the root partition's UUID; produces the one disk to use, "not yet" (keep
//! waiting for disks), or a refusal.
//!
//! Every id of a slipway disk derives from the root hash, so a USB stick, an old install
//! or a raw copy of the same image carries the same root UUID. With the boot partition
//! known, only the disk holding it counts; without it (an El Torito CD boot, a firmware
//! or boot path that does not set the variable), two disks with the root's UUID are a
//! refusal naming both: slipway-init never picks one by name order.

use slipway_common::gpt::Partition;
use slipway_common::guid::Guid;

/// One disk whose table was read.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Kernel name (`vda`).
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<Partition>,
}

impl Seen {
    fn has(&self, uuid: &Guid) -> bool {
        self.partitions.iter().any(|p| p.uuid == *uuid)
    }
}

/// The outcome of one look at the disks.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// Use the disk at this index.
    Disk(usize),
    /// Nothing usable yet; the text says what is missing (for the time-out message).
    NotYet(String),
    /// Stop the boot: subject and error.
    Refuse(String, String),
}

/// Chooses the root's disk among `seen`: the disk holding `boot` (the booted ESP) when
/// it is known, else the only disk holding `root`.
pub fn choose(seen: &[Seen], boot: Option<Guid>, root: &Guid) -> Choice {
    let Some(esp) = boot else {
        let holders: Vec<usize> = (0..seen.len()).filter(|&i| seen[i].has(root)).collect();
        return match holders[..] {
            [] => Choice::NotYet(format!(
                "no partition with UUID {root} (the first 128 bits of roothash=) on any disk"
            )),
            [one] => Choice::Disk(one),
            _ => Choice::Refuse(
                format!("partition UUID {root}"),
                format!(
                    "disks {} all hold the root partition and the firmware did not say which \
                     disk it booted from (no LoaderDevicePartUUID); refusing to guess: \
                     detach the others or boot through the image's UKI from its own disk",
                    names(seen, &holders)
                ),
            ),
        };
    };
    let holders: Vec<usize> = (0..seen.len()).filter(|&i| seen[i].has(&esp)).collect();
    match holders[..] {
        [] => Choice::NotYet(format!(
            "no disk holds the ESP the firmware booted from (LoaderDevicePartUUID {esp})"
        )),
        [one] if seen[one].has(root) => Choice::Disk(one),
        [one] => Choice::Refuse(
            seen[one].name.clone(),
            format!(
                "holds the ESP the firmware booted from (LoaderDevicePartUUID {esp}) but no \
                 partition with UUID {root} (the first 128 bits of roothash=); the root is \
                 looked for only on the disk booted from"
            ),
        ),
        _ => Choice::Refuse(
            format!("ESP partition UUID {esp}"),
            format!(
                "disks {} all hold the ESP the firmware booted from (LoaderDevicePartUUID); \
                 refusing to guess (two copies of one image: give the installed one fresh \
                 ids with the installer, or detach the other)",
                names(seen, &holders)
            ),
        ),
    }
}

fn names(seen: &[Seen], idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| seen[i].name.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_common::gpt::types::{ESP, ROOT_X86_64};

    fn g(n: u8) -> Guid {
        Guid([n; 16])
    }

    fn part(number: u32, type_guid: Guid, uuid: Guid) -> Partition {
        Partition {
            number,
            type_guid,
            uuid,
            first_lba: 2048 * u64::from(number),
            last_lba: 2048 * u64::from(number) + 2047,
            attributes: 0,
            name: String::new(),
            sector_size: 512,
        }
    }

    /// A disk with an ESP of UUID `esp` and a root of UUID `root`.
    fn disk(name: &str, esp: u8, root: u8) -> Seen {
        Seen {
            name: name.into(),
            partitions: vec![part(1, ESP, g(esp)), part(2, ROOT_X86_64, g(root))],
        }
    }

    const ROOT: u8 = 0xaa;

    #[test]
    fn the_booted_disk_wins_whatever_the_name_order() {
        // vda: a USB stick with the same image (same root UUID, derived ESP UUID 1);
        // vdb: the installed disk (fresh ESP UUID 2), booted from.
        let seen = [disk("sda", 1, ROOT), disk("vdb", 2, ROOT)];
        assert_eq!(choose(&seen, Some(g(2)), &g(ROOT)), Choice::Disk(1));
        assert_eq!(choose(&seen, Some(g(1)), &g(ROOT)), Choice::Disk(0));
    }

    #[test]
    fn without_the_variable_one_holder_is_used_and_two_are_refused() {
        let one = [disk("vda", 1, 0x11), disk("vdb", 2, ROOT)];
        assert_eq!(choose(&one, None, &g(ROOT)), Choice::Disk(1));
        let two = [
            disk("vda", 1, ROOT),
            disk("vdb", 2, 0x11),
            disk("vdc", 3, ROOT),
        ];
        let Choice::Refuse(subject, why) = choose(&two, None, &g(ROOT)) else {
            panic!("two disks hold the root and one was picked");
        };
        assert_eq!(subject, format!("partition UUID {}", g(ROOT)));
        assert!(
            why.starts_with("disks vda and vdc all hold the root"),
            "{why}"
        );
        let none = [disk("vda", 1, 0x11)];
        assert!(matches!(choose(&none, None, &g(ROOT)), Choice::NotYet(_)));
    }

    #[test]
    fn the_booted_disk_must_hold_the_root_and_be_unique() {
        // The booted disk has not appeared yet: wait, even though another has the root.
        let seen = [disk("vda", 1, ROOT)];
        let Choice::NotYet(why) = choose(&seen, Some(g(9)), &g(ROOT)) else {
            panic!("a disk that was not booted from was used");
        };
        assert!(why.contains("LoaderDevicePartUUID"), "{why}");
        // Booted from a disk without the root: refused, naming it.
        let seen = [disk("vda", 1, ROOT), disk("nvme0n1", 9, 0x11)];
        let Choice::Refuse(subject, why) = choose(&seen, Some(g(9)), &g(ROOT)) else {
            panic!("the root was taken from a disk not booted from");
        };
        assert_eq!(subject, "nvme0n1");
        assert!(why.contains("no partition with UUID"), "{why}");
        // Two raw copies of one image share the derived ESP UUID: refused, naming both.
        let seen = [disk("vda", 1, ROOT), disk("vdb", 1, ROOT)];
        let Choice::Refuse(_, why) = choose(&seen, Some(g(1)), &g(ROOT)) else {
            panic!("one of two identical copies was picked");
        };
        assert!(why.starts_with("disks vda and vdb"), "{why}");
    }
}
