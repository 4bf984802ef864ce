//! The dependency solver: apt's `pkgDepCache::MarkInstall` walk, reproduced.
//!
//! Consumes a [`Universe`] and a [`Request`] and produces a [`Resolution`]. The walk
//! follows apt (apt-pkg/depcache.cc) so that the closure equals what
//! `apt-get install` picks on an empty system:
//! - requested packages are marked first, then their dependencies are installed
//!   depth-first, requested packages in apt's package order;
//! - an or-group already satisfied by a marked package is skipped; otherwise the
//!   possible solutions of each alternative in turn (the alternative's own candidate,
//!   then providers, sorted like apt's `CompareProviders`) are tried until one can be
//!   installed;
//! - a package one of whose critical dependencies no candidate can satisfy, or whose
//!   dependencies fail, is discarded for the rest of the walk (apt drops its candidate).
//!
//! Conflicts and Breaks (Policy 7.4, 7.6) make an alternative fail; the final set is
//! checked again and any conflict left is an error.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{bail, Result};

use super::index::{Stanza, Universe};
use super::relation::{group_to_string, Atom, Group};
use super::{CutEdge, Request, Resolution, Selected};

/// The package slipway substitutes when it lays out merged /usr itself.
const USR_IS_MERGED: &str = "usr-is-merged";

pub(super) fn resolve(u: &Universe, req: &Request) -> Result<Resolution> {
    let mut s = Solver {
        u,
        recommends: req.recommends,
        merged_usr: req.merged_usr,
        pins: req.pins.clone(),
        excluded: req.exclude.iter().cloned().collect(),
        protected: HashSet::new(),
        discarded: HashSet::new(),
        selected: HashMap::new(),
        cut_edges: BTreeSet::new(),
        notes: Vec::new(),
        failure: None,
    };

    // Validate the request and mark every requested package, like apt-get's first
    // pass (MarkInstall without auto-install).
    let mut requested: Vec<&Stanza> = Vec::new();
    for entry in &req.install {
        let (name, version) = match entry.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (entry.trim(), None),
        };
        if s.excluded.contains(name) {
            bail!("package {name} is both requested and excluded; remove it from one of the lists");
        }
        if let Some(v) = version {
            if s.pins.get(name).is_some_and(|p| p != v) {
                bail!(
                    "version clash: {name}={v} is requested but the lock pins {name} {}",
                    s.pins[name]
                );
            }
            if u.exact(name, v).is_none() {
                let have: Vec<&str> = u.versions(name).map(|x| x.version.as_str()).collect();
                if have.is_empty() {
                    bail!("unknown package {name}{}", suggest(u, name));
                }
                bail!(
                    "{name}={v}: no such version (available: {})",
                    have.join(", ")
                );
            }
            s.pins.insert(name.to_string(), v.to_string());
        }
        let stanza = match s.chosen(name) {
            Some(st) => st,
            None if u.is_real(name) => {
                bail!("{name}: {}", s.explain_missing(name))
            }
            None => {
                let provs: BTreeSet<&str> =
                    u.providers(name).map(|(p, _)| p.name.as_str()).collect();
                match provs.len() {
                    0 => bail!("unknown package {name}{}", suggest(u, name)),
                    1 => {
                        let only = provs.iter().next().copied().unwrap_or_default();
                        s.notes.push(format!(
                            "selected {only} for virtual package {name} (its only provider)"
                        ));
                        match s.chosen(only) {
                            Some(st) => st,
                            None => bail!("{only}: {}", s.explain_missing(only)),
                        }
                    }
                    _ => bail!(
                        "{name} is a virtual package provided by {}; request one of them",
                        provs.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                }
            }
        };
        if !requested.iter().any(|r| std::ptr::eq(*r, stanza)) {
            requested.push(stanza);
        }
    }
    for r in &requested {
        s.protected.insert(r.name.clone());
        s.selected.insert(r.name.clone(), r);
    }
    // apt-get keeps the requests in a set ordered by package ID, and auto-installs
    // their dependencies in that order.
    requested.sort_by_key(|r| u.apt_order(&r.name));
    for r in &requested {
        let mut chain = Vec::new();
        if !s.mark_install(r, &mut chain, true) {
            let why = s
                .failure
                .take()
                .unwrap_or_else(|| format!("{}: its dependencies cannot be installed", r.name));
            bail!("cannot resolve {}: {why}", r.name);
        }
    }
    s.check_conflicts()?;
    Ok(s.finish(&requested))
}

