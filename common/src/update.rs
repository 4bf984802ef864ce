//! The update payload's vocabulary, shared by its writer (`slipway build --format
//! update`, `src/formats/update.rs`) and its reader (the agent's update engine,
//! `agent/src/update/`): the artifact type, the media type of each blob and the
//! annotation keys of the manifest. See docs/updates.md and
//! docs/decisions/0045-update-payload.md.
//!
//! The payload is an OCI 1.1 artifact manifest (an image manifest with `artifactType`;
//! <https://github.com/opencontainers/image-spec/blob/v1.1.0/manifest.md>): the empty
//! config, then the blobs in the order a node writes them (root, verity tree, UKI last).

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.slipway.update.v1";
/// The root file system image (squashfs, or the recipe's `root-fs`).
pub const ROOT_TYPE: &str = "application/vnd.slipway.update.root.v1";
/// The root's dm-verity hash tree (with its superblock, as `veritysetup format` writes).
pub const VERITY_TYPE: &str = "application/vnd.slipway.update.verity.v1";
/// The unified kernel image that boots the root (its `roothash=` pins the verity tree).
pub const UKI_TYPE: &str = "application/vnd.slipway.update.uki.v1";
/// The blobs in the order a node writes them: the UKI last, so that an interrupted
/// write leaves no boot entry.
pub const WRITE_ORDER: [&str; 3] = [ROOT_TYPE, VERITY_TYPE, UKI_TYPE];

/// The image version (os-release `IMAGE_VERSION`, the recipe's `image.version`).
pub const VERSION: &str = "org.opencontainers.image.version";
/// The image name (`image.name`).
pub const TITLE: &str = "org.opencontainers.image.title";
/// When it was built (RFC 3339, from `SOURCE_DATE_EPOCH`).
pub const CREATED: &str = "org.opencontainers.image.created";
/// The dm-verity root hash (hex), as the UKI's `roothash=` says.
pub const ROOT_HASH: &str = "dev.slipway.update.root-hash";
/// The root file system kind (`squashfs`).
pub const ROOT_FS: &str = "dev.slipway.update.root-fs";
/// The Debian architecture (`amd64`).
pub const ARCHITECTURE: &str = "dev.slipway.update.architecture";
/// The kernel release inside the UKI.
pub const KERNEL: &str = "dev.slipway.update.kernel";
/// Bytes of the root image, of the verity tree and of the UKI (decimal).
pub const ROOT_SIZE: &str = "dev.slipway.update.root-size";
/// See [`ROOT_SIZE`].
pub const VERITY_SIZE: &str = "dev.slipway.update.verity-size";
/// See [`ROOT_SIZE`].
pub const UKI_SIZE: &str = "dev.slipway.update.uki-size";
/// Boot attempts a node gives the version before systemd-boot falls back (decimal,
/// 1..=9, the recipe's `disk.tries`): the agent names its UKI `slipway-VERSION+TRIES.efi`.
pub const TRIES: &str = "dev.slipway.update.tries";

/// Compares two image versions the way Debian compares upstream versions, simplified:
/// runs of digits compare as numbers, everything else byte by byte, and `~` sorts before
/// anything (even the end), so `1.10 > 1.9`, `2 > 1.9`, `2~rc1 < 2`.
pub fn compare_versions(a: &str, b: &str) -> core::cmp::Ordering {
    use core::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        let (x, y) = (a.get(i), b.get(j));
        match (x, y) {
            (None, None) => return Ordering::Equal,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let (n, ni) = digits(a, i);
                let (m, mj) = digits(b, j);
                let o = n.len().cmp(&m.len()).then_with(|| n.cmp(m));
                if o != Ordering::Equal {
                    return o;
                }
                (i, j) = (ni, mj);
            }
            _ => {
                let o = rank(x).cmp(&rank(y));
                if o != Ordering::Equal {
                    return o;
                }
                i += 1;
                j += 1;
            }
        }
    }
}

/// The digit run starting at `i` without leading zeros, and the index after it.
fn digits(s: &[u8], i: usize) -> (&[u8], usize) {
    let end = s[i..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(s.len(), |n| i + n);
    let run = &s[i..end];
    let first = run.iter().position(|&c| c != b'0').unwrap_or(run.len());
    (&run[first..], end)
}

/// The sort rank of one byte: `~` first, then the end, then digits (a number where the
/// other side has a letter), then the rest by value.
fn rank(c: Option<&u8>) -> u16 {
    match c {
        Some(b'~') => 0,
        None => 1,
        Some(c) if c.is_ascii_digit() => 2,
        Some(&c) => 3 + u16::from(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cmp::Ordering::*;

    #[test]
    fn versions_compare_by_number_and_tilde_first() {
        for (a, b, want) in [
            ("1", "2", Less),
            ("1.9", "1.10", Less),
            ("2", "1.9", Greater),
            ("2~rc1", "2", Less),
            ("2", "2", Equal),
            ("02", "2", Equal),
            ("2.a", "2.b", Less),
            ("2026.12.1", "2026.12.01", Equal),
            ("1.0", "1", Greater),
            ("1a", "1", Greater),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
