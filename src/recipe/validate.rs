//! Validation and merging: a [`RawRecipe`] (and its parent, already checked) into a
//! [`Recipe`]. Every error names the file, the key and the line (through
//! [`Here`]) and exits 2.

use super::check;
use super::raw::{self, EntryType, ImageKind, RawRecipe};
use super::spans::Spans;
use super::{
    Applets, Artifact, DebianSource, EntrySpec, GroupSpec, KernelSpec, LoadOptions, Origin,
    Preload, Recipe, UserSpec, ARCHITECTURES, DEFAULT_RELEASE,
};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The recipe file being checked: its name for messages, its key positions, and the
/// directory its relative paths (and host paths) are confined to.
pub(super) struct Here {
    path: PathBuf,
    file: String,
    spans: Arc<Spans>,
    /// The canonical directory of the recipe file.
    root: PathBuf,
    opts: LoadOptions,
}

impl Here {
    pub(super) fn new(path: &Path, canon: &Path, text: &str, opts: LoadOptions) -> Here {
        Here {
            path: path.to_path_buf(),
            file: path.display().to_string(),
            spans: Arc::new(Spans::parse(text)),
            // The directory the recipe is read from (as `extends` paths are), canonical;
            // a recipe reached through a symlinked file keeps its link's directory.
            root: path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .canonicalize()
                .unwrap_or_else(|_| canon.parent().unwrap_or(Path::new("/")).to_path_buf()),
            opts,
        }
    }

    /// `key` in this file.
    pub(super) fn at(&self, key: &str) -> Origin {
        Origin::new(&self.file, key, self.spans.clone())
    }

    /// A bad-input error about `key`.
    pub(super) fn bad(&self, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        self.at(key).err(msg)
    }

    /// Checks `value` of `key` with a [`check`] function.
    fn check(&self, key: &str, value: &str, f: fn(&str) -> Result<(), String>) -> Result<()> {
        f(value).map_err(|why| self.bad(key, format!("{value:?} {why}")))
    }

    /// An absolute image path without `..` or control characters, trailing `/` removed.
    fn abs_path(&self, key: &str, p: &str) -> Result<String> {
        if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p.chars().any(char::is_control)
        {
            return Err(self.bad(
                key,
                format!("{p:?} must be an absolute path inside the image without `..`"),
            ));
        }
        Ok(p.trim_end_matches('/').to_string())
    }

    /// `p` (relative to the recipe's directory) resolved on the host; it must stay inside
    /// the recipe's directory unless `--allow-host-paths` was given. `p` need not exist.
    fn host_path(&self, key: &str, p: &str) -> Result<PathBuf> {
        let joined = self.root.join(p);
        let mut existing = joined.as_path();
        let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
        while existing.symlink_metadata().is_err() {
            match (existing.file_name(), existing.parent()) {
                (Some(n), Some(up)) => {
                    rest.push(n);
                    existing = up;
                }
                _ => {
                    return Err(self.bad(key, format!("{p:?}: {} does not exist", joined.display())))
                }
            }
        }
        let mut resolved = existing
            .canonicalize()
            .map_err(|e| self.bad(key, format!("{p:?}: {}: {e}", existing.display())))?;
        for n in rest.iter().rev() {
            resolved.push(n);
        }
        let inside = resolved.starts_with(&self.root)
            && !resolved.components().any(|c| c == Component::ParentDir);
        if !inside && !self.opts.allow_host_paths {
            return Err(self.bad(
                key,
                format!(
                    "{p:?} resolves to {}, outside the recipe's directory {} (move it under the recipe, or pass --allow-host-paths)",
                    resolved.display(),
                    self.root.display()
                ),
            ));
        }
        Ok(resolved)
    }
}

