//! Reader for Debian binary packages (`.deb`), without dpkg and without root.
//!
//! Consumes a `.deb` file (or its bytes) and produces a [`Deb`]: the members of
//! `control.tar` by name, and the decompressed `data.tar`. [`list_data`] then indexes
//! that tar into [`DataEntry`]s whose file contents are byte ranges of it, so a
//! caller that caches the decompressed tar per package digest never decompresses or
//! copies file content again.
//!
//! Layout, per deb(5): an `ar` archive whose first member is `debian-binary`
//! (`2.0\n`), then `control.tar[.gz|.xz|.zst]`, then `data.tar[.gz|.xz|.zst|.lzma]`;
//! members whose names start with `_` (signatures and other additions) are skipped,
//! as dpkg does, and members after `data.tar` are ignored.
//!
//! Safety: every path of both tars is checked by [`list_data`] (absolute paths, `..`,
//! writing through symlinks, dangling hard links, unsupported types, truncation), and
//! decompression is capped by [`Limits`] against decompression bombs. [`read_deb`]
//! checks the control tar fully; it decompresses the data tar but leaves indexing it
//! to [`list_data`], which the caller runs on the cached tar anyway.

mod ar;
mod compress;
mod control;
mod data;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};

pub use compress::{decompress, Compression};
pub use control::parse_control;
pub use data::{list_data, DataEntry, EntryKind};

/// Largest decompressed `data.tar` accepted by default: 4 GiB. The biggest Debian
/// packages (debug symbols, firmware) stay well below it.
pub const MAX_DATA_TAR_BYTES: u64 = 4 << 30;
/// Largest decompressed `control.tar` accepted by default: 256 MiB. Control tars
/// are small; `md5sums` of a package with 100 000 files is about 10 MiB.
pub const MAX_CONTROL_TAR_BYTES: u64 = 256 << 20;

/// Caps on decompressed sizes, to refuse decompression bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed `control.tar`, in bytes.
    pub control_tar: u64,
    /// Largest decompressed `data.tar`, in bytes.
    pub data_tar: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            control_tar: MAX_CONTROL_TAR_BYTES,
            data_tar: MAX_DATA_TAR_BYTES,
        }
    }
}

/// A binary package, read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deb {
    /// Members of `control.tar` by file name, leading `./` stripped: `control`,
    /// `md5sums`, `conffiles`, `postinst`, `preinst`, `prerm`, `postrm`,
    /// `triggers`, `shlibs`, ... Only regular files at the top level are allowed.
    pub control: BTreeMap<String, Vec<u8>>,
    /// The decompressed `data.tar`; index it with [`list_data`].
    pub data_tar: Vec<u8>,
}

impl Deb {
    /// Parses the `control` member into its fields (see [`parse_control`]).
    pub fn control_fields(&self) -> Result<BTreeMap<String, String>> {
        let bytes = self
            .control
            .get("control")
            .context("control.tar has no control file")?;
        let text = std::str::from_utf8(bytes).context("control file is not valid UTF-8")?;
        parse_control(text).context("parsing the control file")
    }
}

/// Reads the `.deb` at `path`. Errors name the file and the member.
pub fn read_deb(path: &Path) -> Result<Deb> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    read_deb_bytes(&path.display().to_string(), &bytes)
}

/// Reads a `.deb` from memory; `name` (a file name or package name) starts every
/// error message. Uses the default [`Limits`].
pub fn read_deb_bytes(name: &str, bytes: &[u8]) -> Result<Deb> {
    read_deb_bytes_with_limits(name, bytes, Limits::default())
}

/// [`read_deb_bytes`] with explicit decompression limits.
pub fn read_deb_bytes_with_limits(name: &str, bytes: &[u8], limits: Limits) -> Result<Deb> {
    let members =
        ar::members(bytes).with_context(|| format!("{name}: reading the ar container"))?;
    let mut members = members.into_iter();

    let first = members
        .next()
        .ok_or_else(|| anyhow!("{name}: empty ar archive (expected debian-binary first)"))?;
    ensure!(
        first.name == "debian-binary",
        "{name}: first ar member is {:?}, expected debian-binary (is this a .deb?)",
        first.name
    );
    // deb(5): format 2.x; readers accept a higher minor version.
    ensure!(
        first.data.starts_with(b"2.") && first.data.ends_with(b"\n"),
        "{name}: debian-binary: unsupported format version {:?} (expected \"2.0\\n\")",
        String::from_utf8_lossy(first.data)
    );

    let mut control = None;
    let mut data = None;
    for member in members {
        if member.name.starts_with('_') {
            continue;
        }
        if control.is_none() {
            match Compression::for_member("control.tar", member.name) {
                Some(c) => control = Some((member, c.with_context(|| name.to_owned())?)),
                None => bail!(
                    "{name}: unexpected ar member {:?} where control.tar was expected",
                    member.name
                ),
            }
        } else {
            match Compression::for_member("data.tar", member.name) {
                Some(c) => {
                    data = Some((member, c.with_context(|| name.to_owned())?));
                    break;
                }
                None => bail!(
                    "{name}: unexpected ar member {:?} where data.tar was expected",
                    member.name
                ),
            }
        }
    }
    let (control_member, control_compression) =
        control.ok_or_else(|| anyhow!("{name}: no control.tar member"))?;
    let (data_member, data_compression) =
        data.ok_or_else(|| anyhow!("{name}: no data.tar member"))?;

    let control_tar =
        compress::decompress(control_compression, control_member.data, limits.control_tar)
            .with_context(|| format!("{name}: decompressing {}", control_member.name))?;
    let control = read_control_tar(name, control_member.name, &control_tar)?;

    let data_tar = compress::decompress(data_compression, data_member.data, limits.data_tar)
        .with_context(|| format!("{name}: decompressing {}", data_member.name))?;

    Ok(Deb { control, data_tar })
}

/// Collects the regular files at the top of `control.tar`.
fn read_control_tar(name: &str, member: &str, tar: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for entry in data::list_tar(name, member, tar)? {
        ensure!(
            entry.kind == EntryKind::File && !entry.path.contains('/'),
            "{name}: {member}: {}: only regular files at the top level are allowed, found a {:?}",
            entry.path,
            entry.kind
        );
        // list_tar checked the range against the tar's length.
        let content = &tar[entry.offset as usize..(entry.offset + entry.size) as usize];
        out.insert(entry.path, content.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
