//! The test agent's wire protocol, one definition for both ends: the agent in the guest
//! (`slipway-agent test-agent`) and the slipway library on the host (`boot::agent`).
//!
//! Consumes and produces frames on a byte stream (a virtio-serial port in the guest, the
//! QEMU chardev's unix socket on the host): a 4-byte big-endian length, then that many
//! bytes of JSON. Requests carry an `id` and an `op`; every response echoes the `id`,
//! says `ok`, and carries either the op's result fields or `error`. Binary payloads
//! (stdin, stdout, file data) are standard base64 with padding. See docs/provisioning.md.
//!
//! The JSON is written by hand ([`crate::json`]) in a fixed member order; absent optional
//! members are left out, except an exec answer's `signal`, which is `null` then.

use crate::json::{self, Value};
use std::io::{self, Read, Write};

/// The largest frame either side accepts (base64 of a 48 MiB payload, plus JSON).
pub const MAX_FRAME: usize = 64 << 20;

/// The virtio-serial port name the test agent serves by default.
pub const DEFAULT_PORT: &str = "org.slipway.test";

/// One request from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Echoed in the response, so a late answer to an abandoned request is recognised.
    pub id: u64,
    /// What to do (the `op` member and its fields, flattened into the request object).
    pub op: Op,
}

/// The operations the agent performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Runs `argv` (no shell) with a clean environment; killed after `timeout_ms`.
    Exec {
        /// Program and arguments; the program is looked up in the fixed PATH.
        argv: Vec<String>,
        /// Kill the command (and its process group) after this long; default 60 s.
        timeout_ms: Option<u64>,
        /// Base64 standard input; none means /dev/null.
        stdin: Option<String>,
    },
    /// Writes a file atomically (parent directories are created 0755).
    Write {
        /// Absolute path in the guest.
        path: String,
        /// Permission bits as a number (420 = 0o644); default 0o644.
        mode: Option<u32>,
        /// Base64 content.
        data: String,
    },
    /// Reads a file; the response carries `data`.
    Read {
        /// Absolute path in the guest.
        path: String,
    },
    /// Liveness; the response carries `boot_id` and `uptime`.
    Ping,
}

/// One response from the agent. Fields not relevant to the op are omitted, except that an
/// exec response always carries `signal` (null when the command exited).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// The request's id (0 when the request could not be parsed).
    pub id: u64,
    /// False when the op failed; `error` says why.
    pub ok: bool,
    /// Exec: the exit code, null when killed by a signal.
    pub exit: Option<i32>,
    /// Exec: the terminating signal's number.
    pub signal: Option<i32>,
    /// Exec: base64 standard output.
    pub stdout: Option<String>,
    /// Exec: base64 standard error.
    pub stderr: Option<String>,
    /// Read: base64 file content.
    pub data: Option<String>,
    /// Ping: /proc/sys/kernel/random/boot_id.
    pub boot_id: Option<String>,
    /// Ping: seconds since boot.
    pub uptime: Option<f64>,
    /// Why the op failed.
    pub error: Option<String>,
}

