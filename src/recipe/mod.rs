//! Recipes: the declarative TOML description of an image (`docs/recipes.md`).
//!
//! Consumes a recipe file (and the files it `extends`), produces a checked [`Recipe`].
//! Parsing is two steps, as the house style asks: serde into [`raw::RawRecipe`] with unknown
//! keys rejected, then validation and merging into [`Recipe`]. Every error names the file,
//! the key path and the line, and says what was expected.

pub mod check;
pub mod find;
pub mod mirror;
pub mod origin;
pub mod raw;
pub mod spans;
mod validate;
pub mod variant;

use anyhow::{bail, Context, Result};
pub use origin::Origin;
use raw::{EntryType, ImageKind, RawOci, RawRecipe};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use variant::Variant;

/// The schema version this slipway reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The release used when a recipe names none: Debian 13, the current stable.
pub const DEFAULT_RELEASE: &str = "trixie";

/// Where the packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianSource {
    /// Codename, e.g. "trixie".
    pub release: String,
    /// Suites, e.g. trixie, trixie-updates, trixie-security.
    pub suites: Vec<String>,
    /// Archive components, e.g. main.
    pub components: Vec<String>,
    /// Debian architecture, e.g. amd64.
    pub architecture: String,
    /// The archive mirror URI (None: read from the host's apt sources when needed).
    pub mirror: Option<String>,
    /// The security mirror URI (None: from the host, or beside the mirror).
    pub security_mirror: Option<String>,
}

/// A pinned non-Debian file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it is fetched from (http, https or file).
    pub url: String,
    /// Its sha256 (of the downloaded file, before any member extraction).
    pub sha256: String,
    /// Absolute destination path in the image.
    pub dest: String,
    /// File mode in the image.
    pub mode: u32,
    /// A member of a tar(.gz/.xz/.zst) archive to install instead of the file itself.
    pub member: Option<String>,
    /// Where the recipe declares it (`artifact[N]`).
    pub at: Origin,
}

/// A base image the host image carries and imports into containerd at boot
/// (`[[preload]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    /// The base recipe file (absolute).
    pub recipe: PathBuf,
    /// The image name without its tag, e.g. `localhost/slipway/pause`.
    pub base_name: String,
    /// The containerd namespace.
    pub namespace: String,
    /// Where the recipe declares it (`preload[N]`).
    pub at: Origin,
}

/// A user the recipe declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub gecos: String,
    /// Where the recipe declares it (`user[N]`).
    pub at: Origin,
}

/// A group the recipe declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
    /// Where the recipe declares it (`group[N]`).
    pub at: Origin,
}

/// A file, directory or symlink the recipe adds to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub path: String,
    pub kind: EntryType,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub content: Option<String>,
    pub target: Option<String>,
    /// Where the recipe declares it (`entry[N]`).
    pub at: Origin,
}

/// The Debian architectures a recipe can name.
pub const ARCHITECTURES: &[&str] = &[
    "amd64", "arm64", "armhf", "i386", "ppc64el", "s390x", "riscv64",
];

/// `[applets]`: link every applet a multi-call binary lists (`--list-full`) to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applets {
    /// The binary, as an absolute image path ("/usr/bin/busybox").
    pub binary: String,
    /// Applet paths (absolute) that get no link.
    pub skip: Vec<String>,
    /// Where the recipe declares it (`applets`).
    pub at: Origin,
}

