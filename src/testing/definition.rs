//! Test definitions (`qemu/*.toml`): consumes a TOML file, produces a checked
//! [`Definition`] — the image to boot (or none: a test that boots drives or the network
//! only), the VM around it (firmware, TPM, network, drives), the servers the harness
//! prepares, and the [`Step`]s to run. Unknown keys are errors; every error names the
//! file and the key. The format is documented in docs/testing.md. The step tables are
//! checked in [`steps`], the drives, forwards, variables and network boot in
//! [`machine`].

mod machine;
mod steps;

pub use self::machine::{Drive, DriveSource, Forward, ForwardTarget, Netboot, Vars};
use self::steps::regex;
pub use self::steps::{parse_mode, Action, BootTarget, Copy, CopyImage, DriveDigest, Expect, Step};
pub use crate::boot::qemu::Firmware;
use crate::recipe::raw::Size;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default time a whole test may take (TCG boots take 30-60 s on 2 cores).
pub const DEFAULT_TIMEOUT: u64 = 600;

/// A test definition as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDefinition {
    description: Option<String>,
    recipe: Option<String>,
    image: Option<PathBuf>,
    memory: Option<u32>,
    cpus: Option<u32>,
    timeout: Option<u64>,
    disk_size: Option<Size>,
    corrupt: Option<Corrupt>,
    #[serde(default)]
    expect_failure: Vec<String>,
    provisioning: Option<toml::Table>,
    provisioning_raw: Option<String>,
    provisioning_via: Option<Via>,
    firmware: Option<Firmware>,
    vars: Option<machine::RawVars>,
    tpm: Option<bool>,
    network: Option<Network>,
    netboot: Option<machine::RawNetboot>,
    expect_reboots: Option<u32>,
    #[serde(default)]
    drive: Vec<machine::RawDrive>,
    #[serde(default)]
    forward: Vec<machine::RawForward>,
    #[serde(default)]
    step: Vec<steps::RawStep>,
}

/// Whether the guest has a NIC.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// No NIC at all: nothing to PXE-boot from, so a refused boot ends at once.
    None,
    /// QEMU's user network (`restrict=on`).
    User,
}

/// How the provisioning config reaches the guest.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// QEMU fw_cfg (`opt/org.slipway/config`).
    FwCfg,
    /// A vfat config drive labelled SLIPWAY holding `slipway.toml`.
    Drive,
}

/// One byte of the image to flip before booting (on the VM's overlay; the built image is
/// never written).
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Corrupt {
    /// The partition's GPT name as the manifest lists it, or `root` (the root file system,
    /// whatever its architecture suffix), `root-verity` or `var`.
    pub partition: String,
    /// Byte offset inside the partition.
    pub offset: u64,
}

/// A checked test definition.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The test's name: the file name without `.toml`.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// One line about the test.
    pub description: String,
    /// The image to boot; None: the machine boots from its drives or the network.
    pub image: Option<ImageSource>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// The whole test's time limit.
    pub timeout: Duration,
    /// Grow the disk the guest sees.
    pub disk_size: Option<u64>,
    /// A byte to flip before booting.
    pub corrupt: Option<Corrupt>,
    /// Console lines that would fail the test but are expected here (regexes).
    pub expect_failure: Vec<regex::Regex>,
    /// The provisioning config (TOML text) the guest gets; None: none.
    pub provisioning: Option<String>,
    /// Whether the config starts the test agent.
    pub agent: bool,
    /// Whether the config is checked before booting (not for `provisioning-raw`).
    pub check_config: bool,
    /// How the config reaches the guest.
    pub via: Via,
    /// The UEFI firmware.
    pub firmware: Firmware,
    /// The variable store the machine starts from; None: the firmware's own.
    pub vars: Option<Vars>,
    /// A software TPM 2.0 beside the VM.
    pub tpm: bool,
    /// Whether the guest has a NIC.
    pub network: bool,
    /// Network boot.
    pub netboot: Option<Netboot>,
    /// The guest may reboot and power off by itself; the test passes only with exactly
    /// this many guest-initiated reboots. None: QEMU runs with `-no-reboot`.
    pub expect_reboots: Option<u32>,
    /// Extra drives.
    pub drives: Vec<Drive>,
    /// Guest -> host forwards.
    pub forwards: Vec<Forward>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// Where the disk image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A host recipe, built once per run.
    Recipe(PathBuf),
    /// A build output directory holding `disk.raw`.
    Dir(PathBuf),
}