impl Response {
    /// A failure answer to request `id`.
    pub fn failure(id: u64, error: impl Into<String>) -> Self {
        Self {
            id,
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

/// A message that goes into a frame as JSON.
pub trait Message: Sized {
    /// The compact JSON text.
    fn to_json(&self) -> String;
    /// Parses the JSON of one frame; the error names the member that is wrong.
    fn from_json(bytes: &[u8]) -> Result<Self, String>;
}

/// Builds an object's text member by member.
struct Object(String);

impl Object {
    fn new() -> Self {
        Object(String::from("{"))
    }
    fn key(&mut self, k: &str) -> &mut String {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        json::write_str(&mut self.0, k);
        self.0.push(':');
        &mut self.0
    }
    fn raw(&mut self, k: &str, v: impl std::fmt::Display) {
        let out = self.key(k);
        out.push_str(&v.to_string());
    }
    fn str(&mut self, k: &str, v: &str) {
        json::write_str(self.key(k), v);
    }
    fn opt_raw(&mut self, k: &str, v: Option<impl std::fmt::Display>) {
        if let Some(v) = v {
            self.raw(k, v);
        }
    }
    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

impl Message for Request {
    fn to_json(&self) -> String {
        let mut o = Object::new();
        o.raw("id", self.id);
        match &self.op {
            Op::Exec {
                argv,
                timeout_ms,
                stdin,
            } => {
                o.str("op", "exec");
                let out = o.key("argv");
                out.push('[');
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json::write_str(out, a);
                }
                out.push(']');
                o.opt_raw("timeout_ms", *timeout_ms);
                o.opt_str("stdin", stdin.as_deref());
            }
            Op::Write { path, mode, data } => {
                o.str("op", "write");
                o.str("path", path);
                o.opt_raw("mode", *mode);
                o.str("data", data);
            }
            Op::Read { path } => {
                o.str("op", "read");
                o.str("path", path);
            }
            Op::Ping => o.str("op", "ping"),
        }
        o.finish()
    }

    fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v = json::parse(bytes)?;
        let m = Members::of(&v)?;
        let op = match m.string("op")?.as_str() {
            "exec" => Op::Exec {
                argv: m.strings("argv")?,
                timeout_ms: m.opt_uint("timeout_ms")?,
                stdin: m.opt_string("stdin")?,
            },
            "write" => Op::Write {
                path: m.string("path")?,
                mode: m.opt_uint("mode")?,
                data: m.string("data")?,
            },
            "read" => Op::Read {
                path: m.string("path")?,
            },
            "ping" => Op::Ping,
            other => {
                return Err(format!(
                    "unknown op {other:?} (expected exec, write, read or ping)"
                ))
            }
        };
        Ok(Request {
            id: m.uint("id")?,
            op,
        })
    }
}

impl Message for Response {
    fn to_json(&self) -> String {
        let mut o = Object::new();
        o.raw("id", self.id);
        o.raw("ok", self.ok);
        o.opt_raw("exit", self.exit);
        match self.signal {
            Some(s) => o.raw("signal", s),
            None => o.raw("signal", "null"),
        }
        o.opt_str("stdout", self.stdout.as_deref());
        o.opt_str("stderr", self.stderr.as_deref());
        o.opt_str("data", self.data.as_deref());
        o.opt_str("boot_id", self.boot_id.as_deref());
        if let Some(u) = self.uptime {
            json::write_f64(o.key("uptime"), u);
        }
        o.opt_str("error", self.error.as_deref());
        o.finish()
    }

    fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v = json::parse(bytes)?;
        let m = Members::of(&v)?;
        Ok(Response {
            id: m.uint("id")?,
            ok: m.bool("ok")?,
            exit: m.opt_int("exit")?,
            signal: m.opt_int("signal")?,
            stdout: m.opt_string("stdout")?,
            stderr: m.opt_string("stderr")?,
            data: m.opt_string("data")?,
            boot_id: m.opt_string("boot_id")?,
            uptime: m.opt_float("uptime")?,
            error: m.opt_string("error")?,
        })
    }
}

/// Typed access to an object's members; a member given as `null` counts as absent, and
/// members this side does not know are ignored (a newer peer may add some).
struct Members<'a>(&'a Value);

impl<'a> Members<'a> {
    fn of(v: &'a Value) -> Result<Self, String> {
        match v {
            Value::Object(_) => Ok(Members(v)),
            _ => Err("expected a JSON object".into()),
        }
    }
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| **v != Value::Null)
    }
    fn need<T>(k: &str, v: Option<T>) -> Result<T, String> {
        v.ok_or_else(|| format!("missing member {k:?}"))
    }
    fn wrong<T>(k: &str, what: &str) -> Result<T, String> {
        Err(format!("member {k:?}: expected {what}"))
    }
    fn opt_string(&self, k: &str) -> Result<Option<String>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Self::wrong(k, "a string"),
        }
    }
    fn string(&self, k: &str) -> Result<String, String> {
        Self::need(k, self.opt_string(k)?)
    }
    fn strings(&self, k: &str) -> Result<Vec<String>, String> {
        match self.get(k) {
            None => Self::need(k, None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Self::wrong(k, "an array of strings"),
                })
                .collect(),
            Some(_) => Self::wrong(k, "an array of strings"),
        }
    }
    fn bool(&self, k: &str) -> Result<bool, String> {
        match self.get(k) {
            None => Self::need(k, None),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Self::wrong(k, "true or false"),
        }
    }
    fn number<T: std::str::FromStr>(&self, k: &str, what: &str) -> Result<Option<T>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) => n.parse().map(Some).or_else(|_| Self::wrong(k, what)),
            Some(_) => Self::wrong(k, what),
        }
    }
    fn opt_uint<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, String> {
        self.number(k, "an unsigned integer")
    }
    fn uint(&self, k: &str) -> Result<u64, String> {
        Self::need(k, self.opt_uint(k)?)
    }
    fn opt_int(&self, k: &str) -> Result<Option<i32>, String> {
        self.number(k, "an integer")
    }
    fn opt_float(&self, k: &str) -> Result<Option<f64>, String> {
        self.number(k, "a number")
    }
}

/// Writes `msg` as one frame (length, JSON) and flushes.
pub fn write_frame<T: Message>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let json = msg.to_json();
    if json.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {MAX_FRAME}", json.len()),
        ));
    }
    let len = u32::try_from(json.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + json.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(json.as_bytes());
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame's JSON bytes; `None` on end of stream before the first length byte.
/// End of stream inside a frame is an `UnexpectedEof` error.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len} exceeds {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests;
