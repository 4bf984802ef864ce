//! A small HTTP/1.1 client over `std::net`, for the cloud metadata services and the
//! journal shipper's `_bulk` endpoint (both plain HTTP). Consumes a [`Url`], a method,
//! headers and a body; produces a [`Reply`] (status, headers, body) or an [`Error`] that
//! says whether the server could be reached at all, so a caller can tell "no such
//! service here" (fall through at once) from "it answered something else".
//!
//! One request per connection (`Connection: close`), with a deadline for the whole
//! exchange. The body is delimited by `Content-Length`, by chunked transfer coding
//! (RFC 9112 section 7.1) or by the end of the connection, in that order; the client
//! never waits for the end of the connection when the length is known, because QEMU's
//! `guestfwd` to a host socket (the boot tests) does not pass a close through. No TLS,
//! no redirects, no proxies: the agent stays small and static.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The largest response head accepted.
const MAX_HEAD: usize = 64 << 10;

/// An `http://HOST[:PORT][/PATH]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// A host name or an IPv4 address (IPv6 literals in brackets are kept with them).
    pub host: String,
    /// The port (80 unless given).
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` URL; the error says what was expected.
    pub fn parse(s: &str) -> Result<Url, String> {
        let expected = "expected http://HOST[:PORT]/PATH, e.g. \"http://10.0.0.5:9200/_bulk\"";
        if s.starts_with("https://") {
            return Err(format!(
                "{s:?}: https is not supported (the agent has no TLS; {expected})"
            ));
        }
        let Some(rest) = s.strip_prefix("http://") else {
            return Err(format!("{s:?} is not an http:// URL ({expected})"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "{s:?}: the path has spaces or control characters ({expected})"
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "{s:?}: user information is not supported ({expected})"
            ));
        }
        let (host, port) = if let Some(end) = authority.strip_prefix('[').and(authority.find(']')) {
            let host = &authority[..=end];
            match &authority[end + 1..] {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').unwrap_or("x"))),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host_ok = !host.is_empty()
            && (host.starts_with('[')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !host_ok {
            return Err(format!("{s:?}: {host:?} is not a host name ({expected})"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{s:?}: {p:?} is not a port (1-65535)")),
            },
        };
        Ok(Url {
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
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
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

/// Sends one request and reads the answer, all within `timeout`; a body larger than
/// `max_body` is an error.
pub fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<Reply, Error> {
    let deadline = Instant::now() + timeout;
    let mut s = connect(url, timeout)?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: slipway-agent/{}\r\nConnection: close\r\n",
        url.path,
        if url.port == 80 {
            url.host.clone()
        } else {
            format!("{}:{}", url.host, url.port)
        },
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
    let _ = s.set_nodelay(true);
    s.set_write_timeout(Some(timeout))
        .and_then(|()| s.write_all(&msg))
        .map_err(|e| broken(format!("sending {method} {url}: {e}")))?;
    let mut r = Deadline { s, deadline };
    read_reply(&mut r, method == "HEAD", max_body)
        .map_err(|e| broken(format!("{method} {url}: {e}")))
}

/// A stream whose every read is cut off at one deadline.
struct Deadline {
    s: TcpStream,
    deadline: Instant,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        self.s.set_read_timeout(Some(left))?;
        match self.s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
            }
            r => r,
        }
    }
}

/// Reads a status line, headers and body from `r`.
pub fn read_reply(r: &mut impl Read, head_only: bool, max_body: usize) -> io::Result<Reply> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    // The head, byte by byte up to the blank line (small; the body follows).
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if r.read(&mut b)? == 0 {
            return Err(bad(if head.is_empty() {
                "the server closed the connection without an answer".into()
            } else {
                "the answer ends inside its head".into()
            }));
        }
        head.push(b[0]);
        if head.len() > MAX_HEAD {
            return Err(bad(format!("the answer's head exceeds {MAX_HEAD} bytes")));
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut words = status_line.split_whitespace();
    let status = match (
        words.next(),
        words.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(c)) if v.starts_with("HTTP/1.") => c,
        _ => {
            return Err(bad(format!(
                "{status_line:?} is not an HTTP/1.x status line"
            )))
        }
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let mut body = Vec::new();
    if no_body {
    } else if get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        loop {
            let line = read_line(r)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let n = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("{size:?} is not a chunk size")))?;
            if n == 0 {
                // Trailers, up to the blank line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            if body.len() + n > max_body {
                return Err(bad(format!("the body exceeds {max_body} bytes")));
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..])?;
            read_line(r)?;
        }
    } else if let Some(len) = get("content-length") {
        let n: usize = len
            .parse()
            .map_err(|_| bad(format!("Content-Length {len:?} is not a number")))?;
        if n > max_body {
            return Err(bad(format!(
                "the body ({n} bytes) exceeds {max_body} bytes"
            )));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(max_body as u64 + 1).read_to_end(&mut body)?;
        if body.len() > max_body {
            return Err(bad(format!("the body exceeds {max_body} bytes")));
        }
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// One CRLF- (or LF-) terminated line, without the terminator.
fn read_line(r: &mut impl Read) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if r.read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 4096 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_parse_or_say_what_was_expected() {
        let u = Url::parse("http://10.0.2.100:9200/_bulk").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.2.100", 9200, "/_bulk")
        );
        let u = Url::parse("http://169.254.169.254").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(u.to_string(), "http://169.254.169.254:80/");
        let u = Url::parse("http://[fd00::1]:8080/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("[fd00::1]", 8080, "/x?y=1")
        );
        for (bad, want) in [
            ("https://logs:9200/_bulk", "https is not supported"),
            ("htp://x/_bulk", "is not an http:// URL"),
            ("http//x", "is not an http:// URL"),
            ("http://:9200/", "is not a host name"),
            ("http://a b/", "is not a host name"),
            ("http://x:99999/", "is not a port"),
            ("http://x:0/", "is not a port"),
            ("http://x:/", "is not a port"),
            ("http://u:p@x/", "user information"),
            ("http://x/a b", "spaces or control"),
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn replies_by_length_chunks_and_close() {
        let r = read_reply(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b \r\n\r\nhelloEXTRA"[..],
            false,
            100,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x-a")),
            (200, &b"hello"[..], Some("b"))
        );
        let r = read_reply(
            &mut &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"[..],
            false,
            100,
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = read_reply(&mut &b"HTTP/1.0 404 Not Found\r\n\r\nnope"[..], false, 100).unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "nope"));
        assert!(read_reply(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"[..],
            false,
            100
        )
        .is_err());
        assert!(read_reply(&mut &b"SSH-2.0-x\r\n\r\n"[..], false, 100).is_err());
        assert!(read_reply(&mut &b""[..], false, 100).is_err());
    }

    #[test]
    fn a_request_round_trip_and_an_unreachable_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("\r\n\r\n{}") {
                let n = s.read(&mut b).unwrap();
                got.extend_from_slice(&b[..n]);
            }
            // The connection stays open: the client must stop at Content-Length.
            s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            std::thread::sleep(Duration::from_secs(2));
            String::from_utf8(got).unwrap()
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/p")).unwrap();
        let r = request(
            "POST",
            &url,
            &[("X-T", "1")],
            b"{}",
            Duration::from_secs(5),
            10,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]));
        let sent = t.join().unwrap();
        assert!(
            sent.starts_with("POST /p HTTP/1.1\r\nHost: 127.0.0.1:"),
            "{sent}"
        );
        assert!(sent.contains("X-T: 1\r\n") && sent.contains("Content-Length: 2\r\n"));

        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = request("GET", &url, &[], b"", Duration::from_secs(2), 10).unwrap_err();
        assert!(e.unreachable, "{e}");
    }
}
