//! A gRPC client connection: HTTP/2 (RFC 9113) over a unix socket, unary calls only.
//!
//! Consumes a socket path and (path, protobuf message) pairs; produces the response
//! message or a gRPC status. What it speaks: the connection preface, SETTINGS (and their
//! ACKs), HEADERS/CONTINUATION with HPACK, DATA with the 5-byte gRPC message prefix
//! (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>), flow control both
//! ways (WINDOW_UPDATE), PING replies, RST_STREAM and GOAWAY. Calls run one at a time on
//! one connection, each on a new client stream (1, 3, 5, ...).

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::hpack;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// SETTINGS identifiers (§6.5.2).
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The largest frame we accept (we announce no SETTINGS_MAX_FRAME_SIZE, so the default).
const OUR_MAX_FRAME: usize = 16_384;
/// The receive window we announce for each stream and top the connection up to.
const OUR_WINDOW: u32 = 4 << 20;
/// The HPACK table size we allow the server (HTTP/2's default).
const OUR_TABLE: usize = 4096;

/// A failed call.
#[derive(Debug)]
pub enum Error {
    /// Connecting, reading or writing the socket failed.
    Io(String),
    /// The peer broke HTTP/2, HPACK or gRPC framing.
    Protocol(String),
    /// The server answered with a non-zero grpc-status.
    Status { code: u32, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(m) => write!(f, "{m}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::Status { code, message } => {
                write!(f, "grpc-status {code} ({}): {message}", status_name(*code))
            }
        }
    }
}

/// gRPC status code names (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
pub fn status_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "?",
    }
}

