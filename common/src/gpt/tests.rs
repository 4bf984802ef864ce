use super::types::{ESP, ROOT_VERITY_X86_64, ROOT_X86_64, VAR};
use super::*;

/// A disk in memory.
struct MemDisk(Vec<u8>);

impl Disk for MemDisk {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let o = off as usize;
        let src = self.0.get(o..o + buf.len()).ok_or(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "past the end",
        ))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        let o = off as usize;
        self.0[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn part(number: u32, type_guid: Guid, first: u64, last: u64, sector: u64) -> Partition {
    Partition {
        number,
        type_guid,
        uuid: Guid([number as u8; 16]),
        first_lba: first,
        last_lba: last,
        attributes: if type_guid == VAR { 0 } else { READ_ONLY },
        name: format!("part-{number}"),
        sector_size: sector,
    }
}

/// A disk of `sectors` sectors with a fresh table of `parts`, protective MBR included.
fn make_disk(sector: u64, sectors: u64, parts: &[Partition]) -> MemDisk {
    let mut d = MemDisk(vec![0u8; (sectors * sector) as usize]);
    let t = Table::new(sector, sectors, Guid([7; 16]), parts).unwrap();
    d.write_at(&t.protective_mbr(), 0).unwrap();
    for (off, b) in t.serialize() {
        d.write_at(&b, off).unwrap();
    }
    d
}

fn three(sector: u64) -> Vec<Partition> {
    let mib = (1 << 20) / sector;
    vec![
        part(1, ROOT_X86_64, mib, 2 * mib - 1, sector),
        part(2, ROOT_VERITY_X86_64, 2 * mib, 3 * mib - 1, sector),
        part(3, VAR, 3 * mib, 4 * mib - 1, sector),
    ]
}

#[test]
fn reads_what_it_wrote_and_checks_crcs() {
    let parts = three(512);
    let d = make_disk(512, 16384, &parts);
    let t = Table::read(&d, 512, 16384).unwrap();
    assert!(!t.from_backup);
    assert_eq!(t.partitions(), parts);
    assert_eq!(t.disk_guid(), Guid([7; 16]));
    assert_eq!((t.first_usable(), t.last_usable()), (34, 16384 - 34));

    // A flipped byte in an entry breaks the primary's array CRC: the backup is used.
    let mut bad = MemDisk(d.0.clone());
    bad.0[2 * 512 + 40] ^= 1;
    let t = Table::read(&bad, 512, 16384).unwrap();
    assert!(t.from_backup);
    assert_eq!(t.partitions(), parts);
    // Both copies bad: the error names both.
    bad.0[16383 * 512 + 30] ^= 1;
    let e = Table::read(&bad, 512, 16384).unwrap_err();
    assert!(
        e.contains("entry array at LBA 2: CRC-32 mismatch")
            && e.contains("backup GPT: header at LBA 16383: CRC-32 mismatch"),
        "{e}"
    );
    let blank = MemDisk(vec![0u8; 64 * 512]);
    let e = Table::read(&blank, 512, 64).unwrap_err();
    assert!(e.contains("no \"EFI PART\" signature at LBA 1"), "{e}");
}

#[test]
fn round_trips_with_4096_byte_sectors() {
    let parts = three(4096);
    let d = make_disk(4096, 2048, &parts);
    // Header at byte 4096, entries from 8192; 16 KiB of entries take 4 sectors.
    assert_eq!(&d.0[4096..4104], b"EFI PART");
    let t = Table::read(&d, 4096, 2048).unwrap();
    assert_eq!(t.partitions(), parts);
    assert_eq!((t.first_usable(), t.last_usable()), (6, 2048 - 6));
    assert_eq!(t.partitions()[2].offset(), 3 << 20);
    assert_eq!(t.partitions()[2].size(), 1 << 20);
    let backup = Table::read_copy(&d, 4096, 2047).unwrap();
    assert_eq!(backup.partitions(), parts);
    // Read with the wrong sector size, the table is not found.
    assert!(Table::read(&d, 512, 2048 * 8).is_err());
}

#[test]
fn refuses_partitions_that_do_not_fit_or_clash() {
    let mut p = three(512);
    p[1].first_lba = 2000;
    let e = Table::new(512, 16384, Guid([1; 16]), &p).unwrap_err();
    assert!(e.contains("partition 2") && e.contains("clashes"), "{e}");
    let e = Table::new(512, 16384, Guid([1; 16]), &[part(1, VAR, 20, 100, 512)]).unwrap_err();
    assert!(e.contains("outside the usable 34-16350"), "{e}");
    let e = Table::new(4096, 2048, Guid([1; 16]), &three(512)).unwrap_err();
    assert!(e.contains("512-byte sectors"), "{e}");
    let mut long = part(1, VAR, 40, 100, 512);
    long.name = "x".repeat(37);
    assert!(Table::new(512, 16384, Guid([1; 16]), &[long])
        .unwrap_err()
        .contains("longer than 36"));
    assert!(Table::new(1024, 16384, Guid([1; 16]), &[]).is_err());
    assert!(Table::new(512, 40, Guid([1; 16]), &[]).is_err());
}

#[test]
fn grows_the_last_partition_to_an_enlarged_disk() {
    for sector in [512u64, 4096] {
        let sectors = (16 << 20) / sector;
        let small = make_disk(sector, sectors, &three(sector));
        // Double the disk: the backup copy is now in the middle.
        let mut d = MemDisk(small.0.clone());
        d.0.resize(2 * small.0.len(), 0);
        let mut t = Table::read(&d, sector, 2 * sectors).unwrap();
        assert_eq!(t.backup_lba(), sectors - 1);
        // The root partition is not last: nothing to grow.
        assert_eq!(t.grow(1, 2 * sectors).unwrap(), None);
        let tail = 16384 / sector + 1;
        let last = 2 * sectors - 1 - tail;
        assert_eq!(t.grow(3, 2 * sectors).unwrap(), Some(last));
        t.write(&mut d, Some(sectors - 1)).unwrap();

        let again = Table::read(&d, sector, 2 * sectors).unwrap();
        assert!(!again.from_backup);
        assert_eq!(again.backup_lba(), 2 * sectors - 1);
        assert_eq!(again.last_usable(), last);
        assert_eq!(again.partitions()[2].last_lba, last);
        assert_eq!(again.partitions()[0], t.partitions()[0]);
        // The backup copy at the new end verifies on its own.
        let backup = Table::read_copy(&d, sector, 2 * sectors - 1).unwrap();
        assert_eq!(backup.partitions(), again.partitions());
        // The old backup header is gone and the protective MBR covers the disk.
        let old = ((sectors - 1) * sector) as usize;
        assert_eq!(&d.0[old..old + 8], &[0u8; 8]);
        assert_eq!(le32(&d.0, 446 + 12) as u64, 2 * sectors - 1);
        // Growing again is a no-op.
        assert_eq!(again.clone().grow(3, 2 * sectors).unwrap(), None);
    }
}

/// What `fdisk -l` (util-linux, libfdisk's own GPT reader) says of a table of `sector`-
/// byte sectors written to a file: one line per partition, `start end type-uuid uuid name`.
fn fdisk_list(sector: u64, image: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!(
        "slipway-common-gpt-{}-{sector}.img",
        std::process::id()
    ));
    std::fs::write(&path, image).unwrap();
    let out = std::process::Command::new("fdisk")
        .env("LC_ALL", "C")
        .args(["-b", &sector.to_string(), "-l", "-o"])
        .arg("Start,End,Type-UUID,UUID,Name")
        .arg(&path)
        .output()
        .expect("fdisk (Debian: fdisk; scripts/setup-host.sh installs it)");
    std::fs::remove_file(&path).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{text}{err}");
    assert!(text.contains("Disklabel type: gpt"), "{text}");
    assert!(
        text.contains(&format!("Sector size (logical/physical): {sector} bytes")),
        "{text}"
    );
    text
}

