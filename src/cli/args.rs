//! The command line's arguments: every clap type of `slipway`, the option groups the
//! commands share ([`Global`], [`FetchArgs`]) and the parsers of the library's enums
//! (the library does not derive clap; its enums parse with `FromStr`).

use crate::boot::qemu::Accel;
use crate::pipeline::Format;
use crate::writers::oci::Compression;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (a build step or host tool failed)
  2  bad input: command line, recipe, unknown or unsatisfiable packages
  3  the lock is out of date, or pins versions the archive no longer serves
  4  a file could not be fetched or failed verification (offline, wrong sha256)

Environment:
  SLIPWAY_CACHE    cache directory (default: $XDG_CACHE_HOME/slipway or ~/.cache/slipway)
  SLIPWAY_MIRROR   Debian mirror URI (default: read from the host's apt sources)
  SLIPWAY_RECIPES  directory of bundled recipes (default: ./recipes)
  SLIPWAY_CACHE_FROM, SLIPWAY_CACHE_TO  registry cache HOST[:PORT]/REPO (docs/cache.md)";

/// slipway builds slim, immutable container-host OS images and minimal OCI base images
/// from Debian packages, locked by sha256 and reproducible.
#[derive(Parser, Debug)]
#[command(name = "slipway", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub(super) global: Global,
    #[command(subcommand)]
    pub(super) command: Command,
}

/// The options every command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// Cache directory (overrides SLIPWAY_CACHE).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Use only the cache, vendor and artifact directories: no network.
    #[arg(long, global = true)]
    pub offline: bool,
}

