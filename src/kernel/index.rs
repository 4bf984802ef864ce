//! The module catalogue of one kernel in the tree: consumes the tree and a
//! [`KernelInfo`], produces every loadable module (name, file, size), the built-in
//! modules (`modules.builtin`) and, on demand, the `.modinfo` of modules and the
//! aliases of every loadable and built-in module.
//!
//! Debian's linux-image packages ship no `modules.dep` (their postinst runs depmod), so
//! dependencies come from each module's own `.modinfo`. Reading a module's `.modinfo`
//! means decompressing it; the catalogue does that only for the modules a plan touches,
//! and for all of them only when a name has to be looked up as an alias.

use super::modinfo::{self, ModInfo};
use super::KernelInfo;
use crate::tree::{Kind, Tree};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// One loadable module file.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    /// Module name (underscores).
    pub name: String,
    /// Tree path of the file.
    pub path: String,
    /// Path relative to the modules directory, as modules.dep writes it.
    pub rel: String,
    /// Size of the file as shipped (compressed when the kernel compresses modules).
    pub size: u64,
}

/// An alias pattern and the module that declares it.
#[derive(Debug, Clone)]
struct Alias {
    pattern: glob::Pattern,
    module: String,
    builtin: bool,
}

/// Every module of one kernel.
pub struct Catalog<'t> {
    tree: &'t Tree,
    /// The kernel.
    pub kernel: KernelInfo,
    /// Loadable modules by name.
    pub modules: BTreeMap<String, ModuleFile>,
    /// Built-in module names.
    pub builtin: BTreeSet<String>,
    builtin_info: BTreeMap<String, Vec<String>>,
    infos: std::sync::Mutex<BTreeMap<String, ModInfo>>,
    aliases: OnceLock<Result<Vec<Alias>, String>>,
}

impl<'t> Catalog<'t> {
    /// Lists the modules of `kernel` in `tree`.
    pub fn open(tree: &'t Tree, kernel: &KernelInfo) -> Result<Self> {
        let dir = &kernel.modules_dir;
        let mut modules: BTreeMap<String, ModuleFile> = BTreeMap::new();
        for (path, e) in tree.under(dir) {
            let Some(name) = modinfo::name_of_path(path) else {
                continue;
            };
            let Kind::File(c) = &e.kind else {
                bail!("{path}: a module that is not a regular file");
            };
            let rel = path[dir.len() + 1..].to_string();
            if let Some(other) = modules.get(&name) {
                bail!(
                    "kernel {}: module {name} is shipped twice ({} and {path})",
                    kernel.version,
                    other.path
                );
            }
            modules.insert(
                name.clone(),
                ModuleFile {
                    name,
                    path: path.clone(),
                    rel,
                    size: c.len(),
                },
            );
        }
        let builtin_path = format!("{dir}/modules.builtin");
        let builtin: BTreeSet<String> = match tree.get(&builtin_path).map(|e| &e.kind) {
            Some(Kind::File(c)) => String::from_utf8_lossy(c.as_slice())
                .lines()
                .filter_map(modinfo::name_of_path)
                .collect(),
            _ => bail!(
                "kernel {}: {builtin_path} is missing (every kernel package ships it)",
                kernel.version
            ),
        };
        // modules.builtin.modinfo: NUL-separated `module.key=value`, the .modinfo of
        // every built-in module; only the aliases matter here.
        let mut builtin_info: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(Kind::File(c)) = tree
            .get(&format!("{dir}/modules.builtin.modinfo"))
            .map(|e| &e.kind)
        {
            for item in c.as_slice().split(|&b| b == 0) {
                let s = String::from_utf8_lossy(item);
                if let Some((m, alias)) = s
                    .split_once('.')
                    .and_then(|(m, kv)| kv.strip_prefix("alias=").map(|a| (m, a)))
                {
                    builtin_info
                        .entry(modinfo::normalize(m))
                        .or_default()
                        .push(alias.to_string());
                }
            }
        }
        Ok(Catalog {
            tree,
            kernel: kernel.clone(),
            modules,
            builtin,
            builtin_info,
            infos: std::sync::Mutex::new(BTreeMap::new()),
            aliases: OnceLock::new(),
        })
    }

    /// Total count and bytes of the loadable modules.
    pub fn totals(&self) -> (usize, u64) {
        (
            self.modules.len(),
            self.modules.values().map(|m| m.size).sum(),
        )
    }