#[test]
fn fdisk_reads_the_table_back_for_both_sector_sizes() {
    for sector in [512u64, 4096] {
        let sectors = (8 << 20) / sector;
        let parts = vec![
            part(1, ESP, (1 << 20) / sector, (3 << 20) / sector - 1, sector),
            part(
                2,
                ROOT_X86_64,
                (3 << 20) / sector,
                (5 << 20) / sector - 1,
                sector,
            ),
            part(
                3,
                VAR,
                (5 << 20) / sector,
                sectors - 16384 / sector - 2,
                sector,
            ),
        ];
        let d = make_disk(sector, sectors, &parts);
        let text = fdisk_list(sector, &d.0);
        assert!(
            text.contains(&format!(
                "Disk identifier: {}",
                Guid([7; 16]).to_string().to_uppercase()
            )),
            "{text}"
        );
        for p in &parts {
            let want = format!(
                "{} {} {} {} {}",
                p.first_lba,
                p.last_lba,
                p.type_guid.to_string().to_uppercase(),
                p.uuid.to_string().to_uppercase(),
                p.name
            );
            let found = text.lines().any(|l| {
                l.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .ends_with(&want)
            });
            assert!(
                found,
                "{sector}-byte sectors: no line ending {want:?} in\n{text}"
            );
        }
    }
}

#[test]
fn relabel_changes_only_the_uuid_and_the_name() {
    let parts = three(512);
    let mut d = make_disk(512, 16384, &parts);
    let mut t = Table::read(&d, 512, 16384).unwrap();
    t.relabel(1, Guid([0xab; 16]), "_empty").unwrap();
    t.write(&mut d, None).unwrap();
    let back = Table::read(&d, 512, 16384).unwrap();
    let mut want = parts.clone();
    want[0].uuid = Guid([0xab; 16]);
    want[0].name = "_empty".into();
    assert_eq!(back.partitions(), want);
    // The backup copy agrees (read alone).
    let backup = Table::read_copy(&d, 512, 16383).unwrap();
    assert_eq!(backup.partitions(), want);
    // A longer name is cleared before the shorter one is written.
    t.relabel(1, Guid([0xab; 16]), "a").unwrap();
    assert_eq!(t.partitions()[0].name, "a");
    assert!(t
        .relabel(9, Guid([1; 16]), "x")
        .unwrap_err()
        .contains("no partition 9"));
    assert!(t.relabel(1, Guid([1; 16]), &"x".repeat(37)).is_err());
}