/// The image keys: a recipe, an output directory, or (with drives or a network boot to
/// start from) neither.
fn image_source(
    recipe: Option<String>,
    image: Option<PathBuf>,
    base: &Path,
    bootable: bool,
) -> Result<Option<ImageSource>> {
    Ok(match (recipe, image) {
        (Some(r), None) => {
            let p = base.join(&r);
            Some(ImageSource::Recipe(if p.is_file() {
                p
            } else {
                crate::recipe::find::find(&r).context("recipe")?
            }))
        }
        (None, Some(d)) => Some(ImageSource::Dir(base.join(d))),
        (None, None) if bootable => None,
        _ => bail!("give exactly one of recipe (a host recipe to build) and image (a build output directory), or neither and boot from a [[drive]] or netboot"),
    })
}

/// The provisioning config the guest gets, whether it starts the test agent, and
/// whether it is checked.
fn provisioning(
    table: Option<toml::Table>,
    raw: Option<String>,
    has_image: bool,
) -> Result<(Option<String>, bool, bool)> {
    let check = raw.is_none();
    Ok(match (table, raw) {
        (Some(_), Some(_)) => bail!("give provisioning or provisioning-raw, not both"),
        (Some(_), None) | (None, Some(_)) if !has_image => {
            bail!("provisioning: a test without an image has no agent to apply a config")
        }
        (Some(mut t), None) => {
            if t.contains_key("test-agent") {
                bail!(
                    "provisioning.test-agent: the harness adds [test-agent] itself; leave it out"
                );
            }
            t.entry("schema-version").or_insert(toml::Value::Integer(1));
            t.insert("test-agent".into(), toml::Value::Table(toml::Table::new()));
            (
                Some(toml::to_string(&t).context("writing the provisioning config")?),
                true,
                check,
            )
        }
        // Unchecked and used as written (a broken config is a valid test); it starts
        // the test agent only if it says so itself.
        (None, Some(s)) => {
            let agent = s.lines().any(|l| l.trim() == "[test-agent]");
            (Some(s), agent, check)
        }
        // No image, no agent: console and host-side steps only.
        (None, None) if !has_image => (None, false, check),
        // No config of the test's own: the test agent still has to run.
        (None, None) => (
            Some("schema-version = 1\n\n[test-agent]\n".to_string()),
            true,
            check,
        ),
    })
}

