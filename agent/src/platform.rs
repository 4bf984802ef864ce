//! Which platform the node runs on, and so which provisioning sources it trusts.
//!
//! Consumes the image's pin `/usr/lib/slipway/platform` (one word; a recipe ships it
//! in its overlay) and, when there is none or it says `auto`, the SMBIOS strings the
//! kernel shows under `/sys/class/dmi/id` (the hypervisor or the firmware sets them; a
//! tenant cannot). Produces a [`Choice`]: the platform, the reason for it (printed on
//! the console and recorded), and through [`Platform::sources`] the sources it trusts.
//! Compare Ignition's platform id and cloud-init's datasource list: an attached disk
//! never decides what the node trusts. See docs/provisioning.md, "Platforms".

use std::fs;
use std::path::Path;

/// The pin, in the read-only image: `auto` or one of [`Platform::NAMES`].
pub const PIN: &str = "usr/lib/slipway/platform";
/// Where the kernel shows the SMBIOS strings.
const DMI: &str = "sys/class/dmi/id";

/// Azure's chassis asset tag (every Azure VM; a local Hyper-V VM has the same vendor
/// and product, "Microsoft Corporation" / "Virtual Machine", but not this tag).
pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

/// A platform: what the node trusts to configure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// QEMU/KVM run by whoever owns the host: fw_cfg, every labelled drive, then any
    /// metadata service.
    Qemu,
    /// Hardware, or a hypervisor not recognised: as [`Platform::Qemu`].
    Metal,
    /// Amazon EC2: its instance metadata service (IMDS) only.
    Aws,
    /// Google Compute Engine: its metadata server only.
    Gce,
    /// Microsoft Azure: its IMDS only.
    Azure,
    /// OpenStack Nova: its config drive (`config-2`), then its metadata service.
    OpenStack,
}

/// What a platform trusts, in the order they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    /// QEMU's fw_cfg blob.
    pub fw_cfg: bool,
    /// Drives labelled `SLIPWAY` or `cidata`.
    pub slipway_drives: bool,
    /// Drives labelled `config-2` (OpenStack's config drive).
    pub openstack_drive: bool,
    /// Which metadata services `provision --cloud` may take an answer from: `None`,
    /// any, or the one named as in `metadata::Metadata::source` (`aws`, `gce`, `azure`,
    /// `openstack`).
    pub metadata: Metadata,
}

/// The metadata services a platform takes an answer from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// Whichever answers (QEMU and metal: the host's owner runs it).
    Any,
    /// Only this cloud's.
    Only(&'static str),
}

impl Platform {
    /// The names a pin may use, besides `auto`.
    pub const NAMES: [&'static str; 6] = ["qemu", "metal", "aws", "gce", "azure", "openstack"];

    /// The platform's name, as in a pin.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Qemu => "qemu",
            Platform::Metal => "metal",
            Platform::Aws => "aws",
            Platform::Gce => "gce",
            Platform::Azure => "azure",
            Platform::OpenStack => "openstack",
        }
    }

    fn from_name(s: &str) -> Option<Platform> {
        [
            Platform::Qemu,
            Platform::Metal,
            Platform::Aws,
            Platform::Gce,
            Platform::Azure,
            Platform::OpenStack,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }

    /// The sources the platform trusts.
    pub fn sources(self) -> Sources {
        let cloud = |name| Sources {
            fw_cfg: false,
            slipway_drives: false,
            openstack_drive: false,
            metadata: Metadata::Only(name),
        };
        match self {
            Platform::Qemu | Platform::Metal => Sources {
                fw_cfg: true,
                slipway_drives: true,
                openstack_drive: true,
                metadata: Metadata::Any,
            },
            Platform::Aws => cloud("aws"),
            Platform::Gce => cloud("gce"),
            Platform::Azure => cloud("azure"),
            Platform::OpenStack => Sources {
                openstack_drive: true,
                ..cloud("openstack")
            },
        }
    }

    /// `fw_cfg, drives labelled SLIPWAY, cidata or config-2, any metadata service`: the
    /// sources, for the console.
    pub fn describe_sources(self) -> String {
        let s = self.sources();
        let mut parts = Vec::new();
        if s.fw_cfg {
            parts.push("fw_cfg".to_string());
        }
        match (s.slipway_drives, s.openstack_drive) {
            (true, true) => parts.push("drives labelled SLIPWAY, cidata or config-2".into()),
            (true, false) => parts.push("drives labelled SLIPWAY or cidata".into()),
            (false, true) => parts.push("its config drive (config-2)".into()),
            (false, false) => {}
        }
        parts.push(match s.metadata {
            Metadata::Any => "any metadata service".into(),
            Metadata::Only(_) if parts.is_empty() => "its metadata service only".into(),
            Metadata::Only(_) => "its metadata service".into(),
        });
        parts.join(", ")
    }

    /// Whether `provision --cloud` may use an answer from `source` (a
    /// `metadata::Metadata::source`, such as `aws imdsv2 (169.254.169.254:80)`).
    pub fn accepts_metadata(self, source: &str) -> bool {
        match self.sources().metadata {
            Metadata::Any => true,
            Metadata::Only(name) => source.split_whitespace().next() == Some(name),
        }
    }
}

