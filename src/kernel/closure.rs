//! The module plan: consumes the recipe's module requests (feature names or module
//! names) and a kernel's [`Catalog`], produces the modules to keep (the requests plus
//! their hard dependencies and soft dependencies), the requests that are built in, and
//! load orders for subsets.
//!
//! Names are resolved as modprobe resolves them (modprobe(8)): `-` and `_` are the same
//! character; a loadable module by that name, else a built-in one, else every module
//! with a matching alias. A request nothing satisfies is an error naming it and the
//! feature that asked; a soft dependency nothing satisfies is skipped, as modprobe skips
//! it, and noted.

use super::features;
use super::index::Catalog;
use super::modinfo::normalize;
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};

/// One module kept in the image.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Module {
    /// Module name (underscores).
    pub name: String,
    /// Tree path of the module file.
    pub path: String,
    /// Path relative to the modules directory.
    pub rel: String,
    /// File size as shipped.
    pub size: u64,
    /// Hard dependencies (loadable modules; built-in ones are left out).
    pub deps: Vec<String>,
    /// Soft dependencies loaded before it (those that resolved to loadable modules).
    pub pre: Vec<String>,
    /// Soft dependencies loaded after it.
    pub post: Vec<String>,
    /// Why it is kept: the requests (`feature:module` or `module`) and modules that
    /// pulled it in.
    pub why: Vec<String>,
}

/// A requested module that is built into the kernel.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BuiltinHit {
    /// Module name.
    pub name: String,
    /// The request that named it.
    pub requested_by: String,
}

/// What to keep of one kernel's modules.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ModulePlan {
    /// The kernel release.
    pub kernel: String,
    /// Tree path of the modules directory.
    pub modules_dir: String,
    /// Modules kept, by name.
    pub keep: Vec<Module>,
    /// Requests satisfied by built-in modules.
    pub builtin_hits: Vec<BuiltinHit>,
    /// Loadable modules the kernel ships, and their bytes.
    pub total_count: usize,
    /// Bytes of every loadable module.
    pub total_bytes: u64,
    /// Soft dependencies that exist nowhere (skipped, as modprobe skips them).
    pub notes: Vec<String>,
    /// The requests, as given.
    pub requested: Vec<String>,
    requests: BTreeMap<String, Vec<String>>,
}

/// How a name resolved.
enum Resolved {
    Loadable(Vec<String>),
    Builtin(String),
    Missing,
}

fn resolve(cat: &Catalog, name: &str) -> Result<Resolved> {
    let n = normalize(name);
    if cat.modules.contains_key(&n) {
        return Ok(Resolved::Loadable(vec![n]));
    }
    if cat.builtin.contains(&n) {
        return Ok(Resolved::Builtin(n));
    }
    let (loadable, builtin) = cat.by_alias(&n)?;
    if !loadable.is_empty() {
        return Ok(Resolved::Loadable(loadable.into_iter().collect()));
    }
    if let Some(b) = builtin.into_iter().next() {
        return Ok(Resolved::Builtin(b));
    }
    Ok(Resolved::Missing)
}

/// Expands a request into (request label, module name) pairs.
fn expand(request: &str) -> Vec<(String, String)> {
    match features::feature(request) {
        Some(f) => f
            .modules
            .iter()
            .map(|m| (format!("{}:{m}", f.name), m.to_string()))
            .collect(),
        None => vec![(request.to_string(), request.to_string())],
    }
}