fn proto(m: impl Into<String>) -> Error {
    Error::Protocol(m.into())
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// One HTTP/2 connection to a gRPC server.
pub struct Conn {
    sock: UnixStream,
    what: String,
    dec: hpack::Decoder,
    next_stream: u32,
    /// What we may still send on the connection, and the per-stream start value.
    conn_window: i64,
    peer_initial_window: i64,
    /// What we may still send on the current call's stream.
    stream_window: i64,
    peer_max_frame: usize,
    /// Highest stream the server promised to finish after GOAWAY.
    goaway: Option<u32>,
}

/// What one stream received.
#[derive(Default)]
struct Reply {
    headers: Vec<hpack::Field>,
    trailers: Vec<hpack::Field>,
    body: Vec<u8>,
}

impl Conn {
    /// Connects to the unix socket at `path`; `timeout` bounds every read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Conn, Error> {
        let what = path.display().to_string();
        let sock = UnixStream::connect(path)
            .map_err(|e| Error::Io(format!("connecting to {what}: {e}")))?;
        sock.set_read_timeout(Some(timeout))
            .and_then(|()| sock.set_write_timeout(Some(timeout)))
            .map_err(|e| Error::Io(format!("{what}: setting timeouts: {e}")))?;
        let mut c = Conn {
            sock,
            what,
            dec: hpack::Decoder::new(OUR_TABLE),
            next_stream: 1,
            conn_window: 65_535,
            peer_initial_window: 65_535,
            stream_window: 65_535,
            peer_max_frame: 16_384,
            goaway: None,
        };
        let mut hello = PREFACE.to_vec();
        let mut settings = Vec::new();
        for (id, v) in [
            (SETTINGS_HEADER_TABLE_SIZE, OUR_TABLE as u32),
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, OUR_WINDOW),
        ] {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&v.to_be_bytes());
        }
        frame_bytes(&mut hello, SETTINGS, 0, 0, &settings);
        // The connection window starts at 65535 whatever SETTINGS say (§6.9.2).
        frame_bytes(
            &mut hello,
            WINDOW_UPDATE,
            0,
            0,
            &(OUR_WINDOW - 65_535).to_be_bytes(),
        );
        c.write(&hello)?;
        Ok(c)
    }

    fn write(&mut self, b: &[u8]) -> Result<(), Error> {
        self.sock
            .write_all(b)
            .map_err(|e| Error::Io(format!("writing to {}: {e}", self.what)))
    }

    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<(), Error> {
        let mut b = Vec::with_capacity(9 + payload.len());
        frame_bytes(&mut b, kind, flags, stream, payload);
        self.write(&b)
    }

    fn read_frame(&mut self) -> Result<Frame, Error> {
        let mut h = [0u8; 9];
        self.sock.read_exact(&mut h).map_err(|e| {
            Error::Io(format!(
                "reading from {}: {e}{}",
                self.what,
                if self.goaway.is_some() {
                    " (after GOAWAY)"
                } else {
                    ""
                }
            ))
        })?;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        if len > OUR_MAX_FRAME {
            return Err(proto(format!(
                "frame of {len} octets exceeds our maximum {OUR_MAX_FRAME}"
            )));
        }
        let mut payload = vec![0u8; len];
        self.sock
            .read_exact(&mut payload)
            .map_err(|e| Error::Io(format!("reading from {}: {e}", self.what)))?;
        Ok(Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// Handles connection-level frames; returns the frame if it is for a stream.
    fn connection_frame(&mut self, f: Frame) -> Result<Option<Frame>, Error> {
        match f.kind {
            SETTINGS if f.stream == 0 => {
                if f.flags & ACK == 0 {
                    if f.payload.len() % 6 != 0 {
                        return Err(proto("SETTINGS length not a multiple of 6"));
                    }
                    for s in f.payload.chunks(6) {
                        let id = u16::from_be_bytes([s[0], s[1]]);
                        let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                        match id {
                            SETTINGS_INITIAL_WINDOW_SIZE => {
                                if v > 0x7fff_ffff {
                                    return Err(proto("SETTINGS_INITIAL_WINDOW_SIZE too large"));
                                }
                                // §6.9.2: a change applies to open streams too.
                                self.stream_window += i64::from(v) - self.peer_initial_window;
                                self.peer_initial_window = i64::from(v);
                            }
                            SETTINGS_MAX_FRAME_SIZE => {
                                if !(16_384..=16_777_215).contains(&v) {
                                    return Err(proto(format!("SETTINGS_MAX_FRAME_SIZE {v}")));
                                }
                                self.peer_max_frame = v as usize;
                            }
                            // Our encoder never indexes, so the peer's table size and the
                            // other settings do not change what we send.
                            _ => {}
                        }
                    }
                    self.send(SETTINGS, ACK, 0, &[])?;
                }
                Ok(None)
            }
            PING if f.stream == 0 => {
                if f.flags & ACK == 0 {
                    self.send(PING, ACK, 0, &f.payload)?;
                }
                Ok(None)
            }
            GOAWAY => {
                if f.payload.len() < 8 {
                    return Err(proto("short GOAWAY"));
                }
                let last =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
                        & 0x7fff_ffff;
                let code =
                    u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
                self.goaway = Some(last);
                if last + 2 < self.next_stream {
                    let debug = String::from_utf8_lossy(&f.payload[8..]);
                    return Err(Error::Io(format!(
                        "{} sent GOAWAY (error code {code}) before answering: {debug}",
                        self.what
                    )));
                }
                Ok(None)
            }
            WINDOW_UPDATE if f.stream == 0 => {
                self.conn_window += i64::from(window_increment(&f.payload)?);
                Ok(None)
            }
            _ if f.stream == 0 => Ok(None),
            _ => Ok(Some(f)),
        }
    }

    /// Makes one unary call: `path` is `/package.Service/Method`.
    pub fn unary(&mut self, path: &str, msg: &[u8]) -> Result<Vec<u8>, Error> {
        if self.goaway.is_some() {
            return Err(Error::Io(format!("{} is going away (GOAWAY)", self.what)));
        }
        let id = self.next_stream;
        self.next_stream += 2;
        let block = hpack::encode(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            (
                "user-agent",
                concat!("slipway-node/", env!("CARGO_PKG_VERSION")),
            ),
        ]);
        let chunks: Vec<&[u8]> = block.chunks(self.peer_max_frame).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            self.send(kind, last, id, c)?;
        }

        let mut body = Vec::with_capacity(5 + msg.len());
        body.push(0); // not compressed
        body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        body.extend_from_slice(msg);

        let mut reply = Reply::default();
        self.stream_window = self.peer_initial_window;
        let mut sent = 0;
        let mut done = false;
        while sent < body.len() {
            let room = self
                .conn_window
                .min(self.stream_window)
                .min(self.peer_max_frame as i64);
            if room <= 0 {
                // Wait for WINDOW_UPDATE (and answer SETTINGS/PING meanwhile).
                done = self.pump(id, &mut reply)?;
                if done {
                    break;
                }
                continue;
            }
            let n = (room as usize).min(body.len() - sent);
            let flags = if sent + n == body.len() {
                END_STREAM
            } else {
                0
            };
            self.send(DATA, flags, id, &body[sent..sent + n])?;
            self.conn_window -= n as i64;
            self.stream_window -= n as i64;
            sent += n;
        }
        while !done {
            done = self.pump(id, &mut reply)?;
        }
        finish(reply)
    }

    /// Reads one frame and applies it; true once stream `id` has ended.
    fn pump(&mut self, id: u32, reply: &mut Reply) -> Result<bool, Error> {
        let f = self.read_frame()?;
        let Some(f) = self.connection_frame(f)? else {
            return Ok(false);
        };
        match f.kind {
            HEADERS => {
                let end_stream = f.flags & END_STREAM != 0;
                let mut block = header_fragment(&f)?;
                let mut flags = f.flags;
                while flags & END_HEADERS == 0 {
                    let c = self.read_frame()?;
                    if c.kind != CONTINUATION || c.stream != f.stream {
                        return Err(proto("HEADERS not followed by its CONTINUATION"));
                    }
                    block.extend_from_slice(&c.payload);
                    flags = c.flags;
                }
                // Decode every block, even for other streams: the table is shared.
                let fields = self.dec.decode(&block).map_err(proto)?;
                if f.stream == id {
                    if reply.headers.is_empty() {
                        reply.headers = fields;
                    } else {
                        reply.trailers = fields;
                    }
                    return Ok(end_stream);
                }
                Ok(false)
            }
            DATA => {
                let data = strip_padding(&f)?;
                let n = f.payload.len() as u32;
                if n > 0 {
                    // Give back what we consumed, on the connection and the stream.
                    self.send(WINDOW_UPDATE, 0, 0, &n.to_be_bytes())?;
                    if f.stream == id && f.flags & END_STREAM == 0 {
                        self.send(WINDOW_UPDATE, 0, id, &n.to_be_bytes())?;
                    }
                }
                if f.stream == id {
                    reply.body.extend_from_slice(data);
                    return Ok(f.flags & END_STREAM != 0);
                }
                Ok(false)
            }
            RST_STREAM if f.stream == id => {
                let code = f
                    .payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                Err(Error::Io(format!(
                    "{} reset the stream (HTTP/2 error code {code})",
                    self.what
                )))
            }
            WINDOW_UPDATE if f.stream == id => {
                self.stream_window += i64::from(window_increment(&f.payload)?);
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

fn frame_bytes(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn window_increment(p: &[u8]) -> Result<u32, Error> {
    let b = p.get(..4).ok_or_else(|| proto("short WINDOW_UPDATE"))?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
}

fn strip_padding(f: &Frame) -> Result<&[u8], Error> {
    if f.flags & PADDED == 0 {
        return Ok(&f.payload);
    }
    let pad = usize::from(
        *f.payload
            .first()
            .ok_or_else(|| proto("empty padded frame"))?,
    );
    if 1 + pad > f.payload.len() {
        return Err(proto("padding longer than the frame"));
    }
    Ok(&f.payload[1..f.payload.len() - pad])
}

fn header_fragment(f: &Frame) -> Result<Vec<u8>, Error> {
    let mut p = strip_padding(f)?;
    if f.flags & PRIORITY != 0 {
        p = p.get(5..).ok_or_else(|| proto("short HEADERS priority"))?;
    }
    Ok(p.to_vec())
}

fn field<'a>(fields: &'a [hpack::Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// grpc-message is percent-encoded (PROTOCOL-HTTP2.md).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns a finished stream into the response message or the gRPC error.
fn finish(r: Reply) -> Result<Vec<u8>, Error> {
    let status = field(&r.headers, ":status").unwrap_or("");
    if status != "200" {
        return Err(proto(format!("HTTP status {status:?}, expected 200")));
    }
    // Trailers-only responses carry grpc-status in the headers.
    let t = if r.trailers.is_empty() {
        &r.headers
    } else {
        &r.trailers
    };
    let code: u32 = field(t, "grpc-status")
        .ok_or_else(|| proto("response without grpc-status"))?
        .parse()
        .map_err(|_| proto("grpc-status is not a number"))?;
    if code != 0 {
        return Err(Error::Status {
            code,
            message: percent_decode(field(t, "grpc-message").unwrap_or("")),
        });
    }
    let b = &r.body;
    if b.len() < 5 {
        return Err(proto(format!(
            "response body of {} octets has no gRPC message",
            b.len()
        )));
    }
    if b[0] != 0 {
        return Err(proto("compressed gRPC message (we accept none)"));
    }
    let n = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
    if b.len() != 5 + n {
        return Err(proto(format!(
            "gRPC message length {n} does not match the {} octets received",
            b.len() - 5
        )));
    }
    Ok(b[5..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%25"), "a b%");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn finish_reports_status_and_frames() {
        let h = |v: &[(&str, &str)]| -> Vec<hpack::Field> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let ok = Reply {
            headers: h(&[(":status", "200")]),
            trailers: h(&[("grpc-status", "0")]),
            body: vec![0, 0, 0, 0, 2, 8, 1],
        };
        assert_eq!(finish(ok).unwrap(), [8, 1]);
        let err = Reply {
            headers: h(&[
                (":status", "200"),
                ("grpc-status", "5"),
                ("grpc-message", "no%20such"),
            ]),
            ..Reply::default()
        };
        match finish(err) {
            Err(Error::Status { code: 5, message }) => assert_eq!(message, "no such"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let short = Reply {
            headers: h(&[(":status", "200")]),
            trailers: h(&[("grpc-status", "0")]),
            body: vec![0, 0, 0, 0, 9, 1],
        };
        assert!(finish(short).is_err());
    }

    /// A scripted server on a socketpair: checks what the client sends and answers with
    /// Huffman-coded, indexed headers split over CONTINUATION, padded DATA and trailers.
    #[test]
    fn unary_call_against_a_scripted_peer() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut pre = [0u8; 24];
            b.read_exact(&mut pre).unwrap();
            assert_eq!(&pre, PREFACE);
            let read = |b: &mut UnixStream| {
                let mut h = [0u8; 9];
                b.read_exact(&mut h).unwrap();
                let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                let mut p = vec![0u8; len];
                b.read_exact(&mut p).unwrap();
                (h[3], h[4], p)
            };
            let (k, _, _) = read(&mut b);
            assert_eq!(k, SETTINGS);
            let (k, _, _) = read(&mut b);
            assert_eq!(k, WINDOW_UPDATE);
            let mut out = Vec::new();
            // Our settings: max frame 32768; then a PING the client must answer.
            frame_bytes(&mut out, SETTINGS, 0, 0, &[0, 5, 0, 0, 0x80, 0]);
            frame_bytes(&mut out, PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
            b.write_all(&out).unwrap();
            // The request and the two acknowledgements, in whichever order the
            // client's reads and writes interleave with ours (the request's HEADERS
            // always before its DATA).
            let frames: Vec<_> = (0..4).map(|_| read(&mut b)).collect();
            let at = |kind: u8| frames.iter().position(|(k, _, _)| *k == kind);
            let (h, d) = (at(HEADERS).unwrap(), at(DATA).unwrap());
            assert!(h < d, "DATA before HEADERS: {frames:?}");
            assert_eq!(frames[h].1, END_HEADERS);
            assert_eq!(frames[d].1, END_STREAM);
            assert_eq!(frames[d].2, [0, 0, 0, 0, 3, 1, 2, 3]);
            let s = &frames[at(SETTINGS).unwrap()];
            assert_eq!(s.1, ACK);
            let p = &frames[at(PING).unwrap()];
            assert_eq!((p.1, &p.2), (ACK, &vec![1, 2, 3, 4, 5, 6, 7, 8]));
            // Response headers: :status 200 (static index 8) then content-type as a
            // Huffman literal with incremental indexing, split across two frames.
            let mut block = vec![0x88, 0x5f];
            let v = crate::huffman::encode(b"application/grpc");
            block.push(0x80 | v.len() as u8);
            block.extend_from_slice(&v);
            let mut out = Vec::new();
            frame_bytes(&mut out, HEADERS, 0, 1, &block[..3]);
            frame_bytes(&mut out, CONTINUATION, END_HEADERS, 1, &block[3..]);
            // Padded DATA: pad length 2.
            frame_bytes(
                &mut out,
                DATA,
                PADDED,
                1,
                &[2, 0, 0, 0, 0, 2, 0x08, 0x07, 0, 0],
            );
            // Trailers, grpc-status literal without indexing.
            let t = hpack::encode(&[("grpc-status", "0")]);
            frame_bytes(&mut out, HEADERS, END_HEADERS | END_STREAM, 1, &t);
            b.write_all(&out).unwrap();
            // The client gives back the window it used.
            let (k, _, p) = read(&mut b);
            assert_eq!((k, p), (WINDOW_UPDATE, 10u32.to_be_bytes().to_vec()));
            // Kept open until the client is done: it may still write after this (a
            // stream-level window update), and a closed peer would fail that write.
            b
        });
        let sock = std::env::temp_dir().join("unused");
        let mut c = Conn {
            sock: a,
            what: sock.display().to_string(),
            dec: hpack::Decoder::new(OUR_TABLE),
            next_stream: 1,
            conn_window: 65_535,
            peer_initial_window: 65_535,
            stream_window: 65_535,
            peer_max_frame: 16_384,
            goaway: None,
        };
        // What connect() sends, without the connect.
        let mut hello = PREFACE.to_vec();
        frame_bytes(&mut hello, SETTINGS, 0, 0, &[]);
        frame_bytes(&mut hello, WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes());
        c.write(&hello).unwrap();
        let got = c.unary("/x.Y/Z", &[1, 2, 3]).unwrap();
        assert_eq!(got, [0x08, 0x07]);
        assert_eq!(c.peer_max_frame, 32_768);
        let _peer = server.join().unwrap();
    }

    /// Flow control: the peer lowers the initial stream window to 0, then opens it three
    /// octets at a time; the client sends only what the window allows and waits.
    #[test]
    fn request_waits_for_the_stream_window() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let read = |b: &mut UnixStream| {
            let mut h = [0u8; 9];
            b.read_exact(&mut h).unwrap();
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let mut p = vec![0u8; len];
            b.read_exact(&mut p).unwrap();
            (h[3], h[4], p)
        };
        let mut out = Vec::new();
        frame_bytes(&mut out, SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
        b.write_all(&out).unwrap();
        let server = std::thread::spawn(move || {
            let (k, f, _) = read(&mut b);
            assert_eq!((k, f), (SETTINGS, ACK));
            let (k, _, _) = read(&mut b);
            assert_eq!(k, HEADERS);
            let mut got = Vec::new();
            loop {
                let mut w = Vec::new();
                frame_bytes(&mut w, WINDOW_UPDATE, 0, 1, &3u32.to_be_bytes());
                b.write_all(&w).unwrap();
                let (k, f, p) = read(&mut b);
                assert_eq!(k, DATA);
                assert!(
                    p.len() <= 3,
                    "sent {} octets into a 3-octet window",
                    p.len()
                );
                got.extend_from_slice(&p);
                if f & END_STREAM != 0 {
                    break;
                }
            }
            assert_eq!(got, [0, 0, 0, 0, 4, 9, 8, 7, 6]);
            let mut w = Vec::new();
            let h = hpack::encode(&[(":status", "200"), ("grpc-status", "0")]);
            frame_bytes(&mut w, HEADERS, END_HEADERS, 1, &h);
            frame_bytes(&mut w, DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]);
            b.write_all(&w).unwrap();
            // The connection window the client gives back (keep the socket open for it).
            let (k, _, p) = read(&mut b);
            assert_eq!((k, p), (WINDOW_UPDATE, 5u32.to_be_bytes().to_vec()));
        });
        let mut c = Conn {
            sock: a,
            what: "pair".into(),
            dec: hpack::Decoder::new(OUR_TABLE),
            next_stream: 1,
            conn_window: 65_535,
            peer_initial_window: 65_535,
            stream_window: 65_535,
            peer_max_frame: 16_384,
            goaway: None,
        };
        // Take in the peer's SETTINGS before the call (as a second call would).
        let f = c.read_frame().unwrap();
        assert!(c.connection_frame(f).unwrap().is_none());
        assert_eq!(c.peer_initial_window, 0);
        // A trailers-only-style reply with an empty message.
        assert_eq!(c.unary("/x.Y/Z", &[9, 8, 7, 6]).unwrap(), Vec::<u8>::new());
        server.join().unwrap();
    }
}
