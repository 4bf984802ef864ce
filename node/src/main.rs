//! slipway-node: the node tool slipway puts into Kubernetes node images.
//!
//! - `check [--json] [--root DIR] [--cri-socket PATH]`: the node-readiness checks to run
//!   before `kubeadm join` (docs/node-check.md); exit 0 only when every check passes.
//! - `cri [--cri-socket PATH] version|status|images`: asks the CRI runtime.
//! - `cri [--cri-socket PATH] run --image REF [--name N] [--pod-network] [--timeout S]
//!   [--log-root DIR] -- ARGV...`: runs ARGV in a new pod through the CRI calls kubelet
//!   makes, prints its output and exits with its exit code.
//!
//! Static and dependency-free: HTTP/2, HPACK and protobuf are written here
//! (docs/decisions/0018-hand-written-cri-client.md).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod check;
mod cri;
mod h2;
mod hpack;
mod huffman;
mod pb;
mod run;

use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: slipway-node check [--json] [--root DIR] [--cri-socket PATH]
       slipway-node cri [--cri-socket PATH] version | status | images
       slipway-node cri [--cri-socket PATH] run --image REF [--name NAME] [--pod-network]
                        [--timeout SECONDS] [--log-root DIR] [--cgroup-parent P] -- ARGV...
       slipway-node --version";

/// Exit code for bad command lines (as slipway's src/exit.rs).
const BAD_INPUT: i32 = 2;
/// Exit code of `cri run` when the tool, not the container, failed (as `docker run`).
const RUN_FAILED: i32 = 125;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("check") => cmd_check(&args[1..]),
        Some("cri") => cmd_cri(&args[1..]),
        Some("--version") => {
            println!("slipway-node {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            0
        }
        _ => usage("expected a subcommand: check or cri"),
    };
    std::process::exit(code);
}

fn usage(msg: &str) -> i32 {
    eprintln!("slipway-node: {msg}\n{USAGE}");
    BAD_INPUT
}

/// `unix:///run/x.sock` (crictl's form) or a plain path.
fn socket_path(s: &str) -> PathBuf {
    PathBuf::from(s.strip_prefix("unix://").unwrap_or(s))
}

/// Takes `--flag VALUE` from `args` at `i`; None (and a usage message) if VALUE is
/// missing.
fn value<'a>(args: &'a [String], i: &mut usize) -> Option<&'a str> {
    *i += 1;
    args.get(*i).map(String::as_str)
}

fn cmd_check(args: &[String]) -> i32 {
    let mut json = false;
    let mut root = PathBuf::from("/");
    let mut sock = PathBuf::from(check::DEFAULT_CRI_SOCKET);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--json" => json = true,
            f @ ("--root" | "--cri-socket") => {
                let Some(v) = value(args, &mut i) else {
                    return usage(&format!("{f} needs a value"));
                };
                if f == "--root" {
                    root = PathBuf::from(v);
                    if !root.is_dir() {
                        return usage(&format!("--root {v}: not a directory"));
                    }
                } else {
                    sock = socket_path(v);
                }
            }
            other => return usage(&format!("check: unknown argument {other:?}")),
        }
        i += 1;
    }
    let ctx = check::Ctx {
        root,
        cri_socket: sock,
        path: std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        }),
        cri_timeout: Duration::from_secs(10),
    };
    let out = check::run_all(&ctx);
    if json {
        println!("{}", check::to_json(&out));
    } else {
        for o in &out {
            println!(
                "{} {}: {}",
                if o.ok { "ok" } else { "FAIL" },
                o.name,
                o.detail
            );
        }
    }
    if out.iter().all(|o| o.ok) {
        0
    } else {
        1
    }
}

