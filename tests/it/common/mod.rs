//! Helpers shared by the integration tests: the real binary, a shared cache, recipes in
//! temporary directories, and a tiny HTTP server on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

pub mod docker;
pub mod fixtures;
pub mod iso;
pub mod k8s;
pub mod registry;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A Debian package: the `ar` archive of `debian-binary`, an uncompressed `control.tar` and
/// `data.tar`, as dpkg and slipway read it.
pub fn deb_of(control_tar: &[u8], data_tar: &[u8]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, bytes) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", control_tar),
        ("data.tar", data_tar),
    ] {
        let head = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            bytes.len()
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(bytes);
        if bytes.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// The slipway binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slipway"))
}

/// A cache shared by the tests of one build (package lists and .debs are fetched once).
pub fn shared_cache() -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-cache");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Runs slipway with `args` and the cache `cache`.
pub fn slipway(cache: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("SLIPWAY_CACHE", cache)
        .env_remove("SLIPWAY_MIRROR")
        .output()
        .unwrap()
}

/// stdout + stderr as one string.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts success and returns the output text.
pub fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(
        o.status.success(),
        "slipway failed ({:?}):\n{t}",
        o.status.code()
    );
    t
}

/// Asserts failure with `code` and returns the output text.
pub fn fails(o: Output, code: i32) -> String {
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "expected exit {code}:\n{t}");
    t
}

/// Writes a recipe file `name` in `dir`.
pub fn recipe(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("schema-version = 1\n{body}")).unwrap();
    p
}

/// A loopback TCP port free at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `body` for every GET on a loopback port, for `max` requests; returns the URL base.
pub fn http_server(body: Vec<u8>, max: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in l.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// The console of a spawned QEMU: its stdout and stderr collected into one shared log by
/// two reader threads (join them after the process ends).
pub fn capture_console(
    child: &mut std::process::Child,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    Vec<std::thread::JoinHandle<()>>,
) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
    }
    (log, readers)
}

/// Runs a host command (stdin null, `LC_ALL=C`); asserts success; returns stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let o = cmd
        .stdin(std::process::Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}",
        o.status,
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A static program of this workspace that goes into images (`slipway-init`,
/// `slipway-agent`): `$env` if set, else built (a no-op when current) into this build's
/// target directory exactly as `make build` does.
pub fn static_binary(package: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--locked", "--profile", "init", "-p", package])
        .args(["--target", "x86_64-unknown-linux-gnu"]));
    target_dir
        .join("x86_64-unknown-linux-gnu/init")
        .join(package)
}

/// The library's kola-strict console check (`slipway::testing::strict`, what `slipway
/// test` applies) over a whole console, plus any `extra` substrings a test also
/// forbids: panics naming the first bad line, with `tail` (the console's end).
pub fn assert_console_clean(console: &str, what: &str, extra: &[&str], tail: &str) {
    let mut w = slipway::testing::strict::Watcher::new(&[]);
    if let Some(b) = w.check(&format!("{console}\n")) {
        panic!("{what}: console shows {}: {:?}\n{tail}", b.kind, b.line);
    }
    if let Some(bad) = extra.iter().find(|b| console.contains(*b)) {
        panic!("{what}: console shows {bad:?}\n{tail}");
    }
}

/// QEMU processes whose command line mentions `dir`.
pub fn qemu_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// The root file system tree the disk stage makes for the recipe at `recipe`
/// (`disk::image::root_tree` of the assembled recipe, with the bundled agent), and its
/// epoch; packages from the shared cache.
pub fn host_root_tree(recipe: &Path) -> (slipway::tree::Tree, u64) {
    let r = slipway::recipe::Recipe::load(recipe).unwrap();
    let ctx = slipway::pipeline::Context {
        cache: slipway::fetch::cache::Cache::open(Some(shared_cache())).unwrap(),
        rep: slipway::io::progress::Reporter::quiet(),
        offline: false,
        locked: false,
        artifact_dirs: vec![],
        vendor: None,
    };
    let (asm, _) = slipway::pipeline::assembled(&ctx, &r).unwrap();
    let bundled = slipway::disk::image::Bundled::find().unwrap();
    let tree = slipway::disk::image::root_tree(&asm.tree, &bundled.agent, asm.epoch).unwrap();
    (tree, asm.epoch)
}