/// Validates `raw` (the file [`Here`] is about) over its checked `parent`.
pub(super) fn recipe(h: &Here, raw: RawRecipe, parent: Option<Box<Recipe>>) -> Result<Recipe> {
    let p = parent.as_deref();
    let (name, kind, description, version) = image(h, raw.image, p)?;
    let debian = debian(h, raw.debian, p)?;
    let mut pk = packages(h, raw.packages, p)?;
    let (kernel, kernel_at) = kernel(h, raw.kernel, p, &mut pk.include);
    let disk = disk(h, raw.disk, p)?;
    if kind == ImageKind::Host && disk.slot_count() == 2 && version.contains('+') {
        // systemd-boot reads `+N` in a UKI's name as its boot counter.
        return Err(h.bad(
            "image.version",
            format!(
                "{version:?} has a `+`, which names boot attempts in the UKI's file name \
                 of a two-slot disk (use `~`, `.` or `-`)"
            ),
        ));
    }
    check_packages(h, &pk)?;
    let paths = paths(h, raw.paths, p)?;
    let artifacts = artifacts(h, raw.artifact, p)?;
    let (users, groups) = accounts(h, raw.user, raw.group, p)?;
    let entries = entries(h, raw.entry, p, &users, &groups)?;
    let (alternatives, alternatives_at) = alternatives(h, raw.alternatives, p)?;
    let units = systemd(h, raw.systemd, p)?;
    let applets = applets(h, raw.applets, p)?;
    let preload = preload(h, raw.preload, p)?;
    let bundle_node = raw
        .bundle
        .and_then(|b| b.node)
        .unwrap_or_else(|| p.is_some_and(|p| p.bundle_node));
    let oci = oci(h, raw.oci, p)?;
    let secure_boot = secure_boot(h, raw.secure_boot, p)?;
    Ok(Recipe {
        path: h.path.clone(),
        name,
        kind,
        description,
        version,
        declared_architecture: debian.architecture.clone(),
        debian,
        include: pk.include,
        exclude: pk.exclude,
        recommends: pk.recommends,
        drop: paths.drop,
        keep: paths.keep,
        overlays: paths.overlays,
        overlay_at: paths.overlay_at,
        allow_setuid: paths.allow_setuid,
        artifacts,
        users,
        groups,
        entries,
        alternatives,
        alternatives_at,
        enable: units.enable,
        disable: units.disable,
        enable_at: units.enable_at,
        mask: units.mask,
        applets,
        preload,
        bundle_node,
        oci,
        parent,
        kernel,
        disk,
        kernel_at,
        secure_boot,
        spans: h.spans.clone(),
        load: h.opts,
    })
}

fn image(
    h: &Here,
    image: Option<raw::RawImage>,
    p: Option<&Recipe>,
) -> Result<(String, ImageKind, String, String)> {
    let name = match image.as_ref().and_then(|i| i.name.clone()) {
        Some(n) => n,
        None => h
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(h.bad(
            "image.name",
            format!("{name:?} is not a valid image name (letters, digits, - _ .)"),
        ));
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
    h.check("image.description", &description, check::one_line)?;
    let version = match image.as_ref().and_then(|i| i.version.clone()) {
        Some(v) => {
            h.check("image.version", &v, check::os_release_value)?;
            v
        }
        None => p.map_or_else(|| "0".into(), |p| p.version.clone()),
    };
    Ok((name, kind, description, version))
}

fn debian(h: &Here, d: Option<raw::RawDebian>, p: Option<&Recipe>) -> Result<DebianSource> {
    let d = match (d, p) {
        (None, Some(p)) => return Ok(p.debian.clone()),
        (d, _) => d.unwrap_or(raw::RawDebian {
            release: None,
            suites: None,
            components: None,
            architecture: None,
            mirror: None,
            security_mirror: None,
        }),
    };
    let base = p.map(|p| p.debian.clone());
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
    for (i, s) in suites.iter().enumerate() {
        let key = format!("debian.suites[{i}]");
        h.check(&key, s, check::suite)?;
        if s != &release && !s.starts_with(&format!("{release}-")) {
            return Err(h.bad(&key, format!("\"{s}\" is not a suite of release {release} (expected {release}, {release}-updates or {release}-security)")));
        }
    }
    let components = d.components.unwrap_or_else(|| vec!["main".into()]);
    for (i, c) in components.iter().enumerate() {
        h.check(&format!("debian.components[{i}]"), c, check::component)?;
    }
    let architecture = d.architecture.unwrap_or_else(|| "amd64".into());
    if !ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(h.bad(
            "debian.architecture",
            format!("\"{architecture}\" is not a Debian architecture (e.g. amd64, arm64)"),
        ));
    }
    for (key, m) in [
        ("debian.mirror", &d.mirror),
        ("debian.security-mirror", &d.security_mirror),
    ] {
        if let Some(m) = m {
            h.check(key, m, check::mirror_uri)?;
        }
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
            return Err(h.bad(
                "debian",
                format!(
                    "release/architecture {}/{} differ from the recipe it extends ({}/{}); a child inherits its parent's lock",
                    src.release, src.architecture, b.release, b.architecture
                ),
            ));
        }
    }
    Ok(src)
}

