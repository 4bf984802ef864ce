//! Images built once per test run, for tests that consume an image rather than test its
//! build: the library's fixture cache (`slipway::testing::fixtures`: key, lock, layout,
//! `builds.log`), with the slipway binary under test as its builder. `slipway test`
//! shares the same cache when `SLIPWAY_FIXTURES` names it (`make test` and `.ci/run` set
//! it), so a host disk or base image a cargo test built is not built again by the qemu/
//! suite, and the other way round.
//!
//! Tests of the build itself (reproducibility, failures) do not use this: they build on
//! purpose. A test must not write into a fixture: other processes read it.

use super::{bin, shared_cache, slipway, text};
use slipway::testing::fixtures::{self as lib, Builder, Cache};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The cache directory: `$SLIPWAY_FIXTURES`, or `target/tmp/fixtures`.
pub fn root() -> PathBuf {
    let p = std::env::var_os(lib::DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures"));
    fs::create_dir_all(&p).unwrap();
    p
}

/// The repository's `recipes/` directory.
pub fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes")
}

/// A host recipe built with `--format disk` (disk.raw, the ESP, root and UKI files and
/// manifest.json): the output directory. The same fixture `slipway test` boots.
pub fn host_image(recipe: &str) -> PathBuf {
    let args = lib::format_args(lib::HOST_FORMATS);
    build(recipe, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A base recipe built with every output a consumer reads (`rootfs/`, `rootfs.tar`,
/// `oci/`, `image.tar`, report.json): the output directory. The same fixture `slipway
/// test` imports for `copy-image`.
pub fn base_image(recipe: &str) -> PathBuf {
    let args = lib::format_args(lib::BASE_FORMATS);
    build(recipe, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `slipway build RECIPE -o DIR ARGS...` once per content key; returns DIR. `recipe` is
/// a bundled name (`containerd-host`, `base/busybox`) or a path.
pub fn build(recipe: &str, args: &[&str]) -> PathBuf {
    let path = recipe_path(recipe);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let f = cache()
        .get(&path, &args, &Binary)
        .unwrap_or_else(|e| panic!("fixture {recipe} ({}): {e:?}", args.join(" ")));
    if f.built {
        eprintln!(
            "fixture {} ({}) built in {:.1} s",
            path.display(),
            args.join(" "),
            f.seconds
        );
    }
    f.dir
}

/// How long the build of the fixture in `dir` took (seconds), from its `.fixture.json`.
pub fn build_seconds(dir: &Path) -> f64 {
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(".fixture.json")).unwrap()).unwrap();
    m["seconds"].as_f64().unwrap()
}

/// A path as given, else a bundled recipe `recipes/NAME.toml`.
fn recipe_path(recipe: &str) -> PathBuf {
    let p = Path::new(recipe);
    if p.is_file() {
        return p.to_path_buf();
    }
    let name = recipe.trim_end_matches(".toml");
    let bundled = recipes_dir().join(format!("{name}.toml"));
    assert!(
        bundled.is_file(),
        "{recipe}: no such recipe file or bundled recipe"
    );
    bundled
}

/// The cache of this test process (the binaries are hashed once).
fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(|| Cache::open(&root(), &bin()).unwrap())
}

/// The slipway binary under test, with the tests' shared package cache.
struct Binary;

impl Builder for Binary {
    fn who(&self) -> String {
        format!("cargo test, pid {}", std::process::id())
    }

    fn lock(&self, recipe: &Path) -> anyhow::Result<()> {
        let o = slipway(&shared_cache(), &["lock", &recipe.to_string_lossy()]);
        anyhow::ensure!(
            o.status.success(),
            "slipway lock failed ({}):\n{}",
            o.status,
            text(&o)
        );
        Ok(())
    }

    fn build(&self, recipe: &Path, args: &[String], out: &Path) -> anyhow::Result<String> {
        let mut argv = vec![
            "build".to_string(),
            recipe.to_string_lossy().into_owned(),
            "-o".to_string(),
            out.to_string_lossy().into_owned(),
        ];
        argv.extend_from_slice(args);
        let o = slipway(
            &shared_cache(),
            &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let log = text(&o);
        anyhow::ensure!(
            o.status.success(),
            "slipway build failed ({}):\n{log}",
            o.status
        );
        Ok(log)
    }
}
