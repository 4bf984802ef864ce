//! The recipe file as written: serde structs with `deny_unknown_fields` and kebab-case
//! keys. Checked values (sizes, digests, modes, names) validate themselves while parsing,
//! so their errors carry the key path and line like any other TOML error.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRecipe {
    pub schema_version: Option<u32>,
    pub extends: Option<String>,
    pub image: Option<RawImage>,
    pub debian: Option<RawDebian>,
    pub packages: Option<RawPackages>,
    pub paths: Option<RawPaths>,
    #[serde(default)]
    pub artifact: Vec<RawArtifact>,
    #[serde(default)]
    pub user: Vec<RawUser>,
    #[serde(default)]
    pub group: Vec<RawGroup>,
    #[serde(default)]
    pub entry: Vec<RawEntry>,
    pub alternatives: Option<BTreeMap<String, String>>,
    pub systemd: Option<RawSystemd>,
    pub applets: Option<RawApplets>,
    #[serde(default)]
    pub preload: Vec<RawPreload>,
    pub bundle: Option<RawBundle>,
    pub oci: Option<RawOci>,
    pub kernel: Option<RawKernel>,
    pub disk: Option<RawDisk>,
    pub secure_boot: Option<RawSecureBoot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawImage {
    pub name: Option<String>,
    pub kind: Option<ImageKind>,
    pub description: Option<String>,
    pub version: Option<String>,
}

/// What the recipe builds.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    /// An OCI base image for `FROM` lines.
    Base,
    /// A bootable container-host disk image.
    Host,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDebian {
    pub release: Option<Release>,
    pub suites: Option<Vec<String>>,
    pub components: Option<Vec<String>>,
    pub architecture: Option<String>,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
}

/// A Debian release codename slipway knows.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Release(pub String);

impl TryFrom<String> for Release {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "trixie" | "bookworm" | "forky" => Ok(Release(s)),
            "stable" => Ok(Release("trixie".into())),
            "oldstable" => Ok(Release("bookworm".into())),
            _ => Err(format!(
                "\"{s}\" is not a supported Debian release (use \"trixie\" or \"bookworm\")"
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPackages {
    #[serde(default)]
    pub include: Vec<PackageName>,
    #[serde(default)]
    pub exclude: Vec<PackageName>,
    pub recommends: Option<bool>,
}

/// A Debian package name, optionally `name=version` (Debian Policy 5.6.1).
#[derive(Debug, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(try_from = "String")]
pub struct PackageName(pub String);

impl TryFrom<String> for PackageName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let name = s.split('=').next().unwrap_or("");
        let ok = name.len() >= 2
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if ok {
            Ok(PackageName(s))
        } else {
            Err(format!(
                "\"{s}\" is not a Debian package name (lower-case letters, digits, + - . ; at least 2 characters; optionally =VERSION)"
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPaths {
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub keep: Vec<String>,
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Image paths whose overlay files may keep setuid or setgid bits.
    #[serde(default)]
    pub allow_setuid: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawArtifact {
    pub url: String,
    pub sha256: Sha256,
    pub dest: String,
    pub mode: Option<Mode>,
    pub member: Option<String>,
}

/// A SHA-256 digest in lower-case hex.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Sha256(pub String);

impl TryFrom<String> for Sha256 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.strip_prefix("sha256:").unwrap_or(&s).to_ascii_lowercase();
        if crate::io::hash::is_sha256_hex(&t) {
            Ok(Sha256(t))
        } else {
            Err(format!("\"{s}\" is not a sha256 digest (64 hex digits)"))
        }
    }
}

/// A file mode written as an octal string ("0755").
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Mode(pub u32);

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match u32::from_str_radix(&s, 8) {
            Ok(m) if m <= 0o7777 => Ok(Mode(m)),
            _ => Err(format!("\"{s}\" is not a file mode (octal, e.g. \"0755\")")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUser {
    pub name: String,
    pub uid: u32,
    pub gid: Option<u32>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub gecos: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGroup {
    pub name: String,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<String>,
}

/// Kinds of entries a recipe can add to the tree.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EntryType {
    Dir,
    File,
    Symlink,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub content: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSystemd {
    #[serde(default)]
    pub enable: Vec<String>,
    #[serde(default)]
    pub disable: Vec<String>,
    /// Units linked to /dev/null in /etc/systemd/system (`systemctl mask`).
    #[serde(default)]
    pub mask: Vec<String>,
}

/// `[applets]`: symlinks for the applets of a multi-call binary such as busybox.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawApplets {
    /// The binary in the image, e.g. "/usr/bin/busybox".
    pub binary: String,
    /// Applet paths not to link, e.g. ["/linuxrc"].
    #[serde(default)]
    pub skip: Vec<String>,
}

/// `[secure-boot]`: the key the host image's EFI binaries are signed with. Each of
/// `key` and `cert` is a PEM file (relative to the recipe's directory) or `env:NAME`, an
/// environment variable holding the PEM text; the key's passphrase, if any, comes from
/// the environment variable `passphrase-env`. `microsoft-uefi-ca = true` adds
/// Microsoft's UEFI CAs to the db the image's enrollment files carry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSecureBoot {
    pub key: String,
    pub cert: String,
    pub passphrase_env: Option<String>,
    /// db also holds Microsoft's UEFI CAs (2011 and 2023) and Option ROM CA 2023.
    pub microsoft_uefi_ca: Option<bool>,
}

/// `[bundle]`: slipway's own programs a host image carries besides slipway-agent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBundle {
    /// slipway-node (the Kubernetes node-readiness check and CRI client) at
    /// /usr/bin/slipway-node.
    pub node: Option<bool>,
}

/// `[[preload]]`: a slipway base image built with the host image and imported into its
/// containerd at boot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPreload {
    /// The base recipe, relative to this recipe's file.
    pub recipe: String,
    /// The image name without its tag (`ctr images import --base-name`).
    pub base_name: String,
    /// containerd namespace (default `k8s.io`, the one the CRI plugin uses).
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOci {
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Most layers for this image's own content (1: a single layer).
    pub layers: Option<usize>,
    /// Repository name (default `slipway/<image name>`).
    pub repository: Option<String>,
    /// Tag (default `latest`).
    pub tag: Option<String>,
    /// The `org.opencontainers.image.source` annotation.
    pub source: Option<String>,
}

/// `[kernel]`: which kernel modules a host image keeps.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawKernel {
    /// Feature names (`storage`, `containers`, ...) or module names.
    #[serde(default)]
    pub modules: Vec<ModuleName>,
    /// The kernel package, added to the packages to install.
    pub package: Option<PackageName>,
}

/// A kernel module or module-feature name: letters, digits, `_` and `-` (checked only
/// for syntax here; whether the kernel has it is checked at assembly).
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct ModuleName(pub String);

impl TryFrom<String> for ModuleName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(ModuleName(s))
        } else {
            Err(format!(
                "\"{s}\" is not a module or feature name (letters, digits, _ and -, like \"storage\" or \"virtio_blk\")"
            ))
        }
    }
}

/// `[disk]`: the layout of a host image's disk.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDisk {
    /// The EFI system partition's size.
    pub esp_size: Option<Size>,
    /// The /var partition's size as built (it grows to fill the disk at first boot).
    pub var_size: Option<Size>,
    /// The root file system: `squashfs` (zstd, the default) or `squashfs-xz` (smallest,
    /// slow to build). `erofs` was retired (docs/decisions/0034-erofs.md) and is refused
    /// by name.
    pub root_fs: Option<RootFsName>,
    /// Extra kernel command-line arguments (inside the UKI).
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Root slots: 2 (the default: root A and B with their verity trees, systemd-boot
    /// with boot counting, A/B updates) or 1 (one root, the UKI boots directly).
    pub slots: Option<u32>,
    /// The size of each root slot (default: the root image × 1.5, whole MiB).
    pub slot_size: Option<Size>,
    /// Boot attempts of a newly installed version before systemd-boot falls back
    /// (1..=9, default 3).
    pub tries: Option<u32>,
}

impl RawDisk {
    /// Root slots, [`RawDisk::slots`] or its default 2.
    pub fn slot_count(&self) -> u32 {
        self.slots.unwrap_or(2)
    }

