//! The CRI (Container Runtime Interface) calls kubelet makes, as messages of the
//! `runtime.v1` API over [`crate::h2`].
//!
//! Field numbers are from k8s.io/cri-api `pkg/apis/runtime/v1/api.proto`; each message
//! builder or parser names the proto message it follows. Only the fields this tool sets
//! or reads are here; unknown fields in responses are skipped.

use std::path::Path;
use std::time::Duration;

use crate::h2::{Conn, Error};
use crate::pb::{fields, Value, Writer};

const RUNTIME: &str = "/runtime.v1.RuntimeService/";
const IMAGE: &str = "/runtime.v1.ImageService/";

/// `VersionResponse`: version = 1, runtime_name = 2, runtime_version = 3,
/// runtime_api_version = 4.
#[derive(Debug, Default)]
pub struct Version {
    pub version: String,
    pub runtime_name: String,
    pub runtime_version: String,
    pub runtime_api_version: String,
}

/// `RuntimeCondition`: type = 1, status = 2, reason = 3, message = 4.
#[derive(Debug, Default, Clone)]
pub struct Condition {
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// `Image`: id = 1, repo_tags = 2 (repeated), repo_digests = 3 (repeated), size = 4.
#[derive(Debug, Default)]
pub struct Image {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
}

/// `ContainerState` enum.
pub const CONTAINER_EXITED: u64 = 2;

/// `ContainerStatus`: id = 1, state = 3, finished_at = 6, exit_code = 7, reason = 10,
/// message = 11, log_path = 15.
#[derive(Debug, Default)]
pub struct ContainerStatus {
    pub id: String,
    pub state: u64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub log_path: String,
}

/// `NamespaceMode` enum: POD = 0, CONTAINER = 1, NODE = 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceMode {
    Pod = 0,
    Container = 1,
    Node = 2,
}

/// What this tool puts into a `PodSandboxConfig`.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub hostname: String,
    pub log_directory: String,
    /// Network namespace: NODE (host network, no CNI) or POD.
    pub network: NamespaceMode,
    /// `LinuxPodSandboxConfig.cgroup_parent` (empty: the runtime's default).
    pub cgroup_parent: String,
}

impl SandboxSpec {
    /// `PodSandboxConfig`: metadata = 1 (`PodSandboxMetadata`: name = 1, uid = 2,
    /// namespace = 3, attempt = 4), hostname = 2, log_directory = 3, labels = 6,
    /// linux = 8 (`LinuxPodSandboxConfig`: cgroup_parent = 1, security_context = 2
    /// (`LinuxSandboxSecurityContext`: namespace_options = 1 (`NamespaceOption`:
    /// network = 1, pid = 2, ipc = 3))).
    fn encode(&self) -> Writer {
        let mut meta = Writer::new();
        meta.string(1, &self.name)
            .string(2, &self.uid)
            .string(3, &self.namespace);
        let mut ns = Writer::new();
        ns.uint(1, self.network as u64)
            .uint(2, NamespaceMode::Pod as u64)
            .uint(3, NamespaceMode::Pod as u64);
        let mut sec = Writer::new();
        sec.message(1, &ns);
        let mut linux = Writer::new();
        if !self.cgroup_parent.is_empty() {
            linux.string(1, &self.cgroup_parent);
        }
        linux.message(2, &sec);
        let mut c = Writer::new();
        c.message(1, &meta)
            .string(2, &self.hostname)
            .string(3, &self.log_directory)
            .map_entry(6, "io.slipway.node", "cri-run")
            .message(8, &linux);
        c
    }
}

/// What this tool puts into a `ContainerConfig`.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Relative to the sandbox's log_directory.
    pub log_path: String,
}

impl ContainerSpec {
    /// `ContainerConfig`: metadata = 1 (`ContainerMetadata`: name = 1, attempt = 2),
    /// image = 2 (`ImageSpec`: image = 1), command = 3, args = 4, log_path = 11,
    /// linux = 15 (`LinuxContainerConfig`: security_context = 2
    /// (`LinuxContainerSecurityContext`: namespace_options = 3)).
    fn encode(&self, network: NamespaceMode) -> Writer {
        let mut meta = Writer::new();
        meta.string(1, &self.name);
        let mut image = Writer::new();
        image.string(1, &self.image);
        // As kubelet does for v1 pods: PID namespace per container, network per pod
        // (or the node's).
        let mut ns = Writer::new();
        ns.uint(1, network as u64)
            .uint(2, NamespaceMode::Container as u64)
            .uint(3, NamespaceMode::Pod as u64);
        let mut sec = Writer::new();
        sec.message(3, &ns);
        let mut linux = Writer::new();
        linux.message(2, &sec);
        let mut c = Writer::new();
        c.message(1, &meta)
            .message(2, &image)
            .strings(3, &self.command)
            .strings(4, &self.args)
            .string(11, &self.log_path)
            .message(15, &linux);
        c
    }
}