fn suggest(u: &Universe, name: &str) -> String {
    let close = u.close_names(name, 5);
    if close.is_empty() {
        " (no similar names in the package indices)".to_string()
    } else {
        format!(" (did you mean: {}?)", close.join(", "))
    }
}

struct Solver<'u> {
    u: &'u Universe,
    recommends: bool,
    merged_usr: bool,
    pins: BTreeMap<String, String>,
    excluded: BTreeSet<String>,
    /// Requested packages (apt's "protected").
    protected: HashSet<String>,
    /// Packages whose install failed; apt drops their candidate for the rest of the walk.
    discarded: HashSet<String>,
    selected: HashMap<String, &'u Stanza>,
    cut_edges: BTreeSet<(String, String, String)>,
    notes: Vec<String>,
    /// The latest explanation of why something could not be installed.
    failure: Option<String>,
}

impl<'u> Solver<'u> {
    /// The version of `name` the walk may use: the pinned one, else apt's candidate.
    fn chosen(&self, name: &str) -> Option<&'u Stanza> {
        if self.discarded.contains(name) {
            return None;
        }
        match self.pins.get(name) {
            Some(v) => self.u.exact(name, v),
            None => self.u.candidate(name),
        }
    }

    fn arch_ok(&self, atom: &Atom, s: &Stanza) -> bool {
        match atom.arch.as_deref() {
            None | Some("native") => true,
            // `:any` needs a Multi-Arch: allowed package (Policy 7.1, multiarch spec).
            Some("any") => s.multi_arch.as_deref() == Some("allowed"),
            Some(a) => a == self.u.arch() || (s.architecture == "all" && a == "all"),
        }
    }

    /// apt's `FromDependency(.., CANDIDATE)` for one alternative, sorted like
    /// `CompareProviders`: the target's own usable version, then providers.
    fn solutions(&self, atom: &Atom) -> Vec<&'u Stanza> {
        let mut out: Vec<&'u Stanza> = Vec::new();
        if let Some(s) = self.chosen(&atom.name) {
            if atom.version_ok(&s.version) && self.arch_ok(atom, s) {
                out.push(s);
            }
        }
        for (p, pv) in self.u.providers(&atom.name) {
            let current = self.chosen(&p.name).is_some_and(|c| std::ptr::eq(c, p));
            if current
                && atom.provide_ok(pv)
                && self.arch_ok(atom, p)
                && !out.iter().any(|o| std::ptr::eq(*o, p))
            {
                out.push(p);
            }
        }
        out.sort_by_key(|s| self.provider_key(s, &atom.name));
        out
    }

    /// Sort key mirroring apt's `CompareProviders`: protected (requested) first, the
    /// target package itself, Essential, Important/Protected, higher Priority, then
    /// apt's package ID (higher first, as apt's final tie-break does).
    fn provider_key(
        &self,
        s: &Stanza,
        target: &str,
    ) -> (bool, bool, bool, bool, u8, std::cmp::Reverse<u32>) {
        (
            !self.protected.contains(&s.name),
            s.name != target,
            !s.essential,
            !s.important,
            s.priority,
            std::cmp::Reverse(self.u.apt_order(&s.name)),
        )
    }

    fn is_selected(&self, s: &Stanza) -> bool {
        self.selected
            .get(&s.name)
            .is_some_and(|x| std::ptr::eq(*x, s))
    }

    /// Is the group satisfied by a marked package? Excluded names count as present
    /// and are recorded as cut edges.
    fn satisfied(&mut self, from: &str, group: &Group) -> bool {
        if group
            .iter()
            .any(|a| self.solutions(a).iter().any(|s| self.is_selected(s)))
        {
            return true;
        }
        // An excluded name, or a virtual name all of whose providers are excluded.
        let cut = group.iter().find(|a| {
            self.excluded.contains(&a.name) || {
                let sol = self.solutions(a);
                !sol.is_empty() && sol.iter().all(|s| self.excluded.contains(&s.name))
            }
        });
        if let Some(a) = cut {
            self.cut_edges
                .insert((from.to_string(), a.name.clone(), group_to_string(group)));
            return true;
        }
        false
    }

    /// Can some candidate satisfy the group at all (apt's DepCVer / DepInstall)?
    fn statically_ok(&self, group: &Group) -> bool {
        group
            .iter()
            .any(|a| self.excluded.contains(&a.name) || !self.solutions(a).is_empty())
    }

    /// apt's `MarkInstall` with auto-install. `from_user` is the second pass over a
    /// requested package, which is already marked and is never discarded.
    fn mark_install(&mut self, p: &'u Stanza, chain: &mut Vec<String>, from_user: bool) -> bool {
        if !from_user {
            if self.selected.contains_key(&p.name) {
                return true;
            }
            if self.chosen(&p.name).is_none() {
                return false;
            }
        }
        chain.push(p.name.clone());
        let ok = self.mark_install_inner(p, chain, from_user);
        chain.pop();
        ok
    }

    fn mark_install_inner(
        &mut self,
        p: &'u Stanza,
        chain: &mut Vec<String>,
        from_user: bool,
    ) -> bool {
        // IsInstallOkDependenciesSatisfiableByCandidates.
        for (group, critical) in p.positive_groups(self.recommends) {
            if critical && !self.satisfied_now(group) && !self.statically_ok(group) {
                self.failure = Some(format!(
                    "{} -> {}: {}",
                    chain.join(" -> "),
                    group_to_string(group),
                    self.explain(group)
                ));
                if !from_user {
                    self.discarded.insert(p.name.clone());
                }
                return false;
            }
        }
        if !from_user {
            if let Some(why) = self.conflict_with_selected(p) {
                self.failure = Some(format!("{}: {why}", chain.join(" -> ")));
                return false;
            }
            self.selected.insert(p.name.clone(), p);
        }
        let mut ok = true;
        for (group, critical) in p.positive_groups(self.recommends) {
            if self.satisfied(&p.name, group) {
                continue;
            }
            let mut candidates: Vec<&'u Stanza> = Vec::new();
            let usr =
                self.merged_usr && group.len() > 1 && group.iter().any(|a| a.name == USR_IS_MERGED);
            if usr {
                if let Some(a) = group.iter().find(|a| a.name == USR_IS_MERGED) {
                    candidates.extend(self.solutions(a));
                }
            }
            for a in group {
                for s in self.solutions(a) {
                    // A recipe's exclude list also rules a package out as a provider.
                    if self.excluded.contains(&s.name) {
                        continue;
                    }
                    // apt removes adjacent duplicates only; later repeats are harmless
                    // because a marked package returns at once.
                    if candidates.last().is_some_and(|l| std::ptr::eq(*l, s)) {
                        continue;
                    }
                    candidates.push(s);
                }
            }
            let mut found = false;
            for c in candidates {
                if self.mark_install(c, chain, false) {
                    found = true;
                    if usr && c.name == USR_IS_MERGED {
                        let note = format!(
                            "chose {USR_IS_MERGED} for {}: slipway lays out merged /usr itself",
                            group_to_string(group)
                        );
                        if !self.notes.contains(&note) {
                            self.notes.push(note);
                        }
                    }
                    break;
                }
            }
            if !found && critical {
                ok = false;
                if self.failure.is_none() {
                    self.failure = Some(format!(
                        "{} -> {}: no alternative can be installed",
                        chain.join(" -> "),
                        group_to_string(group)
                    ));
                }
                if !from_user {
                    break;
                }
            }
        }
        if !ok && !from_user {
            // MarkInstall_DiscardInstall: unmark and drop the candidate; what was
            // marked on the way stays marked, as in apt.
            self.selected.remove(&p.name);
            self.discarded.insert(p.name.clone());
        }
        ok
    }

    fn satisfied_now(&self, group: &Group) -> bool {
        group
            .iter()
            .any(|a| self.solutions(a).iter().any(|s| self.is_selected(s)))
    }

    /// Why no alternative of `group` has a usable version.
    fn explain(&self, group: &Group) -> String {
        let mut parts = Vec::new();
        for a in group {
            let why = if self.u.is_real(&a.name) {
                match self.chosen(&a.name) {
                    None => self.explain_missing(&a.name),
                    Some(s) if !self.arch_ok(a, s) => format!(
                        "{} {} is not Multi-Arch: allowed, so it cannot satisfy :{}",
                        s.name,
                        s.version,
                        a.arch.as_deref().unwrap_or("")
                    ),
                    Some(s) if self.pins.contains_key(&a.name) => format!(
                        "version clash: the lock pins {} {}, which does not satisfy it (candidate {})",
                        a.name,
                        s.version,
                        self.u.candidate(&a.name).map_or("none", |c| c.version.as_str())
                    ),
                    Some(s) => format!("no version satisfies it (candidate {})", s.version),
                }
            } else {
                let provs: Vec<String> = self
                    .u
                    .providers(&a.name)
                    .map(|(p, v)| match v {
                        Some(v) => format!("{} provides {} {v}", p.name, a.name),
                        None => format!("{} provides {} unversioned", p.name, a.name),
                    })
                    .collect();
                if provs.is_empty() {
                    "no package of that name".to_string()
                } else {
                    format!(
                        "virtual package, no provider satisfies it ({})",
                        provs.join(", ")
                    )
                }
            };
            if group.len() == 1 {
                return why;
            }
            parts.push(format!("{a}: {why}"));
        }
        parts.join("; ")
    }

    fn explain_missing(&self, name: &str) -> String {
        if self.discarded.contains(name) {
            return "it cannot be installed (an earlier attempt failed)".to_string();
        }
        match self.pins.get(name) {
            Some(v) => {
                let have: Vec<&str> = self.u.versions(name).map(|s| s.version.as_str()).collect();
                format!(
                    "version clash: pinned to {v}, but the indices only have {}",
                    have.join(", ")
                )
            }
            None => "no installable version".to_string(),
        }
    }

    /// Does `neg` (a Conflicts/Breaks atom of package `owner`) hit package `s`?
    /// Policy 7.4/7.6: by name and version, or through `s`'s Provides (versioned
    /// conflicts only hit versioned provides); never the owner itself.
    fn hits(neg: &Atom, owner: &Stanza, s: &Stanza) -> bool {
        if s.name == owner.name {
            return false;
        }
        if s.name == neg.name && neg.version_ok(&s.version) {
            return true;
        }
        s.provides
            .iter()
            .any(|(n, v)| *n == neg.name && neg.provide_ok(v.as_deref()))
    }

    fn conflict_with_selected(&self, p: &Stanza) -> Option<String> {
        let mut names: Vec<&String> = self.selected.keys().collect();
        names.sort();
        for name in names {
            let q = self.selected[name];
            if let Some(why) = conflict_between(p, q).or_else(|| conflict_between(q, p)) {
                return Some(why);
            }
        }
        None
    }

    fn check_conflicts(&self) -> Result<()> {
        let mut all: Vec<&Stanza> = self.selected.values().copied().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        for p in &all {
            for q in &all {
                if let Some(why) = conflict_between(p, q) {
                    bail!("the selected packages conflict: {why}");
                }
            }
        }
        Ok(())
    }

    fn finish(self, requested: &[&Stanza]) -> Resolution {
        let mut required_by: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for r in requested {
            required_by
                .entry(&r.name)
                .or_default()
                .insert("(requested)".into());
        }
        for p in self.selected.values() {
            for (group, _) in p.positive_groups(self.recommends) {
                for a in group {
                    let sols: Vec<&Stanza> = self
                        .solutions(a)
                        .into_iter()
                        .filter(|s| self.is_selected(s))
                        .collect();
                    if sols.is_empty() {
                        continue;
                    }
                    for s in sols {
                        if s.name != p.name {
                            required_by
                                .entry(&s.name)
                                .or_default()
                                .insert(p.name.clone());
                        }
                    }
                    break;
                }
            }
        }
        let mut packages: Vec<Selected> = self
            .selected
            .values()
            .map(|s| Selected {
                name: s.name.clone(),
                version: s.version.clone(),
                architecture: s.architecture.clone(),
                size: s.size,
                installed_size_kib: s.installed_size_kib,
                sha256: s.sha256.clone(),
                source: s.source.clone(),
                source_version: s.source_version.clone(),
                suite: s.suite.clone(),
                component: s.component.clone(),
                filename: s.filename.clone(),
                essential: s.essential,
                multi_arch: s.multi_arch.clone(),
                required_by: {
                    // "(requested)" sorts first already ('(' < letters).
                    required_by
                        .get(s.name.as_str())
                        .map(|v| v.iter().cloned().collect())
                        .unwrap_or_default()
                },
            })
            .collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Resolution {
            packages,
            cut_edges: self
                .cut_edges
                .into_iter()
                .map(|(from, to, relation)| CutEdge { from, to, relation })
                .collect(),
            notes: self.notes,
        }
    }
}

