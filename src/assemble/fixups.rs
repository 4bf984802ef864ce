//! Fix-ups: what maintainer scripts would have done, done declaratively at build time
//! (the root is read-only at run time, and no script ever runs): accounts, alternatives,
//! systemd unit enablement, tmpfiles under /etc and /usr, the CA bundle, os-release and
//! the machine-id. Every skipped script is reported with what slipway did instead; a
//! command slipway does not account for is a warning naming the package.

use super::packages::Unpacked;
use crate::effects::{alternatives, certs, java_certs, shell, systemd, tmpfiles, users};
use crate::recipe::Recipe;
use crate::tree::{merged_usr, Entry, Kind, Tree};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Commands in maintainer scripts whose effect slipway reproduces, or that have no
/// effect on an image built from scratch (they manage upgrades, running services, caches
/// rebuilt at boot, or debconf questions).
const ACCOUNTED: &[&str] = &[
    "adduser",
    "addgroup",
    "useradd",
    "groupadd",
    "usermod",
    "update-alternatives",
    "deb-systemd-helper",
    "deb-systemd-invoke",
    "systemctl",
    "systemd-sysusers",
    "systemd-tmpfiles",
    "dpkg-maintscript-helper",
    "ldconfig",
    "update-ca-certificates",
    "dpkg-trigger",
    "set",
    "exit",
    "return",
    "true",
    "false",
    ":",
    "echo",
    "printf",
    "test",
    "[",
    "[[",
    "case",
    "esac",
    "if",
    "then",
    "fi",
    "else",
    "elif",
    "for",
    "do",
    "done",
    "while",
    "shift",
    "local",
    "export",
    "unset",
    ".",
    "db_get",
    "db_set",
    "db_input",
    "db_go",
    "db_stop",
    "db_purge",
    "db_fset",
    "db_unregister",
    "db_reset",
    "db_version",
    "db_capb",
    "db_settitle",
    "db_register",
    "dpkg",
    "dpkg-query",
    "dpkg-divert",
    "dpkg-statoverride",
    "invoke-rc.d",
    "update-rc.d",
    "py3compile",
    "py3clean",
    "pycompile",
    "pyclean",
    "update-initramfs",
    "udevadm",
    "rm",
    "mkdir",
    "chmod",
    "chown",
    "ln",
    "mv",
    "cp",
    "touch",
    "grep",
    "sed",
    "cat",
    "head",
    "tail",
    "cut",
    "tr",
    "sort",
    "awk",
    "basename",
    "dirname",
    "readlink",
    "command",
    "which",
    "type",
    "hash",
    "trap",
    "cd",
    "find",
    "xargs",
    "sleep",
    "wait",
    "kill",
    "pidof",
    "ls",
    "stat",
    "id",
    "getent",
    "install",
    "mktemp",
    "rmdir",
    "base64",
    "update-mime",
    "update-desktop-database",
    "update-icon-caches",
    "gtk-update-icon-cache",
    "glib-compile-schemas",
    "ucf",
    "ucfr",
    "update-catalog",
    "update-xmlcatalog",
    "install-info",
    "mandb",
    "fc-cache",
    "update-fonts-dir",
    "update-menus",
    "zcat",
    "gunzip",
    "systemd-machine-id-setup",
    "journalctl",
    "systemd-hwdb",
    "setcap",
    "setup_tmpfiles",
    "_update_catalog",
    "update_catalog",
    "dpkg-reconfigure",
    "update-pam",
    "pam-auth-update",
    "c_rehash",
    "openssl",
    "wc",
    "tee",
    "env",
    "eval",
    "exec",
    "umask",
    "read",
    "break",
    "continue",
    "logger",
    "mountpoint",
    "modprobe",
    "depmod",
    "update-binfmts",
    "start-stop-daemon",
    "service",
    "chsh",
    "chfn",
    "passwd",
    "chpasswd",
    "chgrp",
    "find_conffile",
    "update-ca-certificates-fresh",
    "cmp",
    "diff",
    "egrep",
    "fgrep",
    "uniq",
    "db_metaget",
    "db_subst",
    "db_title",
    "restorecon",
    "}",
    "{",
    "!",
    // dpkg's maintainer-script arguments, seen as words of `case` arms.
    "configure",
    "install",
    "upgrade",
    "remove",
    "purge",
    "abort-install",
    "abort-upgrade",
    "abort-remove",
    "abort-deconfigure",
    "failed-upgrade",
    "disappear",
    "triggered",
    "deconfigure",
    "reconfigure",
];

