//! A small HTTP/1.1 client over `std::net`, with TLS from [`tls`], for the cloud metadata
//! services (plain HTTP) and the journal shipper's `_bulk` endpoint (http or https; the
//! registry client that A/B updates need is meant to use the same [`Client`]). Consumes
//! a [`Url`], a method, headers, optional [`Credentials`] and a body; produces a
//! [`Reply`] (status, headers, body) or an [`Error`] that says whether the server could
//! be reached at all, so a caller can tell "no such service here" (fall through at once)
//! from "it answered something else".
//!
//! One request per connection (`Connection: close`). Every exchange is bounded by
//! [`Limits`]: an overall deadline (connect, handshake, request and answer), a time-out
//! for each read and write (a server that goes silent fails that long after its last
//! byte; one that drips a byte at a time fails at the deadline), a cap on the body and
//! fixed caps on the head, on a chunk line and on trailers. Every size the server sends
//! is parsed strictly and added with checked arithmetic: a hostile answer is an error,
//! never a panic (provisioning must always exit 0), and every such error names the cap
//! it hit. The body is delimited by `Content-Length`, by chunked transfer coding
//! (RFC 9112 section 7.1) or by the end of the connection, in that order (section 6.3);
//! the client never waits for the end of the connection when the length is known,
//! because QEMU's `guestfwd` to a host socket (the boot tests) does not pass a close
//! through. No redirects, no proxies: the agent stays small and static.

pub mod tls;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The largest response head accepted (status line and headers), and likewise the
/// largest trailer section of a chunked body.
pub const MAX_HEAD: usize = 64 << 10;
/// The longest chunk-size line accepted (the size and its extensions).
pub const MAX_CHUNK_LINE: usize = 4096;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (default port 80).
    Http,
    /// HTTP over TLS (default port 443).
    Https,
}

