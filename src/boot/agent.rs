//! Host side of the test agent: consumes the unix socket QEMU exposes for the guest's
//! virtio-serial port, produces command results and file contents from the guest.
//!
//! QEMU is started with
//! `-chardev socket,id=ta,path=SOCK,server=on,wait=off -device virtio-serial-pci
//! -device virtserialport,chardev=ta,name=org.slipway.test`; the guest runs
//! `slipway-agent test-agent` (started by provisioning when the config has
//! `[test-agent]`). The wire protocol is `slipway_common::protocol`, the same code the
//! agent serves it with; see docs/provisioning.md.

use anyhow::{bail, Context, Result};
use slipway_common::base64::{decode as b64_decode, encode as b64_encode};
use slipway_common::protocol::{self, Message, Op, Request, Response, MAX_FRAME};
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where host images carry the agent binary (`make agent` builds it).
pub const AGENT_IN_IMAGE: &str = "/usr/lib/slipway/slipway-agent";
/// QEMU arguments that expose the test agent's port as a unix socket at `sock`.
pub fn qemu_port_args(sock: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id=ta,path={},server=on,wait=off", sock.display()),
        "-device".into(),
        "virtio-serial-pci".into(),
        "-device".into(),
        format!("virtserialport,chardev=ta,name={}", protocol::DEFAULT_PORT),
    ]
}

/// QEMU arguments that hand the provisioning config `config` to the guest by fw_cfg.
pub fn qemu_fw_cfg_args(config: &Path) -> Vec<String> {
    vec![
        "-fw_cfg".into(),
        format!("name=opt/org.slipway/config,file={}", config.display()),
    ]
}

/// How long plain requests (ping, read, write) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time an exec answer may take beyond the command's own timeout (the guest may be
/// slow under TCG).
const EXEC_SLACK: Duration = Duration::from_secs(30);

/// A connection to the test agent.
pub struct AgentClient {
    stream: UnixStream,
    path: PathBuf,
    /// Bytes received but not yet consumed as a whole frame: a timeout mid-frame keeps
    /// the stream in sync.
    buf: Vec<u8>,
    next_id: u64,
}

/// The result of a command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// The exit code, `None` when a signal ended the command.
    pub exit: Option<i32>,
    /// The signal that ended the command.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl ExecResult {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit == Some(0)
    }
}

/// What a ping returns.
#[derive(Debug, Clone, PartialEq)]
pub struct PingInfo {
    /// The guest's boot id (changes at every boot).
    pub boot_id: String,
    /// Seconds since the guest booted.
    pub uptime: f64,
}

impl AgentClient {
    /// Connects to QEMU's chardev socket at `path`, retrying until `timeout` while QEMU
    /// has not created it yet. The agent itself may not be running yet: see
    /// [`AgentClient::wait_ready`].
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            ErrorKind::NotFound | ErrorKind::ConnectionRefused
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("connecting to the test agent socket {}", path.display())
                    })
                }
            }
        };
        Ok(Self {
            stream,
            path: path.to_path_buf(),
            buf: Vec::new(),
            next_id: 1,
        })
    }

    /// Pings until the agent answers or `timeout` passes (the guest may still be booting).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<PingInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ping_within(left.min(Duration::from_secs(2))) {
                Ok(p) => return Ok(p),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "the test agent on {} did not answer within {} s",
                        self.path.display(),
                        timeout.as_secs()
                    )))
                }
                Err(_) => {}
            }
        }
    }

    /// Checks that the agent answers; returns the guest's boot id and uptime.
    pub fn ping(&mut self) -> Result<PingInfo> {
        self.ping_within(REQUEST_TIMEOUT)
    }

    fn ping_within(&mut self, timeout: Duration) -> Result<PingInfo> {
        let r = self.call(Op::Ping, timeout)?;
        Ok(PingInfo {
            boot_id: r.boot_id.context("ping answer without boot_id")?,
            uptime: r.uptime.unwrap_or_default(),
        })
    }

    /// Runs `argv` in the guest (no shell; PATH=/usr/sbin:/usr/bin:/sbin:/bin, empty
    /// environment otherwise); the guest kills it after `timeout`.
    pub fn exec(&mut self, argv: &[&str], timeout: Duration) -> Result<ExecResult> {
        self.exec_with_stdin(argv, None, timeout)
    }

    /// [`AgentClient::exec`] with `stdin` as the command's standard input.
    pub fn exec_with_stdin(
        &mut self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecResult> {
        let op = Op::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            stdin: stdin.map(b64_encode),
        };
        let r = self
            .call(op, timeout + EXEC_SLACK)
            .with_context(|| format!("running {argv:?} in the guest"))?;
        let decode = |field: Option<String>, name: &str| -> Result<Vec<u8>> {
            b64_decode(field.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("exec answer: {name}: {e}"))
        };
        Ok(ExecResult {
            exit: r.exit,
            signal: r.signal,
            stdout: decode(r.stdout, "stdout")?,
            stderr: decode(r.stderr, "stderr")?,
        })
    }

    /// Writes `data` to `path` in the guest (atomically; parents created 0755).
    pub fn write_file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let op = Op::Write {
            path: path.to_string(),
            mode: Some(mode),
            data: b64_encode(data),
        };
        self.call(op, REQUEST_TIMEOUT)
            .with_context(|| format!("writing {path} in the guest"))?;
        Ok(())
    }

    /// Reads `path` from the guest.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        let r = self
            .call(
                Op::Read {
                    path: path.to_string(),
                },
                REQUEST_TIMEOUT,
            )
            .with_context(|| format!("reading {path} in the guest"))?;
        b64_decode(r.data.as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("reading {path} in the guest: data: {e}"))
    }

    /// Sends one request and waits for its answer (answers to earlier, abandoned
    /// requests are skipped); an answer with `ok: false` is an error.
    fn call(&mut self, op: Op, timeout: Duration) -> Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        protocol::write_frame(&mut self.stream, &Request { id, op })
            .with_context(|| format!("sending to the test agent on {}", self.path.display()))?;
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(frame) = take_frame(&mut self.buf)? {
                let r = Response::from_json(&frame)
                    .map_err(anyhow::Error::msg)
                    .context("decoding a test agent answer")?;
                if r.id == id || (r.id == 0 && !r.ok) {
                    if !r.ok {
                        bail!("the test agent says: {}", r.error.unwrap_or_default());
                    }
                    return Ok(r);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no answer from the test agent on {} within {:.1} s",
                    self.path.display(),
                    timeout.as_secs_f64()
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("the test agent socket {} was closed", self.path.display()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading from the test agent"),
            }
        }
    }
}

