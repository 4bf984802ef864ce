//! The test-agent wire protocol, shared by the agent (guest side) and the slipway library
//! (host side, which includes this file with `#[path]`), so both ends use one definition.
//!
//! Consumes and produces frames on a byte stream (a virtio-serial port in the guest, the
//! QEMU chardev's unix socket on the host): a 4-byte big-endian length, then that many
//! bytes of JSON. Requests carry an `id` and an `op`; every response echoes the `id`,
//! says `ok`, and carries either the op's result fields or `error`. Binary payloads
//! (stdin, stdout, file data) are standard base64 with padding. See docs/provisioning.md.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// The largest frame either side accepts (base64 of a 48 MiB payload, plus JSON).
pub const MAX_FRAME: usize = 64 << 20;

/// The virtio-serial port name the test agent serves by default.
pub const DEFAULT_PORT: &str = "org.slipway.test";

/// One request from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the response, so a late answer to an abandoned request is recognised.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations the agent performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Runs `argv` (no shell) with a clean environment; killed after `timeout_ms`.
    Exec {
        /// Program and arguments; the program is looked up in the fixed PATH.
        argv: Vec<String>,
        /// Kill the command (and its process group) after this long; default 60 s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Base64 standard input; none means /dev/null.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
    },
    /// Writes a file atomically (parent directories are created 0755).
    Write {
        /// Absolute path in the guest.
        path: String,
        /// Permission bits as a number (420 = 0o644); default 0o644.
        #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id (0 when the request could not be parsed).
    pub id: u64,
    /// False when the op failed; `error` says why.
    pub ok: bool,
    /// Exec: the exit code, null when killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// Exec: the terminating signal's number.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Exec: base64 standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Exec: base64 standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Read: base64 file content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Ping: /proc/sys/kernel/random/boot_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Ping: seconds since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<f64>,
    /// Why the op failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Writes `msg` as one frame (length, JSON) and flushes.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let json = serde_json::to_vec(msg)?;
    if json.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {MAX_FRAME}", json.len()),
        ));
    }
    let len = u32::try_from(json.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + json.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&json);
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

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 section 4) with padding.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; ASCII whitespace is ignored (TOML multi-line strings), padding
/// is required, anything else is an error naming the offending character.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, String> {
    let chars: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if chars.len() % 4 != 0 {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            chars.len()
        ));
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let quads = chars.len() / 4;
    for (q, quad) in chars.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err("misplaced base64 padding '='".into());
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(format!("{:?} is not a base64 character", char::from(c))),
            };
            n = (n << 6) | u32::from(v);
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in vectors {
            assert_eq!(b64_encode(plain.as_bytes()), enc);
            assert_eq!(b64_decode(enc).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(b64_decode(&b64_encode(&all)).unwrap(), all);
        assert_eq!(b64_decode("Zm9v\n YmFy").unwrap(), b"foobar");
        assert!(b64_decode("Zm9").is_err());
        assert!(b64_decode("Zg==Zm9v").is_err());
        assert!(b64_decode("Zm9*").unwrap_err().contains("'*'"));
    }

    #[test]
    fn frames_round_trip_and_reject_truncation_and_huge_lengths() {
        let req = Request {
            id: 7,
            op: Op::Exec {
                argv: vec!["true".into()],
                timeout_ms: Some(500),
                stdin: None,
            },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        write_frame(
            &mut buf,
            &Request {
                id: 8,
                op: Op::Ping,
            },
        )
        .unwrap();
        let json = br#"{"id":7,"op":"exec","argv":["true"],"timeout_ms":500}"#;
        assert_eq!(&buf[..4], &(json.len() as u32).to_be_bytes());
        assert_eq!(&buf[4..4 + json.len()], json);
        let mut r = &buf[..];
        let a: Request = serde_json::from_slice(&read_frame(&mut r).unwrap().unwrap()).unwrap();
        let b: Request = serde_json::from_slice(&read_frame(&mut r).unwrap().unwrap()).unwrap();
        assert_eq!(a, req);
        assert_eq!(b.op, Op::Ping);
        assert!(read_frame(&mut r).unwrap().is_none());

        let mut cut = &buf[..10];
        assert_eq!(
            read_frame(&mut cut).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut cut = &buf[..2];
        assert_eq!(
            read_frame(&mut cut).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert_eq!(
            read_frame(&mut &huge[..]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn wire_format_of_requests_and_responses() {
        let r: Request = serde_json::from_str(r#"{"id":3,"op":"ping"}"#).unwrap();
        assert_eq!(
            r,
            Request {
                id: 3,
                op: Op::Ping
            }
        );
        let w: Request =
            serde_json::from_str(r#"{"id":4,"op":"write","path":"/x","mode":384,"data":"eA=="}"#)
                .unwrap();
        assert_eq!(
            w.op,
            Op::Write {
                path: "/x".into(),
                mode: Some(0o600),
                data: "eA==".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"format-disk"}"#).is_err());
        let exec = Response {
            id: 9,
            ok: true,
            exit: Some(0),
            stdout: Some(String::new()),
            stderr: Some(String::new()),
            ..Response::default()
        };
        assert_eq!(
            serde_json::to_string(&exec).unwrap(),
            r#"{"id":9,"ok":true,"exit":0,"signal":null,"stdout":"","stderr":""}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::failure(2, "no")).unwrap(),
            r#"{"id":2,"ok":false,"signal":null,"error":"no"}"#
        );
    }
}