/// An `http(s)://HOST[:PORT][/PATH]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// A host name or an IPv4 address (IPv6 literals in brackets are kept with them).
    pub host: String,
    /// The port (80 or 443 unless given).
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` or `https://` URL; the error says what was expected.
    pub fn parse(s: &str) -> Result<Url, String> {
        let expected =
            "expected http(s)://HOST[:PORT]/PATH, e.g. \"https://logs.example:9200/_bulk\"";
        let (scheme, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(format!(
                "{s:?} is not an http:// URL, nor an https:// one ({expected})"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "{s:?}: the path has spaces or control characters ({expected})"
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "{s:?}: user information is not supported (credentials are settings of \
                 their own; {expected})"
            ));
        }
        let (host, port) = split_authority(authority);
        let host_ok = !host.is_empty()
            && (host.starts_with('[')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !host_ok {
            return Err(format!("{s:?}: {host:?} is not a host name ({expected})"));
        }
        let port = match port {
            None if scheme == Scheme::Https => 443,
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{s:?}: {p:?} is not a port (1-65535)")),
            },
        };
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The same server with another path.
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// The `Host` header's value: the port only when it is not the scheme's default.
    fn host_header(&self) -> String {
        match (self.scheme, self.port) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// `HOST[:PORT]` or `[V6]:PORT` into the host and the port text, if any.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(end) = authority.strip_prefix('[').and(authority.find(']')) {
        let (host, after) = authority.split_at(end + 1);
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').unwrap_or("x"))),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Why a request failed.
#[derive(Debug)]
pub struct Error {
    /// True when no connection was made (refused, unreachable, connect time-out, name
    /// not resolved): nothing was sent.
    pub unreachable: bool,
    /// What happened.
    pub msg: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

fn unreachable(msg: String) -> Error {
    Error {
        unreachable: true,
        msg,
    }
}

fn broken(msg: String) -> Error {
    Error {
        unreachable: false,
        msg,
    }
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body (after chunked decoding).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The bounds of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole exchange: connecting, the TLS handshake, the request and the answer.
    pub deadline: Duration,
    /// One read or write: a server that stops sending (or reading) fails this long
    /// after its last byte.
    pub io_timeout: Duration,
    /// The largest body accepted, after chunked decoding.
    pub max_body: usize,
}

/// How a request authenticates: the `Authorization` header's value.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic base64(user:password)` (RFC 7617).
    Basic {
        /// Without `:` (RFC 7617 section 2).
        user: String,
        /// Any text.
        password: String,
    },
    /// `ApiKey KEY`, Elasticsearch's API keys: KEY is the `encoded` value the create-API-key
    /// call returns (base64 of `id:api_key`).
    ApiKey(String),
    /// `Bearer TOKEN` (RFC 6750).
    // The registry client that A/B updates need sends registry tokens (issue 17); the
    // journal shipper uses Basic and ApiKey only.
    #[allow(dead_code)]
    Bearer(String),
}

impl Credentials {
    /// The `Authorization` header's value.
    pub fn authorization(&self) -> String {
        match self {
            Credentials::Basic { user, password } => format!(
                "Basic {}",
                slipway_common::base64::encode(format!("{user}:{password}").as_bytes())
            ),
            Credentials::ApiKey(k) => format!("ApiKey {k}"),
            Credentials::Bearer(t) => format!("Bearer {t}"),
        }
    }

    /// What a console line may say about them (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Credentials::Basic { user, .. } => format!("basic auth as {user}"),
            Credentials::ApiKey(_) => "an API key".into(),
            Credentials::Bearer(_) => "a bearer token".into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Sends requests within [`Limits`], over TLS for `https://` URLs when it has a
/// [`tls::Tls`].
#[derive(Clone)]
pub struct Client {
    limits: Limits,
    tls: Option<tls::Tls>,
}

impl Client {
    /// A client for `http://` URLs only.
    pub fn new(limits: Limits) -> Client {
        Client { limits, tls: None }
    }

    /// The same client, able to reach `https://` URLs through `tls`.
    pub fn with_tls(self, tls: tls::Tls) -> Client {
        Client {
            tls: Some(tls),
            ..self
        }
    }

    /// Its TLS setup, if it has one.
    pub fn tls(&self) -> Option<&tls::Tls> {
        self.tls.as_ref()
    }

    /// Sends one request and reads the answer, within the client's limits. Credentials
    /// go over https only: with an `http://` URL the request is refused unsent.
    pub fn send(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        credentials: Option<&Credentials>,
        body: &[u8],
    ) -> Result<Reply, Error> {
        let limits = self.limits;
        let deadline = Instant::now()
            .checked_add(limits.deadline)
            .ok_or_else(|| broken(format!("{method} {url}: the deadline is out of range")))?;
        let tls = match (url.scheme, &self.tls) {
            (Scheme::Http, _) => None,
            (Scheme::Https, Some(t)) => Some(t),
            (Scheme::Https, None) => {
                return Err(broken(format!(
                    "{method} {url}: this client has no TLS settings"
                )))
            }
        };
        if credentials.is_some() && tls.is_none() {
            return Err(broken(format!(
                "{method} {url}: credentials are sent over https only (over http they would \
                 cross the network in clear)"
            )));
        }
        let auth = credentials.map(Credentials::authorization);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            all.push(("Authorization", a));
        }
        let msg = request_bytes(method, url, &all, body);
        let tcp = connect(url, limits.io_timeout.min(limits.deadline))?;
        let _ = tcp.set_nodelay(true);
        let timed = Timed {
            s: tcp,
            deadline,
            limits,
        };
        let mut conn = match tls {
            None => Conn::Plain(timed),
            Some(t) => Conn::Tls(Box::new(t.handshake(url, timed).map_err(broken)?)),
        };
        conn.write_all(&msg)
            .and_then(|()| conn.flush())
            .map_err(|e| broken(format!("sending {method} {url}: {e}")))?;
        read_reply(&mut BufReader::new(conn), method == "HEAD", limits.max_body)
            .map_err(|e| broken(format!("{method} {url}: {e}")))
    }
}

/// The request head and body, ready to send.
fn request_bytes(method: &str, url: &Url, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: slipway-agent/{}\r\nConnection: close\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// Resolves `url`'s host (literal addresses need no resolver).
fn addresses(url: &Url) -> Result<Vec<SocketAddr>, Error> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    (host, url.port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| unreachable(format!("resolving {}: {e}", url.host)))
}

/// Opens a TCP connection to `url`'s server within `timeout`.
pub fn connect(url: &Url, timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = None;
    for a in addresses(url)? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(format!("connecting to {a}: {e}")),
        }
    }
    Err(unreachable(last.unwrap_or_else(|| {
        format!("{}: the name has no address", url.host)
    })))
}