/// Where builds take packages and artifacts from (shared by the building commands).
#[derive(Args, Debug, Default)]
pub struct FetchArgs {
    /// Fail if the lock is missing or does not match the recipe (never write a lock).
    #[arg(long)]
    pub locked: bool,
    /// Take artifacts from this directory, matched by sha256 (air-gapped builds).
    #[arg(long, value_name = "DIR")]
    pub artifact_dir: Vec<PathBuf>,
    /// Take packages and artifacts from a directory written by `slipway vendor`.
    #[arg(long, value_name = "DIR")]
    pub vendor: Option<PathBuf>,
    /// Let the recipe's overlays and file:// artifacts name paths outside the directory
    /// of the recipe file that declares them (by default they must stay inside, so a
    /// recipe cannot copy host files such as /etc/shadow into an image).
    #[arg(long)]
    pub allow_host_paths: bool,
    /// Size cap of an artifact download the lock has no size for: bytes, or KiB, MiB, GiB [default: 1GiB; env SLIPWAY_DOWNLOAD_MAX_SIZE].
    #[arg(long, value_name = "SIZE", value_parser = crate::fetch::limits::parse_size)]
    pub download_max_size: Option<u64>,
    /// Overall deadline of each artifact download: seconds, or 90s, 10m, 1h [default: 30m; env SLIPWAY_DOWNLOAD_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = crate::push::deadline::parse_duration)]
    pub download_timeout: Option<Duration>,
    /// Longest wait for any byte of an artifact download [default: 60s; env SLIPWAY_DOWNLOAD_READ_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = crate::push::deadline::parse_duration)]
    pub download_read_timeout: Option<Duration>,
    /// Registry cache to take packages, artifacts and signed stage entries from, before the origin: HOST[:PORT]/REPO [env SLIPWAY_CACHE_FROM; docs/cache.md].
    #[arg(long, value_name = "REF")]
    pub cache_from: Option<String>,
    /// Registry cache to push what this command fetched or built to: HOST[:PORT]/REPO [env SLIPWAY_CACHE_TO].
    #[arg(long, value_name = "REF")]
    pub cache_to: Option<String>,
    /// Ed25519 private key (PEM) that signs the stage entries pushed with --cache-to [env SLIPWAY_CACHE_SIGNING_KEY].
    #[arg(long, value_name = "FILE")]
    pub cache_signing_key: Option<PathBuf>,
    /// Ed25519 public key (PEM) whose signed stage entries --cache-from takes; repeatable [env SLIPWAY_CACHE_TRUSTED_KEYS].
    #[arg(long, value_name = "FILE")]
    pub cache_trusted_key: Vec<PathBuf>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Resolve RECIPE to exact packages and write RECIPE.lock.
    ///
    /// Leaves a current lock as it is; re-resolves when the recipe changed, from package
    /// lists at most an hour old (downloaded again when older). With --update, downloads the
    /// lists and resolves again (use it when Debian dropped a locked version).
    Lock(LockArgs),
    /// Download every locked package and artifact into the cache, verified by sha256.
    Fetch(RecipeArgs),
    /// Build the image: lock (if needed), fetch, assemble and write the outputs.
    ///
    /// Outputs go into DIR: rootfs.tar (tar), rootfs/ (dir), oci/ (an OCI image layout with
    /// the SBOM attached; oci), image.tar (the same plus Docker's manifest.json, for
    /// `docker load`; oci-archive), sbom.spdx.json and report.json. Host images: disk.raw
    /// (disk), disk.qcow2 (qcow2), disk.vhd (vhd, Azure), disk.vmdk (vmdk, AWS/VMware),
    /// disk.tar.gz (gce), each with a JSON sidecar for the cloud, plus uki.efi and
    /// manifest.json; install.iso (iso, an installer for bare metal) and netboot/ (netboot,
    /// iPXE; see docs/bare-metal.md); update/ (update, the A/B update payload, an OCI layout
    /// for `slipway push`; see docs/updates.md). Base images default to oci,oci-archive; host images to disk (the
    /// other disk formats only when asked for); other kinds to tar.
    Build(BuildArgs),
    /// Copy every locked file out of the cache into DIR, for offline builds years later.
    Vendor(VendorArgs),
    /// Push an OCI image layout to a registry (OCI distribution API).
    Push(PushArgs),
    /// Show where an image's bytes are: by package and by directory.
    ///
    /// Assembles the tree from the lock (locking and fetching if needed; nothing is written).
    Inspect(InspectArgs),
    /// Show what differs between two images: packages and versions, then files.
    Diff(DiffArgs),
    /// Boot a host image in QEMU (UEFI/OVMF, q35) with the serial console on the terminal.
    ///
    /// IMAGE is a build output directory (holding disk.raw) or a host recipe, which is
    /// built first into out/NAME. The image itself is never modified: the VM writes to a
    /// copy-on-write overlay in --state (a fresh temporary directory unless given; give
    /// the same one again to boot the same machine again). Networking is QEMU user mode
    /// with restrict=on: the guest reaches nothing but the --forward ports. Quit with
    /// Ctrl-A X. Needs no root.
    Boot(BootArgs),
    /// Run the boot tests in qemu/*.toml (see docs/testing.md).
    ///
    /// Builds every image the tests need once, boots each test's VM from a copy-on-write
    /// overlay under QEMU (TCG unless --accel kvm), runs its steps through the test agent
    /// and fails a test at once on console badness (panic, oops, failed unit, ...).
    /// Prints per-test times; exits 1 when a test failed.
    Test(TestArgs),
    /// Bare-metal installer ISOs: embed a provisioning config, show it.
    #[command(subcommand)]
    Iso(IsoCommand),
    /// Network boot: per-machine config archives.
    #[command(subcommand)]
    Netboot(NetbootCommand),
    /// List the bundled recipes.
    Recipes,
    /// Check the host: tools slipway runs, the Debian package for each, and the cache.
    ///
    /// With --recipes: every pin of the recipes with its upstream end of life instead.
    Doctor(DoctorArgs),
}