struct Packages {
    include: Vec<String>,
    exclude: Vec<String>,
    recommends: bool,
}

fn packages(h: &Here, pk: Option<raw::RawPackages>, p: Option<&Recipe>) -> Result<Packages> {
    let mut out = Packages {
        include: p.map(|p| p.include.clone()).unwrap_or_default(),
        exclude: p.map(|p| p.exclude.clone()).unwrap_or_default(),
        recommends: p.is_some_and(|p| p.recommends),
    };
    let Some(pk) = pk else { return Ok(out) };
    // A child's exclude takes back what its parent includes (k8s-node-upstream.toml
    // drops containerd-host's Debian containerd and runc for upstream's binaries);
    // one recipe both including and excluding a name stays an error.
    let name = |s: &str| s.split('=').next().map(str::to_string);
    for (i, x) in pk.exclude.iter().enumerate() {
        if pk.include.iter().any(|n| name(&n.0) == name(&x.0)) {
            return Err(h.bad(
                &format!("packages.exclude[{i}]"),
                format!("\"{}\" is also in this recipe's packages.include", x.0),
            ));
        }
        out.include.retain(|n| name(n) != name(&x.0));
    }
    for n in pk.include {
        if !out.include.contains(&n.0) {
            out.include.push(n.0);
        }
    }
    for n in pk.exclude {
        if !out.exclude.contains(&n.0) {
            out.exclude.push(n.0);
        }
    }
    out.recommends = pk.recommends.unwrap_or(out.recommends);
    Ok(out)
}

fn check_packages(h: &Here, pk: &Packages) -> Result<()> {
    if pk.include.is_empty() {
        return Err(h.bad(
            "packages.include",
            "empty (a recipe needs at least one package)",
        ));
    }
    for x in &pk.exclude {
        if pk
            .include
            .iter()
            .any(|i| i.split('=').next() == Some(x.as_str()))
        {
            return Err(h.bad(
                "packages.exclude",
                format!("\"{x}\" is also in packages.include"),
            ));
        }
    }
    Ok(())
}

fn kernel(
    h: &Here,
    k: Option<raw::RawKernel>,
    p: Option<&Recipe>,
    include: &mut Vec<String>,
) -> (Option<KernelSpec>, Option<Origin>) {
    let mut kernel = p.and_then(|p| p.kernel.clone());
    let mut at = p.and_then(|p| p.kernel_at.clone());
    if let Some(k) = k {
        at = Some(h.at("kernel"));
        let spec = kernel.get_or_insert_with(KernelSpec::default);
        for m in k.modules {
            if !spec.modules.contains(&m.0) {
                spec.modules.push(m.0);
                spec.module_at.push(h.at("kernel.modules"));
            }
        }
        if let Some(pkg) = k.package {
            if !include.contains(&pkg.0) {
                include.push(pkg.0.clone());
            }
            spec.package = Some(pkg.0);
        }
    }
    (kernel, at)
}