/// A checked recipe, with everything it extends merged in.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file.
    pub path: PathBuf,
    /// Image name.
    pub name: String,
    /// What it builds.
    pub kind: ImageKind,
    /// One line saying what the image is for.
    pub description: String,
    /// Image version (for os-release IMAGE_VERSION and OCI labels).
    pub version: String,
    /// Package source.
    pub debian: DebianSource,
    /// The architecture the recipe file names (its lock file has no suffix).
    pub declared_architecture: String,
    /// Packages asked for (this recipe and its parents, in order, without duplicates).
    pub include: Vec<String>,
    /// Packages cut from the closure.
    pub exclude: Vec<String>,
    /// Whether Recommends are followed.
    pub recommends: bool,
    /// Path globs dropped from the tree.
    pub drop: Vec<String>,
    /// Path globs kept even when a drop glob matches.
    pub keep: Vec<String>,
    /// Overlay directories (absolute), applied in order after the packages.
    pub overlays: Vec<PathBuf>,
    /// Where each overlay is declared (`paths.overlays[N]`), in the order of `overlays`.
    pub overlay_at: Vec<Origin>,
    /// Image paths (relative, merged /usr) whose overlay files may keep setuid or setgid
    /// bits (`paths.allow-setuid`); any other such file is refused.
    pub allow_setuid: Vec<String>,
    /// Pinned non-Debian files.
    pub artifacts: Vec<Artifact>,
    /// Users and groups the recipe declares.
    pub users: Vec<UserSpec>,
    pub groups: Vec<GroupSpec>,
    /// Entries the recipe adds.
    pub entries: Vec<EntrySpec>,
    /// update-alternatives choices: name -> path.
    pub alternatives: BTreeMap<String, String>,
    /// Where each alternatives choice is declared.
    pub alternatives_at: BTreeMap<String, Origin>,
    /// systemd units to enable and disable beyond what presets say.
    pub enable: Vec<String>,
    pub disable: Vec<String>,
    /// Where each unit of `enable` is declared.
    pub enable_at: BTreeMap<String, Origin>,
    /// systemd units masked (`/etc/systemd/system/UNIT -> /dev/null`), and so also
    /// disabled.
    pub mask: Vec<String>,
    /// Applet links of a multi-call binary (busybox), added after the path globs.
    pub applets: Option<Applets>,
    /// Base images built with a host image and imported into its containerd at boot.
    pub preload: Vec<Preload>,
    /// `[bundle] node`: slipway-node goes into the image.
    pub bundle_node: bool,
    /// OCI image configuration (base images).
    pub oci: RawOci,
    /// The recipe this one extends, if any.
    pub parent: Option<Box<Recipe>>,
    /// `[kernel]`: modules to keep (None: leave the kernel's modules alone).
    pub kernel: Option<KernelSpec>,
    /// `[disk]`: the host image's disk layout (merged with the parent's, key by key).
    pub disk: raw::RawDisk,
    /// Where `[kernel]` is declared (for module errors found at assembly).
    pub kernel_at: Option<Origin>,
    /// `[secure-boot]` (or `slipway build --sign-key/--sign-cert`): the signing key.
    pub secure_boot: Option<SecureBoot>,
    /// Key positions in this recipe's own file.
    pub spans: Arc<spans::Spans>,
    /// The options it was loaded with (recipes it names, such as `[[preload]]` base
    /// recipes, are loaded with the same ones).
    pub load: LoadOptions,
}

/// Where the Secure Boot signing key and certificate come from: each a PEM file path or
/// `env:NAME` (an environment variable holding the PEM text).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecureBoot {
    /// The private key.
    pub key: String,
    /// The certificate.
    pub cert: String,
    /// The environment variable holding the key's passphrase, if it is encrypted.
    pub passphrase_env: Option<String>,
    /// `microsoft-uefi-ca`: the enrollment files' db also holds Microsoft's UEFI CAs.
    pub microsoft_uefi_ca: bool,
}

/// How a recipe is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--allow-host-paths`: overlays and `file://` artifacts may lie outside the
    /// directory of the recipe file that names them.
    pub allow_host_paths: bool,
}

/// The `[kernel]` table, merged with the parent's (modules appended, package overridden).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelSpec {
    /// Feature or module names, without duplicates, in recipe order.
    pub modules: Vec<String>,
    /// Where each of `modules` is named (`kernel.modules` of the file that named it
    /// first: a parent's module is the parent's to explain).
    pub module_at: Vec<Origin>,
    /// The kernel package the recipe names (also in `include`).
    pub package: Option<String>,
}

impl Recipe {
    /// Loads and checks `path` and every recipe it extends.
    pub fn load(path: &Path) -> Result<Recipe> {
        Self::load_with(path, LoadOptions::default())
    }

    /// [`Recipe::load`] with options. Every error it returns exits 2 (bad input).
    pub fn load_with(path: &Path, opts: LoadOptions) -> Result<Recipe> {
        load_chain(path, &mut Vec::new(), opts)
            .map_err(|e| crate::exit::with_code(crate::exit::Code::BadInput, e))
    }

    /// Where `key` is in this recipe's own file (for errors found after loading).
    pub fn at(&self, key: &str) -> Origin {
        Origin::new(&self.display(), key, self.spans.clone())
    }

    /// Where `key` was written: in this recipe's file, or else in the nearest recipe it
    /// extends that writes it (a value a child inherits is its parent's to explain). A
    /// key no file of the chain writes is placed in this recipe's file.
    pub fn origin_of(&self, key: &str) -> Origin {
        let mut r = self;
        loop {
            if r.spans.has(key) {
                return r.at(key);
            }
            match &r.parent {
                Some(p) => r = p,
                None => return self.at(key),
            }
        }
    }