    /// Boot attempts, [`RawDisk::tries`] or its default 3.
    pub fn boot_tries(&self) -> u32 {
        self.tries.unwrap_or(3)
    }
}

/// A size written with a unit: "64MiB", "1GiB", "512KiB" (binary units only).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Size(pub u64);

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim() {
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => 0,
        };
        match num.parse::<u64>() {
            Ok(n) if mult != 0 && n > 0 => n
                .checked_mul(mult)
                .filter(|&b| b <= super::check::MAX_SIZE)
                .map(Size)
                .ok_or_else(|| format!("\"{s}\" is too large (at most 16TiB)")),
            _ => Err(format!(
                "\"{s}\" is not a size (a whole number with KiB, MiB or GiB, e.g. \"256MiB\")"
            )),
        }
    }
}

/// The root file system's kind.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum RootFsName {
    /// squashfs, zstd.
    Squashfs,
    /// squashfs, xz with BCJ.
    SquashfsXz,
}

impl TryFrom<String> for RootFsName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "squashfs" => Ok(RootFsName::Squashfs),
            "squashfs-xz" => Ok(RootFsName::SquashfsXz),
            "erofs" => {
                Err("\"erofs\": erofs roots were retired (decision 0034): use squashfs".to_string())
            }
            _ => Err(format!(
                "\"{s}\" is not a root file system (use \"squashfs\" or \"squashfs-xz\")"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_fs_names() {
        let parse = |s: &str| RootFsName::try_from(s.to_string());
        assert_eq!(parse("squashfs"), Ok(RootFsName::Squashfs));
        assert_eq!(parse("squashfs-xz"), Ok(RootFsName::SquashfsXz));
        let retired = parse("erofs").unwrap_err();
        assert!(
            retired.contains("erofs roots were retired (decision 0034): use squashfs"),
            "{retired}"
        );
        let unknown = parse("btrfs").unwrap_err();
        assert!(
            unknown.contains("\"btrfs\"") && unknown.contains("squashfs-xz"),
            "{unknown}"
        );
    }
}