/// The platform chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub platform: Platform,
    /// `pinned by /usr/lib/slipway/platform` or `DMI sys_vendor "Amazon EC2"`.
    pub reason: String,
    /// Lines to print before the choice (a pin that is not a platform).
    pub notes: Vec<String>,
}

impl Choice {
    /// `platform aws (DMI sys_vendor "Amazon EC2"): its metadata service only`: the
    /// console line and the record.
    pub fn line(&self) -> String {
        format!(
            "platform {} ({}): {}",
            self.platform.name(),
            self.reason,
            self.platform.describe_sources()
        )
    }
}

/// The platform of the running system: [`detect_in`] on `/`.
pub fn detect() -> Choice {
    detect_in(Path::new("/"))
}

/// The platform under `root` (`/`, or a directory tree in tests): the image's pin, or
/// with none (or `auto`) the SMBIOS strings.
pub fn detect_in(root: &Path) -> Choice {
    let mut notes = Vec::new();
    match fs::read_to_string(root.join(PIN)) {
        Ok(text) => {
            let word = text.trim();
            if let Some(p) = Platform::from_name(word) {
                return Choice {
                    platform: p,
                    reason: format!("pinned by /{PIN}"),
                    notes,
                };
            }
            if word != "auto" {
                notes.push(format!(
                    "ERROR: /{PIN}: {word:?} is not a platform (expected auto, {}); detecting it from DMI",
                    Platform::NAMES.join(", ")
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => notes.push(format!(
            "warning: /{PIN}: {e}; detecting the platform from DMI"
        )),
    }
    let (platform, reason) = from_dmi(&Dmi::read(&root.join(DMI)));
    Choice {
        platform,
        reason,
        notes,
    }
}

/// The SMBIOS strings that tell platforms apart (empty when absent).
#[derive(Debug, Default)]
struct Dmi {
    sys_vendor: String,
    product_name: String,
    product_version: String,
    bios_vendor: String,
    bios_version: String,
    chassis_asset_tag: String,
}

impl Dmi {
    fn read(dir: &Path) -> Dmi {
        let f = |n: &str| {
            fs::read_to_string(dir.join(n))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Dmi {
            sys_vendor: f("sys_vendor"),
            product_name: f("product_name"),
            product_version: f("product_version"),
            bios_vendor: f("bios_vendor"),
            bios_version: f("bios_version"),
            chassis_asset_tag: f("chassis_asset_tag"),
        }
    }
}

/// The platform the strings say, and which string said it. Clouds first: OpenStack on
/// KVM and GCE are QEMU underneath but set their own strings; anything unrecognised
/// is metal. Sources: AWS sets `Amazon EC2` on Nitro (sys_vendor, bios_vendor) and
/// `4.2.amazon` (bios_version, product_version) on Xen; GCE `Google` /
/// `Google Compute Engine`; Azure the chassis asset tag [`AZURE_ASSET_TAG`]; Nova
/// `OpenStack Foundation` / `OpenStack Nova` (`OpenStack Compute` in later releases,
/// and some OpenStack clouds only an asset tag); QEMU's own default is `QEMU`.
fn from_dmi(d: &Dmi) -> (Platform, String) {
    let said = |key: &str, value: &str| format!("DMI {key} {value:?}");
    if d.sys_vendor == "Amazon EC2" {
        return (Platform::Aws, said("sys_vendor", &d.sys_vendor));
    }
    if d.bios_vendor == "Amazon EC2" {
        return (Platform::Aws, said("bios_vendor", &d.bios_vendor));
    }
    if d.bios_version.to_ascii_lowercase().contains("amazon") {
        return (Platform::Aws, said("bios_version", &d.bios_version));
    }
    if d.product_version.to_ascii_lowercase().contains("amazon") {
        return (Platform::Aws, said("product_version", &d.product_version));
    }
    if d.product_name == "Google Compute Engine" {
        return (Platform::Gce, said("product_name", &d.product_name));
    }
    if d.sys_vendor == "Google" || d.bios_vendor == "Google" {
        return (Platform::Gce, said("sys_vendor", &d.sys_vendor));
    }
    if d.chassis_asset_tag == AZURE_ASSET_TAG {
        return (Platform::Azure, said("chassis_asset_tag", AZURE_ASSET_TAG));
    }
    const NOVA: [&str; 2] = ["OpenStack Nova", "OpenStack Compute"];
    if NOVA.contains(&d.product_name.as_str()) {
        return (Platform::OpenStack, said("product_name", &d.product_name));
    }
    if d.sys_vendor == "OpenStack Foundation" {
        return (Platform::OpenStack, said("sys_vendor", &d.sys_vendor));
    }
    const OPENSTACK_TAGS: [&str; 5] = [
        "OpenStack Nova",
        "OpenStack Compute",
        "OpenTelekomCloud",
        "HUAWEICLOUD",
        "SAP CCloud VM",
    ];
    if OPENSTACK_TAGS.contains(&d.chassis_asset_tag.as_str()) {
        let tag = &d.chassis_asset_tag;
        return (Platform::OpenStack, said("chassis_asset_tag", tag));
    }
    if d.sys_vendor == "QEMU" {
        return (Platform::Qemu, said("sys_vendor", &d.sys_vendor));
    }
    let reason = if d.sys_vendor.is_empty() {
        "no DMI sys_vendor; not a known cloud or QEMU".to_string()
    } else {
        format!(
            "{}; not a known cloud or QEMU",
            said("sys_vendor", &d.sys_vendor)
        )
    };
    (Platform::Metal, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::tests::tempfile_lite::Dir;

    /// A root whose /sys/class/dmi/id holds `strings`.
    fn machine(strings: &[(&str, &str)]) -> Dir {
        let d = Dir::new();
        let dmi = d.0.join(DMI);
        fs::create_dir_all(&dmi).unwrap();
        for (k, v) in strings {
            fs::write(dmi.join(k), format!("{v}\n")).unwrap();
        }
        d
    }

    fn auto(strings: &[(&str, &str)]) -> (&'static str, String) {
        let d = machine(strings);
        let c = detect_in(&d.0);
        assert!(c.notes.is_empty(), "{c:?}");
        (c.platform.name(), c.reason)
    }

    /// What each platform's hypervisor sets (as read on real instances; QEMU's q35
    /// defaults with OVMF).
    #[test]
    fn auto_reads_each_platform_from_its_dmi_strings() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 10] = [
            (
                &[
                    ("sys_vendor", "Amazon EC2"),
                    ("product_name", "t3.medium"),
                    ("bios_vendor", "Amazon EC2"),
                ],
                "aws",
                "DMI sys_vendor \"Amazon EC2\"",
            ),
            (
                &[
                    ("sys_vendor", "Xen"),
                    ("product_name", "HVM domU"),
                    ("bios_vendor", "Xen"),
                    ("bios_version", "4.2.amazon"),
                ],
                "aws",
                "DMI bios_version \"4.2.amazon\"",
            ),
            (
                &[
                    ("sys_vendor", "Google"),
                    ("product_name", "Google Compute Engine"),
                    ("bios_vendor", "Google"),
                ],
                "gce",
                "DMI product_name \"Google Compute Engine\"",
            ),
            (
                &[
                    ("sys_vendor", "Microsoft Corporation"),
                    ("product_name", "Virtual Machine"),
                    ("chassis_asset_tag", AZURE_ASSET_TAG),
                ],
                "azure",
                "DMI chassis_asset_tag \"7783-7084-3265-9085-8269-3286-77\"",
            ),
            (
                &[
                    ("sys_vendor", "OpenStack Foundation"),
                    ("product_name", "OpenStack Nova"),
                    ("bios_vendor", "SeaBIOS"),
                ],
                "openstack",
                "DMI product_name \"OpenStack Nova\"",
            ),
            (
                &[("sys_vendor", "RDO"), ("product_name", "OpenStack Compute")],
                "openstack",
                "DMI product_name \"OpenStack Compute\"",
            ),
            (
                &[
                    ("sys_vendor", "QEMU"),
                    ("product_name", "Standard PC (Q35 + ICH9, 2009)"),
                    ("bios_vendor", "EDK II"),
                ],
                "qemu",
                "DMI sys_vendor \"QEMU\"",
            ),
            (
                &[
                    ("sys_vendor", "Microsoft Corporation"),
                    ("product_name", "Virtual Machine"),
                    ("chassis_asset_tag", "0000-0000-0000-0000"),
                ],
                "metal",
                "DMI sys_vendor \"Microsoft Corporation\"; not a known cloud or QEMU",
            ),
            (
                &[
                    ("sys_vendor", "Dell Inc."),
                    ("product_name", "PowerEdge R650"),
                ],
                "metal",
                "DMI sys_vendor \"Dell Inc.\"; not a known cloud or QEMU",
            ),
            (&[], "metal", "no DMI sys_vendor; not a known cloud or QEMU"),
        ];
        for (strings, platform, reason) in cases {
            assert_eq!(auto(strings), (platform, reason.to_string()), "{strings:?}");
        }
    }

    #[test]
    fn the_image_pin_wins_over_dmi() {
        let d = machine(&[("sys_vendor", "QEMU")]);
        fs::create_dir_all(d.0.join("usr/lib/slipway")).unwrap();
        fs::write(d.0.join(PIN), "aws\n").unwrap();
        let c = detect_in(&d.0);
        assert_eq!(c.platform, Platform::Aws);
        assert_eq!(
            c.line(),
            "platform aws (pinned by /usr/lib/slipway/platform): its metadata service only"
        );
        fs::write(d.0.join(PIN), "auto\n").unwrap();
        let c = detect_in(&d.0);
        assert_eq!((c.platform, c.notes.len()), (Platform::Qemu, 0));
        assert_eq!(
            c.line(),
            "platform qemu (DMI sys_vendor \"QEMU\"): fw_cfg, drives labelled SLIPWAY, cidata or config-2, any metadata service"
        );
        // A pin that is not a platform is an error, and DMI decides.
        fs::write(d.0.join(PIN), "asw\n").unwrap();
        let c = detect_in(&d.0);
        assert_eq!(c.platform, Platform::Qemu);
        assert_eq!(
            c.notes,
            ["ERROR: /usr/lib/slipway/platform: \"asw\" is not a platform (expected auto, qemu, metal, aws, gce, azure, openstack); detecting it from DMI"]
        );
    }

    #[test]
    fn clouds_trust_their_own_metadata_only() {
        let aws = Platform::Aws.sources();
        assert!(!aws.fw_cfg && !aws.slipway_drives && !aws.openstack_drive);
        assert!(Platform::Aws.accepts_metadata("aws imdsv2 (169.254.169.254:80)"));
        assert!(!Platform::Aws.accepts_metadata("openstack (169.254.169.254:80)"));
        assert!(!Platform::Gce.accepts_metadata("aws imdsv2 (169.254.169.254:80)"));
        assert!(Platform::Azure.accepts_metadata("azure imds (169.254.169.254:80)"));
        assert!(Platform::Metal.accepts_metadata("gce (169.254.169.254:80)"));
        let os = Platform::OpenStack.sources();
        assert!(os.openstack_drive && !os.slipway_drives && !os.fw_cfg);
        assert_eq!(
            Platform::OpenStack.describe_sources(),
            "its config drive (config-2), its metadata service"
        );
    }
}
