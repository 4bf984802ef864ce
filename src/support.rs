//! Who supports what a recipe pins, and until when: reads the end-of-life table
//! (`src/support.toml`, bundled; see its header) and checked recipes, and produces one
//! [`Finding`] per pin: every upstream artifact (recognised by its URL), the Debian
//! release, and the Debian packages the table names. `slipway doctor --recipes` prints
//! them ([`render`], [`to_json`]); decision 0025 says why and what CI does with them.
//!
//! A pin inside its upstream support is `ok`. A pin past it that Debian still supports
//! (security team, then LTS) is reported, not warned about. A pin no one supports, or
//! one the table does not know, is a warning. The date is a parameter everywhere, so
//! tests never depend on the calendar.

use crate::recipe::Recipe;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The bundled table.
const BUNDLED: &str = include_str!("support.toml");

/// A calendar day (proleptic Gregorian), as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Days since 1970-01-01.
    days: i64,
}

impl Date {
    /// The day `y-m-d`, if it exists.
    pub fn new(y: i64, m: u32, d: u32) -> Option<Date> {
        slipway_common::date::days_from_civil(y, m, d).map(|days| Date { days })
    }

    /// Today, in UTC, from the system clock.
    pub fn today() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Date {
            days: (secs / 86_400) as i64,
        }
    }

    /// `(year, month, day)`.
    fn civil(self) -> (i64, u32, u32) {
        slipway_common::date::civil_from_days(self.days)
    }

    /// Days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: Date) -> i64 {
        later.days - self.days
    }
}

