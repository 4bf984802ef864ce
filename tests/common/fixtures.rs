//! Images built once per test run: a content-addressed fixture cache shared by every test
//! process (and by `slipway test`, which reads the same directory through
//! `SLIPWAY_FIXTURES`).
//!
//! An image's key is the sha256 of everything that decides its bytes: the build arguments,
//! every file under `recipes/` (recipes, locks, overlays) and under the recipe's own
//! directory when it lives elsewhere, and the slipway, slipway-init, slipway-agent and
//! slipway-node binaries. A build runs under an exclusive lock on the key, into a
//! temporary directory renamed into place, so tests that need the same image wait for
//! one build and never see half an output. Every build that really runs is appended to
//! `builds.log` in the cache directory: `.ci/run` counts them.
//!
//! Tests of the build itself (reproducibility, failures) do not use this: they build on
//! purpose.

use super::{bin, ok, shared_cache, slipway};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// The cache directory: `$SLIPWAY_FIXTURES`, or `target/tmp/fixtures`.
pub fn root() -> PathBuf {
    let p = std::env::var_os("SLIPWAY_FIXTURES")
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
/// manifest.json): the output directory.
pub fn host_image(recipe: &str) -> PathBuf {
    build(recipe, &["--format", "disk"])
}

/// `slipway build RECIPE -o DIR ARGS...` once per key; returns DIR. `recipe` is a bundled
/// name (`containerd-host`, `base/busybox`) or a path.
pub fn build(recipe: &str, args: &[&str]) -> PathBuf {
    let key = key(recipe, args);
    let name = recipe
        .trim_end_matches(".toml")
        .rsplit('/')
        .next()
        .unwrap_or("image")
        .to_string();
    let root = root();
    let out = root.join(format!("{name}-{}", &key[..16]));
    let lock = fs::File::create(root.join(format!("{name}-{}.lock", &key[..16]))).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    if out.join(".complete").is_file() {
        return out;
    }
    let tmp = root.join(format!(".{name}-{}.tmp-{}", &key[..16], std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let t = Instant::now();
    let mut argv = vec!["build", recipe, "-o"];
    let tmp_s = tmp.display().to_string();
    argv.push(&tmp_s);
    argv.extend_from_slice(args);
    let log = ok(slipway(&shared_cache(), &argv));
    let secs = t.elapsed().as_secs_f64();
    fs::write(tmp.join(".build.log"), &log).unwrap();
    fs::write(tmp.join(".complete"), &key).unwrap();
    let _ = fs::remove_dir_all(&out);
    fs::rename(&tmp, &out).unwrap();
    let mut counter = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("builds.log"))
        .unwrap();
    writeln!(counter, "{name} {} {secs:.1}s {}", &key[..16], args.join(" ")).unwrap();
    eprintln!("fixture {name} ({}) built in {secs:.1} s", args.join(" "));
    out
}

/// The sha256 of the binaries slipway builds images with (computed once per process).
fn binaries_digest() -> &'static str {
    static D: OnceLock<String> = OnceLock::new();
    D.get_or_init(|| {
        let mut h = Sha256::new();
        let dir = bin().parent().map(Path::to_path_buf).unwrap_or_default();
        for b in ["slipway", "slipway-init", "slipway-agent", "slipway-node"] {
            h.update(b.as_bytes());
            // A missing helper binary is part of the key too (the build fails on it).
            h.update(fs::read(dir.join(b)).unwrap_or_default());
        }
        hex(&h.finalize())
    })
}

fn key(recipe: &str, args: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"slipway-fixture-v1\0");
    h.update(recipe.as_bytes());
    for a in args {
        h.update(b"\0");
        h.update(a.as_bytes());
    }
    h.update(binaries_digest().as_bytes());
    hash_tree(&mut h, &recipes_dir());
    let p = Path::new(recipe);
    if p.is_file() {
        if let Some(dir) = p.parent() {
            hash_tree(&mut h, dir);
        }
    }
    hex(&h.finalize())
}

/// Every regular file and symlink under `dir`, by sorted relative path.
fn hash_tree(h: &mut Sha256, dir: &Path) {
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(dir).unwrap_or(&p);
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        match fs::read_link(&p) {
            Ok(t) => h.update(t.as_os_str().as_encoded_bytes()),
            Err(_) => h.update(fs::read(&p).unwrap_or_default()),
        }
        h.update(b"\0");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
