//! Unit enablement without `systemctl`.
//!
//! Consumes unit files (their `[Install]` section, systemd.unit(5)) and preset files
//! (systemd.preset(5)); produces the symlinks `systemctl enable` (or Debian's
//! `deb-systemd-helper enable`) would create under `/etc/systemd/system`, plus the
//! `Also=` units the caller must enable in turn.

use anyhow::{bail, Result};

/// Where Debian ships unit files (trixie; `/lib/systemd/system` before usr-merge,
/// which resolves to the same place on merged systems).
pub const VENDOR_UNIT_DIR: &str = "/usr/lib/systemd/system";

/// The `[Install]` section of a unit file. Lists keep file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallSection {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub also: Vec<String>,
    pub alias: Vec<String>,
    pub default_instance: Option<String>,
}

/// Parses the `[Install]` section of a unit file. Keys may repeat and take several
/// space-separated values; an empty assignment resets the list (systemd.syntax(7)).
/// Comment lines start with `#` or `;`; a line ending in `\` continues on the next.
/// Unknown keys in `[Install]` are an error (systemd would warn and ignore them;
/// slipway would rather know), other sections are skipped.
pub fn parse_install(unit_text: &str) -> Result<InstallSection> {
    let mut inst = InstallSection::default();
    let mut in_install = false;
    let mut lines = unit_text.lines().enumerate();
    while let Some((n, raw)) = lines.next() {
        let ln = n + 1;
        let mut line = raw.trim().to_string();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // Continuation lines; comment lines inside a continuation are skipped.
        while line.ends_with('\\') {
            line.pop();
            line.push(' ');
            match lines.next() {
                Some((_, next)) => {
                    let t = next.trim();
                    if t.starts_with('#') || t.starts_with(';') {
                        continue;
                    }
                    line.push_str(t);
                }
                None => break,
            }
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') {
                bail!("unit line {ln}: section header {line:?} is missing ']'");
            }
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("unit line {ln}: expected KEY=VALUE in [Install], found {line:?}");
        };
        let (key, value) = (key.trim(), value.trim());
        let list = match key {
            "WantedBy" => &mut inst.wanted_by,
            "RequiredBy" => &mut inst.required_by,
            "UpheldBy" => &mut inst.upheld_by,
            "Also" => &mut inst.also,
            "Alias" => &mut inst.alias,
            "DefaultInstance" => {
                inst.default_instance = (!value.is_empty()).then(|| value.to_string());
                continue;
            }
            other => bail!(
                "unit line {ln}: unknown [Install] key {other:?} (expected WantedBy, RequiredBy, UpheldBy, Also, Alias or DefaultInstance)"
            ),
        };
        if value.is_empty() {
            list.clear();
        } else {
            for v in value.split_whitespace() {
                let v = v.trim_matches('"').to_string();
                if !list.contains(&v) {
                    list.push(v);
                }
            }
        }
    }
    Ok(inst)
}

/// What a preset line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetAction {
    Enable,
    Disable,
    /// `ignore`: leave the unit as it is.
    Ignore,
}

/// One line of a preset file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub action: PresetAction,
    /// A unit name or glob (`*`, `?`, `[...]`).
    pub pattern: String,
    /// For templates: the instances to enable (`enable getty@.service tty1 tty2`).
    pub instances: Vec<String>,
    /// 1-based line in its file, for messages.
    pub line: usize,
}

/// Parses one preset file. Lines that are not `enable`/`disable`/`ignore` are
/// skipped (systemd logs and ignores them too); use [`parse_presets_report`] to see
/// them.
pub fn parse_presets(text: &str) -> Vec<Preset> {
    parse_presets_report(text).0
}