/// Sends one plain-HTTP request and reads the answer, all within `timeout`; a body
/// larger than `max_body` is an error. (The metadata services: no TLS, no credentials.)
pub fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<Reply, Error> {
    Client::new(Limits {
        deadline: timeout,
        io_timeout: timeout,
        max_body,
    })
    .send(method, url, headers, None, body)
}

/// A connection, plain or TLS.
enum Conn {
    Plain(Timed),
    Tls(Box<tls::Stream>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A TCP stream whose every read and write waits at most [`Limits::io_timeout`], and
/// none past one deadline. TLS runs on top of it, so the handshake is bounded too.
pub struct Timed {
    s: TcpStream,
    deadline: Instant,
    limits: Limits,
}

impl Timed {
    /// How long the next read or write may wait; the error names the limit when none
    /// is left.
    fn budget(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.deadline_passed());
        }
        Ok(left.min(self.limits.io_timeout))
    }

    fn deadline_passed(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "not done within the {} deadline",
                seconds(self.limits.deadline)
            ),
        )
    }

    /// A time-out of a read or write that could wait `waited`, named by the limit that
    /// cut it short.
    fn timed_out(&self, what: &str, waited: Duration) -> io::Error {
        if waited < self.limits.io_timeout || Instant::now() >= self.deadline {
            return self.deadline_passed();
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{what} for {} (the time-out of one read or write)",
                seconds(self.limits.io_timeout)
            ),
        )
    }
}

/// `30 s`, or `250 ms` below a second.
pub fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = self.budget()?;
        self.s.set_read_timeout(Some(wait))?;
        match self.s.read(buf) {
            Err(e) if is_timeout(&e) => Err(self.timed_out("no data", wait)),
            r => r,
        }
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let wait = self.budget()?;
        self.s.set_write_timeout(Some(wait))?;
        // At most 64 KiB per call, so a slow reader meets the deadline between calls.
        let n = buf.len().min(64 << 10);
        match self.s.write(&buf[..n]) {
            Err(e) if is_timeout(&e) => Err(self.timed_out("the server took nothing", wait)),
            r => r,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

fn bad(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// Reads a status line, headers and body from `r`; any answer, however hostile, gives
/// a reply or an error (the caps: [`MAX_HEAD`], [`MAX_CHUNK_LINE`], `max_body`).
pub fn read_reply(r: &mut impl BufRead, head_only: bool, max_body: usize) -> io::Result<Reply> {
    let (status, headers) = read_head(r)?;
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let chunked = get("transfer-encoding")
        .iter()
        .any(|t| t.to_ascii_lowercase().contains("chunked"));
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(r, max_body)?
    } else if let Some(n) = content_length(&get("content-length"))? {
        if n > max_body as u64 {
            return Err(bad(format!(
                "the body ({n} bytes) exceeds the {max_body}-byte cap"
            )));
        }
        let body = read_up_to(r, n)?;
        if (body.len() as u64) < n {
            return Err(bad(format!(
                "the answer ends after {} of its {n} body bytes",
                body.len()
            )));
        }
        body
    } else {
        let body = read_up_to(r, max_body as u64 + 1)?;
        if body.len() > max_body {
            return Err(bad(format!("the body exceeds the {max_body}-byte cap")));
        }
        body
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The status line and the headers (names in lower case), at most [`MAX_HEAD`] bytes.
fn read_head(r: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        let left = (MAX_HEAD + 1).saturating_sub(head.len());
        let n = r.take(left as u64).read_until(b'\n', &mut head)?;
        if n == 0 && head.len() <= MAX_HEAD {
            return Err(bad(if head.is_empty() {
                "the server closed the connection without an answer".into()
            } else {
                "the answer ends inside its head".into()
            }));
        }
        if head.len() > MAX_HEAD {
            return Err(bad(format!(
                "the answer's head exceeds the {MAX_HEAD}-byte cap"
            )));
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut words = status_line.split_whitespace();
    let code = words.next().zip(words.next());
    let status = match code {
        Some((v, c)) if v.starts_with("HTTP/1.") && c.len() == 3 => c
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s) && c.bytes().all(|b| b.is_ascii_digit())),
        _ => None,
    };
    let Some(status) = status else {
        let shown: String = status_line.chars().take(80).collect();
        return Err(bad(format!("{shown:?} is not an HTTP/1.x status line")));
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// `Content-Length`: digits only, and the same value when repeated (RFC 9110 section
/// 8.6; `5, 5` counts as repeated).
fn content_length(values: &[&str]) -> io::Result<Option<u64>> {
    let mut found: Option<u64> = None;
    for v in values.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        let n = (!v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                bad(format!("Content-Length {shown:?} is not a number"))
            })?;
        if found.is_some_and(|f| f != n) {
            return Err(bad("the answer has two different Content-Lengths".into()));
        }
        found = Some(n);
    }
    Ok(found)
}

/// Up to `n` bytes (fewer at the end of the stream), read as they come: a length the
/// server claims is never allocated up front.
fn read_up_to(r: &mut impl Read, n: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(n).read_to_end(&mut out)?;
    Ok(out)
}

/// A chunked body (RFC 9112 section 7.1), at most `max_body` bytes, then its trailers
/// (at most [`MAX_HEAD`] bytes, discarded).
fn read_chunked(r: &mut impl BufRead, max_body: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r, MAX_CHUNK_LINE, "a chunk-size line")?;
        let n = chunk_size(&line)?;
        if n == 0 {
            break;
        }
        let fits = (body.len() as u64)
            .checked_add(n)
            .is_some_and(|total| total <= max_body as u64);
        if !fits {
            return Err(bad(format!("the body exceeds the {max_body}-byte cap")));
        }
        let chunk = read_up_to(r, n)?;
        if (chunk.len() as u64) < n {
            return Err(bad(format!(
                "the answer ends inside a chunk ({} of {n} bytes)",
                chunk.len()
            )));
        }
        body.extend_from_slice(&chunk);
        chunk_end(r)?;
    }
    let mut trailers = 0usize;
    loop {
        let line = read_line(r, MAX_CHUNK_LINE, "a trailer line")?;
        if line.is_empty() {
            return Ok(body);
        }
        trailers = trailers.saturating_add(line.len() + 2);
        if trailers > MAX_HEAD {
            return Err(bad(format!("the trailers exceed the {MAX_HEAD}-byte cap")));
        }
    }
}