/// A CRI client on one connection.
pub struct Client {
    conn: Conn,
}

fn bad(e: String) -> Error {
    Error::Protocol(e)
}

fn string_field(msg: &[u8], n: u32) -> Result<String, Error> {
    Ok(fields(msg)
        .map_err(bad)?
        .into_iter()
        .rfind(|(f, _)| *f == n)
        .map(|(_, v)| v.as_string())
        .unwrap_or_default())
}

fn parse_image(msg: &[u8]) -> Result<Image, Error> {
    let mut img = Image::default();
    for (f, v) in fields(msg).map_err(bad)? {
        match f {
            1 => img.id = v.as_string(),
            2 => img.repo_tags.push(v.as_string()),
            3 => img.repo_digests.push(v.as_string()),
            4 => img.size = v.as_u64(),
            _ => {}
        }
    }
    Ok(img)
}

/// Parses a `StatusResponse` (status = 1: `RuntimeStatus`, conditions = 1).
pub fn parse_status(msg: &[u8]) -> Result<Vec<Condition>, Error> {
    let mut out = Vec::new();
    for (f, v) in fields(msg).map_err(bad)? {
        if f != 1 {
            continue;
        }
        for (g, c) in fields(v.as_bytes()).map_err(bad)? {
            if g != 1 {
                continue;
            }
            let mut cond = Condition::default();
            for (h, x) in fields(c.as_bytes()).map_err(bad)? {
                match (h, x) {
                    (1, x) => cond.kind = x.as_string(),
                    (2, Value::Varint(b)) => cond.status = b != 0,
                    (3, x) => cond.reason = x.as_string(),
                    (4, x) => cond.message = x.as_string(),
                    _ => {}
                }
            }
            out.push(cond);
        }
    }
    Ok(out)
}