    fn read_info(&self, m: &ModuleFile) -> Result<ModInfo> {
        let Some(Kind::File(c)) = self.tree.get(&m.path).map(|e| &e.kind) else {
            bail!("{}: not a file in the tree", m.path);
        };
        let info = modinfo::read(&m.path, c.as_slice())?;
        if info.name != m.name {
            bail!(
                "{}: the file name says module {} but .modinfo says {}",
                m.path,
                m.name,
                info.name
            );
        }
        Ok(info)
    }

    /// The `.modinfo` of the loadable module `name` (read once, then cached), which must
    /// have been built for this kernel.
    pub fn info(&self, name: &str) -> Result<ModInfo> {
        let m = self
            .modules
            .get(name)
            .with_context(|| format!("no module {name}"))?;
        let cached = self.lock_infos().get(name).cloned();
        let info = match cached {
            Some(i) => i,
            None => {
                let i = self.read_info(m)?;
                self.lock_infos().insert(name.to_string(), i.clone());
                i
            }
        };
        // vermagic starts with the release the module was built for; the kernel refuses
        // a module whose vermagic differs from its own.
        if info.vermagic.split_whitespace().next() != Some(self.kernel.version.as_str()) {
            bail!(
                "{}: built for kernel {:?}, not {}",
                m.path,
                info.vermagic,
                self.kernel.version
            );
        }
        Ok(info)
    }

    fn lock_infos(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ModInfo>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.infos.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every module's `.modinfo` (on all cores) and builds the alias table.
    fn alias_table(&self) -> Result<&Vec<Alias>> {
        let r = self
            .aliases
            .get_or_init(|| self.build_alias_table().map_err(|e| format!("{e:#}")));
        r.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn build_alias_table(&self) -> Result<Vec<Alias>> {
        let all: Vec<&ModuleFile> = self.modules.values().collect();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        let chunk = all.len().div_ceil(workers).max(1);
        let results: Vec<Result<Vec<(String, ModInfo)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = all
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|m| Ok((m.name.clone(), self.read_info(m)?)))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a modinfo reader panicked")))
                })
                .collect()
        });
        let mut table = Vec::new();
        let mut infos = self.lock_infos();
        for r in results {
            for (name, info) in r? {
                for a in &info.aliases {
                    if let Ok(p) = glob::Pattern::new(&modinfo::normalize(a)) {
                        table.push(Alias {
                            pattern: p,
                            module: name.clone(),
                            builtin: false,
                        });
                    }
                }
                infos.insert(name, info);
            }
        }
        for (m, aliases) in &self.builtin_info {
            for a in aliases {
                if let Ok(p) = glob::Pattern::new(&modinfo::normalize(a)) {
                    table.push(Alias {
                        pattern: p,
                        module: m.clone(),
                        builtin: true,
                    });
                }
            }
        }
        Ok(table)
    }

    /// Modules whose aliases match `name` (as modprobe resolves a name that is no module):
    /// the loadable ones, and the built-in ones.
    pub fn by_alias(&self, name: &str) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let n = modinfo::normalize(name);
        let mut loadable = BTreeSet::new();
        let mut builtin = BTreeSet::new();
        for a in self.alias_table()? {
            if a.pattern.matches(&n) {
                if a.builtin {
                    builtin.insert(a.module.clone());
                } else {
                    loadable.insert(a.module.clone());
                }
            }
        }
        Ok((loadable, builtin))
    }

    /// Up to three module names close to `name` (edit distance or containment).
    pub fn suggest(&self, name: &str) -> Vec<String> {
        let n = modinfo::normalize(name);
        let mut scored: Vec<(usize, &String)> = self
            .modules
            .keys()
            .chain(self.builtin.iter())
            .filter_map(|c| {
                let d = edit_distance(&n, c);
                let contains = n.len() >= 3 && (c.contains(&n) || n.contains(c.as_str()));
                (d <= 2 || contains).then_some((if d <= 2 { d } else { 3 + d }, c))
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored.into_iter().take(3).map(|(_, c)| c.clone()).collect()
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("virtio_blk", "virtio_blk"), 0);
        assert_eq!(edit_distance("virtio_blkk", "virtio_blk"), 1);
        assert_eq!(edit_distance("ovrelay", "overlay"), 2);
    }
}