    /// The lock file beside the recipe: `NAME.toml.lock` for the architecture the recipe
    /// names, `NAME.toml.ARCH.lock` for another one (see [`Recipe::for_arch`]).
    pub fn lock_path(&self) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        if self.debian.architecture != self.declared_architecture {
            s.push(".");
            s.push(&self.debian.architecture);
        }
        s.push(".lock");
        PathBuf::from(s)
    }

    /// The same recipe (and the recipes it extends) for another Debian architecture, with
    /// its own lock file.
    pub fn for_arch(&self, arch: &str) -> Result<Recipe> {
        if !ARCHITECTURES.contains(&arch) {
            bail!(
                "\"{arch}\" is not a Debian architecture (one of {})",
                ARCHITECTURES.join(", ")
            );
        }
        let mut r = self.clone();
        r.debian.architecture = arch.to_string();
        r.parent = match &self.parent {
            Some(p) => Some(Box::new(p.for_arch(arch)?)),
            None => None,
        };
        Ok(r)
    }

    /// A short display name: the path as given.
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }
}

/// Parses the raw recipe, turning serde errors into `file: key: message (line N)`.
pub fn parse_raw(path: &Path, text: &str) -> Result<RawRecipe> {
    parse_toml(path, text)
}

/// Parses any slipway TOML file (recipes, locks) into `T`; an error names the file, the
/// key path and the line, and exits 2.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| format!(" (line {})", spans::line_of(text, s.start)))
            .unwrap_or_default();
        let key = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!("{key}: ")
        };
        crate::exit::err(
            crate::exit::Code::BadInput,
            format!(
                "{}: {key}{}{line}",
                path.display(),
                inner.message().trim_end()
            ),
        )
    })
}

