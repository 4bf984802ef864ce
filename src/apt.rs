//! slipway's own apt state: configuration, sources, lists and keyring use, isolated from
//! the host's apt configuration (only the mirror URI is read from the host, and only when
//! the recipe names none). apt is the client for Debian's archive: it downloads the
//! indices and packages and checks the archive signatures with Debian's keyring.
//!
//! Consumes a [`DebianSource`]; produces index files for the resolver and downloaded
//! `.deb` files for the cache.

use crate::io::hash::sha256_hex;
use crate::io::progress::Reporter;
use crate::recipe::{mirror, DebianSource};
use crate::tool::Tool;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The keyring apt checks the archive's signatures with (Debian: debian-archive-keyring).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One Packages index apt has downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// The uncompressed index file.
    pub path: PathBuf,
    /// Its suite (e.g. trixie-security).
    pub suite: String,
    /// Its component (e.g. main).
    pub component: String,
}

/// An apt state directory for one package source.
#[derive(Debug)]
pub struct AptState {
    dir: PathBuf,
    conf: PathBuf,
    mirrors: mirror::Mirrors,
}

/// A held lock on an apt state directory (shared for readers, exclusive for update).
pub struct StateLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

impl AptState {
    /// Creates or reuses the apt state for `src` under `cache_apt_root`.
    pub fn open(cache_apt_root: &Path, src: &DebianSource) -> Result<AptState> {
        let mirrors = match &src.mirror {
            Some(m) => mirror::Mirrors {
                archive: m.trim_end_matches('/').to_string(),
                security: src
                    .security_mirror
                    .clone()
                    .unwrap_or_else(|| format!("{}-security", m.trim_end_matches('/'))),
            },
            None => match std::env::var("SLIPWAY_MIRROR") {
                Ok(m) if !m.is_empty() => mirror::Mirrors {
                    security: format!("{}-security", m.trim_end_matches('/')),
                    archive: m.trim_end_matches('/').to_string(),
                },
                _ => mirror::from_host(Path::new("/etc/apt"))?,
            },
        };
        let sources = sources_list(src, &mirrors)?;
        let key = format!(
            "{}-{}-{}",
            src.release,
            src.architecture,
            &sha256_hex(format!("{sources}\n{}", src.architecture).as_bytes())[..12]
        );
        let dir = cache_apt_root.join(key);
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let status = dir.join("var/lib/dpkg/status");
        if !status.exists() {
            fs::write(&status, b"").with_context(|| format!("creating {}", status.display()))?;
        }
        write_if_changed(&dir.join("etc/apt/sources.list"), &sources)?;
        let conf = dir.join("apt.conf");
        write_if_changed(&conf, &apt_conf(&dir, &src.architecture))?;
        Ok(AptState { dir, conf, mirrors })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `APT_CONFIG` file for this state.
    pub fn config(&self) -> &Path {
        &self.conf
    }

    /// The mirrors in use.
    pub fn mirrors(&self) -> &mirror::Mirrors {
        &self.mirrors
    }

    fn lock(&self, exclusive: bool) -> Result<StateLock> {
        let p = self.dir.join("slipway.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        let arg = if exclusive {
            nix::fcntl::FlockArg::LockExclusive
        } else {
            nix::fcntl::FlockArg::LockShared
        };
        let lock = nix::fcntl::Flock::lock(f, arg)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", p.display()))?;
        Ok(StateLock { _lock: lock })
    }

    /// Takes the shared lock readers hold while they use the lists.
    pub fn read_lock(&self) -> Result<StateLock> {
        self.lock(false)
    }

    /// A command running apt with this state's configuration.
    pub fn apt(&self, what: &str, program: &str) -> Tool {
        Tool::new(what, program)
            .env("APT_CONFIG", &self.conf)
            .env("DEBIAN_FRONTEND", "noninteractive")
    }

    /// True when the lists have been downloaded at least once.
    pub fn has_lists(&self) -> bool {
        self.dir.join("var/lib/apt/lists/.slipway-updated").exists()
    }

    /// True when the lists were downloaded less than `max_age` ago.
    pub fn lists_younger_than(&self, max_age: std::time::Duration) -> bool {
        fs::metadata(self.dir.join("var/lib/apt/lists/.slipway-updated"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < max_age)
    }

    /// Runs `apt-get update` (under the exclusive lock).
    pub fn update(&self, rep: &Reporter) -> Result<()> {
        if !Path::new(KEYRING).exists() {
            bail!("{KEYRING} is missing: apt cannot check Debian's signatures (Debian: debian-archive-keyring)");
        }
        let _l = self.lock(true)?;
        let stage = rep.stage("updating package lists");
        self.apt("downloading Debian package indices", "apt-get")
            .args(["-q", "update", "-o", "APT::Update::Error-Mode=any"])
            .run()
            .with_context(|| {
                format!(
                    "mirror {} / {}",
                    self.mirrors.archive, self.mirrors.security
                )
            })?;
        fs::write(self.dir.join("var/lib/apt/lists/.slipway-updated"), b"")
            .context("marking the package lists as fresh")?;
        stage.done(format!("{} index files", self.index_files()?.len()));
        Ok(())
    }

    /// The Packages index files apt has, with suite and component.
    pub fn index_files(&self) -> Result<Vec<IndexFile>> {
        let out = self
            .apt("listing index files", "apt-get")
            .args([
                "indextargets",
                "--format",
                "$(FILENAME)|$(RELEASE)|$(COMPONENT)",
                "Created-By: Packages",
            ])
            .run()?;
        let mut files = Vec::new();
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split('|');
            let (Some(p), Some(s), Some(c)) = (it.next(), it.next(), it.next()) else {
                bail!("unexpected `apt-get indextargets` line: {line}");
            };
            if Path::new(p).exists() {
                files.push(IndexFile {
                    path: PathBuf::from(p),
                    suite: s.into(),
                    component: c.into(),
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Downloads `name=version` for each spec into `dest` with `apt-get download`
    /// (apt checks each file against the signed index); `on_get` sees each file start.
    pub fn download(
        &self,
        specs: &[String],
        dest: &Path,
        mut on_get: impl FnMut(&str),
    ) -> Result<()> {
        if specs.is_empty() {
            return Ok(());
        }
        let _l = self.read_lock()?;
        self.apt("downloading packages", "apt-get")
            .args(["-q", "download"])
            .args(specs.iter().cloned())
            .cwd(dest)
            .run_lines(|line| {
                if let Some(rest) = line.strip_prefix("Get:") {
                    on_get(rest);
                }
            })?;
        Ok(())
    }
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        crate::io::atomic::write(path, text.as_bytes())?;
    }
    Ok(())
}

/// The sources.list(5) lines for `src`. Every word is checked again here (recipes are
/// checked when they load; SLIPWAY_MIRROR and the host's sources are not), so no value
/// can add an option or a line.
fn sources_list(src: &DebianSource, m: &mirror::Mirrors) -> Result<String> {
    use crate::recipe::check;
    for uri in [&m.archive, &m.security] {
        check::mirror_uri(uri).map_err(|why| anyhow::anyhow!("mirror {uri:?} {why}"))?;
    }
    for c in &src.components {
        check::component(c).map_err(|why| anyhow::anyhow!("component {c:?} {why}"))?;
    }
    let mut s = String::new();
    for suite in &src.suites {
        check::suite(suite).map_err(|why| anyhow::anyhow!("suite {suite:?} {why}"))?;
        let uri = if suite.ends_with("-security") {
            &m.security
        } else {
            &m.archive
        };
        s.push_str(&format!(
            "deb [signed-by={KEYRING}] {uri} {suite} {}\n",
            src.components.join(" ")
        ));
    }
    Ok(s)
}

/// apt's configuration: everything under our own directory, nothing from the host
/// (apt reads `APT_CONFIG` first; `Dir` then points its parts and lists at our tree).
fn apt_conf(dir: &Path, arch: &str) -> String {
    let d = dir.display();
    let user = if nix::unistd::geteuid().is_root() {
        "root".to_string()
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into())
    };
    format!(
        "Dir \"{d}/\";\n\
         Dir::Etc \"{d}/etc/apt/\";\n\
         Dir::State \"{d}/var/lib/apt/\";\n\
         Dir::State::status \"{d}/var/lib/dpkg/status\";\n\
         Dir::Cache \"{d}/var/cache/apt/\";\n\
         Dir::Cache::pkgcache \"\";\n\
         Dir::Cache::srcpkgcache \"\";\n\
         APT::Architecture \"{arch}\";\n\
         APT::Architectures {{ \"{arch}\"; }};\n\
         APT::Install-Recommends \"false\";\n\
         APT::Install-Suggests \"false\";\n\
         Acquire::Languages \"none\";\n\
         Acquire::GzipIndexes \"false\";\n\
         Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n\
         Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled \"false\";\n\
         Acquire::Retries \"3\";\n\
         APT::Sandbox::User \"{user}\";\n\
         Debug::NoLocking \"true\";\n"
    )
}