/// `[secure-boot]`: file paths relative to the recipe's directory (a key is a host
/// file by nature: no confinement), `env:NAME` kept; the parent's table otherwise.
fn secure_boot(
    h: &Here,
    sb: Option<raw::RawSecureBoot>,
    p: Option<&Recipe>,
) -> Result<Option<super::SecureBoot>> {
    let Some(sb) = sb else {
        return Ok(p.and_then(|p| p.secure_boot.clone()));
    };
    let mut out = super::SecureBoot {
        passphrase_env: sb.passphrase_env,
        microsoft_uefi_ca: sb.microsoft_uefi_ca.unwrap_or(false),
        ..Default::default()
    };
    for (key, v, slot) in [
        ("secure-boot.key", sb.key, &mut out.key),
        ("secure-boot.cert", sb.cert, &mut out.cert),
    ] {
        let env_name = v.strip_prefix("env:");
        if v.is_empty() || env_name == Some("") {
            return Err(h.bad(key, format!("{v:?} is neither a PEM file nor env:NAME")));
        }
        *slot = if env_name.is_some() || Path::new(&v).is_absolute() {
            v
        } else {
            h.root.join(&v).display().to_string()
        };
    }
    if out.passphrase_env.as_deref() == Some("") {
        return Err(h.bad(
            "secure-boot.passphrase-env",
            "is empty (name the environment variable holding the passphrase)".to_string(),
        ));
    }
    Ok(Some(out))
}

fn disk(h: &Here, d: Option<raw::RawDisk>, p: Option<&Recipe>) -> Result<raw::RawDisk> {
    let mut disk = p.map(|p| p.disk.clone()).unwrap_or_default();
    let Some(d) = d else { return Ok(disk) };
    for (key, size, min, max) in [
        ("disk.esp-size", d.esp_size, check::MIN_ESP, check::MAX_ESP),
        ("disk.var-size", d.var_size, check::MIN_VAR, check::MAX_VAR),
        ("disk.slot-size", d.slot_size, 1 << 20, check::MAX_VAR),
    ] {
        if let Some(s) = size.filter(|s| s.0 % (1 << 20) != 0) {
            return Err(h.bad(
                key,
                format!(
                    "{} bytes is not a whole number of MiB (partitions are MiB-aligned)",
                    s.0
                ),
            ));
        }
        if let Some(s) = size.filter(|s| s.0 < min) {
            return Err(h.bad(
                key,
                format!(
                    "{} MiB cannot hold the file system (at least {} MiB)",
                    s.0 >> 20,
                    min >> 20
                ),
            ));
        }
        if let Some(s) = size.filter(|s| s.0 > max) {
            return Err(h.bad(
                key,
                format!("{} MiB is too large (at most {} MiB)", s.0 >> 20, max >> 20),
            ));
        }
    }
    for (i, a) in d.cmdline.iter().enumerate() {
        h.check(&format!("disk.cmdline[{i}]"), a, check::cmdline_arg)?;
    }
    if let Some(n) = d.slots.filter(|n| !(1..=2).contains(n)) {
        return Err(h.bad(
            "disk.slots",
            format!("{n} is not a slot count (1: one root; 2: root A and B, the default)"),
        ));
    }
    if let Some(n) = d.tries.filter(|n| !(1..=9).contains(n)) {
        return Err(h.bad(
            "disk.tries",
            format!("{n} is not a number of boot attempts (1 to 9)"),
        ));
    }
    disk.slots = d.slots.or(disk.slots);
    disk.slot_size = d.slot_size.or(disk.slot_size);
    disk.tries = d.tries.or(disk.tries);
    disk.esp_size = d.esp_size.or(disk.esp_size);
    disk.var_size = d.var_size.or(disk.var_size);
    disk.root_fs = d.root_fs.or(disk.root_fs);
    disk.cmdline.extend(d.cmdline);
    Ok(disk)
}