/// Removes and returns the first whole frame's JSON from `buf`, if there is one.
fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME {
        bail!("test agent frame length {len} exceeds {MAX_FRAME}");
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let frame = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_arguments() {
        assert_eq!(
            qemu_port_args(Path::new("/t/ta.sock")).join(" "),
            "-chardev socket,id=ta,path=/t/ta.sock,server=on,wait=off -device virtio-serial-pci \
             -device virtserialport,chardev=ta,name=org.slipway.test"
        );
        assert_eq!(
            qemu_fw_cfg_args(Path::new("/t/c.toml")),
            ["-fw_cfg", "name=opt/org.slipway/config,file=/t/c.toml"]
        );
    }

    #[test]
    fn take_frame_waits_for_whole_frames() {
        let mut wire = Vec::new();
        protocol::write_frame(&mut wire, &Response::failure(1, "x")).unwrap();
        protocol::write_frame(&mut wire, &Response::failure(2, "y")).unwrap();
        let mut buf = wire[..6].to_vec();
        assert!(take_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&wire[6..]);
        let a = Response::from_json(&take_frame(&mut buf).unwrap().unwrap()).unwrap();
        let b = Response::from_json(&take_frame(&mut buf).unwrap().unwrap()).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert!(buf.is_empty());
        let mut huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert!(take_frame(&mut huge).is_err());
    }

    /// A fake agent on the other end of a socket pair: answers late to request 1 (after
    /// the client gave up), then correctly to request 2.
    #[test]
    fn late_answers_to_abandoned_requests_are_skipped() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut client = AgentClient {
            stream: a,
            path: PathBuf::from("pair"),
            buf: Vec::new(),
            next_id: 1,
        };
        let agent = std::thread::spawn(move || {
            let mut answers = Vec::new();
            for _ in 0..2 {
                let f = protocol::read_frame(&mut b).unwrap().unwrap();
                let r = Request::from_json(&f).unwrap();
                answers.push(r.id);
            }
            for id in answers {
                let resp = Response {
                    id,
                    ok: true,
                    boot_id: Some(format!("boot-{id}")),
                    uptime: Some(1.5),
                    ..Response::default()
                };
                protocol::write_frame(&mut b, &resp).unwrap();
            }
            b
        });
        assert!(client.ping_within(Duration::from_millis(100)).is_err());
        let p = client.ping().unwrap();
        assert_eq!(p.boot_id, "boot-2");
        let mut b = agent.join().unwrap();
        protocol::write_frame(&mut b, &Response::failure(3, "no such file")).unwrap();
        let e = client.read_file("/nope").unwrap_err();
        assert!(
            format!("{e:#}").contains("the test agent says: no such file"),
            "{e:#}"
        );
    }
}
