//! Recipes: the declarative TOML description of an image (`docs/recipes.md`).
//!
//! Consumes a recipe file (and the files it `extends`), produces a checked [`Recipe`].
//! Parsing is two steps, as the house style asks: serde into [`raw::RawRecipe`] with unknown
//! keys rejected, then validation and merging into [`Recipe`]. Every error names the file,
//! the key path and the line, and says what was expected.

pub mod mirror;
pub mod raw;

use anyhow::{bail, Context, Result};
use raw::{EntryType, ImageKind, RawOci, RawRecipe};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
}

/// A group the recipe declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
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
    /// Pinned non-Debian files.
    pub artifacts: Vec<Artifact>,
    /// Users and groups the recipe declares.
    pub users: Vec<UserSpec>,
    pub groups: Vec<GroupSpec>,
    /// Entries the recipe adds.
    pub entries: Vec<EntrySpec>,
    /// update-alternatives choices: name -> path.
    pub alternatives: BTreeMap<String, String>,
    /// systemd units to enable and disable beyond what presets say.
    pub enable: Vec<String>,
    pub disable: Vec<String>,
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
}

/// The `[kernel]` table, merged with the parent's (modules appended, package overridden).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelSpec {
    /// Feature or module names, without duplicates, in recipe order.
    pub modules: Vec<String>,
    /// The kernel package the recipe names (also in `include`).
    pub package: Option<String>,
}

impl Recipe {
    /// Loads and checks `path` and every recipe it extends.
    pub fn load(path: &Path) -> Result<Recipe> {
        load_chain(path, &mut Vec::new())
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

/// The line (1-based) of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Parses the raw recipe, turning serde errors into `file: key: message (line N)`.
pub fn parse_raw(path: &Path, text: &str) -> Result<RawRecipe> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| format!(" (line {})", line_of(text, s.start)))
            .unwrap_or_default();
        let key = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!("{key}: ")
        };
        anyhow::anyhow!(
            "{}: {key}{}{line}",
            path.display(),
            inner.message().trim_end()
        )
    })
}

fn load_chain(path: &Path, seen: &mut Vec<PathBuf>) -> Result<Recipe> {
    let canon = path
        .canonicalize()
        .with_context(|| format!("{}: cannot read recipe", path.display()))?;
    if seen.contains(&canon) {
        bail!(
            "{}: extends: recipes extend each other in a cycle",
            path.display()
        );
    }
    seen.push(canon);
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read recipe", path.display()))?;
    let raw = parse_raw(path, &text)?;
    let f = path.display().to_string();
    match raw.schema_version {
        Some(SCHEMA_VERSION) => {}
        Some(v) => {
            bail!("{f}: schema-version: {v} is not supported (this slipway reads {SCHEMA_VERSION})")
        }
        None => bail!(
            "{f}: schema-version: missing (add `schema-version = {SCHEMA_VERSION}` at the top)"
        ),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let parent = match &raw.extends {
        Some(p) => Some(Box::new(
            load_chain(&dir.join(p), seen).with_context(|| format!("{f}: extends: \"{p}\""))?,
        )),
        None => None,
    };
    validate(path, raw, parent)
}

fn abs_path(f: &str, key: &str, p: &str) -> Result<String> {
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
        bail!("{f}: {key}: \"{p}\" must be an absolute path inside the image without `..`");
    }
    Ok(p.trim_end_matches('/').to_string())
}

/// A systemd unit file name (systemd.unit(5)): a name of letters, digits and `:-_.@\\`
/// with one of the unit-type suffixes.
fn is_unit_name(u: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".timer",
        ".path",
        ".mount",
        ".automount",
        ".swap",
        ".slice",
        ".scope",
        ".device",
    ];
    SUFFIXES.iter().any(|s| u.len() > s.len() && u.ends_with(s))
        && u.len() <= 255
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b))
}