struct Paths {
    drop: Vec<String>,
    keep: Vec<String>,
    overlays: Vec<PathBuf>,
    overlay_at: Vec<Origin>,
    allow_setuid: Vec<String>,
}

fn paths(h: &Here, raw: Option<raw::RawPaths>, p: Option<&Recipe>) -> Result<Paths> {
    let mut out = Paths {
        drop: p.map(|p| p.drop.clone()).unwrap_or_default(),
        keep: p.map(|p| p.keep.clone()).unwrap_or_default(),
        overlays: p.map(|p| p.overlays.clone()).unwrap_or_default(),
        overlay_at: p.map(|p| p.overlay_at.clone()).unwrap_or_default(),
        allow_setuid: p.map(|p| p.allow_setuid.clone()).unwrap_or_default(),
    };
    let Some(paths) = raw else { return Ok(out) };
    for (list, name) in [(&paths.drop, "drop"), (&paths.keep, "keep")] {
        for (i, g) in list.iter().enumerate() {
            let key = format!("paths.{name}[{i}]");
            glob::Pattern::new(g.trim_start_matches('/'))
                .map_err(|e| h.bad(&key, format!("\"{g}\" is not a valid glob: {e}")))?;
        }
    }
    let rel = |g: String| g.trim_start_matches('/').to_string();
    out.drop.extend(paths.drop.into_iter().map(rel));
    out.keep.extend(paths.keep.into_iter().map(rel));
    for (i, o) in paths.overlays.iter().enumerate() {
        let key = format!("paths.overlays[{i}]");
        let d = h.host_path(&key, o)?;
        if !d.is_dir() {
            return Err(h.bad(
                &key,
                format!("\"{o}\" is not a directory (looked at {})", d.display()),
            ));
        }
        out.overlays.push(d);
        out.overlay_at.push(h.at(&key));
    }
    for (i, s) in paths.allow_setuid.iter().enumerate() {
        let key = format!("paths.allow-setuid[{i}]");
        let abs = h.abs_path(&key, &format!("/{}", s.trim_start_matches('/')))?;
        let rel = crate::tree::merged_usr(abs.trim_start_matches('/'));
        if !out.allow_setuid.contains(&rel) {
            out.allow_setuid.push(rel);
        }
    }
    Ok(out)
}

fn artifacts(h: &Here, raw: Vec<raw::RawArtifact>, p: Option<&Recipe>) -> Result<Vec<Artifact>> {
    let mut out = p.map(|p| p.artifacts.clone()).unwrap_or_default();
    for (i, a) in raw.into_iter().enumerate() {
        let key = format!("artifact[{i}]");
        let scheme_ok = ["http://", "https://", "file://"]
            .iter()
            .any(|s| a.url.starts_with(s));
        if !scheme_ok || a.url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(h.bad(
                &format!("{key}.url"),
                format!("\"{}\" is not an http, https or file URL", a.url),
            ));
        }
        let mut url = a.url;
        if let Some(path) = url.strip_prefix("file://") {
            // Relative file URLs are relative to the recipe, like overlays.
            let resolved = h.host_path(&format!("{key}.url"), path)?;
            if !path.starts_with('/') {
                url = format!("file://{}", resolved.display());
            }
        }
        let dest = h.abs_path(&format!("{key}.dest"), &a.dest)?;
        if let Some(m) = &a.member {
            if m.is_empty() || m.chars().any(char::is_control) {
                return Err(h.bad(
                    &format!("{key}.member"),
                    format!("{m:?} is not a member path of a tar archive"),
                ));
            }
        }
        out.retain(|x: &Artifact| x.dest != dest);
        out.push(Artifact {
            url,
            sha256: a.sha256.0,
            dest,
            mode: a.mode.map_or(0o644, |m| m.0),
            member: a.member,
            at: h.at(&key),
        });
    }
    Ok(out)
}