/// Plans which modules of `cat`'s kernel to keep for `requests`.
pub fn plan(cat: &Catalog, requests: &[String]) -> Result<ModulePlan> {
    let mut keep: BTreeMap<String, Module> = BTreeMap::new();
    let mut builtin_hits = Vec::new();
    let mut notes = Vec::new();
    let mut by_request: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // (module, why) pairs still to visit.
    let mut work: Vec<(String, String)> = Vec::new();
    for r in requests {
        let mut resolved = Vec::new();
        for (label, name) in expand(r) {
            match resolve(cat, &name)? {
                Resolved::Loadable(ms) => {
                    for m in ms {
                        resolved.push(m.clone());
                        work.push((m, label.clone()));
                    }
                }
                Resolved::Builtin(b) => builtin_hits.push(BuiltinHit {
                    name: b,
                    requested_by: label.clone(),
                }),
                Resolved::Missing => return Err(missing(cat, r, &label, &name)),
            }
        }
        by_request.insert(normalize(r), resolved);
    }
    while let Some((name, why)) = work.pop() {
        if let Some(m) = keep.get_mut(&name) {
            if !m.why.contains(&why) {
                m.why.push(why);
            }
            continue;
        }
        let m = visit(cat, name.clone(), why, &mut work, &mut notes)?;
        keep.insert(name, m);
    }
    let (total_count, total_bytes) = cat.totals();
    let mut keep: Vec<Module> = keep.into_values().collect();
    for m in &mut keep {
        m.why.sort();
    }
    builtin_hits.sort_by(|a, b| (&a.name, &a.requested_by).cmp(&(&b.name, &b.requested_by)));
    builtin_hits.dedup();
    notes.sort();
    notes.dedup();
    Ok(ModulePlan {
        kernel: cat.kernel.version.clone(),
        modules_dir: cat.kernel.modules_dir.clone(),
        keep,
        builtin_hits,
        total_count,
        total_bytes,
        notes,
        requested: requests.to_vec(),
        requests: by_request,
    })
}

