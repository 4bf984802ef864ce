//! update-alternatives(1), declaratively.
//!
//! Consumes maintainer scripts (`update-alternatives --install ...` calls) and produces
//! the symlinks the tool would leave behind in automatic mode: `LINK ->
//! /etc/alternatives/NAME -> PATH` for the master and for each slave of the chosen
//! alternative.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::shell;

/// Where update-alternatives keeps its link farm (the default `--altdir`).
pub const ALT_DIR: &str = "/etc/alternatives";

/// One `--install` call: a candidate for the link group `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The generic name in the file system, e.g. `/usr/sbin/iptables`.
    pub link: String,
    /// The link group, e.g. `iptables`.
    pub name: String,
    /// The candidate, e.g. `/usr/sbin/iptables-nft`.
    pub path: String,
    pub priority: i64,
    /// `(link, name, path)` per `--slave`.
    pub slaves: Vec<(String, String, String)>,
}

/// One symlink to create: `path -> target`, both absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub path: String,
    pub target: String,
}

/// Parses a script; see [`parse_script_report`].
pub fn parse_script(script: &str) -> Vec<Alternative> {
    parse_script_report(script).0
}

/// Finds `update-alternatives --install` calls. Returns them in script order, plus
/// (line-numbered) the calls that could not be read literally: variables, loop
/// variables, unknown options, and `--set` (which would override the automatic
/// choice; pass it to [`choose`] as an override instead). `--remove`, `--auto`,
/// `--remove-all` and queries are ignored: they only matter on upgrade or removal.
pub fn parse_script_report(script: &str) -> (Vec<Alternative>, Vec<String>) {
    let mut alts = Vec::new();
    let mut unparsed = Vec::new();
    for cmd in shell::commands(script) {
        let words = shell::command_words(&cmd);
        let Some(first) = words.first() else { continue };
        if first.dynamic || first.text.rsplit('/').next() != Some("update-alternatives") {
            continue;
        }
        match parse_call(&words[1..]) {
            Ok(Some(a)) => alts.push(a),
            Ok(None) => {}
            Err(e) => unparsed.push(format!("line {}: {}: {e:#}", cmd.line, cmd.raw)),
        }
    }
    (alts, unparsed)
}

/// The alternatives a JVM's `.jinfo` file (java-common's data for
/// `update-java-alternatives`, in `/usr/lib/jvm`) names: one per `hl`, `jre`, `jdkhl`,
/// `jdk` or `plugin` line `KIND NAME PATH`, linked as `/usr/bin/NAME` with the file's
/// `priority=`. These are the groups the JVM's postinst registers in a loop over
/// `$basedir`, which [`parse_script_report`] cannot read literally. `exists` filters the
/// paths (a JRE-only image has no `jdk` programs); `plugin` lines, which name browser
/// plugin directories, are skipped.
pub fn parse_jinfo(text: &str, exists: &dyn Fn(&str) -> bool) -> Vec<Alternative> {
    let priority = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("priority="))
        .and_then(|p| p.trim().parse::<i64>().ok())
        .unwrap_or(0);
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (kind, name, path) = (w.next()?, w.next()?, w.next()?);
            let known = ["hl", "jre", "jdkhl", "jdk"].contains(&kind);
            let plain = !name.contains('/') && path.starts_with('/');
            (known && plain && w.next().is_none() && exists(path)).then(|| Alternative {
                link: format!("/usr/bin/{name}"),
                name: name.to_string(),
                path: path.to_string(),
                priority,
                slaves: Vec::new(),
            })
        })
        .collect()
}

fn parse_call(words: &[shell::Word]) -> Result<Option<Alternative>> {
    let mut lit = Vec::with_capacity(words.len());
    for w in words {
        if w.dynamic {
            bail!("{} is only known at run time", w.text);
        }
        lit.push(w.text.as_str());
    }
    let mut alt: Option<Alternative> = None;
    let mut i = 0;
    while i < lit.len() {
        match lit[i] {
            "--quiet" | "--force" | "--verbose" | "--debug" | "--skip-auto" => i += 1,
            "--altdir" | "--admindir" | "--instdir" | "--root" | "--log" => i += 2,
            "--install" => {
                let [link, name, path, prio] =
                    take::<4>(&lit, i + 1, "--install LINK NAME PATH PRIORITY")?;
                let priority = prio.parse::<i64>().with_context(|| {
                    format!("--install {name}: priority {prio:?} is not an integer")
                })?;
                alt = Some(Alternative {
                    link: link.to_string(),
                    name: name.to_string(),
                    path: path.to_string(),
                    priority,
                    slaves: Vec::new(),
                });
                i += 5;
            }
            "--slave" => {
                let [link, name, path] = take::<3>(&lit, i + 1, "--slave LINK NAME PATH")?;
                match alt.as_mut() {
                    Some(a) => {
                        a.slaves
                            .push((link.to_string(), name.to_string(), path.to_string()))
                    }
                    None => bail!("--slave {name} without --install"),
                }
                i += 4;
            }
            "--set" => bail!("--set changes the selection; give it as an override"),
            "--remove" | "--auto" | "--remove-all" | "--display" | "--query" | "--list"
            | "--config" | "--get-selections" | "--set-selections" | "--all" => return Ok(None),
            other => bail!("unknown update-alternatives argument {other}"),
        }
    }
    Ok(alt)
}