/// Does `p` declare a Conflicts or Breaks that hits `q`? Returns a sentence naming both.
fn conflict_between(p: &Stanza, q: &Stanza) -> Option<String> {
    for (field, atoms) in [("Conflicts", &p.conflicts), ("Breaks", &p.breaks)] {
        for a in atoms {
            if Solver::hits(a, p, q) {
                return Some(format!(
                    "{} {} {field}: {a}, which {} {} matches",
                    p.name, p.version, q.name, q.version
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::{resolve, Request, Universe};
    use std::collections::BTreeMap;

    /// Builds stanzas from `name version; Field: value; ...` shorthand, one per line.
    fn universe(spec: &str) -> Universe {
        let mut text = String::new();
        for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.split(';');
            let head = parts.next().unwrap().trim();
            let (name, version) = head.split_once(' ').unwrap();
            text.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
            ));
            let mut has_priority = false;
            for f in parts {
                has_priority |= f.trim().starts_with("Priority:");
                text.push_str(f.trim());
                text.push('\n');
            }
            if !has_priority {
                text.push_str("Priority: optional\n");
            }
            text.push('\n');
        }
        Universe::from_texts(&[("stable", &text)], "amd64").unwrap()
    }

    fn req(names: &[&str]) -> Request {
        Request {
            install: names.iter().map(|s| s.to_string()).collect(),
            ..Request::default()
        }
    }

    fn names(u: &Universe, r: &Request) -> Vec<String> {
        resolve(u, r)
            .unwrap()
            .packages
            .into_iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    fn err(u: &Universe, r: &Request) -> String {
        format!("{:#}", resolve(u, r).unwrap_err())
    }

    #[test]
    fn closure_with_alternatives_and_versions() {
        let u = universe(
            "app 1; Depends: lib (>= 2), missing | alt, lib
             lib 2
             alt 1
             unused 1",
        );
        assert_eq!(names(&u, &req(&["app"])), ["alt=1", "app=1", "lib=2"]);
        let res = resolve(&u, &req(&["app"])).unwrap();
        assert_eq!(res.packages[0].required_by, ["app"]);
        assert_eq!(res.packages[1].required_by, ["(requested)"]);
    }

    #[test]
    fn requested_alternative_is_used() {
        let u = universe(
            "app 1; Depends: first | second
             first 1
             second 1",
        );
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "first=1"]);
        assert_eq!(names(&u, &req(&["app", "second"])), ["app=1", "second=1"]);
    }

    #[test]
    fn virtual_packages_and_versioned_provides() {
        let u = universe(
            "app 1; Depends: virt (>= 2)
             plain 1; Provides: virt
             old 1; Provides: virt (= 1)
             good 1; Provides: virt (= 2)",
        );
        // Unversioned and too-old provides cannot satisfy a versioned dependency.
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "good=1"]);
        let u = universe(
            "app 1; Depends: virt
             low 1; Provides: virt
             high 1; Provides: virt; Priority: required",
        );
        // apt prefers the provider with the higher Priority.
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "high=1"]);
        // A provider that is already selected is used.
        assert_eq!(names(&u, &req(&["app", "low"])), ["app=1", "low=1"]);
        // Equal providers: apt's last tie-break takes the package it met last.
        let u = universe(
            "app 1; Depends: virt
             early 1; Provides: virt
             late 1; Provides: virt",
        );
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "late=1"]);
    }

    #[test]
    fn alternative_with_broken_dependencies_is_skipped() {
        let u = universe(
            "app 1; Depends: broken | ok
             broken 1; Depends: nothere
             ok 1",
        );
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "ok=1"]);
    }

    #[test]
    fn conflicts_are_errors_naming_both() {
        let u = universe(
            "a 1; Conflicts: b (<< 2)
             b 1",
        );
        let e = err(&u, &req(&["a", "b"]));
        assert!(
            e.contains("a 1 Conflicts: b (<< 2)") && e.contains("b 1"),
            "{e}"
        );
        // Through Provides; a package never conflicts with itself.
        let u = universe(
            "a 1; Conflicts: virt; Provides: virt
             b 1; Provides: virt",
        );
        assert_eq!(names(&u, &req(&["a"])), ["a=1"]);
        let e = err(&u, &req(&["a", "b"]));
        assert!(e.contains("Conflicts: virt"), "{e}");
        // Breaks too; an alternative that would break is skipped.
        let u = universe(
            "app 1; Depends: x | y
             x 1; Breaks: app
             y 1",
        );
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "y=1"]);
    }

    #[test]
    fn exclude_cuts_edges() {
        let u = universe(
            "app 1; Depends: big (>= 1), small
             big 1; Depends: huge
             small 1",
        );
        let mut r = req(&["app"]);
        r.exclude = vec!["big".into()];
        let res = resolve(&u, &r).unwrap();
        assert_eq!(res.packages.len(), 2);
        assert_eq!(res.cut_edges.len(), 1);
        assert_eq!(
            (res.cut_edges[0].from.as_str(), res.cut_edges[0].to.as_str()),
            ("app", "big")
        );
        assert_eq!(res.cut_edges[0].relation, "big (>= 1)");
        let mut r = req(&["big"]);
        r.exclude = vec!["big".into()];
        assert!(err(&u, &r).contains("both requested and excluded"));
    }

    #[test]
    fn pins_and_exact_versions() {
        let text = "Package: lib\nVersion: 1\nArchitecture: amd64\n\nPackage: lib\nVersion: 2\nArchitecture: amd64\n\nPackage: app\nVersion: 1\nArchitecture: all\nDepends: lib (>= 2)\n";
        let u = Universe::from_texts(&[("stable", text)], "amd64").unwrap();
        assert_eq!(names(&u, &req(&["lib=1"])), ["lib=1"]);
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "lib=2"]);
        let mut r = req(&["app"]);
        r.pins = BTreeMap::from([("lib".to_string(), "1".to_string())]);
        let e = err(&u, &r);
        assert!(e.contains("version clash") && e.contains("lib 1"), "{e}");
        assert!(err(&u, &req(&["lib=3"])).contains("available: 2, 1"));
    }

    #[test]
    fn unknown_names_get_suggestions() {
        let u = universe(
            "systemd 1
             systemd-sysv 1
             virtual-maker 1; Provides: virt",
        );
        let e = err(&u, &req(&["systmd"]));
        assert!(
            e.contains("unknown package systmd") && e.contains("systemd"),
            "{e}"
        );
        // A virtual package with one provider resolves to it, with a note.
        let res = resolve(&u, &req(&["virt"])).unwrap();
        assert_eq!(res.packages[0].name, "virtual-maker");
        assert!(res.notes[0].contains("virtual-maker"));
    }

    #[test]
    fn unsatisfiable_shows_the_chain() {
        let u = universe(
            "python3-flask 1; Depends: python3-werkzeug
             python3-werkzeug 1; Depends: python3-foo (>= 9)
             python3-foo 1.2",
        );
        let e = err(&u, &req(&["python3-flask"]));
        assert!(
            e.contains("python3-flask -> python3-werkzeug -> python3-foo (>= 9): no version satisfies it (candidate 1.2)"),
            "{e}"
        );
    }

    #[test]
    fn merged_usr_prefers_usr_is_merged() {
        let u = universe(
            "init-system-helpers 1; Depends: usrmerge | usr-is-merged
             usrmerge 1; Depends: perl; Provides: usr-is-merged
             usr-is-merged 1
             perl 1",
        );
        let mut r = req(&["init-system-helpers"]);
        assert_eq!(
            names(&u, &r),
            ["init-system-helpers=1", "perl=1", "usrmerge=1"]
        );
        r.merged_usr = true;
        let res = resolve(&u, &r).unwrap();
        assert_eq!(res.packages.len(), 2);
        assert_eq!(res.packages[1].name, "usr-is-merged");
        assert_eq!(
            res.notes,
            ["chose usr-is-merged for usrmerge | usr-is-merged: slipway lays out merged /usr itself"]
        );
    }

    #[test]
    fn any_qualifier_needs_multi_arch_allowed() {
        let u = universe(
            "app 1; Depends: python3:any
             python3 1; Multi-Arch: allowed
             tool 1; Depends: plain:any
             plain 1",
        );
        assert_eq!(names(&u, &req(&["app"])), ["app=1", "python3=1"]);
        assert!(err(&u, &req(&["tool"])).contains("Multi-Arch: allowed"));
    }

    #[test]
    fn deterministic() {
        let u = universe(
            "app 1; Depends: v
             p1 1; Provides: v
             p2 1; Provides: v
             p3 1; Provides: v",
        );
        let first = names(&u, &req(&["app"]));
        for _ in 0..20 {
            assert_eq!(names(&u, &req(&["app"])), first);
        }
    }
}