fn id(h: &Here, key: &str, id: u32) -> Result<u32> {
    // (uid_t)-1 means "no change" to chown(2) and setuid(2); 65535 is the old 16-bit -1.
    if id == u32::MAX || id == 65535 {
        return Err(h.bad(
            key,
            format!("{id} is not a usable id (-1 and 65535 are reserved)"),
        ));
    }
    Ok(id)
}

fn accounts(
    h: &Here,
    raw_users: Vec<raw::RawUser>,
    raw_groups: Vec<raw::RawGroup>,
    p: Option<&Recipe>,
) -> Result<(Vec<UserSpec>, Vec<GroupSpec>)> {
    let mut users = p.map(|p| p.users.clone()).unwrap_or_default();
    for (i, u) in raw_users.into_iter().enumerate() {
        let key = format!("user[{i}]");
        h.check(&format!("{key}.name"), &u.name, check::account_name)?;
        let uid = id(h, &format!("{key}.uid"), u.uid)?;
        let gid = id(h, &format!("{key}.gid"), u.gid.unwrap_or(u.uid))?;
        let home = u.home.unwrap_or_else(|| "/nonexistent".into());
        h.check(&format!("{key}.home"), &home, check::passwd_path)?;
        let shell = u.shell.unwrap_or_else(|| "/usr/sbin/nologin".into());
        h.check(&format!("{key}.shell"), &shell, check::passwd_path)?;
        let gecos = u.gecos.unwrap_or_else(|| u.name.clone());
        h.check(&format!("{key}.gecos"), &gecos, check::gecos)?;
        users.retain(|x: &UserSpec| x.name != u.name);
        if let Some(o) = users.iter().find(|x| x.uid == uid) {
            return Err(h.bad(
                &format!("{key}.uid"),
                format!("{uid} is already the uid of user {} ({})", o.name, o.at),
            ));
        }
        users.push(UserSpec {
            gid,
            home,
            shell,
            gecos,
            name: u.name,
            uid,
            at: h.at(&key),
        });
    }
    let mut groups = p.map(|p| p.groups.clone()).unwrap_or_default();
    for (i, g) in raw_groups.into_iter().enumerate() {
        let key = format!("group[{i}]");
        h.check(&format!("{key}.name"), &g.name, check::account_name)?;
        let gid = id(h, &format!("{key}.gid"), g.gid)?;
        for (j, m) in g.members.iter().enumerate() {
            h.check(&format!("{key}.members[{j}]"), m, check::account_name)?;
        }
        groups.retain(|x: &GroupSpec| x.name != g.name);
        if let Some(o) = groups.iter().find(|x| x.gid == gid) {
            return Err(h.bad(
                &format!("{key}.gid"),
                format!("{gid} is already the gid of group {} ({})", o.name, o.at),
            ));
        }
        groups.push(GroupSpec {
            name: g.name,
            gid,
            members: g.members,
            at: h.at(&key),
        });
    }
    Ok((users, groups))
}

/// An entry's owner or group: a number, or a name the recipe (or a parent) declares
/// (entries are made before any package's accounts exist, so only those can be looked up).
fn owner(h: &Here, key: &str, o: &Option<String>, declared: &[&str], what: &str) -> Result<()> {
    match o {
        Some(n) if n.parse::<u32>().is_ok() => id(h, key, n.parse().unwrap_or(0)).map(|_| ()),
        Some(n) => {
            h.check(key, n, check::account_name)?;
            if !declared.contains(&n.as_str()) {
                return Err(h.bad(
                    key,
                    format!("{n:?} is not a {what} the recipe declares (declare it with [[{what}]], or give a number)"),
                ));
            }
            Ok(())
        }
        None => Ok(()),
    }
}