/// Why `name`, asked for under `label` by the request `r`, is not in `cat`'s kernel.
fn missing(cat: &Catalog, r: &str, label: &str, name: &str) -> anyhow::Error {
    let asked = if label == name {
        format!("module \"{name}\"")
    } else {
        format!("feature \"{r}\" asks for module \"{name}\", which")
    };
    let hint = match cat.suggest(name).as_slice() {
        [] => String::new(),
        s => format!("; did you mean {}?", s.join(", ")),
    };
    let features = if features::feature(r).is_none() {
        format!(
            " (features: {})",
            features::FEATURES
                .iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    anyhow::anyhow!(
        "{asked} is neither a module nor built into kernel {}{hint}{features}",
        cat.kernel.version
    )
}

/// The kept module `name` (kept because of `why`), with its dependencies and soft
/// dependencies pushed onto `work`; soft dependencies that exist nowhere go into
/// `notes`.
fn visit(
    cat: &Catalog,
    name: String,
    why: String,
    work: &mut Vec<(String, String)>,
    notes: &mut Vec<String>,
) -> Result<Module> {
    let file = match cat.modules.get(&name) {
        Some(f) => f.clone(),
        None => bail!("internal error: {name} is not a loadable module"),
    };
    let info = cat.info(&name)?;
    let mut deps = Vec::new();
    for d in &info.depends {
        match resolve(cat, d)? {
            Resolved::Loadable(ms) => {
                for m in ms {
                    deps.push(m.clone());
                    work.push((m, name.clone()));
                }
            }
            Resolved::Builtin(_) => {}
            Resolved::Missing => bail!(
                "{}: module {name} depends on {d}, which kernel {} does not have (a broken kernel package?)",
                file.path,
                cat.kernel.version
            ),
        }
    }
    let mut soft = |names: &[String],
                    into: &mut Vec<String>,
                    work: &mut Vec<(String, String)>|
     -> Result<()> {
        for s in names {
            match resolve(cat, s)? {
                Resolved::Loadable(ms) => {
                    for m in ms {
                        into.push(m.clone());
                        work.push((m, name.clone()));
                    }
                }
                Resolved::Builtin(_) => {}
                Resolved::Missing => notes.push(format!(
                    "{name}: soft dependency {s} exists nowhere in kernel {} (skipped, as modprobe does)",
                    cat.kernel.version
                )),
            }
        }
        Ok(())
    };
    let mut pre = Vec::new();
    let mut post = Vec::new();
    soft(&info.pre, &mut pre, work)?;
    soft(&info.post, &mut post, work)?;
    for v in [&mut deps, &mut pre, &mut post] {
        v.sort();
        v.dedup();
    }
    Ok(Module {
        name,
        path: file.path,
        rel: file.rel,
        size: file.size,
        deps,
        pre,
        post,
        why: vec![why],
    })
}

impl ModulePlan {
    /// The kept module called `name` (`-` or `_`).
    pub fn get(&self, name: &str) -> Option<&Module> {
        let n = normalize(name);
        self.keep
            .binary_search_by(|m| m.name.as_str().cmp(&n))
            .ok()
            .map(|i| &self.keep[i])
    }

    /// Bytes of the kept modules.
    pub fn kept_bytes(&self) -> u64 {
        self.keep.iter().map(|m| m.size).sum()
    }

    /// True when `name` is a request that resolved to built-in modules only, or a
    /// built-in module a request named.
    pub fn is_builtin_hit(&self, name: &str) -> bool {
        let n = normalize(name);
        self.builtin_hits.iter().any(|b| b.name == n)
    }

    /// The modules `names` need (feature names or module names, each of which must be
    /// in the plan), in an order that loads every module after its hard dependencies and
    /// `pre:` soft dependencies and before its `post:` ones: what an initramfs's init
    /// loads with finit_module(2), one by one. Built-in names contribute nothing.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<&Module>> {
        let mut roots: Vec<&Module> = Vec::new();
        for r in names {
            for (_, name) in expand(r) {
                match self.get(&name) {
                    Some(m) => roots.push(m),
                    None if self.is_builtin_hit(&name) => {}
                    None => match self.requests.get(&normalize(&name)) {
                        // A request that resolved through an alias.
                        Some(ms) => roots.extend(ms.iter().filter_map(|m| self.get(m))),
                        None => bail!(
                            "module {name} is not in the plan for kernel {} (add it to [kernel] modules)",
                            self.kernel
                        ),
                    },
                }
            }
        }
        let mut order: Vec<&Module> = Vec::new();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut visiting: BTreeSet<&str> = BTreeSet::new();
        for m in roots {
            self.visit(m, &mut order, &mut done, &mut visiting);
        }
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        m: &'a Module,
        order: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a str>,
        visiting: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m.name.as_str()) || !visiting.insert(m.name.as_str()) {
            // Already placed, or a soft-dependency cycle (hard ones cannot exist: the
            // kernel refuses to load them): the first visit places it.
            return;
        }
        for d in m.pre.iter().chain(m.deps.iter()) {
            if let Some(dm) = self.get(d) {
                self.visit(dm, order, done, visiting);
            }
        }
        if done.insert(m.name.as_str()) {
            order.push(m);
        }
        for d in &m.post {
            if let Some(dm) = self.get(d) {
                self.visit(dm, order, done, visiting);
            }
        }
        visiting.remove(m.name.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::modinfo::tests::tiny_module;
    use crate::kernel::KernelInfo;
    use crate::tree::{Entry, Tree};

    const KVER: &str = "6.0.0-test";

    /// A kernel with modules a -> b (hard), c (softdep pre: alias-x, post: d, pre:
    /// nowhere), e (alias alias-x), d, g -> f (built in), and built-in f.
    fn tree() -> (Tree, KernelInfo) {
        let dir = format!("usr/lib/modules/{KVER}");
        let mut t = Tree::new();
        let m = |name: &str, extra: &str| {
            tiny_module(format!("{extra}name={name}\0vermagic={KVER} SMP \0").as_bytes())
        };
        let mods = [
            ("kernel/a.ko", m("a", "depends=b\0")),
            ("kernel/sub/b.ko", m("b", "depends=\0")),
            (
                "kernel/c.ko",
                m("c", "softdep=pre: alias-x nowhere post: d\0"),
            ),
            ("kernel/d.ko", m("d", "")),
            ("kernel/e-e.ko", m("e_e", "alias=alias-x\0")),
            ("kernel/g.ko", m("g", "depends=f\0")),
            ("kernel/h.ko", m("h", "depends=missing\0")),
            (
                "kernel/old.ko",
                tiny_module(b"name=old\0vermagic=5.0.0 SMP\0"),
            ),
        ];
        for (p, bytes) in mods {
            t.put(&format!("{dir}/{p}"), Entry::file(bytes, 0o644, 0))
                .unwrap();
        }
        t.put(
            &format!("{dir}/modules.builtin"),
            Entry::file(b"kernel/f.ko\n".to_vec(), 0o644, 0),
        )
        .unwrap();
        t.put(
            &format!("boot/vmlinuz-{KVER}"),
            Entry::file(vec![0; 4], 0o644, 0),
        )
        .unwrap();
        let k = crate::kernel::find(&t).unwrap();
        assert_eq!(k.modules_dir, dir);
        (t, k)
    }

    fn names(ms: &[&Module]) -> Vec<String> {
        ms.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn closure_follows_hard_and_soft_dependencies() {
        let (t, k) = tree();
        let p =
            crate::kernel::plan(&t, &k, &["a".into(), "c".into(), "f".into(), "g".into()]).unwrap();
        let kept: Vec<&str> = p.keep.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(kept, ["a", "b", "c", "d", "e_e", "g"]);
        assert_eq!(
            p.get("e-e").unwrap().path,
            format!("{}/kernel/e-e.ko", k.modules_dir)
        );
        assert_eq!(p.get("c").unwrap().pre, ["e_e"]);
        assert_eq!(p.get("c").unwrap().post, ["d"]);
        assert_eq!(
            p.get("g").unwrap().deps,
            Vec::<String>::new(),
            "built-in dep left out"
        );
        assert_eq!(p.builtin_hits.len(), 1);
        assert_eq!(p.builtin_hits[0].name, "f");
        assert!(
            p.notes.iter().any(|n| n.contains("nowhere")),
            "{:?}",
            p.notes
        );
        assert_eq!(p.get("b").unwrap().why, ["a"]);
        assert_eq!(names(&p.load_order(&["a".into()]).unwrap()), ["b", "a"]);
        assert_eq!(
            names(&p.load_order(&["c".into()]).unwrap()),
            ["e_e", "c", "d"]
        );
        assert_eq!(
            names(
                &p.load_order(&["f".into(), "c".into(), "a".into(), "b".into()])
                    .unwrap()
            ),
            ["e_e", "c", "d", "b", "a"]
        );
        let e = p.load_order(&["h".into()]).unwrap_err().to_string();
        assert!(e.contains("module h is not in the plan"), "{e}");
        assert_eq!(p.total_count, 8);
    }

    #[test]
    fn requests_resolve_through_aliases() {
        let (t, k) = tree();
        let p = crate::kernel::plan(&t, &k, &["alias_x".into()]).unwrap();
        assert_eq!(p.keep.len(), 1);
        assert_eq!(names(&p.load_order(&["alias-x".into()]).unwrap()), ["e_e"]);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let (t, k) = tree();
        let e = format!(
            "{:#}",
            crate::kernel::plan(&t, &k, &["dd".into()]).unwrap_err()
        );
        assert!(
            e.contains("module \"dd\" is neither a module nor built into kernel 6.0.0-test")
                && e.contains("did you mean d"),
            "{e}"
        );
        assert!(e.contains("features: storage, root"), "{e}");
        let e = format!(
            "{:#}",
            crate::kernel::plan(&t, &k, &["storage".into()]).unwrap_err()
        );
        assert!(
            e.contains("feature \"storage\" asks for module \"virtio_pci\""),
            "{e}"
        );
        let e = format!(
            "{:#}",
            crate::kernel::plan(&t, &k, &["h".into()]).unwrap_err()
        );
        assert!(e.contains("module h depends on missing"), "{e}");
        let e = format!(
            "{:#}",
            crate::kernel::plan(&t, &k, &["old".into()]).unwrap_err()
        );
        assert!(e.contains("built for kernel \"5.0.0 SMP\""), "{e}");
    }

    #[test]
    fn kernels_are_found_or_missing_loudly() {
        let (mut t, _) = tree();
        t.put(
            "usr/lib/modules/7.0/modules.builtin",
            Entry::file(vec![], 0o644, 0),
        )
        .unwrap();
        // Modules without a kernel image beside them are not a kernel.
        assert_eq!(crate::kernel::find(&t).unwrap().version, KVER);
        t.put("boot/vmlinuz-7.0", Entry::file(vec![], 0o644, 0))
            .unwrap();
        let e = crate::kernel::find(&t).unwrap_err().to_string();
        assert!(
            e.contains("more than one kernel in the image (6.0.0-test, 7.0)"),
            "{e}"
        );
        let e = crate::kernel::find(&Tree::new()).unwrap_err().to_string();
        assert!(e.contains("no kernel in the image"), "{e}");
        let mut orphan = Tree::new();
        orphan
            .put(
                "usr/lib/modules/7.0/modules.builtin",
                Entry::file(vec![], 0o644, 0),
            )
            .unwrap();
        let e = crate::kernel::find(&orphan).unwrap_err().to_string();
        assert!(
            e.contains("modules for kernel 7.0 but no boot/vmlinuz-7.0"),
            "{e}"
        );
    }
}