impl FromStr for Date {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Date> {
        let bad = || anyhow::anyhow!("{s:?} is not a date (use YYYY-MM-DD)");
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32> {
            let part = &s[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        Date::new(i64::from(y), m, d).ok_or_else(bad)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTable {
    schema_version: u32,
    #[serde(default)]
    product: Vec<RawProduct>,
    #[serde(default)]
    line: Vec<RawLine>,
    #[serde(default)]
    debian: Vec<RawDebian>,
    #[serde(default)]
    debian_package: Vec<RawPackage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProduct {
    name: String,
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLine {
    product: String,
    line: String,
    end_of_life: String,
    source: String,
    #[serde(default)]
    estimated: bool,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDebian {
    release: String,
    version: String,
    security_until: String,
    lts_until: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPackage {
    release: String,
    package: String,
    product: String,
    version: String,
}

/// A kind of upstream artifact, recognised by its URL.
#[derive(Debug, Clone)]
struct Product {
    name: String,
    url: regex::Regex,
}

/// One release line of a product and the day its upstream support ends.
#[derive(Debug, Clone)]
pub struct Line {
    /// The product, e.g. "containerd".
    pub product: String,
    /// The line, e.g. "2.3".
    pub line: String,
    /// The last day of upstream support.
    pub end_of_life: Date,
    /// Where the date is published.
    pub source: String,
    /// Whether upstream has not fixed the date (see `note`).
    pub estimated: bool,
    /// Why the date is what it is, when that needs saying.
    pub note: Option<String>,
}

/// A Debian release: the security team's support, then Debian LTS.
#[derive(Debug, Clone)]
pub struct Debian {
    /// Codename, e.g. "trixie".
    pub release: String,
    /// Number, e.g. "13".
    pub version: String,
    /// Last day of the security team's support.
    pub security_until: Date,
    /// Last day of Debian LTS.
    pub lts_until: Date,
    /// Where the dates are published.
    pub source: String,
}

/// A Debian package whose upstream line the table names.
#[derive(Debug, Clone)]
struct Package {
    release: String,
    package: String,
    product: String,
    version: String,
}

/// The checked end-of-life table.
#[derive(Debug, Clone)]
pub struct Table {
    products: Vec<Product>,
    /// Release lines, in file order.
    pub lines: Vec<Line>,
    /// Debian releases, in file order.
    pub debian: Vec<Debian>,
    packages: Vec<Package>,
}

impl Table {
    /// The table bundled with slipway (`src/support.toml`).
    pub fn bundled() -> Result<Table> {
        Table::parse("src/support.toml", BUNDLED)
    }

    /// Reads the table in `path`.
    pub fn load(path: &Path) -> Result<Table> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Table::parse(&path.display().to_string(), &text)
    }

    /// Parses and checks a table; errors name `file` and the key.
    pub fn parse(file: &str, text: &str) -> Result<Table> {
        let raw: RawTable = toml::from_str(text).with_context(|| format!("{file}: not a table"))?;
        if raw.schema_version != 1 {
            bail!("{file}: schema-version: {} is not 1", raw.schema_version);
        }
        let date =
            |key: String, v: &str| v.parse::<Date>().with_context(|| format!("{file}: {key}"));
        let mut products = Vec::new();
        for (i, p) in raw.product.into_iter().enumerate() {
            let url = regex::Regex::new(&p.url)
                .with_context(|| format!("{file}: product[{i}].url: not a regex"))?;
            if !url.capture_names().any(|n| n == Some("version")) {
                bail!("{file}: product[{i}].url: has no (?P<version>...) group");
            }
            products.push(Product { name: p.name, url });
        }
        let known = |key: String, name: &str| {
            if products.iter().any(|p| p.name == name) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{file}: {key}: {name:?} is no [[product]]"))
            }
        };
        let mut lines = Vec::new();
        for (i, l) in raw.line.into_iter().enumerate() {
            known(format!("line[{i}].product"), &l.product)?;
            lines.push(Line {
                end_of_life: date(format!("line[{i}].end-of-life"), &l.end_of_life)?,
                product: l.product,
                line: l.line,
                source: l.source,
                estimated: l.estimated,
                note: l.note,
            });
        }
        let mut debian = Vec::new();
        for (i, d) in raw.debian.into_iter().enumerate() {
            debian.push(Debian {
                security_until: date(format!("debian[{i}].security-until"), &d.security_until)?,
                lts_until: date(format!("debian[{i}].lts-until"), &d.lts_until)?,
                release: d.release,
                version: d.version,
                source: d.source,
            });
        }
        let mut packages = Vec::new();
        for (i, p) in raw.debian_package.into_iter().enumerate() {
            known(format!("debian-package[{i}].product"), &p.product)?;
            if !debian.iter().any(|d| d.release == p.release) {
                bail!(
                    "{file}: debian-package[{i}].release: {:?} is no [[debian]] release",
                    p.release
                );
            }
            packages.push(Package {
                release: p.release,
                package: p.package,
                product: p.product,
                version: p.version,
            });
        }
        Ok(Table {
            products,
            lines,
            debian,
            packages,
        })
    }

    fn line(&self, product: &str, version: &str) -> Option<&Line> {
        let l = line_of(version);
        let major = version.split('.').next().unwrap_or(version);
        // A line of one number is a major release line (Node.js "20"), holding every
        // minor of that major; otherwise the first two numbers name the line.
        self.lines.iter().find(|x| {
            x.product == product && (x.line == l || (!x.line.contains('.') && x.line == major))
        })
    }
}

/// The line of a version: its first two numbers ("2.3.4" -> "2.3").
fn line_of(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Who supports a pin on the day checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Upstream does.
    Upstream,
    /// Upstream no longer does; Debian's security team or Debian LTS does, until `until`.
    Debian {
        /// "Debian security" or "Debian LTS".
        by: &'static str,
        /// The last day of that support.
        until: Date,
    },
    /// No one does.
    Unsupported,
    /// The table has no line for it.
    Unknown,
}

impl Status {
    /// Whether this pin is a warning.
    pub fn warns(&self) -> bool {
        matches!(self, Status::Unsupported | Status::Unknown)
    }
}

/// One pin of one recipe, checked against the table on one day.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The recipe's image name.
    pub recipe: String,
    /// What is pinned: an artifact's file name, "Debian 13 (trixie)", "containerd (Debian package)".
    pub pin: String,
    /// The product line, e.g. "containerd 2.3" (empty when unknown).
    pub line: String,
    /// The pinned version.
    pub version: String,
    /// The last day of upstream support, if the table has it.
    pub end_of_life: Option<Date>,
    /// Days from the day checked to `end_of_life` (negative: past).
    pub days_left: Option<i64>,
    /// Whether upstream has not fixed `end_of_life` (the table's note says why).
    pub estimated: bool,
    /// Who supports it after upstream ("Debian security to ...", "no one").
    pub after: String,
    /// Where `end_of_life` is published.
    pub source: String,
    /// Who supports it on the day checked.
    pub status: Status,
}

/// Who supports a pin past `eol` on `today`: Debian's phases of `deb`, if given.
fn status_on(today: Date, eol: Date, deb: Option<&Debian>) -> Status {
    if today <= eol {
        return Status::Upstream;
    }
    match deb {
        Some(d) if today <= d.security_until => Status::Debian {
            by: "Debian security",
            until: d.security_until,
        },
        Some(d) if today <= d.lts_until => Status::Debian {
            by: "Debian LTS",
            until: d.lts_until,
        },
        _ => Status::Unsupported,
    }
}

/// Every pin of `recipe` (its artifacts, its Debian release, the packages the table
/// names), checked against `table` on `today`.
pub fn check(table: &Table, recipe: &Recipe, today: Date) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for a in &recipe.artifacts {
        if seen.contains(&a.url) {
            continue;
        }
        seen.push(a.url.clone());
        out.push(check_artifact(table, &recipe.name, &a.url, today));
    }
    let release = &recipe.debian.release;
    let deb = table.debian.iter().find(|d| &d.release == release);
    out.push(match deb {
        Some(d) => Finding {
            recipe: recipe.name.clone(),
            pin: format!("Debian {} ({})", d.version, d.release),
            line: format!("Debian {}", d.version),
            version: d.version.clone(),
            end_of_life: Some(d.security_until),
            days_left: Some(today.days_until(d.security_until)),
            estimated: false,
            after: format!("Debian LTS to {}", d.lts_until),
            source: d.source.clone(),
            // The security team is the release's "upstream"; LTS comes after it.
            status: status_on(today, d.security_until, Some(d)),
        },
        None => unknown(&recipe.name, &format!("Debian {release}"), release),
    });
    for p in table.packages.iter().filter(|p| &p.release == release) {
        if recipe.include.contains(&p.package) && !recipe.exclude.contains(&p.package) {
            out.push(check_package(table, &recipe.name, p, deb, today));
        }
    }
    out
}

fn unknown(recipe: &str, pin: &str, version: &str) -> Finding {
    Finding {
        recipe: recipe.to_string(),
        pin: pin.to_string(),
        line: String::new(),
        version: version.to_string(),
        end_of_life: None,
        days_left: None,
        estimated: false,
        after: "not in the support table".into(),
        source: String::new(),
        status: Status::Unknown,
    }
}

fn check_artifact(table: &Table, recipe: &str, url: &str, today: Date) -> Finding {
    let file = url.rsplit('/').next().unwrap_or(url);
    let hit = table.products.iter().find_map(|p| {
        let c = p.url.captures(url)?;
        Some((p, c.name("version")?.as_str().to_string()))
    });
    let Some((product, version)) = hit else {
        return unknown(recipe, file, "?");
    };
    let Some(l) = table.line(&product.name, &version) else {
        let mut f = unknown(recipe, file, &version);
        f.line = format!("{} {}", product.name, line_of(&version));
        return f;
    };
    Finding {
        recipe: recipe.to_string(),
        pin: file.to_string(),
        line: format!("{} {}", l.product, l.line),
        version,
        end_of_life: Some(l.end_of_life),
        days_left: Some(today.days_until(l.end_of_life)),
        estimated: l.estimated,
        after: "no one".into(),
        source: l.source.clone(),
        status: status_on(today, l.end_of_life, None),
    }
}

fn check_package(
    table: &Table,
    recipe: &str,
    p: &Package,
    deb: Option<&Debian>,
    today: Date,
) -> Finding {
    let pin = format!("{} (Debian package)", p.package);
    let Some(l) = table.line(&p.product, &p.version) else {
        return unknown(recipe, &pin, &p.version);
    };
    Finding {
        recipe: recipe.to_string(),
        pin,
        line: format!("{} {}", l.product, l.line),
        version: p.version.clone(),
        end_of_life: Some(l.end_of_life),
        days_left: Some(today.days_until(l.end_of_life)),
        estimated: l.estimated,
        after: deb.map_or("no one".into(), |d| {
            format!(
                "Debian security to {}, LTS to {}",
                d.security_until, d.lts_until
            )
        }),
        source: l.source.clone(),
        status: status_on(today, l.end_of_life, deb),
    }
}

/// The recipe files named by `paths`: files as given; in directories, every `*.toml`
/// with a top-level `schema-version` (an overlay's `config.toml` is no recipe), sorted.
pub fn recipe_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        for e in walkdir::WalkDir::new(p).sort_by_file_name() {
            let e = e.with_context(|| format!("reading {}", p.display()))?;
            if e.file_type().is_file()
                && e.path().extension().is_some_and(|x| x == "toml")
                && is_recipe(e.path())?
            {
                out.push(e.path().to_path_buf());
            }
        }
    }
    Ok(out)
}

/// Whether the TOML file `path` has a top-level `schema-version` key.
fn is_recipe(path: &Path) -> Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("schema-version")))
}