fn entries(
    h: &Here,
    raw: Vec<raw::RawEntry>,
    p: Option<&Recipe>,
    users: &[UserSpec],
    groups: &[GroupSpec],
) -> Result<Vec<EntrySpec>> {
    let user_names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let group_names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let mut out = p.map(|p| p.entries.clone()).unwrap_or_default();
    for (i, e) in raw.into_iter().enumerate() {
        let key = format!("entry[{i}]");
        let path = h.abs_path(&format!("{key}.path"), &e.path)?;
        if path.is_empty() {
            return Err(h.bad(&format!("{key}.path"), "\"/\" cannot be replaced"));
        }
        match e.kind {
            EntryType::Symlink if e.target.is_none() => {
                return Err(h.bad(&format!("{key}.target"), "a symlink needs a target"))
            }
            EntryType::File if e.content.is_none() => {
                return Err(h.bad(&format!("{key}.content"), "a file needs content"))
            }
            _ => {}
        }
        if let Some(t) = &e.target {
            if t.is_empty() || t.chars().any(char::is_control) {
                return Err(h.bad(
                    &format!("{key}.target"),
                    format!("{t:?} is not a symlink target (not empty, no control characters)"),
                ));
            }
        }
        owner(h, &format!("{key}.owner"), &e.owner, &user_names, "user")?;
        owner(h, &format!("{key}.group"), &e.group, &group_names, "group")?;
        out.retain(|x: &EntrySpec| x.path != path);
        out.push(EntrySpec {
            path,
            kind: e.kind,
            mode: e.mode.map(|m| m.0),
            owner: e.owner,
            group: e.group,
            content: e.content,
            target: e.target,
            at: h.at(&key),
        });
    }
    Ok(out)
}

type Alternatives = (BTreeMap<String, String>, BTreeMap<String, Origin>);

fn alternatives(
    h: &Here,
    raw: Option<BTreeMap<String, String>>,
    p: Option<&Recipe>,
) -> Result<Alternatives> {
    let mut alts = p.map(|p| p.alternatives.clone()).unwrap_or_default();
    let mut at = p.map(|p| p.alternatives_at.clone()).unwrap_or_default();
    for (name, path) in raw.unwrap_or_default() {
        let key = format!("alternatives.{name}");
        h.check(&key, &name, check::alternative_name)?;
        h.abs_path(&key, &path)?;
        at.insert(name.clone(), h.at(&key));
        alts.insert(name, path);
    }
    Ok((alts, at))
}

struct Units {
    enable: Vec<String>,
    disable: Vec<String>,
    mask: Vec<String>,
    enable_at: BTreeMap<String, Origin>,
}

fn systemd(h: &Here, raw: Option<raw::RawSystemd>, p: Option<&Recipe>) -> Result<Units> {
    let mut u = Units {
        enable: p.map(|p| p.enable.clone()).unwrap_or_default(),
        disable: p.map(|p| p.disable.clone()).unwrap_or_default(),
        mask: p.map(|p| p.mask.clone()).unwrap_or_default(),
        enable_at: p.map(|p| p.enable_at.clone()).unwrap_or_default(),
    };
    let Some(s) = raw else { return Ok(u) };
    for (list, name) in [
        (&s.enable, "enable"),
        (&s.disable, "disable"),
        (&s.mask, "mask"),
    ] {
        for (i, unit) in list.iter().enumerate() {
            h.check(&format!("systemd.{name}[{i}]"), unit, check::unit_name)?;
        }
    }
    for (i, unit) in s.enable.into_iter().enumerate() {
        u.enable_at
            .insert(unit.clone(), h.at(&format!("systemd.enable[{i}]")));
        u.enable.push(unit);
    }
    u.disable.extend(s.disable);
    for unit in s.mask {
        if !u.mask.contains(&unit) {
            u.mask.push(unit);
        }
    }
    Ok(u)
}

