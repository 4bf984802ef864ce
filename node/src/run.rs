//! `slipway-node cri run`: runs one command in a pod the way kubelet would, through the
//! CRI calls only: ImageStatus, RunPodSandbox, CreateContainer, StartContainer,
//! ContainerStatus (polled until the container exits), then StopPodSandbox and
//! RemovePodSandbox. Consumes a [`RunSpec`]; produces the container's output (read back
//! from its CRI log file) and exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cri::{self, Client, ContainerSpec, NamespaceMode, SandboxSpec};

/// What to run.
#[derive(Debug)]
pub struct RunSpec {
    pub image: String,
    pub name: String,
    pub argv: Vec<String>,
    pub pod_network: bool,
    pub timeout: Duration,
    /// Where pod log directories go (kubelet: /var/log/pods).
    pub log_root: PathBuf,
    /// The pod's parent cgroup (`LinuxPodSandboxConfig.cgroup_parent`).
    pub cgroup_parent: String,
}

/// The pod's parent cgroup when none is given: a systemd slice where systemd is the init
/// system (containerd's systemd cgroup driver, which kubelet's systemd driver pairs with,
/// accepts only `NAME.slice` parents), else none (the cgroupfs driver's default path).
pub fn default_cgroup_parent() -> String {
    if Path::new("/run/systemd/system").is_dir() {
        "slipway-pods.slice".into()
    } else {
        String::new()
    }
}

/// One parsed line of a CRI container log: `TIMESTAMP STREAM TAG MESSAGE`, where TAG is
/// `F` (full line) or `P` (partial: no newline follows), see the CRI logging design
/// (kubernetes/design-proposals-archive, node/kubelet-cri-logging.md).
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub stderr: bool,
    pub partial: bool,
    pub message: &'a str,
}

/// Parses one log line; None for lines that do not follow the format.
pub fn parse_log_line(l: &str) -> Option<LogLine<'_>> {
    let mut it = l.splitn(4, ' ');
    let (_ts, stream, tag) = (it.next()?, it.next()?, it.next()?);
    let message = it.next().unwrap_or("");
    let stderr = match stream {
        "stdout" => false,
        "stderr" => true,
        _ => return None,
    };
    let partial = tag.split(':').next() == Some("P");
    Some(LogLine {
        stderr,
        partial,
        message,
    })
}

/// Prints a CRI log file's messages to stdout and stderr, as the container wrote them.
pub fn print_log(text: &str) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for l in text.lines() {
        let Some(line) = parse_log_line(l) else {
            continue;
        };
        let w: &mut dyn Write = if line.stderr { &mut err } else { &mut out };
        let _ = w.write_all(line.message.as_bytes());
        if !line.partial {
            let _ = w.write_all(b"\n");
        }
    }
    let _ = out.flush();
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), nanos)
}

/// Runs the container; returns its exit code. The sandbox is stopped and removed even
/// when a step fails.
pub fn run(client: &mut Client, spec: &RunSpec) -> Result<i32, String> {
    let found = client
        .image_status(&spec.image)
        .map_err(|e| e.to_string())?;
    if found.is_none() {
        return Err(format!(
            "image {} is not in the runtime (import it into containerd's k8s.io namespace)",
            spec.image
        ));
    }
    let uid = unique();
    let network = if spec.pod_network {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Node
    };
    let log_dir = spec.log_root.join(format!("default_{}_{}", spec.name, uid));
    let sandbox = SandboxSpec {
        name: spec.name.clone(),
        uid: uid.clone(),
        namespace: "default".into(),
        // With the node's network namespace the pod uses the node's hostname.
        hostname: if spec.pod_network {
            spec.name.clone()
        } else {
            String::new()
        },
        log_directory: log_dir.display().to_string(),
        network,
        cgroup_parent: spec.cgroup_parent.clone(),
    };
    let container = ContainerSpec {
        name: spec.name.clone(),
        image: spec.image.clone(),
        command: spec.argv.clone(),
        args: Vec::new(),
        log_path: format!("{}/0.log", spec.name),
    };
    // kubelet makes the pod's log directory; so do we.
    std::fs::create_dir_all(log_dir.join(&spec.name))
        .map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
    let sandbox_id = match client.run_pod_sandbox(&sandbox) {
        Ok(id) => id,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&log_dir);
            return Err(e.to_string());
        }
    };
    let result = run_in(
        client,
        &sandbox_id,
        &sandbox,
        &container,
        spec.timeout,
        &log_dir,
    );
    let stop = client.stop_pod_sandbox(&sandbox_id);
    let remove = client.remove_pod_sandbox(&sandbox_id);
    let _ = std::fs::remove_dir_all(&log_dir);
    let code = result?;
    stop.map_err(|e| e.to_string())?;
    remove.map_err(|e| e.to_string())?;
    Ok(code)
}

fn run_in(
    client: &mut Client,
    sandbox_id: &str,
    sandbox: &SandboxSpec,
    container: &ContainerSpec,
    timeout: Duration,
    log_dir: &Path,
) -> Result<i32, String> {
    let id = client
        .create_container(sandbox_id, container, sandbox)
        .map_err(|e| e.to_string())?;
    client.start_container(&id).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let status = loop {
        let st = client.container_status(&id).map_err(|e| e.to_string())?;
        if st.state == cri::CONTAINER_EXITED {
            break st;
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "container {id} still running after {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = if status.log_path.is_empty() {
        log_dir.join(&container.log_path)
    } else {
        PathBuf::from(&status.log_path)
    };
    let text = std::fs::read_to_string(&log)
        .map_err(|e| format!("reading the container log {}: {e}", log.display()))?;
    print_log(&text);
    if status.exit_code != 0 && !status.reason.is_empty() && status.reason != "Error" {
        eprintln!(
            "slipway-node: container exited with {} ({}{})",
            status.exit_code,
            status.reason,
            if status.message.is_empty() {
                String::new()
            } else {
                format!(": {}", status.message)
            }
        );
    }
    Ok(status.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines() {
        assert_eq!(
            parse_log_line("2026-11-27T23:59:59.123456789Z stdout F hello world"),
            Some(LogLine {
                stderr: false,
                partial: false,
                message: "hello world"
            })
        );
        assert_eq!(
            parse_log_line("2026-11-27T23:59:59Z stderr P part"),
            Some(LogLine {
                stderr: true,
                partial: true,
                message: "part"
            })
        );
        assert_eq!(
            parse_log_line("2026-11-27T23:59:59Z stdout F")
                .unwrap()
                .message,
            ""
        );
        assert_eq!(parse_log_line("garbage"), None);
    }
}