/// The fix-up stage's state and report.
pub struct Fixups<'a> {
    r: &'a Recipe,
    epoch: u64,
    /// One line per package whose scripts were skipped: what slipway did instead.
    pub scripts: Vec<String>,
    /// What slipway could not account for.
    pub warnings: Vec<String>,
}

fn text(tree: &Tree, path: &str) -> Option<String> {
    match &tree.get(path)?.kind {
        Kind::File(c) => Some(String::from_utf8_lossy(c.as_slice()).into_owned()),
        _ => None,
    }
}

impl<'a> Fixups<'a> {
    /// Fix-ups for recipe `r`, with mtimes `epoch`.
    pub fn new(r: &'a Recipe, epoch: u64) -> Self {
        Fixups {
            r,
            epoch,
            scripts: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Runs every fix-up.
    pub fn run(&mut self, tree: &mut Tree, pkgs: &[Unpacked]) -> Result<()> {
        let mut did: BTreeMap<String, Vec<String>> = BTreeMap::new();
        self.accounts(tree, pkgs, &mut did)?;
        self.alternatives(tree, pkgs, &mut did)?;
        self.units(tree, pkgs, &mut did)?;
        self.tmpfiles(tree)?;
        let cas = self.ca_bundle(tree)?;
        self.java_cacerts(tree, &cas)?;
        self.os_release(tree)?;
        if tree.get("usr/lib/systemd/systemd").is_some() {
            tree.put(
                "etc/machine-id",
                Entry::file(b"uninitialized\n".to_vec(), 0o444, self.epoch),
            )?;
        }
        self.report_scripts(pkgs, &did);
        Ok(())
    }

    fn report_scripts(&mut self, pkgs: &[Unpacked], did: &BTreeMap<String, Vec<String>>) {
        for u in pkgs {
            let present: Vec<&str> = ["preinst", "postinst", "prerm", "postrm"]
                .into_iter()
                .filter(|s| u.control.contains_key(*s))
                .collect();
            if present.is_empty() {
                continue;
            }
            let mut unknown = BTreeSet::new();
            for s in ["preinst", "postinst"] {
                for c in shell::commands(&u.script(s)) {
                    if let Some(w) = shell::command_words(&c).first() {
                        let name = w.text.rsplit('/').next().unwrap_or(&w.text).to_string();
                        let is_fn = u.script(s).contains(&format!("{name}()"))
                            || u.script(s).contains(&format!("{name} ()"));
                        let plain = name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
                        if plain && !w.dynamic && !ACCOUNTED.contains(&name.as_str()) && !is_fn {
                            unknown.insert(name);
                        }
                    }
                }
            }
            let done = did
                .get(&u.name)
                .map(|v| v.join(", "))
                .unwrap_or_else(|| "nothing needed at build time".into());
            self.scripts.push(format!(
                "{}: skipped {}; did: {done}",
                u.name,
                present.join(", ")
            ));
            if !unknown.is_empty() {
                self.warnings.push(format!(
                    "{}: maintainer script runs commands slipway does not reproduce: {}",
                    u.name,
                    unknown.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }

    fn accounts(
        &mut self,
        tree: &mut Tree,
        pkgs: &[Unpacked],
        did: &mut BTreeMap<String, Vec<String>>,
    ) -> Result<()> {
        let mut acc = match (
            text(tree, "usr/share/base-passwd/passwd.master"),
            text(tree, "usr/share/base-passwd/group.master"),
        ) {
            (Some(p), Some(g)) => {
                users::Accounts::from_base_passwd(&p, &g).context("base-passwd's master files")?
            }
            _ => users::Accounts::default(),
        };
        for g in &self.r.groups {
            acc.apply(&users::AccountRequest::Group {
                name: g.name.clone(),
                gid: Some(g.gid),
                system: true,
            })
            .map_err(|e| g.at.wrap(e))?;
        }
        for u in &self.r.users {
            acc.apply(&users::AccountRequest::User {
                name: u.name.clone(),
                uid: Some(u.uid),
                system: true,
                group: None,
                gid: Some(u.gid),
                home: Some(u.home.clone()),
                shell: Some(u.shell.clone()),
                gecos: Some(u.gecos.clone()),
                create_group: false,
            })
            .map_err(|e| u.at.wrap(e))?;
        }
        for g in &self.r.groups {
            for (i, m) in g.members.iter().enumerate() {
                acc.apply(&users::AccountRequest::Member {
                    user: m.clone(),
                    group: g.name.clone(),
                })
                .map_err(|e| g.at.sub(&format!("members[{i}]")).wrap(e))?;
            }
        }
        for u in pkgs {
            let (reqs, unparsed) = users::parse_script_report(&format!(
                "{}\n{}",
                u.script("preinst"),
                u.script("postinst")
            ));
            for req in &reqs {
                acc.apply(req)
                    .with_context(|| format!("{}: account from its maintainer script", u.name))?;
            }
            if !reqs.is_empty() {
                did.entry(u.name.clone())
                    .or_default()
                    .push(format!("{} account request(s)", reqs.len()));
            }
            for l in unparsed {
                self.warnings
                    .push(format!("{}: account command not reproduced: {l}", u.name));
            }
        }
        let sysusers: Vec<(String, String)> = tree
            .under("usr/lib/sysusers.d")
            .filter(|(p, _)| p.ends_with(".conf"))
            .filter_map(|(p, _)| text(tree, p).map(|t| (p.clone(), t)))
            .collect();
        for (p, t) in sysusers {
            let reqs = users::parse_sysusers(&t).with_context(|| format!("/{p}"))?;
            for req in &reqs {
                acc.apply(req).with_context(|| format!("/{p}"))?;
            }
            let owner = tree
                .get(&p)
                .and_then(|e| e.package.as_deref().map(str::to_string))
                .unwrap_or_default();
            did.entry(owner)
                .or_default()
                .push(format!("sysusers {}", p.rsplit('/').next().unwrap_or(&p)));
        }
        if acc.users().is_empty() && acc.groups().is_empty() {
            return Ok(());
        }
        let shadow_gid = acc.group_by_name("shadow").map(|g| g.gid);
        let e = self.epoch;
        tree.put(
            "etc/passwd",
            Entry::file(acc.passwd().into_bytes(), 0o644, e),
        )?;
        tree.put("etc/group", Entry::file(acc.group().into_bytes(), 0o644, e))?;
        let day = users::days_since_epoch(self.epoch);
        for (path, body) in [
            ("etc/shadow", acc.shadow(day)),
            ("etc/gshadow", acc.gshadow()),
        ] {
            let mut f = Entry::file(
                body.into_bytes(),
                if shadow_gid.is_some() { 0o640 } else { 0o600 },
                e,
            );
            f.gid = shadow_gid.unwrap_or(0);
            tree.put(path, f)?;
        }
        Ok(())
    }

    fn alternatives(
        &mut self,
        tree: &mut Tree,
        pkgs: &[Unpacked],
        did: &mut BTreeMap<String, Vec<String>>,
    ) -> Result<()> {
        let mut all = Vec::new();
        let jinfo = self.jinfo_alternatives(tree);
        for u in pkgs {
            let (alts, mut unparsed) = alternatives::parse_script_report(&u.script("postinst"));
            if !alts.is_empty() {
                did.entry(u.name.clone())
                    .or_default()
                    .push(format!("{} alternative(s)", alts.len()));
            }
            all.extend(alts);
            if let Some(j) = jinfo.get(&u.name) {
                // The JVM's postinst registers these in a loop over $basedir.
                did.entry(u.name.clone())
                    .or_default()
                    .push(format!("{} alternative(s) from its .jinfo", j.len()));
                all.extend(j.iter().cloned());
                unparsed.clear();
            }
            for l in unparsed {
                self.warnings
                    .push(format!("{}: alternative not reproduced: {l}", u.name));
            }
        }
        let links = alternatives::choose(&all, &self.r.alternatives, &|name, msg| {
            let at = self.r.alternatives_at.get(name).cloned();
            at.unwrap_or_else(|| self.r.at("alternatives")).err(msg)
        })?;
        for l in links {
            let path = merged_usr(l.path.trim_start_matches('/'));
            if let Some(old) = tree.get(&path) {
                if !matches!(old.kind, Kind::Symlink(_)) {
                    // A real file is there (dpkg would leave it too): keep it.
                    continue;
                }
            }
            tree.put(&path, Entry::symlink(&l.target, self.epoch))
                .with_context(|| format!("alternative {}", l.path))?;
        }
        Ok(())
    }

    /// The alternatives of each JVM's `/usr/lib/jvm/.NAME.jinfo`, by the package that
    /// ships the file; only programs the tree has.
    fn jinfo_alternatives(&self, tree: &Tree) -> BTreeMap<String, Vec<alternatives::Alternative>> {
        let mut out: BTreeMap<String, Vec<alternatives::Alternative>> = BTreeMap::new();
        let exists = |p: &str| tree.get(&merged_usr(p.trim_start_matches('/'))).is_some();
        for (p, e) in tree.under("usr/lib/jvm") {
            let file = p.rsplit('/').next().unwrap_or(p);
            let direct = p.matches('/').count() == 3;
            if !(direct && file.starts_with('.') && file.ends_with(".jinfo")) {
                continue;
            }
            let (Kind::File(c), Some(pkg)) = (&e.kind, &e.package) else {
                continue;
            };
            let text = String::from_utf8_lossy(c.as_slice());
            out.entry(pkg.to_string())
                .or_default()
                .extend(alternatives::parse_jinfo(&text, &exists));
        }
        out.retain(|_, v| !v.is_empty());
        out
    }

    fn units(
        &mut self,
        tree: &mut Tree,
        pkgs: &[Unpacked],
        did: &mut BTreeMap<String, Vec<String>>,
    ) -> Result<()> {
        const DIR: &str = "usr/lib/systemd/system";
        if tree.get(DIR).is_none() {
            return Ok(());
        }
        // What dh_installsystemd's postinst code enables, and the recipe's list.
        let mut queue: Vec<(String, Option<String>)> = Vec::new();
        for u in pkgs {
            for c in shell::commands(&u.script("postinst")) {
                let w: Vec<&str> = shell::command_words(&c)
                    .iter()
                    .map(|w| w.text.as_str())
                    .collect();
                let enable_at = match w.first().copied() {
                    Some("deb-systemd-helper") | Some("systemctl") => {
                        w.iter().position(|x| *x == "enable")
                    }
                    _ => None,
                };
                if let Some(i) = enable_at {
                    for unit in w[i + 1..]
                        .iter()
                        .filter(|x| !x.starts_with('-') && !x.contains('$'))
                    {
                        queue.push((unit.to_string(), Some(u.name.clone())));
                    }
                }
            }
        }
        queue.extend(self.r.enable.iter().map(|x| (x.clone(), None)));
        let mut done = BTreeSet::new();
        // Disabled and masked units are never enabled; a template stands for its
        // instances, as with `systemctl disable getty@.service`.
        let off: Vec<&String> = self.r.disable.iter().chain(&self.r.mask).collect();
        let is_off = |unit: &str| off.iter().any(|d| unit_matches(d, unit));
        while let Some((unit, pkg)) = queue.pop() {
            if !done.insert(unit.clone()) || is_off(&unit) {
                continue;
            }
            let file_name = match unit.split_once('@') {
                Some((p, rest)) => format!("{p}@{}", &rest[rest.rfind('.').unwrap_or(0)..]),
                None => unit.clone(),
            };
            let Some(body) = text(tree, &format!("{DIR}/{file_name}")) else {
                if pkg.is_none() {
                    let at = self.r.enable_at.get(&unit).cloned();
                    let at = at.unwrap_or_else(|| self.r.at("systemd.enable"));
                    return Err(at.err(format!(
                        "unit {unit} is not in the image (looked in /{DIR})"
                    )));
                }
                continue;
            };
            let install =
                systemd::parse_install(&body).with_context(|| format!("/{DIR}/{file_name}"))?;
            let en = systemd::enable_links(&unit, &install, "etc/systemd/system");
            for (link, target) in &en.links {
                tree.put(link, Entry::symlink(target, self.epoch))
                    .with_context(|| format!("enabling {unit}"))?;
            }
            self.warnings
                .extend(en.warnings.iter().map(|w| format!("{unit}: {w}")));
            queue.extend(en.also.iter().map(|a| (a.clone(), pkg.clone())));
            if let Some(p) = pkg {
                did.entry(p).or_default().push(format!("enabled {unit}"));
            }
        }
        // What packages or overlays enabled (links in .wants/.requires/.upholds and
        // aliases) goes for disabled and masked units.
        let victims: Vec<String> = tree
            .under("etc/systemd/system")
            .filter(|(p, e)| {
                matches!(e.kind, Kind::Symlink(_)) && p.rsplit('/').next().is_some_and(&is_off)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for v in victims {
            tree.remove(&v);
        }
        // `systemctl mask`: a link to /dev/null in /etc/systemd/system, which wins over
        // the unit file in /usr/lib (systemd.unit(5), "masked").
        for m in &self.r.mask {
            tree.put(
                &format!("etc/systemd/system/{m}"),
                Entry::symlink("/dev/null", self.epoch),
            )
            .with_context(|| format!("masking {m}"))?;
        }
        Ok(())
    }

    fn tmpfiles(&mut self, tree: &mut Tree) -> Result<()> {
        let files: Vec<(String, String)> = tree
            .under("usr/lib/tmpfiles.d")
            .filter(|(p, _)| p.ends_with(".conf"))
            .filter_map(|(p, _)| text(tree, p).map(|t| (p.clone(), t)))
            .collect();
        for (_, t) in files {
            for l in tmpfiles::parse(&t) {
                if l.boot_only || l.has_specifiers || !(l.is_under("/etc") || l.is_under("/usr")) {
                    continue;
                }
                let path = merged_usr(l.path.trim_start_matches('/'));
                if tree.get(&path).is_some() && !l.plus {
                    continue;
                }
                let mode = l.mode.map(|m| m.bits);
                match l.kind {
                    'd' | 'D' => tree.put(&path, Entry::dir(mode.unwrap_or(0o755), self.epoch))?,
                    'L' => {
                        let target = l.argument.clone().unwrap_or_else(|| {
                            format!("/usr/share/factory/{}", l.path.trim_start_matches('/'))
                        });
                        tree.put(&path, Entry::symlink(&target, self.epoch))?
                    }
                    'f' | 'F' => tree.put(
                        &path,
                        Entry::file(
                            l.argument.clone().unwrap_or_default().into_bytes(),
                            mode.unwrap_or(0o644),
                            self.epoch,
                        ),
                    )?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The bundle and links of update-ca-certificates; returns the certificates it
    /// selected by their `/etc/ssl/certs` link names (PEM text).
    fn ca_bundle(&mut self, tree: &mut Tree) -> Result<Vec<(String, Vec<u8>)>> {
        const SHARE: &str = "usr/share/ca-certificates";
        if tree.get(SHARE).is_none() {
            return Ok(Vec::new());
        }
        // The postinst lists every shipped certificate in /etc/ca-certificates.conf.
        let names: Vec<String> = tree
            .under(SHARE)
            .filter(|(p, e)| p.ends_with(".crt") && matches!(e.kind, Kind::File(_)))
            .map(|(p, _)| p[SHARE.len() + 1..].to_string())
            .collect();
        let conf = match text(tree, "etc/ca-certificates.conf") {
            Some(t) => t,
            None => {
                let mut t =
                    String::from("# Generated by slipway, as ca-certificates' postinst would.\n");
                for n in &names {
                    t.push_str(n);
                    t.push('\n');
                }
                tree.put(
                    "etc/ca-certificates.conf",
                    Entry::file(t.clone().into_bytes(), 0o644, self.epoch),
                )?;
                t
            }
        };
        let mut certs = Vec::new();
        for n in certs::parse_conf(&conf) {
            let Some(Entry {
                kind: Kind::File(c),
                ..
            }) = tree.get(&format!("{SHARE}/{n}"))
            else {
                self.warnings.push(format!(
                    "/etc/ca-certificates.conf names {n}, which is not in the image"
                ));
                continue;
            };
            certs.push((n.clone(), c.as_slice().to_vec()));
        }
        let bundle = certs::bundle(&certs)?;
        tree.put(
            "etc/ssl/certs/ca-certificates.crt",
            Entry::file(bundle, 0o644, self.epoch),
        )?;
        let mut pem_names = Vec::new();
        for (n, pem) in &certs {
            let link = certs::pem_link_name(n);
            tree.put(
                &format!("etc/ssl/certs/{link}"),
                Entry::symlink(&format!("/{SHARE}/{n}"), self.epoch),
            )?;
            pem_names.push((link, pem.clone()));
        }
        for (hash, target) in certs::hash_links(&pem_names)? {
            tree.put(
                &format!("etc/ssl/certs/{hash}"),
                Entry::symlink(&target, self.epoch),
            )?;
        }
        Ok(pem_names)
    }

    /// The JDK's `cacerts`, which ca-certificates-java's postinst would build: written
    /// when a JRE in the image links its `lib/security/cacerts` to it and no package
    /// put a store there, from the certificates of the CA bundle (`cas`).
    fn java_cacerts(&mut self, tree: &mut Tree, cas: &[(String, Vec<u8>)]) -> Result<()> {
        const STORE: &str = "etc/ssl/certs/java/cacerts";
        let wanted = tree
            .under("usr/lib/jvm")
            .any(|(p, e)| matches!(&e.kind, Kind::Symlink(t) if t == "/etc/ssl/certs/java/cacerts" && p.ends_with("/lib/security/cacerts")));
        if !wanted || tree.get(STORE).is_some() {
            return Ok(());
        }
        if cas.is_empty() {
            self.warnings.push(format!(
                "a JRE links its trust store to /{STORE}, but the image has no CA certificates \
                 (include ca-certificates): TLS from Java will trust nothing"
            ));
        }
        let store = java_certs::keystore(cas, self.epoch).context("writing the Java cacerts")?;
        let n = java_certs::read(&store, java_certs::PASSWORD)?.len();
        tree.put(STORE, Entry::file(store, 0o644, self.epoch))?;
        self.scripts.push(format!(
            "java cacerts: wrote /{STORE} (JKS, {n} CA certificates from the CA bundle), \
             as ca-certificates-java's postinst would"
        ));
        Ok(())
    }

    fn os_release(&mut self, tree: &mut Tree) -> Result<()> {
        let path = ["usr/lib/os-release", "etc/os-release"]
            .into_iter()
            .find(|p| matches!(tree.get(p).map(|e| &e.kind), Some(Kind::File(_))));
        let base = path.and_then(|p| text(tree, p)).unwrap_or_default();
        let mut out: String = base
            .lines()
            .filter(|l| !l.starts_with("IMAGE_ID=") && !l.starts_with("IMAGE_VERSION="))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(&format!(
            "IMAGE_ID={}\nIMAGE_VERSION={}\n",
            self.r.name, self.r.version
        ));
        tree.put(
            path.unwrap_or("usr/lib/os-release"),
            Entry::file(out.into_bytes(), 0o644, self.epoch),
        )?;
        if tree.get("etc/os-release").is_none() {
            tree.put(
                "etc/os-release",
                Entry::symlink("../usr/lib/os-release", self.epoch),
            )?;
        }
        Ok(())
    }
}

/// Whether the unit `name` is `pattern` or, for a template pattern (`getty@.service`),
/// one of its instances (`getty@tty1.service`).
fn unit_matches(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match pattern.split_once("@.") {
        Some((prefix, suffix)) => name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('@'))
            .is_some_and(|r| r.ends_with(&format!(".{suffix}")) && !r.contains('/')),
        None => false,
    }
}

/// Removes symlinks under /etc/ssl/certs left dangling by the recipe's path globs.
pub fn prune_dangling_cert_links(tree: &mut Tree) {
    let dangling: Vec<String> = tree
        .under("etc/ssl/certs")
        .filter(|(_, e)| matches!(e.kind, Kind::Symlink(_)))
        .filter(|(p, _)| tree.resolve(p).is_none())
        .map(|(p, _)| p.clone())
        .collect();
    for p in dangling {
        tree.remove(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(tree: &Tree, path: &str) -> Option<String> {
        match &tree.get(path)?.kind {
            Kind::Symlink(t) => Some(t.clone()),
            _ => None,
        }
    }

    #[test]
    fn masked_units_link_to_dev_null_and_lose_their_enablement() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("r.toml");
        std::fs::write(
            &path,
            "schema-version = 1\n[packages]\ninclude = [\"systemd\"]\n[systemd]\n\
             enable = [\"getty@ttyS0.service\", \"a.service\"]\nmask = [\"getty@.service\", \"ldconfig.service\"]\n",
        )
        .unwrap();
        let r = Recipe::load(&path).unwrap();
        let mut tree = Tree::new();
        let unit = "[Unit]\nDescription=x\n[Install]\nWantedBy=multi-user.target\n";
        for u in ["getty@.service", "a.service", "ldconfig.service"] {
            tree.put(
                &format!("usr/lib/systemd/system/{u}"),
                Entry::file(unit.as_bytes().to_vec(), 0o644, 1),
            )
            .unwrap();
        }
        // As a package's postinst (or an overlay) would have left it.
        tree.put(
            "etc/systemd/system/getty.target.wants/getty@tty1.service",
            Entry::symlink("/usr/lib/systemd/system/getty@.service", 1),
        )
        .unwrap();
        let mut fx = Fixups::new(&r, 1);
        fx.units(&mut tree, &[], &mut BTreeMap::new()).unwrap();

        let sys = "etc/systemd/system";
        assert_eq!(
            link(&tree, &format!("{sys}/getty@.service")).as_deref(),
            Some("/dev/null")
        );
        assert_eq!(
            link(&tree, &format!("{sys}/ldconfig.service")).as_deref(),
            Some("/dev/null")
        );
        assert!(tree
            .get(&format!("{sys}/getty.target.wants/getty@tty1.service"))
            .is_none());
        assert!(tree
            .get(&format!(
                "{sys}/multi-user.target.wants/getty@ttyS0.service"
            ))
            .is_none());
        assert_eq!(
            link(&tree, &format!("{sys}/multi-user.target.wants/a.service")).as_deref(),
            Some("/usr/lib/systemd/system/a.service")
        );
    }

    #[test]
    fn templates_match_their_instances_only() {
        assert!(unit_matches("getty@.service", "getty@tty1.service"));
        assert!(unit_matches("getty@.service", "getty@.service"));
        assert!(!unit_matches(
            "getty@.service",
            "serial-getty@ttyS0.service"
        ));
        assert!(!unit_matches("getty@.service", "getty@tty1.socket"));
        assert!(!unit_matches("a.service", "b.service"));
    }

    /// A recipe in a temporary directory and the 1-based line of `marker` in it.
    fn recipe(body: &str, marker: &str) -> (tempfile::TempDir, Recipe, usize) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("r.toml");
        let text = format!("schema-version = 1\n[packages]\ninclude = [\"systemd\"]\n{body}");
        std::fs::write(&path, &text).unwrap();
        let line = text.lines().position(|l| l.contains(marker)).unwrap() + 1;
        (d, Recipe::load(&path).unwrap(), line)
    }

    fn assert_recipe_error(e: anyhow::Error, key: &str, line: usize) {
        let m = format!("{e:#}");
        assert_eq!(crate::exit::code_of(&e), 2, "{m}");
        assert!(m.contains(&format!("r.toml: {key}")), "{m}");
        assert!(m.contains(&format!("(line {line})")), "{m}");
    }

    #[test]
    fn recipe_mistakes_found_at_assembly_name_file_key_and_line() {
        // An unknown group member.
        let (_d, r, line) = recipe(
            "[[group]]\nname = \"g\"\ngid = 500\nmembers = [\"ghost\"]\n",
            "ghost",
        );
        let e = Fixups::new(&r, 1)
            .accounts(&mut Tree::new(), &[], &mut BTreeMap::new())
            .unwrap_err();
        assert_recipe_error(e, "group[0].members[0]", line);

        // A uid base-passwd already gives to root.
        let (_d, r, line) = recipe("[[user]]\nname = \"admin\"\nuid = 0\n", "[[user]]");
        let mut tree = Tree::new();
        for (p, t) in [
            ("passwd.master", "root:*:0:0:root:/root:/bin/sh\n"),
            ("group.master", "root:*:0:\n"),
        ] {
            let p = format!("usr/share/base-passwd/{p}");
            tree.put(&p, Entry::file(t.as_bytes().to_vec(), 0o644, 1))
                .unwrap();
        }
        let e = Fixups::new(&r, 1)
            .accounts(&mut tree, &[], &mut BTreeMap::new())
            .unwrap_err();
        assert_recipe_error(e, "user[0]", line);

        // An alternatives group no package registers.
        let (_d, r, line) = recipe(
            "[alternatives]\niptables = \"/usr/sbin/iptables-legacy\"\n",
            "iptables =",
        );
        let e = Fixups::new(&r, 1)
            .alternatives(&mut Tree::new(), &[], &mut BTreeMap::new())
            .unwrap_err();
        assert_recipe_error(e, "alternatives.iptables", line);

        // A unit to enable that the image lacks.
        let (_d, r, line) = recipe("[systemd]\nenable = [\"ghost.service\"]\n", "ghost");
        let mut tree = Tree::new();
        tree.put("usr/lib/systemd/system", Entry::dir(0o755, 1))
            .unwrap();
        let e = Fixups::new(&r, 1)
            .units(&mut tree, &[], &mut BTreeMap::new())
            .unwrap_err();
        assert_recipe_error(e, "systemd.enable[0]", line);
    }
}