fn validate(path: &Path, raw: RawRecipe, parent: Option<Box<Recipe>>) -> Result<Recipe> {
    let f = path.display().to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let p = parent.as_deref();
    let image = raw.image;
    let name = match image.as_ref().and_then(|i| i.name.clone()) {
        Some(n) => n,
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("{f}: image.name: \"{name}\" is not a valid image name (letters, digits, - _ .)");
    }
    let kind = image
        .as_ref()
        .and_then(|i| i.kind)
        .or(p.map(|p| p.kind))
        .unwrap_or(ImageKind::Base);
    let description = image
        .as_ref()
        .and_then(|i| i.description.clone())
        .unwrap_or_default();
    let version = image
        .as_ref()
        .and_then(|i| i.version.clone())
        .or(p.map(|p| p.version.clone()))
        .unwrap_or_else(|| "0".into());

    let debian = match (raw.debian, p) {
        (None, Some(p)) => p.debian.clone(),
        (d, parent) => {
            let d = d.unwrap_or(raw::RawDebian {
                release: None,
                suites: None,
                components: None,
                architecture: None,
                mirror: None,
                security_mirror: None,
            });
            let base = parent.map(|p| p.debian.clone());
            let release = d
                .release
                .map(|r| r.0)
                .or(base.as_ref().map(|b| b.release.clone()))
                .unwrap_or_else(|| DEFAULT_RELEASE.into());
            let suites = d.suites.unwrap_or_else(|| {
                vec![
                    release.clone(),
                    format!("{release}-updates"),
                    format!("{release}-security"),
                ]
            });
            for s in &suites {
                if s != &release && !s.starts_with(&format!("{release}-")) {
                    bail!("{f}: debian.suites: \"{s}\" is not a suite of release {release} (expected {release}, {release}-updates or {release}-security)");
                }
            }
            let components = d.components.unwrap_or_else(|| vec!["main".into()]);
            let architecture = d.architecture.unwrap_or_else(|| "amd64".into());
            if !ARCHITECTURES.contains(&architecture.as_str()) {
                bail!("{f}: debian.architecture: \"{architecture}\" is not a Debian architecture (e.g. amd64, arm64)");
            }
            let src = DebianSource {
                release,
                suites,
                components,
                architecture,
                mirror: d.mirror.or(base.as_ref().and_then(|b| b.mirror.clone())),
                security_mirror: d
                    .security_mirror
                    .or(base.as_ref().and_then(|b| b.security_mirror.clone())),
            };
            if let Some(b) = &base {
                if b.release != src.release || b.architecture != src.architecture {
                    bail!(
                        "{f}: debian: release/architecture {}/{} differ from the recipe it extends ({}/{}); a child inherits its parent's lock",
                        src.release, src.architecture, b.release, b.architecture
                    );
                }
            }
            src
        }
    };

    let mut include: Vec<String> = p.map(|p| p.include.clone()).unwrap_or_default();
    let mut exclude: Vec<String> = p.map(|p| p.exclude.clone()).unwrap_or_default();
    let mut recommends = p.is_some_and(|p| p.recommends);
    if let Some(pk) = raw.packages {
        // A child's exclude takes back what its parent includes (k8s-node-upstream.toml
        // drops containerd-host's Debian containerd and runc for upstream's binaries);
        // one recipe both including and excluding a name stays an error.
        for (i, x) in pk.exclude.iter().enumerate() {
            let name = |s: &str| s.split('=').next().map(str::to_string);
            if pk.include.iter().any(|n| name(&n.0) == name(&x.0)) {
                bail!(
                    "{f}: packages.exclude[{i}]: \"{}\" is also in this recipe's packages.include",
                    x.0
                );
            }
            include.retain(|n| name(n) != name(&x.0));
        }
        for n in pk.include {
            if !include.contains(&n.0) {
                include.push(n.0);
            }
        }
        for n in pk.exclude {
            if !exclude.contains(&n.0) {
                exclude.push(n.0);
            }
        }
        recommends = pk.recommends.unwrap_or(recommends);
    }
    let mut kernel = p.and_then(|p| p.kernel.clone());
    if let Some(k) = raw.kernel {
        let spec = kernel.get_or_insert_with(KernelSpec::default);
        for m in k.modules {
            if !spec.modules.contains(&m.0) {
                spec.modules.push(m.0);
            }
        }
        if let Some(pkg) = k.package {
            if !include.contains(&pkg.0) {
                include.push(pkg.0.clone());
            }
            spec.package = Some(pkg.0);
        }
    }
    let mut disk = p.map(|p| p.disk.clone()).unwrap_or_default();
    if let Some(d) = raw.disk {
        disk.esp_size = d.esp_size.or(disk.esp_size);
        disk.var_size = d.var_size.or(disk.var_size);
        disk.root_fs = d.root_fs.or(disk.root_fs);
        disk.cmdline.extend(d.cmdline);
    }
    if include.is_empty() {
        bail!("{f}: packages.include: empty (a recipe needs at least one package)");
    }
    for x in &exclude {
        if include
            .iter()
            .any(|i| i.split('=').next() == Some(x.as_str()))
        {
            bail!("{f}: packages.exclude: \"{x}\" is also in packages.include");
        }
    }

    let mut drop = p.map(|p| p.drop.clone()).unwrap_or_default();
    let mut keep = p.map(|p| p.keep.clone()).unwrap_or_default();
    let mut overlays = p.map(|p| p.overlays.clone()).unwrap_or_default();
    if let Some(paths) = raw.paths {
        for (i, g) in paths.drop.iter().chain(paths.keep.iter()).enumerate() {
            glob::Pattern::new(g.trim_start_matches('/')).map_err(|e| {
                anyhow::anyhow!("{f}: paths.drop/keep[{i}]: \"{g}\" is not a valid glob: {e}")
            })?;
        }
        drop.extend(
            paths
                .drop
                .into_iter()
                .map(|g| g.trim_start_matches('/').to_string()),
        );
        keep.extend(
            paths
                .keep
                .into_iter()
                .map(|g| g.trim_start_matches('/').to_string()),
        );
        for o in paths.overlays {
            let d = dir.join(&o);
            if !d.is_dir() {
                bail!(
                    "{f}: paths.overlays: \"{o}\" is not a directory (looked at {})",
                    d.display()
                );
            }
            overlays.push(
                d.canonicalize()
                    .with_context(|| format!("{f}: paths.overlays: \"{o}\""))?,
            );
        }
    }

    let mut artifacts = p.map(|p| p.artifacts.clone()).unwrap_or_default();
    for (i, a) in raw.artifact.into_iter().enumerate() {
        let key = format!("artifact[{i}]");
        let scheme_ok = ["http://", "https://", "file://"]
            .iter()
            .any(|s| a.url.starts_with(s));
        if !scheme_ok {
            bail!(
                "{f}: {key}.url: \"{}\" is not an http, https or file URL",
                a.url
            );
        }
        let dest = abs_path(&f, &format!("{key}.dest"), &a.dest)?;
        artifacts.retain(|x: &Artifact| x.dest != dest);
        artifacts.push(Artifact {
            url: a.url,
            sha256: a.sha256.0,
            dest,
            mode: a.mode.map_or(0o644, |m| m.0),
            member: a.member,
        });
    }

    let mut users = p.map(|p| p.users.clone()).unwrap_or_default();
    for u in raw.user {
        users.retain(|x: &UserSpec| x.name != u.name);
        users.push(UserSpec {
            gid: u.gid.unwrap_or(u.uid),
            home: u.home.unwrap_or_else(|| "/nonexistent".into()),
            shell: u.shell.unwrap_or_else(|| "/usr/sbin/nologin".into()),
            gecos: u.gecos.unwrap_or_else(|| u.name.clone()),
            name: u.name,
            uid: u.uid,
        });
    }
    let mut groups = p.map(|p| p.groups.clone()).unwrap_or_default();
    for g in raw.group {
        groups.retain(|x: &GroupSpec| x.name != g.name);
        groups.push(GroupSpec {
            name: g.name,
            gid: g.gid,
            members: g.members,
        });
    }
    let mut entries = p.map(|p| p.entries.clone()).unwrap_or_default();
    for (i, e) in raw.entry.into_iter().enumerate() {
        let key = format!("entry[{i}]");
        let path = abs_path(&f, &format!("{key}.path"), &e.path)?;
        match e.kind {
            EntryType::Symlink if e.target.is_none() => {
                bail!("{f}: {key}.target: a symlink needs a target")
            }
            EntryType::File if e.content.is_none() => {
                bail!("{f}: {key}.content: a file needs content")
            }
            _ => {}
        }
        entries.retain(|x: &EntrySpec| x.path != path);
        entries.push(EntrySpec {
            path,
            kind: e.kind,
            mode: e.mode.map(|m| m.0),
            owner: e.owner,
            group: e.group,
            content: e.content,
            target: e.target,
        });
    }
    let mut alternatives = p.map(|p| p.alternatives.clone()).unwrap_or_default();
    alternatives.extend(raw.alternatives.unwrap_or_default());
    let mut enable = p.map(|p| p.enable.clone()).unwrap_or_default();
    let mut disable = p.map(|p| p.disable.clone()).unwrap_or_default();
    let mut mask = p.map(|p| p.mask.clone()).unwrap_or_default();
    if let Some(s) = raw.systemd {
        enable.extend(s.enable);
        disable.extend(s.disable);
        for (i, u) in s.mask.into_iter().enumerate() {
            if !is_unit_name(&u) {
                bail!("{f}: systemd.mask[{i}]: \"{u}\" is not a unit name (like \"getty@.service\" or \"ldconfig.service\")");
            }
            if !mask.contains(&u) {
                mask.push(u);
            }
        }
    }
    let applets = match raw.applets {
        Some(a) => Some(Applets {
            binary: abs_path(&f, "applets.binary", &a.binary)?,
            skip: a
                .skip
                .iter()
                .enumerate()
                .map(|(i, s)| abs_path(&f, &format!("applets.skip[{i}]"), s))
                .collect::<Result<_>>()?,
        }),
        None => p.and_then(|p| p.applets.clone()),
    };
    let mut preload = p.map(|p| p.preload.clone()).unwrap_or_default();
    for (i, x) in raw.preload.into_iter().enumerate() {
        let key = format!("preload[{i}]");
        let file = dir.join(&x.recipe);
        if !file.is_file() {
            bail!(
                "{f}: {key}.recipe: \"{}\" is not a file (looked at {})",
                x.recipe,
                file.display()
            );
        }
        let recipe = file
            .canonicalize()
            .with_context(|| format!("{f}: {key}.recipe: \"{}\"", x.recipe))?;
        let ok_name = !x.base_name.is_empty()
            && !x.base_name.contains(':')
            && !x.base_name.contains('@')
            && x.base_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "./-_".contains(c));
        if !ok_name {
            bail!(
                "{f}: {key}.base-name: \"{}\" is not an image name without a tag (like \"localhost/slipway/pause\")",
                x.base_name
            );
        }
        let namespace = x.namespace.unwrap_or_else(|| "k8s.io".into());
        if namespace.is_empty()
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            bail!("{f}: {key}.namespace: \"{namespace}\" is not a containerd namespace (like \"k8s.io\")");
        }
        preload.retain(|p: &Preload| p.base_name != x.base_name);
        preload.push(Preload {
            recipe,
            base_name: x.base_name,
            namespace,
        });
    }
    let bundle_node = raw
        .bundle
        .and_then(|b| b.node)
        .unwrap_or_else(|| p.is_some_and(|p| p.bundle_node));
    let mut oci = p.map(|p| p.oci.clone()).unwrap_or_default();
    // Layering, naming and source are the image's own, never inherited.
    oci.layers = None;
    oci.repository = None;
    oci.tag = None;
    oci.source = None;
    if let Some(o) = raw.oci {
        oci.user = o.user.or(oci.user);
        oci.entrypoint = o.entrypoint.or(oci.entrypoint);
        oci.cmd = o.cmd.or(oci.cmd);
        oci.env.extend(o.env);
        oci.working_dir = o.working_dir.or(oci.working_dir);
        if !o.exposed_ports.is_empty() {
            oci.exposed_ports = o.exposed_ports;
        }
        oci.labels.extend(o.labels);
        oci.layers = o.layers;
        oci.repository = o.repository;
        oci.tag = o.tag;
        oci.source = o.source;
    }

    Ok(Recipe {
        path: path.to_path_buf(),
        name,
        kind,
        description,
        version,
        declared_architecture: debian.architecture.clone(),
        debian,
        include,
        exclude,
        recommends,
        drop,
        keep,
        overlays,
        artifacts,
        users,
        groups,
        entries,
        alternatives,
        enable,
        disable,
        mask,
        applets,
        preload,
        bundle_node,
        oci,
        parent,
        kernel,
        disk,
    })
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
}