/// Like [`parse_presets`], also returning the lines it could not read.
pub fn parse_presets_report(text: &str) -> (Vec<Preset>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        let action = match words.next() {
            Some("enable") => PresetAction::Enable,
            Some("disable") => PresetAction::Disable,
            Some("ignore") => PresetAction::Ignore,
            _ => {
                bad.push(format!(
                    "line {}: {line}: expected enable, disable or ignore",
                    n + 1
                ));
                continue;
            }
        };
        let Some(pattern) = words.next() else {
            bad.push(format!("line {}: {line}: missing unit name", n + 1));
            continue;
        };
        out.push(Preset {
            action,
            pattern: pattern.to_string(),
            instances: words.map(str::to_string).collect(),
            line: n + 1,
        });
    }
    (out, bad)
}

/// Parses several preset files and orders them the way systemd reads them: by file
/// name (not directory), byte order. When the same file name appears twice, the
/// first one given wins, so pass `/etc` files before `/usr/lib` ones.
pub fn parse_preset_files(files: &[(String, String)]) -> Vec<Preset> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (path, text) in files {
        let base = path.rsplit('/').next().unwrap_or(path);
        if !seen.iter().any(|(b, _)| *b == base) {
            seen.push((base, text));
        }
    }
    seen.sort_by(|a, b| a.0.cmp(b.0));
    seen.iter().flat_map(|(_, t)| parse_presets(t)).collect()
}

/// The first preset matching `unit` (first match wins, systemd.preset(5)).
pub fn preset_for<'a>(presets: &'a [Preset], unit: &str) -> Option<&'a Preset> {
    presets.iter().find(|p| glob_match(&p.pattern, unit))
}