impl Client {
    /// Connects to the CRI socket.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, Error> {
        Ok(Client {
            conn: Conn::connect(socket, timeout)?,
        })
    }

    fn call(&mut self, service: &str, method: &str, req: &Writer) -> Result<Vec<u8>, Error> {
        self.conn
            .unary(&format!("{service}{method}"), &req.finish())
            .map_err(|e| match e {
                Error::Status { code, message } => Error::Status {
                    code,
                    message: format!("{method}: {message}"),
                },
                Error::Io(m) => Error::Io(format!("{method}: {m}")),
                Error::Protocol(m) => Error::Protocol(format!("{method}: {m}")),
            })
    }

    /// `Version` (`VersionRequest`: version = 1).
    pub fn version(&mut self) -> Result<Version, Error> {
        let mut req = Writer::new();
        req.string(1, "v1");
        let msg = self.call(RUNTIME, "Version", &req)?;
        let mut v = Version::default();
        for (f, x) in fields(&msg).map_err(bad)? {
            match f {
                1 => v.version = x.as_string(),
                2 => v.runtime_name = x.as_string(),
                3 => v.runtime_version = x.as_string(),
                4 => v.runtime_api_version = x.as_string(),
                _ => {}
            }
        }
        Ok(v)
    }

    /// `Status` (`StatusRequest`: verbose = 1, left false).
    pub fn status(&mut self) -> Result<Vec<Condition>, Error> {
        let msg = self.call(RUNTIME, "Status", &Writer::new())?;
        parse_status(&msg)
    }

    /// `ListImages` (`ListImagesRequest`: no filter) -> `ListImagesResponse`: images = 1.
    pub fn list_images(&mut self) -> Result<Vec<Image>, Error> {
        let msg = self.call(IMAGE, "ListImages", &Writer::new())?;
        fields(&msg)
            .map_err(bad)?
            .into_iter()
            .filter(|(f, _)| *f == 1)
            .map(|(_, v)| parse_image(v.as_bytes()))
            .collect()
    }

    /// `ImageStatus` (`ImageStatusRequest`: image = 1 (`ImageSpec`: image = 1)) ->
    /// `ImageStatusResponse`: image = 1, absent when the runtime does not have it.
    pub fn image_status(&mut self, image: &str) -> Result<Option<Image>, Error> {
        let mut spec = Writer::new();
        spec.string(1, image);
        let mut req = Writer::new();
        req.message(1, &spec);
        let msg = self.call(IMAGE, "ImageStatus", &req)?;
        for (f, v) in fields(&msg).map_err(bad)? {
            if f == 1 {
                return parse_image(v.as_bytes()).map(Some);
            }
        }
        Ok(None)
    }

    /// `RunPodSandbox` (`RunPodSandboxRequest`: config = 1) -> pod_sandbox_id = 1.
    pub fn run_pod_sandbox(&mut self, s: &SandboxSpec) -> Result<String, Error> {
        let mut req = Writer::new();
        req.message(1, &s.encode());
        let msg = self.call(RUNTIME, "RunPodSandbox", &req)?;
        string_field(&msg, 1)
    }

    /// `CreateContainer` (`CreateContainerRequest`: pod_sandbox_id = 1, config = 2,
    /// sandbox_config = 3) -> container_id = 1.
    pub fn create_container(
        &mut self,
        sandbox_id: &str,
        c: &ContainerSpec,
        s: &SandboxSpec,
    ) -> Result<String, Error> {
        let mut req = Writer::new();
        req.string(1, sandbox_id)
            .message(2, &c.encode(s.network))
            .message(3, &s.encode());
        let msg = self.call(RUNTIME, "CreateContainer", &req)?;
        string_field(&msg, 1)
    }

    /// `StartContainer` (`StartContainerRequest`: container_id = 1).
    pub fn start_container(&mut self, id: &str) -> Result<(), Error> {
        let mut req = Writer::new();
        req.string(1, id);
        self.call(RUNTIME, "StartContainer", &req).map(|_| ())
    }

    /// `ContainerStatus` (`ContainerStatusRequest`: container_id = 1) ->
    /// `ContainerStatusResponse`: status = 1.
    pub fn container_status(&mut self, id: &str) -> Result<ContainerStatus, Error> {
        let mut req = Writer::new();
        req.string(1, id);
        let msg = self.call(RUNTIME, "ContainerStatus", &req)?;
        let mut st = ContainerStatus::default();
        for (f, v) in fields(&msg).map_err(bad)? {
            if f != 1 {
                continue;
            }
            for (g, x) in fields(v.as_bytes()).map_err(bad)? {
                match g {
                    1 => st.id = x.as_string(),
                    3 => st.state = x.as_u64(),
                    6 => st.finished_at = x.as_u64() as i64,
                    // int32 is sign-extended to 64 bits on the wire.
                    7 => st.exit_code = x.as_u64() as i64 as i32,
                    10 => st.reason = x.as_string(),
                    11 => st.message = x.as_string(),
                    15 => st.log_path = x.as_string(),
                    _ => {}
                }
            }
        }
        Ok(st)
    }

    /// `StopPodSandbox` (`StopPodSandboxRequest`: pod_sandbox_id = 1).
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), Error> {
        let mut req = Writer::new();
        req.string(1, id);
        self.call(RUNTIME, "StopPodSandbox", &req).map(|_| ())
    }

    /// `RemovePodSandbox` (`RemovePodSandboxRequest`: pod_sandbox_id = 1).
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), Error> {
        let mut req = Writer::new();
        req.string(1, id);
        self.call(RUNTIME, "RemovePodSandbox", &req).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_response_parses() {
        let mut c1 = Writer::new();
        c1.string(1, "RuntimeReady").uint(2, 1);
        let mut c2 = Writer::new();
        c2.string(1, "NetworkReady")
            .string(3, "NetworkPluginNotReady")
            .string(4, "cni plugin not initialized");
        let mut st = Writer::new();
        st.message(1, &c1).message(1, &c2);
        let mut resp = Writer::new();
        resp.message(1, &st).map_entry(2, "k", "v");
        let conds = parse_status(&resp.finish()).unwrap();
        assert_eq!(conds.len(), 2);
        assert!(conds[0].status && conds[0].kind == "RuntimeReady");
        assert!(!conds[1].status);
        assert_eq!(conds[1].reason, "NetworkPluginNotReady");
    }

    #[test]
    fn sandbox_config_has_node_network() {
        let s = SandboxSpec {
            name: "n".into(),
            uid: "u".into(),
            namespace: "default".into(),
            hostname: String::new(),
            log_directory: "/l".into(),
            network: NamespaceMode::Node,
            cgroup_parent: String::new(),
        };
        let b = s.encode().finish();
        let top = fields(&b).unwrap();
        let linux = top.iter().find(|(f, _)| *f == 8).unwrap().1;
        let sec = fields(linux.as_bytes()).unwrap()[0].1;
        let ns = fields(sec.as_bytes()).unwrap()[0].1;
        let ns = fields(ns.as_bytes()).unwrap();
        assert_eq!(ns[0], (1, Value::Varint(2)));
        // With a parent cgroup it comes first in LinuxPodSandboxConfig (field 1).
        let s = SandboxSpec {
            cgroup_parent: "slipway-pods.slice".into(),
            ..s
        };
        let b = s.encode().finish();
        let top = fields(&b).unwrap();
        let linux = fields(top.iter().find(|(f, _)| *f == 8).unwrap().1.as_bytes()).unwrap();
        assert_eq!(linux[0].0, 1);
        assert_eq!(linux[0].1.as_bytes(), b"slipway-pods.slice");
    }
}