fn cmd_cri(args: &[String]) -> i32 {
    let mut sock = PathBuf::from(check::DEFAULT_CRI_SOCKET);
    let mut i = 0;
    while i < args.len() && args[i].starts_with("--") {
        match args[i].as_str() {
            "--cri-socket" => {
                let Some(v) = value(args, &mut i) else {
                    return usage("--cri-socket needs a value");
                };
                sock = socket_path(v);
            }
            other => return usage(&format!("cri: unknown option {other:?}")),
        }
        i += 1;
    }
    let Some(sub) = args.get(i).map(String::as_str) else {
        return usage("cri: expected version, status, images or run");
    };
    let rest = &args[i + 1..];
    let run_spec = match sub {
        "version" | "status" | "images" if rest.is_empty() => None,
        "version" | "status" | "images" => {
            return usage(&format!("cri {sub} takes no arguments"));
        }
        "run" => match parse_run(rest) {
            Ok(s) => Some(s),
            Err(m) => return usage(&m),
        },
        other => return usage(&format!("cri: unknown subcommand {other:?}")),
    };
    let fail_code = if run_spec.is_some() { RUN_FAILED } else { 1 };
    let mut client = match cri::Client::connect(&sock, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slipway-node: {e}");
            return fail_code;
        }
    };
    let res: Result<i32, String> = match (sub, run_spec) {
        ("version", _) => client.version().map_err(|e| e.to_string()).map(|v| {
            println!("Version:  {}", v.version);
            println!("RuntimeName:  {}", v.runtime_name);
            println!("RuntimeVersion:  {}", v.runtime_version);
            println!("RuntimeApiVersion:  {}", v.runtime_api_version);
            0
        }),
        ("status", _) => client.status().map_err(|e| e.to_string()).map(|conds| {
            for c in conds {
                let why = if c.status {
                    String::new()
                } else {
                    format!(" {}: {}", c.reason, c.message)
                };
                println!("{} {}{why}", c.kind, c.status);
            }
            0
        }),
        ("images", _) => client.list_images().map_err(|e| e.to_string()).map(|imgs| {
            for img in imgs {
                let refs = if !img.repo_tags.is_empty() {
                    img.repo_tags
                } else if !img.repo_digests.is_empty() {
                    img.repo_digests
                } else {
                    vec![img.id]
                };
                for r in refs {
                    println!("{r}");
                }
            }
            0
        }),
        (_, Some(spec)) => run::run(&mut client, &spec),
        _ => Ok(0),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slipway-node: {e}");
            fail_code
        }
    }
}

fn parse_run(args: &[String]) -> Result<run::RunSpec, String> {
    let mut image = None;
    let mut name = "slipway-run".to_string();
    let mut pod_network = false;
    let mut timeout = Duration::from_secs(120);
    let mut log_root = PathBuf::from("/var/log/pods");
    let mut cgroup_parent = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--" => {
                i += 1;
                break;
            }
            "--pod-network" => pod_network = true,
            "--image" | "--name" | "--timeout" | "--log-root" | "--cgroup-parent" => {
                let v = value(args, &mut i).ok_or_else(|| format!("{a} needs a value"))?;
                match a {
                    "--image" => image = Some(v.to_string()),
                    "--name" => {
                        let valid = !v.is_empty()
                            && v.len() <= 63
                            && v.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                        if !valid {
                            return Err(format!(
                                "--name {v:?}: expected a DNS label (a-z, 0-9, '-', at most 63)"
                            ));
                        }
                        name = v.to_string();
                    }
                    "--timeout" => {
                        let s: u64 = v
                            .parse()
                            .map_err(|_| format!("--timeout {v:?}: expected whole seconds"))?;
                        timeout = Duration::from_secs(s);
                    }
                    "--cgroup-parent" => cgroup_parent = Some(v.to_string()),
                    _ => log_root = PathBuf::from(v),
                }
            }
            other => {
                return Err(format!(
                    "cri run: unknown argument {other:?} (put the command after --)"
                ))
            }
        }
        i += 1;
    }
    let image = image.ok_or("cri run: --image is required")?;
    Ok(run::RunSpec {
        image,
        name,
        argv: args[i.min(args.len())..].to_vec(),
        pod_network,
        timeout,
        log_root,
        cgroup_parent: cgroup_parent.unwrap_or_else(run::default_cgroup_parent),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn run_arguments() {
        let s = parse_run(&args(&[
            "--image",
            "x:1",
            "--name",
            "web-1",
            "--timeout",
            "5",
            "--",
            "echo",
            "--name",
        ]))
        .unwrap();
        assert_eq!(s.image, "x:1");
        assert_eq!(s.name, "web-1");
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(
            s.argv,
            ["echo", "--name"],
            "after -- everything is the command"
        );
        assert!(!s.pod_network);
        assert!(parse_run(&args(&["--", "true"]))
            .unwrap_err()
            .contains("--image is required"));
        assert!(parse_run(&args(&["--image", "x", "--name", "Web_1"]))
            .unwrap_err()
            .contains("DNS label"));
        assert!(parse_run(&args(&["--image", "x", "--timeout", "5s"]))
            .unwrap_err()
            .contains("whole seconds"));
        assert!(parse_run(&args(&["--image", "x", "echo"]))
            .unwrap_err()
            .contains("after --"));
        assert!(parse_run(&args(&["--image"]))
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_path("unix:///run/a.sock"),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(socket_path("/run/b.sock"), PathBuf::from("/run/b.sock"));
    }
}
