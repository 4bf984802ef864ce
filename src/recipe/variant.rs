//! Variants of a base recipe that slipway derives instead of asking for a recipe file
//! each: consumes a checked [`Recipe`], produces the recipe of its variant.
//!
//! The `debug` variant (decision 0040) is the image plus BusyBox: a child recipe that
//! extends the image's recipe, so its layers are the image's own byte for byte and one
//! layer on top adds `/usr/bin/busybox` and its applet links (never over a file the
//! image has). It keeps the image's user, entrypoint, command and environment, and is
//! tagged `debug` (`<tag>-debug` when the image has a tag of its own). The derived
//! recipe is TOML text generated here and checked by the same code as any recipe file;
//! it is named `NAME.debug.toml` beside the image's recipe (a file that need not exist),
//! so its lock is `NAME.debug.toml.lock`, next to the image's own.

use super::{parse_raw, validate, Recipe};
use anyhow::{Context as _, Result};

/// A variant of a base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The image plus a BusyBox shell and its applets, for `docker exec`.
    Debug,
}

impl Variant {
    /// Every variant, in the order `--help` lists them.
    pub const ALL: [Variant; 1] = [Variant::Debug];

    /// Its name on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Debug => "debug",
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| anyhow::anyhow!("{s:?} is not an image variant (expected: debug)"))
    }
}

/// The package, binary and skipped applet of the debug layer (as in
/// recipes/base/busybox.toml).
const BUSYBOX_PACKAGE: &str = "busybox-static";
const BUSYBOX: &str = "/usr/bin/busybox";
const SKIP: &str = "/linuxrc";

impl Recipe {
    /// The recipe of `v` for this (base) recipe. A host recipe has no variants (exit 2).
    pub fn variant(&self, v: Variant) -> Result<Recipe> {
        let bad = |m: String| crate::exit::err(crate::exit::Code::BadInput, m);
        if self.kind != super::raw::ImageKind::Base {
            return Err(bad(format!(
                "{}: --variant {}: only base images (kind = \"base\") have variants",
                self.display(),
                v.name()
            )));
        }
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone());
        let path = self
            .path
            .with_file_name(format!("{stem}.{}.toml", v.name()));
        let text = match v {
            Variant::Debug => debug_text(self)?,
        };
        let raw = parse_raw(&path, &text)?;
        let canon = self
            .path
            .canonicalize()
            .with_context(|| format!("{}: cannot read recipe", self.display()))?
            .with_file_name(path.file_name().unwrap_or_default());
        let here = validate::Here::new(&path, &canon, &text, self.load);
        validate::recipe(&here, raw, Some(Box::new(self.clone())))
            .map_err(|e| crate::exit::with_code(crate::exit::Code::BadInput, e))
    }
}

/// The debug child recipe of `p`, as TOML.
fn debug_text(p: &Recipe) -> Result<String> {
    use toml::Value;
    let s = |x: &str| Value::String(x.to_string());
    let arr = |xs: &[&str]| Value::Array(xs.iter().map(|x| s(x)).collect());
    let mut doc = toml::Table::new();
    doc.insert("schema-version".into(), Value::Integer(1));
    let mut image = toml::Table::new();
    image.insert("name".into(), s(&p.name));
    image.insert(
        "description".into(),
        s(&format!("{}; debug: a BusyBox shell", p.description)),
    );
    doc.insert("image".into(), Value::Table(image));
    let mut packages = toml::Table::new();
    packages.insert("include".into(), arr(&[BUSYBOX_PACKAGE]));
    doc.insert("packages".into(), Value::Table(packages));
    let mut paths = toml::Table::new();
    paths.insert("keep".into(), arr(&[BUSYBOX.trim_start_matches('/')]));
    paths.insert("drop".into(), arr(&["usr/share/initramfs-tools/**"]));
    doc.insert("paths".into(), Value::Table(paths));
    if p.applets.is_none() {
        let mut applets = toml::Table::new();
        applets.insert("binary".into(), s(BUSYBOX));
        applets.insert("skip".into(), arr(&[SKIP]));
        doc.insert("applets".into(), Value::Table(applets));
    }
    let mut oci = toml::Table::new();
    // The repository is the image's: its own setting, else the default from the image
    // name, which the variant shares.
    if let Some(r) = &p.oci.repository {
        oci.insert("repository".into(), s(r));
    }
    let tag = match p.oci.tag.as_deref() {
        None | Some("latest") => "debug".to_string(),
        Some(t) => format!("{t}-debug"),
    };
    oci.insert("tag".into(), s(&tag));
    let desc_key = "org.opencontainers.image.description";
    if let Some(d) = p.oci.labels.get(desc_key) {
        let mut labels = toml::Table::new();
        labels.insert(
            desc_key.into(),
            s(&if d.contains("no shell") {
                d.replace("no shell", "BusyBox shell (debug variant)")
            } else {
                format!("{d}; BusyBox shell (debug variant)")
            }),
        );
        oci.insert("labels".into(), Value::Table(labels));
    }
    doc.insert("oci".into(), Value::Table(oci));
    toml::to_string(&doc).context("writing the debug variant's recipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_extends_the_image_and_keeps_its_run_config() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.toml");
        std::fs::write(
            &p,
            "schema-version = 1\n[image]\nname = \"app\"\nkind = \"base\"\n[packages]\ninclude = [\"libc6\"]\n[paths]\ndrop = [\"usr/bin/**\"]\n[oci]\nentrypoint = [\"/usr/bin/app\"]\ntag = \"1.2\"\nlabels = { \"org.opencontainers.image.description\" = \"an app; no shell\" }\n",
        )
        .unwrap();
        let r = Recipe::load(&p).unwrap();
        let v = r.variant(Variant::Debug).unwrap();
        assert_eq!(v.name, "app");
        assert_eq!(v.include, ["libc6", "busybox-static"]);
        assert_eq!(v.oci.entrypoint, r.oci.entrypoint);
        assert_eq!(v.oci.tag.as_deref(), Some("1.2-debug"));
        assert_eq!(v.oci.repository, None, "slipway/app, as the image");
        assert!(v.oci.labels["org.opencontainers.image.description"].contains("BusyBox"));
        assert_eq!(v.applets.as_ref().unwrap().binary, "/usr/bin/busybox");
        assert!(v.keep.contains(&"usr/bin/busybox".to_string()));
        assert_eq!(v.lock_path(), d.path().join("app.debug.toml.lock"));
        assert_eq!(
            v.for_arch("arm64").unwrap().lock_path(),
            d.path().join("app.debug.toml.arm64.lock")
        );
        assert_eq!(v.parent.as_ref().unwrap().path, p);
        assert_eq!("debug".parse::<Variant>().unwrap(), Variant::Debug);
        assert!("shell".parse::<Variant>().is_err());

        let h = d.path().join("host.toml");
        std::fs::write(
            &h,
            "schema-version = 1\n[image]\nkind = \"host\"\n[packages]\ninclude = [\"systemd\"]\n",
        )
        .unwrap();
        let e = Recipe::load(&h)
            .unwrap()
            .variant(Variant::Debug)
            .unwrap_err();
        assert_eq!(crate::exit::code_of(&e), 2);
        assert!(format!("{e:#}").contains("only base images"), "{e:#}");
    }
}