/// The CRLF (or LF) after a chunk's data.
fn chunk_end(r: &mut impl BufRead) -> io::Result<()> {
    let mut end = Vec::new();
    r.take(2).read_until(b'\n', &mut end)?;
    match end.as_slice() {
        b"\r\n" | b"\n" => Ok(()),
        [] | b"\r" => Err(bad("the answer ends after a chunk's data".into())),
        _ => Err(bad("a chunk is longer than its size says".into())),
    }
}

/// A chunk-size line's size: 1 to 16 hex digits (more would not fit in 64 bits), then
/// optional `;extensions`.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let size = line[..end].trim_ascii();
    let shown = || String::from_utf8_lossy(&size[..size.len().min(40)]).into_owned();
    if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad(format!("{:?} is not a chunk size", shown())));
    }
    let digits = size
        .iter()
        .position(|&b| b != b'0')
        .map_or(&[][..], |i| &size[i..]);
    if digits.len() > 16 {
        return Err(bad(format!(
            "the chunk size {:?} does not fit in 64 bits",
            shown()
        )));
    }
    // At most 16 hex digits: the fold cannot overflow.
    Ok(digits.iter().fold(0u64, |n, &d| {
        let v = char::from(d).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(v)
    }))
}

/// One LF-terminated line of at most `max` bytes, without its CRLF or LF.
fn read_line(r: &mut impl BufRead, max: usize, what: &str) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    // `max` plus the CRLF, plus one byte to tell a long line from a full one.
    r.take(max as u64 + 3).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > max + 2 {
            bad(format!("{what} exceeds the {max}-byte cap"))
        } else {
            bad(format!("the answer ends inside {what}"))
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > max {
        return Err(bad(format!("{what} exceeds the {max}-byte cap")));
    }
    Ok(line)
}