/// The findings of every recipe named by `paths` (see [`recipe_files`]) on `today`.
pub fn check_files(table: &Table, paths: &[PathBuf], today: Date) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for f in recipe_files(paths)? {
        let r = Recipe::load(&f)?;
        findings.extend(check(table, &r, today));
    }
    Ok(findings)
}

/// The word in the status column.
fn word(s: &Status) -> String {
    match s {
        Status::Upstream => "ok".into(),
        Status::Debian { by, .. } => format!("reported: {by} only"),
        Status::Unsupported => "WARN: supported by no one".into(),
        Status::Unknown => "WARN: not in the support table".into(),
    }
}

/// The findings as a plain-text table.
pub fn render(findings: &[Finding], today: Date) -> String {
    let mut s = format!(
        "pins checked on {today} (~: estimated, see src/support.toml)\n\
         {:<26} {:<36} {:<16} {:<11} {:>5}  {:<40} status\n",
        "recipe", "pin", "line", "upstream", "days", "after upstream"
    );
    for f in findings {
        s.push_str(&format!(
            "{:<26} {:<36} {:<16} {:<11} {:>5}  {:<40} {}\n",
            f.recipe,
            f.pin,
            f.line,
            f.end_of_life.map_or("?".into(), |d| {
                format!("{d}{}", if f.estimated { "~" } else { "" })
            }),
            f.days_left.map_or("?".into(), |d| d.to_string()),
            f.after,
            word(&f.status)
        ));
    }
    s
}

/// The findings as JSON (`slipway doctor --recipes --json`).
pub fn to_json(findings: &[Finding], today: Date) -> serde_json::Value {
    serde_json::json!({
        "today": today.to_string(),
        "pins": findings.iter().map(|f| serde_json::json!({
            "recipe": f.recipe,
            "pin": f.pin,
            "line": f.line,
            "version": f.version,
            "end-of-life": f.end_of_life.map(|d| d.to_string()),
            "days-left": f.days_left,
            "estimated": f.estimated,
            "after": f.after,
            "source": f.source,
            "status": word(&f.status),
            "warn": f.status.warns(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests;
