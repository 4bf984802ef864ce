//! Block devices as sysfs shows them (/sys/class/block): whole disks, their size and
//! logical block size, the device node of partition N, and device numbers; and reading
//! a disk's GPT through its /dev node.

use slipway_common::gpt::{types, Partition, Table};
use slipway_common::guid::Guid;
use std::fs::{self, File};

fn sys(name: &str, attr: &str) -> Result<String, String> {
    let p = format!("/sys/class/block/{name}/{attr}");
    fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("reading {p}: {e}"))
}

fn sys_u64(name: &str, attr: &str) -> Result<u64, String> {
    let s = sys(name, attr)?;
    s.parse()
        .map_err(|_| format!("/sys/class/block/{name}/{attr}: {s:?} is not a number"))
}

/// Whole disks that may hold a GPT: not partitions, not RAM, loop, zram or
/// device-mapper devices, and not empty (a CD drive without a medium).
pub fn list() -> Vec<String> {
    let Ok(rd) = fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            !["ram", "loop", "zram", "dm-", "md"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .filter(|n| !fs::exists(format!("/sys/class/block/{n}/partition")).unwrap_or(true))
        .filter(|n| sys_u64(n, "size").is_ok_and(|s| s > 0))
        .collect();
    out.sort();
    out
}

/// The size of a block device in bytes.
pub fn size_bytes(name: &str) -> Result<u64, String> {
    Ok(sys_u64(name, "size")? * 512)
}

/// `major:minor` of a block device.
pub fn dev(name: &str) -> Result<String, String> {
    sys(name, "dev")
}

/// The name of partition `number` of `disk` (e.g. `vda3`, `nvme0n1p3`), once the
/// kernel has created it.
pub fn partition_name(disk: &str, number: u32) -> Option<String> {
    let rd = fs::read_dir(format!("/sys/class/block/{disk}")).ok()?;
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with(disk) && sys(n, "partition").is_ok_and(|p| p == number.to_string()))
}

/// A disk with a verified partition table.
pub struct Disk {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    /// Logical block size.
    pub lba_size: u64,
    /// Size in logical blocks.
    pub lbas: u64,
    /// The table.
    pub table: Table,
}

impl Disk {
    /// Reads the GPT of `name` through /dev/`name`.
    pub fn read(name: &str) -> Result<Disk, String> {
        let lba_size = sys_u64(name, "queue/logical_block_size")?;
        let lbas = size_bytes(name)? / lba_size;
        let f =
            File::open(format!("/dev/{name}")).map_err(|e| format!("opening /dev/{name}: {e}"))?;
        let table = Table::read(&f, lba_size, lbas)?;
        Ok(Disk {
            name: name.to_string(),
            lba_size,
            lbas,
            table,
        })
    }

    /// The partition with unique GUID `uuid`.
    pub fn by_uuid(&self, uuid: &Guid) -> Option<Partition> {
        self.table
            .partitions()
            .into_iter()
            .find(|p| p.uuid == *uuid)
    }

    /// A short description for messages: `vda (GPT: 1 root x86-64 <uuid>, ...)`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .table
            .partitions()
            .iter()
            .map(|p| format!("{} {} {}", p.number, types::name(&p.type_guid), p.uuid))
            .collect();
        format!("{} (GPT: {})", self.name, parts.join(", "))
    }
}