fn take<'a, const N: usize>(lit: &[&'a str], at: usize, usage: &str) -> Result<[&'a str; N]> {
    let s = lit
        .get(at..at + N)
        .with_context(|| format!("expected {usage}"))?;
    if let Some(bad) = s.iter().find(|a| a.starts_with("--")) {
        bail!("expected {usage}, found option {bad}");
    }
    let mut out = [""; N];
    out.copy_from_slice(s);
    Ok(out)
}

/// Chooses, per link group, the alternative update-alternatives would select in
/// automatic mode (highest priority; on a tie the one registered first) or the path
/// named in `overrides` (name -> path, like `--set`), and returns the links, group by
/// group in order of first registration: master `LINK -> /etc/alternatives/NAME`,
/// `/etc/alternatives/NAME -> PATH`, then the same for each slave of the chosen
/// alternative. An override naming a group or path nobody registered is an error, made by
/// `bad(group name, message)` (the recipe's key for that group).
pub fn choose(
    alts: &[Alternative],
    overrides: &BTreeMap<String, String>,
    bad: &dyn Fn(&str, String) -> anyhow::Error,
) -> Result<Vec<Link>> {
    let mut order: Vec<&str> = Vec::new();
    for a in alts {
        if !order.contains(&a.name.as_str()) {
            order.push(&a.name);
        }
    }
    for (name, path) in overrides {
        if !order.contains(&name.as_str()) {
            return Err(bad(
                name,
                format!("override {name} = {path}: no package registers the link group {name}"),
            ));
        }
    }
    let mut links = Vec::new();
    for name in order {
        let group: Vec<&Alternative> = alts.iter().filter(|a| a.name == name).collect();
        let chosen = match overrides.get(name) {
            Some(p) => match group.iter().find(|a| &a.path == p) {
                Some(a) => *a,
                None => {
                    return Err(bad(
                        name,
                        format!(
                            "override {name} = {p}: not a registered alternative (registered: {})",
                            group
                                .iter()
                                .map(|a| a.path.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            },
            None => {
                let mut best = group[0];
                for a in &group[1..] {
                    if a.priority > best.priority {
                        best = a;
                    }
                }
                best
            }
        };
        // The master link of a group is the one of its most recent registration,
        // as update-alternatives re-points it on every --install.
        let master = group.last().map_or(&chosen.link, |a| &a.link);
        push_pair(&mut links, master, name, &chosen.path);
        for (l, n, p) in &chosen.slaves {
            push_pair(&mut links, l, n, p);
        }
    }
    Ok(links)
}

fn push_pair(links: &mut Vec<Link>, link: &str, name: &str, path: &str) {
    let admin = format!("{ALT_DIR}/{name}");
    links.push(Link {
        path: link.to_string(),
        target: admin.clone(),
    });
    links.push(Link {
        path: admin,
        target: path.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(_: &str, msg: String) -> anyhow::Error {
        anyhow::anyhow!(msg)
    }

    // The shape of iptables' postinst in bookworm and trixie (tabs and spaces mixed
    // as in the real file).
    const IPTABLES: &str = "#!/bin/sh\n\nset -e\n\nif [ \"$1\" = \"configure\" ] || [ \"$1\" = \"abort-upgrade\" ]; then\n\
\tupdate-alternatives \\\n\
\t  --install /usr/sbin/iptables iptables /usr/sbin/iptables-legacy 10 \\\n\
\t  --slave /usr/sbin/iptables-restore iptables-restore /usr/sbin/iptables-legacy-restore \\\n\
\t  --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-legacy-save\n\
        update-alternatives \\\n\
          --install /usr/sbin/iptables iptables /usr/sbin/iptables-nft 20 \\\n\
          --slave /usr/sbin/iptables-restore iptables-restore /usr/sbin/iptables-nft-restore \\\n\
          --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-nft-save\n\
        update-alternatives \\\n\
          --install /usr/sbin/ebtables ebtables /usr/sbin/ebtables-nft 20 \\\n\
          --slave /usr/sbin/ebtables-restore ebtables-restore /usr/sbin/ebtables-nft-restore \\\n\
          --slave /usr/sbin/ebtables-save ebtables-save /usr/sbin/ebtables-nft-save\n\
fi\n";

    #[test]
    fn parses_iptables_postinst() {
        let (alts, unparsed) = parse_script_report(IPTABLES);
        assert!(unparsed.is_empty(), "{unparsed:?}");
        assert_eq!(alts.len(), 3);
        assert_eq!(
            alts[0],
            Alternative {
                link: "/usr/sbin/iptables".into(),
                name: "iptables".into(),
                path: "/usr/sbin/iptables-legacy".into(),
                priority: 10,
                slaves: vec![
                    (
                        "/usr/sbin/iptables-restore".into(),
                        "iptables-restore".into(),
                        "/usr/sbin/iptables-legacy-restore".into()
                    ),
                    (
                        "/usr/sbin/iptables-save".into(),
                        "iptables-save".into(),
                        "/usr/sbin/iptables-legacy-save".into()
                    ),
                ],
            }
        );
        let links = choose(&alts, &BTreeMap::new(), &plain).unwrap();
        let pairs: Vec<(&str, &str)> = links
            .iter()
            .map(|l| (l.path.as_str(), l.target.as_str()))
            .collect();
        assert_eq!(
            pairs[0],
            ("/usr/sbin/iptables", "/etc/alternatives/iptables")
        );
        assert_eq!(
            pairs[1],
            ("/etc/alternatives/iptables", "/usr/sbin/iptables-nft")
        );
        assert_eq!(
            pairs[3],
            (
                "/etc/alternatives/iptables-restore",
                "/usr/sbin/iptables-nft-restore"
            )
        );
        assert_eq!(pairs.len(), 12);

        let mut ov = BTreeMap::new();
        ov.insert(
            "iptables".to_string(),
            "/usr/sbin/iptables-legacy".to_string(),
        );
        let links = choose(&alts, &ov, &plain).unwrap();
        assert_eq!(links[1].target, "/usr/sbin/iptables-legacy");
        assert_eq!(links[5].target, "/usr/sbin/iptables-legacy-save");

        ov.insert("iptables".to_string(), "/usr/sbin/nope".to_string());
        let e = choose(&alts, &ov, &plain).unwrap_err().to_string();
        assert!(e.contains("not a registered alternative"), "{e}");
    }

    #[test]
    fn ties_keep_first_and_variables_are_reported() {
        let s = "update-alternatives --quiet --install /usr/bin/x x /usr/bin/x-a 5\n\
update-alternatives --install /usr/bin/x x /usr/bin/x-b 5\n\
for t in a b; do\n  update-alternatives --install /usr/bin/$t $t /usr/bin/$t-impl 10\ndone\n\
update-alternatives --install /usr/bin/y y \"$ARCHPATH\" 10 || true\n\
update-alternatives --install /usr/bin/z z 10\n\
update-alternatives --set x /usr/bin/x-b\n\
update-alternatives --remove x /usr/bin/x-a\n";
        let (alts, unparsed) = parse_script_report(s);
        assert_eq!(alts.len(), 2);
        assert_eq!(unparsed.len(), 4, "{unparsed:?}");
        assert!(unparsed[0].starts_with("line 4: "), "{}", unparsed[0]);
        assert!(unparsed[1].contains("$ARCHPATH is only known at run time"));
        assert!(
            unparsed[2].contains("expected --install LINK NAME PATH PRIORITY")
                || unparsed[2].contains("priority"),
            "{}",
            unparsed[2]
        );
        let links = choose(&alts, &BTreeMap::new(), &plain).unwrap();
        assert_eq!(links[1].target, "/usr/bin/x-a");
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let (alts, _) = parse_script_report(&s);
            let _ = choose(&alts, &BTreeMap::new(), &plain);
        }

        #[test]
        fn call_like_input_never_panics(s in "update-alternatives( --install| --slave| --set| [a-z/$]+| -?[0-9]+| \\\\\n){0,20}") {
            let (alts, _) = parse_script_report(&s);
            let _ = choose(&alts, &BTreeMap::new(), &plain);
        }
    }
    #[test]
    fn jinfo_names_the_jvm_programs_that_exist() {
        let jinfo = "name=java-21-openjdk-amd64\npriority=2111\nsection=main\n\n\
                     hl java /usr/lib/jvm/j21/bin/java\nhl jexec /usr/lib/jvm/j21/lib/jexec\n\
                     jdkhl javac /usr/lib/jvm/j21/bin/javac\nplugin x /usr/lib/x.so\nbad line\n";
        let alts = parse_jinfo(jinfo, &|p| !p.contains("javac"));
        assert_eq!(alts.len(), 2);
        assert_eq!(alts[0].link, "/usr/bin/java");
        assert_eq!(alts[0].path, "/usr/lib/jvm/j21/bin/java");
        assert_eq!(alts[0].priority, 2111);
        assert_eq!(alts[1].name, "jexec");
        let links = choose(&alts, &BTreeMap::new(), &|_, m| anyhow::anyhow!(m)).unwrap();
        assert_eq!(links[0].path, "/usr/bin/java");
        assert_eq!(links[0].target, "/etc/alternatives/java");
        assert_eq!(links[1].target, "/usr/lib/jvm/j21/bin/java");
    }
}