impl Definition {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Definition> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(path, &text).with_context(|| path.display().to_string())
    }

    /// Checks the text of a definition; `path` names it and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Definition> {
        let de = toml::Deserializer::new(text);
        let raw: RawDefinition = serde_path_to_error::deserialize(de).map_err(|e| {
            let p = e.path().to_string();
            anyhow::anyhow!(
                "{}{}",
                if p == "." {
                    String::new()
                } else {
                    format!("{p}: ")
                },
                e.into_inner().message().trim()
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .context("a definition file needs a name")?;
        Self::check(raw, name, path, &base)
    }

    fn check(raw: RawDefinition, name: String, path: &Path, base: &Path) -> Result<Definition> {
        let bootable = !raw.drive.is_empty() || raw.netboot.is_some();
        let image = image_source(raw.recipe, raw.image, base, bootable)?;
        let (provisioning, agent, check_config) =
            provisioning(raw.provisioning, raw.provisioning_raw, image.is_some())?;
        let drives = machine::drives(raw.drive, base)?;
        let forwards = machine::forwards(raw.forward, base)?;
        let netboot = raw.netboot.map(|n| n.check(base)).transpose()?;
        let network = raw.network.unwrap_or(Network::User) == Network::User;
        if !network && (netboot.is_some() || !forwards.is_empty()) {
            bail!("network: \"none\" leaves no NIC for netboot or [[forward]]");
        }
        if image.is_none() && (raw.disk_size.is_some() || raw.corrupt.is_some()) {
            bail!("disk-size and corrupt apply to the image; this test has none");
        }
        let steps = raw
            .step
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.check(i, base))
            .collect::<Result<Vec<_>>>()?;
        if steps.is_empty() {
            bail!("step: a test needs at least one [[step]]");
        }
        check_step_names(&steps, &drives)?;
        let expect_failure = raw
            .expect_failure
            .iter()
            .enumerate()
            .map(|(i, s)| regex(s, &format!("expect-failure[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Definition {
            name,
            path: path.to_path_buf(),
            description: raw.description.unwrap_or_default(),
            image,
            memory_mib: raw.memory.unwrap_or(2048),
            cpus: raw.cpus.unwrap_or(2),
            timeout: Duration::from_secs(raw.timeout.unwrap_or(DEFAULT_TIMEOUT)),
            disk_size: raw.disk_size.map(|s| s.0),
            corrupt: raw.corrupt,
            expect_failure,
            provisioning,
            agent,
            check_config,
            via: raw.provisioning_via.unwrap_or(Via::FwCfg),
            firmware: raw.firmware.unwrap_or_default(),
            vars: raw.vars.map(|v| v.check(base)).transpose()?,
            tpm: raw.tpm.unwrap_or(false),
            network,
            netboot,
            expect_reboots: raw.expect_reboots,
            drives,
            forwards,
            steps,
        })
    }
}

/// The drives that steps name exist, and a network boot target has a network boot.
fn check_step_names(steps: &[Step], drives: &[Drive]) -> Result<()> {
    for (i, s) in steps.iter().enumerate() {
        let (key, d) = match &s.action {
            Action::RemoveDrive(d) => ("remove-drive", d),
            Action::BootFrom(BootTarget::Drive(d)) => ("boot-from", d),
            Action::DriveDigest(d) => ("drive-digest.drive", &d.drive),
            _ => continue,
        };
        if !drives.iter().any(|x| &x.name == d) {
            bail!(
                "step[{i}].{key}: no [[drive]] is called {d:?} (drives: {})",
                drives
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Definition> {
        Definition::parse(Path::new("qemu/t.toml"), text)
    }

    #[test]
    fn a_full_definition() {
        let d = parse(
            r#"
image = "out/x"
memory = 1024
timeout = 60
expect-failure = ["device-mapper: verity"]
corrupt = { partition = "root", offset = 0 }
[provisioning]
hostname = "n1"
[[step]]
wait-for-unit = "multi-user.target"
[[step]]
succeed = ["hostname"]
expect = "n1"
[[step]]
crash = true
timeout = 10
"#,
        )
        .unwrap();
        assert_eq!(d.name, "t");
        assert_eq!(d.image, Some(ImageSource::Dir(PathBuf::from("qemu/out/x"))));
        let cfg = d.provisioning.unwrap();
        assert!(
            cfg.contains("schema-version = 1") && cfg.contains("[test-agent]"),
            "{cfg}"
        );
        assert_eq!(d.steps.len(), 3);
        assert_eq!(d.steps[1].name, "step[1] succeed hostname");
        assert_eq!(d.steps[2].timeout, Duration::from_secs(10));
        assert_eq!(d.corrupt.unwrap().offset, 0);
    }

    /// The tests slipway ships parse (cargo runs unit tests in the package root).
    #[test]
    fn shipped_definitions_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu");
        let defs = crate::testing::runner::discover(&dir, None).unwrap();
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
            .count();
        assert!(files > 0 && defs.len() == files, "{files} files: {defs:?}");
        assert!(defs
            .iter()
            .all(|d| matches!(d.image, Some(ImageSource::Recipe(_)))));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, want) in [
            ("image = \"x\"\nbogus = 1\n[[step]]\ncrash = true", "unknown field `bogus`"),
            ("image = \"x\"\n[[step]]\nsucceed = []", "step[0].succeed: expected a command"),
            ("image = \"x\"\n[[step]]\ncrash = true\nreboot = true", "step[0]: expected exactly one action"),
            ("image = \"x\"\n[[step]]\nwait-for-unit = \"a\"\nexpect = \"b\"", "expect, expect-regex and at-least apply"),
            ("image = \"x\"\n[[step]]\nwait-for-unit = \"a\"\nat-least = 3", "and at-least apply to"),
            ("image = \"x\"\n[[step]]\nread-file = \"/a\"\nexpect = \"b\"\nat-least = 3", "step[0]: at-least takes the number"),
            ("image = \"x\"\n[[step]]\nwait-for-console-text = \"(\"", "step[0].wait-for-console-text"),
            ("image = \"x\"\n[[forward]]\nguest = \"1.2.3.4:80\"\nserve = \".\"\n[[step]]\ncrash = true", "forward[0].guest"),
            ("image = \"x\"", "at least one [[step]]"),
            ("[[step]]\ncrash = true", "exactly one of recipe"),
            ("image = \"x\"\n[provisioning]\n[provisioning.test-agent]\n[[step]]\ncrash = true", "provisioning.test-agent"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    /// Issue 21's keys: a definition without an image, booting drives; each key checked.
    #[test]
    fn machine_keys_parse_and_their_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::write(base.join("esp.img"), b"x").unwrap();
        std::fs::write(base.join("db.pem"), b"x").unwrap();
        std::fs::create_dir_all(base.join("tftp")).unwrap();
        std::fs::write(base.join("tftp/boot.efi"), b"x").unwrap();
        let def = |body: &str| Definition::parse(&base.join("k.toml"), body);
        let d = def(r#"
firmware = "uefi-secure"
vars = { enroll-cert = "db.pem" }
tpm = true
expect-reboots = 2
netboot = { tftp = "tftp", bootfile = "boot.efi" }
[[drive]]
name = "esp"
image = "esp.img"
interface = "nvme"
serial = "SN-1"
logical-block-size = 4096
[[drive]]
size = "1MiB"
interface = "cdrom"
[[forward]]
guest = "10.0.2.101:5000"
proxy = "127.0.0.1:5000"
[[step]]
boot-from = "esp"
[[step]]
drive-digest = { drive = "drive-1", changed = false }
[[step]]
remove-drive = "esp"
[[step]]
wait-for-shutdown = true
"#)
        .unwrap();
        assert!(d.image.is_none() && d.provisioning.is_none() && !d.agent);
        assert_eq!(d.firmware, Firmware::UefiSecure);
        assert_eq!(d.vars, Some(Vars::Enroll(base.join("db.pem"))));
        assert!(d.tpm && d.network);
        assert_eq!(d.expect_reboots, Some(2));
        assert_eq!(d.drives[0].logical_block_size, Some(4096));
        assert!(d.drives[1].read_only, "a cdrom is read-only");
        assert_eq!(d.drives[1].name, "drive-1");
        assert_eq!(
            d.forwards[0].target,
            ForwardTarget::Proxy("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(d.steps[0].name, "step[0] boot-from esp");
        let step = "[[step]]\nwait-for-shutdown = true\n";
        for (text, want) in [
            ("network = \"none\"\nnetboot = { tftp = \"tftp\", bootfile = \"boot.efi\" }\n", "network: \"none\" leaves no NIC"),
            ("[[drive]]\nimage = \"esp.img\"\nlogical-block-size = 1024\n", "drive[0].logical-block-size: 1024"),
            ("[[drive]]\nimage = \"esp.img\"\nlogical-block-size = 4096\nphysical-block-size = 512\n", "drive[0].physical-block-size: 512 is smaller"),
            ("[[drive]]\nimage = \"esp.img\"\nserial = \"a b\"\n", "drive[0].serial"),
            ("[[drive]]\nimage = \"missing.img\"\n", "drive[0].image:"),
            ("[[drive]]\nsize = \"1MiB\"\n[[drive]]\nname = \"drive-0\"\nsize = \"1MiB\"\n", "drive[1].name: another drive"),
            ("[[drive]]\nsize = \"1MiB\"\ninterface = \"scsi\"\n", "interface"),
            ("[[drive]]\nsize = \"1MiB\"\n[[forward]]\nguest = \"10.0.2.100:80\"\nproxy = \"10.1.1.1:80\"\n", "forward[0].proxy"),
            ("vars = \"nope.fd\"\n[[drive]]\nsize = \"1MiB\"\n", "vars: "),
            ("firmware = \"bios\"\n[[drive]]\nsize = \"1MiB\"\n", "firmware"),
            ("netboot = { tftp = \"tftp\", bootfile = \"nope.efi\" }\n", "netboot.bootfile"),
            ("[[drive]]\nsize = \"1MiB\"\n[provisioning]\nhostname = \"a\"\n", "without an image"),
            ("[[drive]]\nsize = \"1MiB\"\n[[step]]\nremove-drive = \"usb\"\n", "step[0].remove-drive: no [[drive]] is called \"usb\""),
            ("[[drive]]\nsize = \"1MiB\"\n[[step]]\ndrive-digest = { drive = \"drive-0\", changed = true, sha256 = \"ab\" }\n", "step[0].drive-digest.sha256"),
        ] {
            let e = format!("{:#}", def(&format!("{text}{step}")).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn at_least_reads_the_number_from_the_output_or_the_first_group() {
        let d = parse(
            r#"
image = "x"
[[step]]
read-file = "/sys/class/block/vda6/size"
at-least = 1000
[[step]]
succeed = ["df"]
expect-regex = 'size (\d+) KiB'
at-least = 1000
[[step]]
wait-for-console-text = 'grew .* to (\d+) blocks'
at-least = 1000
"#,
        )
        .unwrap();
        let e = |i: usize| match &d.steps[i].action {
            Action::ReadFile(_, Some(e)) | Action::Succeed(_, Some(e)) => e.clone(),
            Action::WaitForConsoleText(e) => e.clone(),
            a => panic!("{a:?}"),
        };
        assert!(e(0).matches("1000\n"));
        assert!(!e(0).matches("999\n"));
        assert!(!e(0).matches("many"));
        assert!(e(1).matches("size 20 KiB\nsize 4096 KiB\n"));
        assert!(!e(1).matches("size 20 KiB\n"));
        assert!(e(2).matches("grew the ext4 from 10 to 1001 blocks"));
        assert!(!e(2).matches("grew the ext4 from 5000 to 999 blocks"));
        assert!(e(2).to_string().contains("at least 1000"), "{}", e(2));
    }
}