/// `slipway lock`'s arguments.
#[derive(Args, Debug)]
pub struct LockArgs {
    /// Recipe file, or a bundled recipe name such as base/static.
    pub recipe: String,
    /// Resolve again even if the lock is current.
    #[arg(long)]
    pub update: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// A recipe and where its files come from (`slipway fetch`).
#[derive(Args, Debug)]
pub struct RecipeArgs {
    /// Recipe file, or a bundled recipe name.
    pub recipe: String,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `slipway build`'s arguments.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Recipe file, or a bundled recipe name.
    pub recipe: String,
    /// Output directory.
    #[arg(short, long, value_name = "DIR", default_value = "out")]
    pub output: PathBuf,
    /// Outputs to write (comma-separated; default by image kind, see above).
    #[arg(long, value_delimiter = ',', value_parser = formats())]
    pub format: Vec<Format>,
    /// Debian architectures (comma-separated, e.g. amd64,arm64). Several make a
    /// multi-arch OCI image index; each architecture has its own lock
    /// (RECIPE.ARCH.lock unless it is the recipe's own).
    #[arg(long, value_delimiter = ',', value_name = "ARCH")]
    pub arch: Vec<String>,
    /// OCI: run as root (uid 0) instead of the recipe's user (nonroot by default).
    #[arg(long)]
    pub root: bool,
    /// OCI: build a variant of the base image: `debug` adds a BusyBox shell on top
    /// (tag `debug`; decision 0040).
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<crate::recipe::Variant>,
    /// OCI layer compression.
    #[arg(long, value_parser = compressions(), default_value = "gzip")]
    pub compression: Compression,
    /// Host images: sign the EFI binaries for Secure Boot with this private key (PEM
    /// file, or env:NAME for an environment variable holding it); overrides the
    /// recipe's [secure-boot].
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    pub sign_key: Option<String>,
    /// The signing key's certificate (PEM file, or env:NAME).
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    pub sign_cert: Option<String>,
    /// The environment variable holding the signing key's passphrase.
    #[arg(long, value_name = "NAME", requires = "sign_key")]
    pub sign_passphrase_env: Option<String>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `slipway vendor`'s arguments.
#[derive(Args, Debug)]
pub struct VendorArgs {
    /// Recipe file, or a bundled recipe name.
    pub recipe: String,
    /// Destination directory.
    pub dir: PathBuf,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `slipway push`'s arguments.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// OCI image layout directory (oci-layout, index.json, blobs/).
    pub layout: PathBuf,
    /// Destination: HOST[:PORT]/REPO[:TAG][@sha256:HEX] (tag defaults to latest).
    pub destination: String,
    /// Push the image whose org.opencontainers.image.ref.name is NAME (when index.json lists several).
    #[arg(long = "ref", value_name = "NAME")]
    pub ref_name: Option<String>,
    /// Use plain HTTP for this registry (loopback registries always use HTTP). Repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure: Vec<String>,
    /// Let a token realm on HOST (another site than the registry's) have the credentials. Repeatable.
    #[arg(long, value_name = "HOST")]
    pub trust_realm: Vec<String>,
    /// Overall deadline for the push: seconds, or 90s, 10m, 1h [default: 1h; env SLIPWAY_PUSH_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = crate::push::deadline::parse_duration)]
    pub timeout: Option<Duration>,
    /// Longest wait for any byte from the registry [default: 60s; env SLIPWAY_PUSH_READ_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = crate::push::deadline::parse_duration)]
    pub read_timeout: Option<Duration>,
    /// User name for the registry (password from --password-stdin or SLIPWAY_REGISTRY_PASSWORD).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// `slipway inspect`'s arguments.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Recipe file, or a bundled recipe name.
    pub recipe: String,
    /// Directory depth for the by-directory table.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// Rows per table.
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `slipway diff`'s arguments.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The first recipe (file or bundled name).
    pub a: String,
    /// The second recipe.
    pub b: String,
    /// List every file that differs (default: a summary and the 20 largest).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `slipway boot`'s arguments.
#[derive(Args, Debug)]
pub struct BootArgs {
    /// Output directory with disk.raw, or a host recipe.
    pub image: String,
    /// Provisioning config (TOML, see docs/provisioning.md), passed through fw_cfg;
    /// checked before QEMU starts.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Accelerator: tcg (default, works everywhere) or kvm (only when asked).
    #[arg(long, value_parser = accels(), default_value = "tcg")]
    pub accel: Accel,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Grow the disk the guest sees to this size (e.g. 4GiB); /var fills it.
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<String>,
    /// Work directory for the overlay, UEFI variables, sockets and console log.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Forward 127.0.0.1:HOST to the guest's port GUEST (repeatable), e.g. 8080:80.
    #[arg(long = "forward", value_name = "HOST:GUEST")]
    pub forwards: Vec<String>,
    /// Attach the test agent's virtio-serial port (agent.sock in --state).
    #[arg(long)]
    pub agent: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `slipway test`'s arguments.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Run only the tests whose name contains PATTERN.
    pub pattern: Option<String>,
    /// The directory of test definitions.
    #[arg(long, value_name = "DIR", default_value = "qemu")]
    pub dir: PathBuf,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// VMs at once. Keep 1 on 2 cores and in CI: parallel emulated guests stall.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Accelerator: tcg (default) or kvm (only when asked; never probed).
    #[arg(long, value_parser = accels(), default_value = "tcg")]
    pub accel: Accel,
    /// Where serial logs, built artifacts and copied-out files go.
    #[arg(long, value_name = "DIR", default_value = "out/test")]
    pub output: PathBuf,
    /// Keep each test's overlay, UEFI variables and drives in the output directory.
    #[arg(long)]
    pub keep: bool,
    /// Take the images from this fixture cache, or build them into it: the cache the
    /// cargo tests share (default `$SLIPWAY_FIXTURES`; without either, images are built
    /// into OUTPUT/artifacts/ for this run only).
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Build options for the images the tests need.
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `slipway iso`'s commands.
#[derive(Subcommand, Debug)]
pub enum IsoCommand {
    /// Put CONFIG into the ISO's embed area, in place (docs/bare-metal.md).
    ///
    /// CONFIG is a provisioning config (docs/provisioning.md) with an optional [install]
    /// table (target, wipe, after); it is checked with the node's own validator first.
    /// Only the embed area's bytes change; the ISO is replaced atomically. Exits 2 for a
    /// config that is invalid or larger than the area (65515 bytes).
    EmbedConfig(EmbedConfigArgs),
    /// Print the config embedded in ISO (nothing when the area is empty).
    ShowConfig(ShowConfigArgs),
}

/// `slipway iso embed-config`'s arguments.
#[derive(Args, Debug)]
pub struct EmbedConfigArgs {
    /// The ISO (`install.iso` of `slipway build --format iso`).
    pub iso: PathBuf,
    /// The provisioning config (TOML).
    pub config: PathBuf,
}

/// `slipway iso show-config`'s arguments.
#[derive(Args, Debug)]
pub struct ShowConfigArgs {
    /// The ISO.
    pub iso: PathBuf,
}

/// `slipway netboot`'s commands.
#[derive(Subcommand, Debug)]
pub enum NetbootCommand {
    /// Write a cpio archive holding CONFIG as slipway/config.toml, for one machine.
    ///
    /// CONFIG is checked with the node's own validator first. The archive is exactly as
    /// trusted as the boot server that delivers it (docs/security.md).
    ConfigCpio(ConfigCpioArgs),
}

/// `slipway netboot config-cpio`'s arguments.
#[derive(Args, Debug)]
pub struct ConfigCpioArgs {
    /// The provisioning config (TOML).
    pub config: PathBuf,
    /// The archive to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// `slipway doctor`'s arguments (`--recipes` checks the pins' end of life).
#[derive(Args, Debug, Default)]
pub struct DoctorArgs {
    /// Instead of the host check: list every pin of these recipe files or directories
    /// (default: the bundled recipes) with its upstream end of life and the days left;
    /// exits 1 when one is supported by no one.
    #[arg(long, num_args = 0.., value_name = "RECIPE")]
    pub recipes: Option<Vec<PathBuf>>,
    /// The day to check against (YYYY-MM-DD; default: today, UTC).
    #[arg(long, value_name = "DATE", requires = "recipes")]
    pub today: Option<String>,
    /// The end-of-life table to use (default: the bundled src/support.toml).
    #[arg(long, value_name = "FILE", requires = "recipes")]
    pub support_table: Option<PathBuf>,
}

/// A value parser for a library enum: clap checks the value against `values` (so a
/// wrong one gets clap's error listing them, and `--help` lists them with their help),
/// then the enum's `FromStr` turns it into the value.
fn choice<T>(values: impl IntoIterator<Item = PossibleValue>) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = anyhow::Error> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(values).try_map(|s| s.parse::<T>())
}

/// `--format`'s values.
fn formats() -> impl TypedValueParser<Value = Format> {
    choice(Format::ALL.into_iter().map(|f| {
        let v = PossibleValue::new(f.name()).help(format_help(f));
        match f {
            Format::Disk => v.alias("raw"),
            _ => v,
        }
    }))
}

/// The help `--help` shows for each output format.
fn format_help(f: Format) -> &'static str {
    match f {
        Format::Tar => "`rootfs.tar`: a reproducible tar of the tree",
        Format::Dir => "`rootfs/`: the tree as a directory",
        Format::Oci => "`oci/`: an OCI image layout directory (with the SBOM attached)",
        Format::OciArchive => {
            "`image.tar`: the OCI layout plus Docker's manifest.json, for `docker load`"
        }
        Format::Disk => {
            "Host images: `disk.raw` (GPT: ESP with the UKI, verified root, /var), `uki.efi`, \
             `vmlinuz`, `initrd` and `manifest.json`"
        }
        Format::Qcow2 => {
            "Host images: `disk.qcow2`, compressed (OpenStack, local QEMU; implies `disk`)"
        }
        Format::Vhd => "Host images: `disk.vhd`, a fixed VHD for Azure (implies `disk`)",
        Format::Vmdk => {
            "Host images: `disk.vmdk`, a stream-optimized VMDK for AWS and VMware (implies \
             `disk`)"
        }
        Format::Gce => {
            "Host images: `disk.tar.gz`, the GCE image tarball holding `disk.raw` (implies \
             `disk`)"
        }
        Format::Iso => {
            "Host images: `install.iso`, a UEFI hybrid installer ISO (CD, BMC virtual media, \
             USB stick; implies `disk`)"
        }
        Format::Netboot => {
            "Host images: `netboot/` (`uki.efi`, `root.cpio`, `boot.ipxe`): a diskless node \
             booted by iPXE (implies `disk`)"
        }
        Format::Update => {
            "Host images: `update/`, an OCI layout with the update payload (root, verity \
             tree, UKI) for `slipway push` and the node's agent (implies `disk`)"
        }
    }
}

/// `--compression`'s values.
fn compressions() -> impl TypedValueParser<Value = Compression> {
    choice(Compression::ALL.into_iter().map(|c| {
        PossibleValue::new(c.name()).help(match c {
            Compression::Gzip => {
                "gzip, level 9 (flate2 with miniz_oxide, pinned by Cargo.lock), zeroed header"
            }
            Compression::Zstd => "zstd, level 19, single-threaded, no checksum",
        })
    }))
}

/// `--accel`'s values.
fn accels() -> impl TypedValueParser<Value = Accel> {
    choice(Accel::ALL.into_iter().map(|a| {
        PossibleValue::new(a.name()).help(match a {
            Accel::Tcg => "Emulated (works everywhere; slow)",
            Accel::Kvm => "Hardware virtualisation (/dev/kvm); only when asked",
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every name `--help` lists parses, through the enum's `FromStr`, to the value with
    /// that name; a wrong name is refused naming the valid ones.
    #[test]
    fn the_listed_values_parse_to_themselves() {
        let cmd = Cli::command();
        let names = |p: Vec<PossibleValue>| -> Vec<String> {
            p.iter().map(|v| v.get_name().to_string()).collect()
        };
        let listed = names(formats().possible_values().expect("listed").collect());
        assert_eq!(listed.len(), Format::ALL.len());
        for n in &listed {
            let f: Format = formats()
                .parse_ref(&cmd, None, std::ffi::OsStr::new(n))
                .expect("a listed format parses");
            assert_eq!(f.name(), n);
        }
        let raw = formats().parse_ref(&cmd, None, std::ffi::OsStr::new("raw"));
        assert_eq!(raw.ok(), Some(Format::Disk));
        let bad = formats().parse_ref(&cmd, None, std::ffi::OsStr::new("rawr"));
        assert!(bad.unwrap_err().to_string().contains("oci-archive"));
        for n in names(accels().possible_values().expect("listed").collect()) {
            assert_eq!(n.parse::<Accel>().expect("parses").name(), n);
        }
        for n in names(compressions().possible_values().expect("listed").collect()) {
            assert_eq!(n.parse::<Compression>().expect("parses").name(), n);
        }
        let e = "lz4".parse::<Compression>().unwrap_err().to_string();
        assert!(e.contains("gzip") && e.contains("lz4"), "{e}");
    }
}