fn load_chain(path: &Path, seen: &mut Vec<PathBuf>, opts: LoadOptions) -> Result<Recipe> {
    let canon = path
        .canonicalize()
        .with_context(|| format!("{}: cannot read recipe", path.display()))?;
    if seen.contains(&canon) {
        bail!(
            "{}: extends: recipes extend each other in a cycle",
            path.display()
        );
    }
    seen.push(canon.clone());
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read recipe", path.display()))?;
    let raw = parse_raw(path, &text)?;
    let here = validate::Here::new(path, &canon, &text, opts);
    match raw.schema_version {
        Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(here.bad(
                "schema-version",
                format!("{v} is not supported (this slipway reads {SCHEMA_VERSION})"),
            ))
        }
        None => {
            // A missing key has no line of its own: it belongs at the top.
            return Err(crate::exit::err(
                crate::exit::Code::BadInput,
                format!(
                    "{}: schema-version: missing (add `schema-version = {SCHEMA_VERSION}` at the top, line 1)",
                    path.display()
                ),
            ));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let parent = match &raw.extends {
        Some(p) => Some(Box::new(
            load_chain(&dir.join(p), seen, opts)
                .with_context(|| here.at("extends").message(format!("\"{p}\"")))?,
        )),
        None => None,
    };
    validate::recipe(&here, raw, parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn err(text: &str) -> String {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "r.toml", text);
        format!("{:#}", Recipe::load(&p).unwrap_err())
    }

    #[test]
    fn defaults_to_trixie_with_updates_and_security() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "r.toml",
            "schema-version = 1\n[packages]\ninclude = [\"busybox-static\"]\n",
        );
        let r = Recipe::load(&p).unwrap();
        assert_eq!(r.debian.release, "trixie");
        assert_eq!(
            r.debian.suites,
            ["trixie", "trixie-updates", "trixie-security"]
        );
        assert_eq!(r.name, "r");
    }

    #[test]
    fn secure_boot_paths_resolve_and_children_inherit() {
        let d = tempfile::tempdir().unwrap();
        let head = "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n";
        let p = write(
            d.path(),
            "r.toml",
            &format!(
                "{head}[secure-boot]\nkey = \"env:SB_KEY\"\ncert = \"keys/sb.crt\"\npassphrase-env = \"SB_PASS\"\n"
            ),
        );
        let sb = Recipe::load(&p).unwrap().secure_boot.unwrap();
        assert_eq!(sb.key, "env:SB_KEY");
        assert_eq!(sb.cert, d.path().join("keys/sb.crt").display().to_string());
        assert_eq!(sb.passphrase_env.as_deref(), Some("SB_PASS"));
        assert!(!sb.microsoft_uefi_ca);
        let c = write(
            d.path(),
            "c.toml",
            "schema-version = 1\nextends = \"r.toml\"\n",
        );
        assert_eq!(Recipe::load(&c).unwrap().secure_boot, Some(sb));
        let e = err(&format!(
            "{head}[secure-boot]\nkey = \"env:\"\ncert = \"c.pem\"\n"
        ));
        assert!(e.contains("r.toml: secure-boot.key:"), "{e}");
        let e = err(&format!("{head}[secure-boot]\nkey = \"k.pem\"\n"));
        assert!(e.contains("cert"), "{e}");
    }

    #[test]
    fn disk_slots_and_tries_have_defaults_bounds_and_inherit() {
        let d = tempfile::tempdir().unwrap();
        let head = "schema-version = 1\n[image]\nkind = \"host\"\nversion = \"2~rc1\"\n[packages]\ninclude = [\"a1\"]\n";
        let p = write(d.path(), "r.toml", head);
        let r = Recipe::load(&p).unwrap();
        assert_eq!((r.disk.slot_count(), r.disk.boot_tries()), (2, 3));
        let p = write(
            d.path(),
            "r.toml",
            &format!("{head}[disk]\nslots = 1\ntries = 9\nslot-size = \"2GiB\"\n"),
        );
        let r = Recipe::load(&p).unwrap();
        assert_eq!((r.disk.slot_count(), r.disk.boot_tries()), (1, 9));
        let c = write(
            d.path(),
            "c.toml",
            "schema-version = 1\nextends = \"r.toml\"\n[disk]\ntries = 1\n",
        );
        let c = Recipe::load(&c).unwrap();
        assert_eq!((c.disk.slot_count(), c.disk.boot_tries()), (1, 1));
        assert_eq!(c.disk.slot_size.unwrap().0, 2 << 30);
        for (disk, want) in [
            ("slots = 3", "disk.slots: 3 is not a slot count"),
            ("slots = 0", "disk.slots: 0 is not a slot count"),
            (
                "tries = 0",
                "disk.tries: 0 is not a number of boot attempts (1 to 9)",
            ),
            ("tries = 10", "disk.tries: 10 is not a number"),
            (
                "slot-size = \"1536KiB\"",
                "disk.slot-size: 1572864 bytes is not a whole number of MiB",
            ),
        ] {
            let e = err(&format!("{head}[disk]\n{disk}\n"));
            assert!(e.contains(want) && e.contains("(line 8)"), "{disk}: {e}");
        }
        // A `+` reads as a boot counter in a two-slot disk's UKI name; one slot takes it.
        let plus = head.replace("2~rc1", "2+build1");
        let e = err(&plus);
        assert!(e.contains("image.version: \"2+build1\" has a `+`"), "{e}");
        let p = write(d.path(), "r.toml", &format!("{plus}[disk]\nslots = 1\n"));
        Recipe::load(&p).unwrap();
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let e = err("schema-version = 1\n[packages]\ninclude = [\"a1\"]\nincluded = [\"b\"]\n");
        assert!(
            e.contains("r.toml: packages.included: unknown field `included`"),
            "{e}"
        );
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err("schema-version = 1\n[packages]\ninclude = \"busybox\"\n");
        assert!(e.contains("packages.include"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn bad_values_explain_what_was_expected() {
        let e = err(
            "schema-version = 1\n[debian]\nrelease = \"jessie\"\n[packages]\ninclude = [\"a1\"]\n",
        );
        assert!(e.contains("debian.release") && e.contains("trixie"), "{e}");
        let e = err("schema-version = 1\n[packages]\ninclude = [\"Bad_Name\"]\n");
        assert!(
            e.contains("packages.include[0]") && e.contains("not a Debian package name"),
            "{e}"
        );
        let e = err("schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[[artifact]]\nurl = \"http://x/y\"\nsha256 = \"abc\"\ndest = \"/usr/bin/y\"\n");
        assert!(
            e.contains("artifact[0].sha256") && e.contains("64 hex"),
            "{e}"
        );
        let e = err("[packages]\ninclude = [\"a1\"]\n");
        assert!(e.contains("schema-version: missing"), "{e}");
    }

    #[test]
    fn applets_are_checked_and_inherited() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "bb.toml", "schema-version = 1\n[packages]\ninclude = [\"busybox-static\"]\n[applets]\nbinary = \"/bin/busybox\"\nskip = [\"/linuxrc\"]\n");
        let c = write(
            d.path(),
            "child.toml",
            "schema-version = 1\nextends = \"bb.toml\"\n",
        );
        let a = Recipe::load(&c).unwrap().applets.unwrap();
        assert_eq!(a.binary, "/bin/busybox");
        assert_eq!(a.skip, ["/linuxrc"]);
        let e = err(
            "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[applets]\nbinary = \"busybox\"\n",
        );
        assert!(
            e.contains("applets.binary") && e.contains("absolute"),
            "{e}"
        );
        let e = err("schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[applets]\nbinary = \"/bin/busybox\"\nlinks = []\n");
        assert!(e.contains("applets.links: unknown field"), "{e}");
    }

    #[test]
    fn kernel_table_merges_and_checks_syntax() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "schema-version = 1\n[kernel]\npackage = \"linux-image-cloud-amd64\"\nmodules = [\"storage\", \"root\"]\n");
        let c = write(d.path(), "child.toml", "schema-version = 1\nextends = \"base.toml\"\n[packages]\ninclude = [\"busybox-static\"]\n[kernel]\nmodules = [\"root\", \"xt_MASQUERADE\", \"virtio-blk\"]\n");
        let r = Recipe::load(&c).unwrap();
        let k = r.kernel.unwrap();
        assert_eq!(
            k.modules,
            ["storage", "root", "xt_MASQUERADE", "virtio-blk"]
        );
        assert_eq!(k.package.as_deref(), Some("linux-image-cloud-amd64"));
        let files: Vec<&str> = k.module_at.iter().map(|a| a.file()).collect();
        assert!(
            files[1].ends_with("base.toml") && files[2].ends_with("child.toml"),
            "{files:?}"
        );
        assert_eq!(r.include, ["linux-image-cloud-amd64", "busybox-static"]);
        let e = err("schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[kernel]\nmodules = [\"storage\", \"bad name\"]\n");
        assert!(
            e.contains("kernel.modules[1]") && e.contains("not a module or feature name"),
            "{e}"
        );
        let e = err("schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[kernel]\nmodule = [\"storage\"]\n");
        assert!(e.contains("kernel.module: unknown field"), "{e}");
    }

    #[test]
    fn systemd_mask_merges_and_checks_unit_names() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "schema-version = 1\n[packages]\ninclude = [\"systemd\"]\n[systemd]\nmask = [\"getty@.service\"]\n");
        let c = write(d.path(), "child.toml", "schema-version = 1\nextends = \"base.toml\"\n[systemd]\nmask = [\"ldconfig.service\", \"getty@.service\"]\n");
        let r = Recipe::load(&c).unwrap();
        assert_eq!(r.mask, ["getty@.service", "ldconfig.service"]);
        let e = err(
            "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[systemd]\nmask = [\"getty\"]\n",
        );
        assert!(
            e.contains("systemd.mask[0]") && e.contains("not a unit name"),
            "{e}"
        );
    }

    #[test]
    fn extends_merges_and_detects_cycles() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "schema-version = 1\n[debian]\nrelease = \"bookworm\"\n[packages]\ninclude = [\"ca-certificates\"]\nexclude = [\"openssl\"]\n");
        let c = write(d.path(), "child.toml", "schema-version = 1\nextends = \"base.toml\"\n[packages]\ninclude = [\"busybox-static\"]\n");
        let r = Recipe::load(&c).unwrap();
        assert_eq!(r.include, ["ca-certificates", "busybox-static"]);
        assert_eq!(r.exclude, ["openssl"]);
        assert_eq!(r.debian.release, "bookworm");
        assert!(r.parent.is_some());
        write(
            d.path(),
            "a.toml",
            "schema-version = 1\nextends = \"b.toml\"\n[packages]\ninclude = [\"a1\"]\n",
        );
        let b = write(
            d.path(),
            "b.toml",
            "schema-version = 1\nextends = \"a.toml\"\n[packages]\ninclude = [\"a1\"]\n",
        );
        let e = format!("{:#}", Recipe::load(&b).unwrap_err());
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn a_child_excludes_what_its_parent_includes() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "schema-version = 1\n[packages]\ninclude = [\"systemd\", \"containerd=1.7.24~ds1-10\", \"runc\"]\nexclude = [\"dbus\"]\n");
        let c = write(d.path(), "child.toml", "schema-version = 1\nextends = \"base.toml\"\n[packages]\ninclude = [\"conntrack\"]\nexclude = [\"containerd\", \"runc\"]\n");
        let r = Recipe::load(&c).unwrap();
        assert_eq!(r.include, ["systemd", "conntrack"]);
        assert_eq!(r.exclude, ["dbus", "containerd", "runc"]);
        // The parent itself is unchanged.
        let p = r.parent.as_ref().unwrap();
        assert_eq!(p.include, ["systemd", "containerd=1.7.24~ds1-10", "runc"]);
        // One recipe including and excluding the same name is still an error, naming
        // the file and the key.
        let bad = write(d.path(), "bad.toml", "schema-version = 1\nextends = \"base.toml\"\n[packages]\ninclude = [\"runc=1.3.0\"]\nexclude = [\"socat\", \"runc\"]\n");
        let e = format!("{:#}", Recipe::load(&bad).unwrap_err());
        assert!(
            e.contains(
                "bad.toml: packages.exclude[1]: \"runc\" is also in this recipe's packages.include"
            ),
            "{e}"
        );
        // A child including what its parent excludes is still refused.
        let back = write(
            d.path(),
            "back.toml",
            "schema-version = 1\nextends = \"base.toml\"\n[packages]\ninclude = [\"dbus\"]\n",
        );
        let e = format!("{:#}", Recipe::load(&back).unwrap_err());
        assert!(
            e.contains("back.toml: packages.exclude: \"dbus\" is also in packages.include"),
            "{e}"
        );
    }

    #[test]
    fn origins_name_the_file_of_the_chain_that_wrote_the_key() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "p.toml", "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[oci]\nuser = \"app\"\nworking-dir = \"/srv\"\n");
        let c = write(
            d.path(),
            "c.toml",
            "schema-version = 1\nextends = \"p.toml\"\n[oci]\nuser = \"other\"\n",
        );
        let r = Recipe::load(&c).unwrap();
        let at = r.origin_of("oci.working-dir");
        assert!(at.file().ends_with("p.toml"), "{at}");
        assert_eq!(at.line(), Some(6));
        let at = r.origin_of("oci.user");
        assert!(at.file().ends_with("c.toml"), "{at}");
        assert_eq!(at.line(), Some(4));
        // Written nowhere: this recipe's file, at the nearest enclosing key it writes.
        let at = r.origin_of("oci.cmd[0]");
        assert!(at.file().ends_with("c.toml"), "{at}");
        assert_eq!(at.line(), Some(3));
        assert_eq!(r.load, LoadOptions::default());
    }

    #[test]
    fn host_paths_are_confined_to_the_declaring_recipes_directory() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base");
        std::fs::create_dir_all(base.join("rootfs")).unwrap();
        std::fs::create_dir_all(d.path().join("shared")).unwrap();
        write(&base, "p.toml", "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[paths]\noverlays = [\"rootfs\"]\n");
        // Inherited overlays resolve against the parent's file.
        let c = write(
            d.path(),
            "c.toml",
            "schema-version = 1\nextends = \"base/p.toml\"\n",
        );
        let r = Recipe::load(&c).unwrap();
        assert_eq!(r.overlays, [base.join("rootfs").canonicalize().unwrap()]);
        assert_eq!(
            r.overlay_at[0].file(),
            base.join("p.toml").display().to_string()
        );
        // A parent reaching into its parent directory is refused, even though that
        // directory holds the child.
        write(&base, "q.toml", "schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[paths]\noverlays = [\"../shared\"]\n");
        let c = write(
            d.path(),
            "c2.toml",
            "schema-version = 1\nextends = \"base/q.toml\"\n",
        );
        let e = Recipe::load(&c).unwrap_err();
        let m = format!("{e:#}");
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
        assert!(
            m.contains("q.toml: paths.overlays[0]") && m.contains("(line 5)"),
            "{m}"
        );
        let opts = LoadOptions {
            allow_host_paths: true,
        };
        Recipe::load_with(&c, opts).unwrap();
        // A relative file:// URL is made absolute against the recipe's directory.
        let a = write(d.path(), "a.toml", &format!("schema-version = 1\n[packages]\ninclude = [\"a1\"]\n[[artifact]]\nurl = \"file://shared/x\"\nsha256 = \"{}\"\ndest = \"/x\"\n", "0".repeat(64)));
        let r = Recipe::load(&a).unwrap();
        let want = d.path().canonicalize().unwrap().join("shared/x");
        assert_eq!(r.artifacts[0].url, format!("file://{}", want.display()));
    }
}
