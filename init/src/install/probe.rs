//! What a disk already holds: consumes its first [`HEAD`] bytes and its last logical
//! block, produces the names of the partition tables and file-system signatures found
//! (magic numbers at their documented offsets, as libblkid looks for them). The
//! installer refuses a disk with any of them unless the config says `wipe = true`.

/// Bytes read from the start of a disk: enough for btrfs's superblock at 64 KiB.
pub const HEAD: usize = 65536 + 4096;

fn at(b: &[u8], off: usize, magic: &[u8]) -> bool {
    b.get(off..off + magic.len()) == Some(magic)
}

/// The signatures in `head` (the first bytes of the disk, up to [`HEAD`]) and `tail`
/// (its last logical block, of `lba` bytes), in a fixed order.
pub fn signatures(head: &[u8], tail: &[u8], lba: usize) -> Vec<&'static str> {
    let mut out = Vec::new();
    if at(head, lba, b"EFI PART") || at(head, 512, b"EFI PART") {
        out.push("a GPT partition table");
    } else if at(tail, 0, b"EFI PART") {
        out.push("a backup GPT header (at the last block)");
    }
    let boot_sig = at(head, 510, &[0x55, 0xaa]);
    let fat = at(head, 54, b"FAT") || at(head, 82, b"FAT32");
    if fat && boot_sig {
        out.push("a FAT (vfat) file system");
    } else if boot_sig {
        out.push("an MBR partition table (0x55AA)");
    }
    let checks: [(&'static str, usize, &[u8]); 10] = [
        ("an ext2/3/4 file system", 1024 + 56, &[0x53, 0xef]),
        ("an XFS file system", 0, b"XFSB"),
        ("a btrfs file system", 65536 + 64, b"_BHRfS_M"),
        ("an ISO 9660 file system", 32769, b"CD001"),
        ("a squashfs file system", 0, b"hsqs"),
        ("an EROFS file system", 1024, &[0xe2, 0xe1, 0xf5, 0xe0]),
        ("a LUKS container", 0, b"LUKS\xba\xbe"),
        ("a swap area", 4096 - 10, b"SWAPSPACE2"),
        ("a swap area", 4096 - 10, b"SWAP-SPACE"),
        ("a verity hash tree", 0, b"verity\0\0"),
    ];
    for (name, off, magic) in checks {
        if at(head, off, magic) && !out.contains(&name) {
            out.push(name);
        }
    }
    // LVM2: a label in one of the first four 512-byte sectors.
    if (0..4).any(|s| at(head, s * 512, b"LABELONE") && at(head, s * 512 + 24, b"LVM2 001")) {
        out.push("an LVM2 physical volume");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(off: usize, magic: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEAD];
        b[off..off + magic.len()].copy_from_slice(magic);
        b
    }

    #[test]
    fn a_blank_disk_holds_nothing() {
        assert!(signatures(&vec![0u8; HEAD], &[0u8; 512], 512).is_empty());
        // Random-looking data without a signature is not refused.
        let noise: Vec<u8> = (0..HEAD).map(|i| (i * 7 % 251) as u8).collect();
        assert!(signatures(&noise, &[1u8; 512], 512).is_empty());
    }

    #[test]
    fn finds_each_signature() {
        for (off, magic, name) in [
            (1024 + 56, &[0x53u8, 0xef][..], "an ext2/3/4 file system"),
            (0, b"XFSB", "an XFS file system"),
            (65536 + 64, b"_BHRfS_M", "a btrfs file system"),
            (32769, b"CD001", "an ISO 9660 file system"),
            (0, b"hsqs", "a squashfs file system"),
            (0, b"LUKS\xba\xbe", "a LUKS container"),
            (4086, b"SWAPSPACE2", "a swap area"),
            (512, b"EFI PART", "a GPT partition table"),
            (510, &[0x55, 0xaa], "an MBR partition table (0x55AA)"),
        ] {
            assert_eq!(signatures(&with(off, magic), &[0u8; 512], 512), [name]);
        }
        // GPT on a 4Kn disk: the header is at 4096.
        assert_eq!(
            signatures(&with(4096, b"EFI PART"), &[0u8; 4096], 4096),
            ["a GPT partition table"]
        );
        // Only the backup header left (the start was zeroed).
        let mut tail = vec![0u8; 512];
        tail[..8].copy_from_slice(b"EFI PART");
        assert_eq!(
            signatures(&vec![0u8; HEAD], &tail, 512),
            ["a backup GPT header (at the last block)"]
        );
        // A FAT boot sector is a file system, not an MBR.
        let mut fat = with(54, b"FAT16   ");
        fat[510] = 0x55;
        fat[511] = 0xaa;
        assert_eq!(
            signatures(&fat, &[0u8; 512], 512),
            ["a FAT (vfat) file system"]
        );
        let mut lvm = with(512, b"LABELONE");
        lvm[512 + 24..512 + 32].copy_from_slice(b"LVM2 001");
        assert_eq!(
            signatures(&lvm, &[0u8; 512], 512),
            ["an LVM2 physical volume"]
        );
    }
}