/// fnmatch(3)-style matching with `*`, `?` and bracket expressions.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    // Iterative with backtracking on the last `*`, so no deep recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = bracket(&p[pi..], n[ni]) {
                        if matched {
                            pi += next;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against a bracket expression at the start of `p`; returns whether it
/// matched and the expression's length, or `None` if `[` starts no valid expression.
fn bracket(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// What enabling one unit produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enablement {
    /// `(link path relative to the image root, absolute target)`.
    pub links: Vec<(String, String)>,
    /// `Also=` units, to be enabled by the caller in turn (it knows where they live).
    pub also: Vec<String>,
    /// Problems that left out links (a template without instance, unknown
    /// specifiers); empty when everything was created.
    pub warnings: Vec<String>,
}

/// What `systemctl enable UNIT` creates for a unit installed in
/// [`VENDOR_UNIT_DIR`]; see [`enable_links_for`].
pub fn enable_links(unit_name: &str, install: &InstallSection, unit_dir: &str) -> Enablement {
    let target = format!("{VENDOR_UNIT_DIR}/{}", template_file_name(unit_name));
    enable_links_for(unit_name, &target, install, unit_dir)
}

/// The file a unit lives in: instances live in their template's file.
fn template_file_name(unit: &str) -> String {
    match split_instance(unit) {
        Some((prefix, inst, suffix)) if !inst.is_empty() => format!("{prefix}@{suffix}"),
        _ => unit.to_string(),
    }
}

/// `getty@tty1.service` -> (`getty`, `tty1`, `.service`).
fn split_instance(unit: &str) -> Option<(&str, &str, &str)> {
    let (prefix, rest) = unit.split_once('@')?;
    let dot = rest.rfind('.')?;
    Some((prefix, &rest[..dot], &rest[dot..]))
}

/// What `systemctl enable UNIT` creates (systemctl(1), systemd.unit(5) \[Install\]):
/// `UNIT_DIR/T.wants/UNIT -> unit_file` for each `WantedBy=T` (`.requires/` for
/// `RequiredBy=`, `.upholds/` for `UpheldBy=`) and `UNIT_DIR/ALIAS -> unit_file` for
/// each `Alias=`. `unit_name` may be a template (`getty@.service`, which uses
/// `DefaultInstance=`) or an instance (`getty@tty2.service`). `unit_file` is the
/// absolute path of the unit file in the image. Specifiers `%n %N %p %i %j %%` are
/// resolved in the target and alias names.
pub fn enable_links_for(
    unit_name: &str,
    unit_file: &str,
    install: &InstallSection,
    unit_dir: &str,
) -> Enablement {
    let mut en = Enablement {
        also: install.also.clone(),
        ..Enablement::default()
    };
    let dir = unit_dir.trim_end_matches('/');
    let mut instance_name = unit_name.to_string();
    if let Some((prefix, inst, suffix)) = split_instance(unit_name) {
        if inst.is_empty() {
            match &install.default_instance {
                Some(d) => instance_name = format!("{prefix}@{d}{suffix}"),
                None => {
                    en.warnings.push(format!(
                        "{unit_name} is a template without DefaultInstance=: only its aliases are linked"
                    ));
                    instance_name.clear();
                }
            }
        }
    }
    let deps = [
        (&install.wanted_by, "wants"),
        (&install.required_by, "requires"),
        (&install.upheld_by, "upholds"),
    ];
    if !instance_name.is_empty() {
        for (targets, kind) in deps {
            for t in targets {
                match specifiers(t, &instance_name) {
                    Ok(t) => en.links.push((
                        format!("{dir}/{t}.{kind}/{instance_name}"),
                        unit_file.to_string(),
                    )),
                    Err(e) => en.warnings.push(format!("{unit_name}: {e}")),
                }
            }
        }
    }
    for a in &install.alias {
        let alias = match specifiers(a, &instance_name) {
            Ok(a) => a,
            Err(e) => {
                en.warnings.push(format!("{unit_name}: {e}"));
                continue;
            }
        };
        // An alias of a template used for an instance names the same instance.
        let alias = match (split_instance(&alias), split_instance(unit_name)) {
            (Some((ap, "", asuf)), Some((_, inst, _))) if !inst.is_empty() => {
                format!("{ap}@{inst}{asuf}")
            }
            _ => alias,
        };
        en.links
            .push((format!("{dir}/{alias}"), unit_file.to_string()));
    }
    en
}

/// Resolves the unit-name specifiers of systemd.unit(5) that make sense at build time.
fn specifiers(s: &str, unit: &str) -> Result<String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let (prefix, instance) = match split_instance(unit) {
        Some((p, i, _)) => (p.to_string(), i.to_string()),
        None => (
            unit.rsplit_once('.').map_or(unit, |(p, _)| p).to_string(),
            String::new(),
        ),
    };
    let stem = unit.rsplit_once('.').map_or(unit, |(p, _)| p);
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(&prefix),
            Some('i') => out.push_str(&instance),
            Some('j') => out.push_str(prefix.rsplit('-').next().unwrap_or(&prefix)),
            Some('%') => out.push('%'),
            Some(o) => bail!("specifier %{o} in {s:?} is not supported at build time"),
            None => bail!("{s:?} ends in a lone %"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section_forms() {
        // In the form of systemd-networkd.service (trixie).
        let unit = "[Unit]\nDescription=Network Configuration\nWantedBy=not-here.target\n\n\
[Service]\nExecStart=!!/usr/lib/systemd/systemd-networkd\n\n\
[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\n\
Alias=dbus-org.freedesktop.network1.service\n\n\
# The output from this generator is used by udevd and networkd.\n\
Also=systemd-network-generator.service\n; other comment\n\
WantedBy=a.target \\\n  b.target\nRequiredBy=x.target\nRequiredBy=\nUpheldBy=y.target\n";
        let i = parse_install(unit).unwrap();
        assert_eq!(
            i.wanted_by,
            vec!["multi-user.target", "a.target", "b.target"]
        );
        assert_eq!(
            i.also,
            vec![
                "systemd-networkd.socket",
                "systemd-network-generator.service"
            ]
        );
        assert_eq!(i.alias, vec!["dbus-org.freedesktop.network1.service"]);
        assert!(i.required_by.is_empty());
        assert_eq!(i.upheld_by, vec!["y.target"]);

        let en = enable_links("systemd-networkd.service", &i, "etc/systemd/system");
        assert_eq!(
            en.links[0],
            (
                "etc/systemd/system/multi-user.target.wants/systemd-networkd.service".to_string(),
                "/usr/lib/systemd/system/systemd-networkd.service".to_string()
            )
        );
        assert!(en.links.contains(&(
            "etc/systemd/system/y.target.upholds/systemd-networkd.service".to_string(),
            "/usr/lib/systemd/system/systemd-networkd.service".to_string()
        )));
        assert!(en.links.contains(&(
            "etc/systemd/system/dbus-org.freedesktop.network1.service".to_string(),
            "/usr/lib/systemd/system/systemd-networkd.service".to_string()
        )));
        assert_eq!(en.also.len(), 2);

        let e = parse_install("[Install]\nWantedBy\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_install("[Install]\nBogus=1\n").is_err());
    }

    #[test]
    fn templates_and_instances() {
        let i = parse_install("[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n").unwrap();
        let en = enable_links("getty@.service", &i, "etc/systemd/system/");
        assert_eq!(
            en.links,
            vec![(
                "etc/systemd/system/getty.target.wants/getty@tty1.service".to_string(),
                "/usr/lib/systemd/system/getty@.service".to_string()
            )]
        );
        let en = enable_links("getty@ttyS0.service", &i, "etc/systemd/system");
        assert_eq!(
            en.links[0].0,
            "etc/systemd/system/getty.target.wants/getty@ttyS0.service"
        );
        assert_eq!(en.links[0].1, "/usr/lib/systemd/system/getty@.service");

        let i = parse_install("[Install]\nWantedBy=%p.target\nAlias=foo@.service\n").unwrap();
        let en = enable_links("bar@.service", &i, "etc/systemd/system");
        assert_eq!(en.links.len(), 1);
        assert_eq!(en.warnings.len(), 1);
        let en = enable_links("bar@x.service", &i, "etc/systemd/system");
        assert_eq!(
            en.links[0].0,
            "etc/systemd/system/bar.target.wants/bar@x.service"
        );
        assert_eq!(en.links[1].0, "etc/systemd/system/foo@x.service");
    }

    #[test]
    fn presets_first_match_wins_across_sorted_files() {
        let files = vec![
            ("/usr/lib/systemd/system-preset/99-default.preset".to_string(), "disable *\n".to_string()),
            (
                "/usr/lib/systemd/system-preset/90-systemd.preset".to_string(),
                "# comment\nenable getty@.service tty1 tty2\nenable systemd-timesyncd.service\ndisable debug-shell.service\nenable remote-*.target\nbogus line\n".to_string(),
            ),
        ];
        let p = parse_preset_files(&files);
        assert_eq!(
            preset_for(&p, "systemd-timesyncd.service").unwrap().action,
            PresetAction::Enable
        );
        assert_eq!(
            preset_for(&p, "remote-fs.target").unwrap().action,
            PresetAction::Enable
        );
        assert_eq!(
            preset_for(&p, "containerd.service").unwrap().action,
            PresetAction::Disable
        );
        assert_eq!(
            preset_for(&p, "getty@.service").unwrap().instances,
            vec!["tty1", "tty2"]
        );
        let (_, bad) = parse_presets_report("bogus line\n");
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("systemd-*.service", "systemd-networkd.service"));
        assert!(!glob_match("systemd-*.service", "systemd-networkd.socket"));
        assert!(glob_match("tty[0-9]", "tty5"));
        assert!(!glob_match("tty[!0-9]", "tty5"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[", "["));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*", name in "[a-z@.%-]{0,12}") {
            if let Ok(i) = parse_install(&s) {
                let _ = enable_links(&name, &i, "etc/systemd/system");
            }
            let p = parse_presets(&s);
            let _ = preset_for(&p, &name);
            let _ = glob_match(&s, &name);
            let _ = glob_match(&name, &s);
        }

        #[test]
        fn install_like_input_never_panics(s in "(\\[Install\\]\n|WantedBy=|Alias=|DefaultInstance=|Also=|[a-z@.%]+| |\\\\\n|\n|#){0,30}", name in "[a-z]{1,4}@?[a-z]{0,3}\\.service") {
            if let Ok(i) = parse_install(&s) {
                let _ = enable_links(&name, &i, "etc/systemd/system");
            }
        }
    }
}