fn applets(h: &Here, raw: Option<raw::RawApplets>, p: Option<&Recipe>) -> Result<Option<Applets>> {
    let Some(a) = raw else {
        return Ok(p.and_then(|p| p.applets.clone()));
    };
    Ok(Some(Applets {
        binary: h.abs_path("applets.binary", &a.binary)?,
        skip: a
            .skip
            .iter()
            .enumerate()
            .map(|(i, s)| h.abs_path(&format!("applets.skip[{i}]"), s))
            .collect::<Result<_>>()?,
        at: h.at("applets"),
    }))
}

fn preload(h: &Here, raw: Vec<raw::RawPreload>, p: Option<&Recipe>) -> Result<Vec<Preload>> {
    let mut out = p.map(|p| p.preload.clone()).unwrap_or_default();
    for (i, x) in raw.into_iter().enumerate() {
        let key = format!("preload[{i}]");
        let file = h.root.join(&x.recipe);
        if !file.is_file() {
            return Err(h.bad(
                &format!("{key}.recipe"),
                format!(
                    "\"{}\" is not a file (looked at {})",
                    x.recipe,
                    file.display()
                ),
            ));
        }
        let recipe = file
            .canonicalize()
            .map_err(|e| h.bad(&format!("{key}.recipe"), format!("\"{}\": {e}", x.recipe)))?;
        let ok_name = !x.base_name.is_empty()
            && x.base_name.len() <= 255
            && x.base_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "./-_".contains(c));
        if !ok_name {
            return Err(h.bad(
                &format!("{key}.base-name"),
                format!(
                    "\"{}\" is not an image name without a tag (like \"localhost/slipway/pause\")",
                    x.base_name
                ),
            ));
        }
        let namespace = x.namespace.unwrap_or_else(|| "k8s.io".into());
        if namespace.is_empty()
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            return Err(h.bad(
                &format!("{key}.namespace"),
                format!("\"{namespace}\" is not a containerd namespace (like \"k8s.io\")"),
            ));
        }
        out.retain(|p: &Preload| p.base_name != x.base_name);
        let file_of = |b: &str| b.rsplit('/').next().unwrap_or(b).to_string();
        if let Some(o) = out
            .iter()
            .find(|o| o.namespace == namespace && file_of(&o.base_name) == file_of(&x.base_name))
        {
            return Err(h.bad(
                &format!("{key}.base-name"),
                format!(
                    "\"{}\" and \"{}\" would be written to one archive, {}.tar in namespace {namespace} (give each its own last component or namespace)",
                    o.base_name,
                    x.base_name,
                    file_of(&x.base_name)
                ),
            ));
        }
        out.push(Preload {
            recipe,
            base_name: x.base_name,
            namespace,
            at: h.at(&key),
        });
    }
    Ok(out)
}

fn oci(h: &Here, raw: Option<raw::RawOci>, p: Option<&Recipe>) -> Result<raw::RawOci> {
    let mut oci = p.map(|p| p.oci.clone()).unwrap_or_default();
    // Layering, naming and source are the image's own, never inherited.
    oci.layers = None;
    oci.repository = None;
    oci.tag = None;
    oci.source = None;
    let Some(o) = raw else { return Ok(oci) };
    for (i, port) in o.exposed_ports.iter().enumerate() {
        h.check(&format!("oci.exposed-ports[{i}]"), port, check::port)?;
    }
    for k in o.env.keys() {
        h.check(&format!("oci.env.{k}"), k, check::env_name)?;
    }
    if let Some(t) = &o.tag {
        h.check("oci.tag", t, check::oci_tag)?;
    }
    if let Some(r) = &o.repository {
        h.check("oci.repository", r, check::oci_repository)?;
    }
    if let Some(src) = &o.source {
        h.check("oci.source", src, check::one_line)?;
    }
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
    Ok(oci)
}
