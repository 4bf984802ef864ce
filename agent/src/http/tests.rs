//! The client's tests: URLs, framing, caps and time-outs against real sockets, TLS with
//! a test CA (rcgen), and property tests over arbitrary answers.

use super::*;
use std::net::TcpListener;
use std::sync::Arc;

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
        (
            "htp://x/_bulk",
            "is not an http:// URL, nor an https:// one",
        ),
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

/// Reads `answer` (all of it available at once) with a 100-byte body cap.
fn read(answer: &[u8]) -> io::Result<Reply> {
    read_reply(&mut &answer[..], false, 100)
}

fn err_of(answer: &[u8]) -> String {
    match read(answer) {
        Ok(r) => panic!("{:?}: accepted: {r:?}", String::from_utf8_lossy(answer)),
        Err(e) => e.to_string(),
    }
}

const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Issue 17: a chunk size near 2^64 overflowed `body.len() + n` and panicked; every
/// size the server sends is an error now, naming the cap it broke.
#[test]
fn hostile_chunk_sizes_are_errors_not_panics() {
    for (chunks, want) in [
        (
            "3\r\nabc\r\nffffffffffffffff\r\n",
            "exceeds the 100-byte cap",
        ),
        (
            "3\r\nabc\r\nfffffffffffffffd\r\n",
            "exceeds the 100-byte cap",
        ),
        ("ffffffffffffffff\r\n", "exceeds the 100-byte cap"),
        ("10000000000000000\r\n", "does not fit in 64 bits"),
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffff\r\n",
            "does not fit in 64 bits",
        ),
        ("+5\r\nhello\r\n0\r\n\r\n", "\"+5\" is not a chunk size"),
        ("-1\r\n", "\"-1\" is not a chunk size"),
        ("\r\n", "\"\" is not a chunk size"),
        ("0x5\r\nhello\r\n", "\"0x5\" is not a chunk size"),
        ("65\r\n", "exceeds the 100-byte cap"),
        ("5\r\nhello", "the answer ends after a chunk's data"),
        ("5\r\nhel", "the answer ends inside a chunk (3 of 5 bytes)"),
        (
            "3\r\nabcdef\r\n0\r\n\r\n",
            "a chunk is longer than its size says",
        ),
        ("3\r\nabc\r\n", "the answer ends inside a chunk-size line"),
    ] {
        let e = err_of(format!("{CHUNKED}{chunks}").as_bytes());
        assert!(e.contains(want), "{chunks:?}: {e}");
    }
    // Leading zeros and extensions are fine.
    let r = read(format!("{CHUNKED}00000000000000000000003;a=b\r\nabc\r\n0\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(r.body, b"abc");
}

#[test]
fn caps_on_head_lines_trailers_and_body_are_named() {
    let long_header = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert!(err_of(long_header.as_bytes()).contains("head exceeds the 65536-byte cap"));
    let long_line = format!("{CHUNKED}1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
    assert!(err_of(long_line.as_bytes()).contains("a chunk-size line exceeds the 4096-byte cap"));
    let trailers = format!("{CHUNKED}0\r\n{}", "T: 1\r\n".repeat(20_000));
    assert!(err_of(trailers.as_bytes()).contains("the trailers exceed the 65536-byte cap"));
    let e = err_of(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n");
    assert!(
        e.contains("the body (101 bytes) exceeds the 100-byte cap"),
        "{e}"
    );
    let e = err_of(format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(101)).as_bytes());
    assert!(e.contains("the body exceeds the 100-byte cap"), "{e}");
    // Exactly at the cap is fine.
    let r = read(format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(100)).as_bytes()).unwrap();
    assert_eq!(r.body.len(), 100);
}

#[test]
fn content_lengths_and_status_lines_are_strict() {
    for (head, want) in [
        ("Content-Length: 18446744073709551616", "is not a number"),
        ("Content-Length: 99999999999999999999999", "is not a number"),
        ("Content-Length: +5", "\"+5\" is not a number"),
        ("Content-Length: -1", "is not a number"),
        (
            "Content-Length: 5\r\nContent-Length: 6",
            "two different Content-Lengths",
        ),
        ("Content-Length: 5, 6", "two different Content-Lengths"),
    ] {
        let e = err_of(format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\nhello!").as_bytes());
        assert!(e.contains(want), "{head:?}: {e}");
    }
    let r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello").unwrap();
    assert_eq!(r.body, b"hello");
    for line in [
        "HTTP/1.1 65535 X",
        "HTTP/1.1 +20 X",
        "HTTP/1.1 99 X",
        "HTTP/2 200",
    ] {
        let e = err_of(format!("{line}\r\n\r\n").as_bytes());
        assert!(e.contains("is not an HTTP/1.x status line"), "{line}: {e}");
    }
    let e = err_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel");
    assert!(e.contains("ends after 3 of its 5 body bytes"), "{e}");
}

#[test]
fn credentials_become_authorization_headers_and_never_debug_output() {
    let basic = Credentials::Basic {
        user: "Aladdin".into(),
        password: "open sesame".into(),
    };
    // RFC 7617 section 2's example.
    assert_eq!(basic.authorization(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    assert_eq!(
        Credentials::ApiKey("VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==".into())
            .authorization(),
        "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    );
    assert_eq!(
        Credentials::Bearer("t0k".into()).authorization(),
        "Bearer t0k"
    );
    let shown = format!("{basic:?} {:?}", Credentials::ApiKey("s3cret".into()));
    assert_eq!(shown, "basic auth as Aladdin an API key");
}

/// Credentials and an http:// URL: refused before anything is sent.
#[test]
fn credentials_go_over_https_only() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let url = Url::parse(&format!("http://{}/_bulk", l.local_addr().unwrap())).unwrap();
    let c = Client::new(limits(1000, 1000, 100));
    let e = c
        .send(
            "POST",
            &url,
            &[],
            Some(&Credentials::ApiKey("k".into())),
            b"{}",
        )
        .unwrap_err();
    assert!(
        e.msg.contains("credentials are sent over https only"),
        "{e}"
    );
    assert!(l.accept().is_err(), "a connection was made");
    let https = Url::parse("https://127.0.0.1:1/").unwrap();
    let e = c.send("GET", &https, &[], None, b"").unwrap_err();
    assert!(e.msg.contains("this client has no TLS settings"), "{e}");
}

fn limits(deadline_ms: u64, io_ms: u64, max_body: usize) -> Limits {
    Limits {
        deadline: Duration::from_millis(deadline_ms),
        io_timeout: Duration::from_millis(io_ms),
        max_body,
    }
}

/// A server on the loopback that reads the request head, then hands the connection
/// to `answer`.
fn server(answer: impl FnOnce(TcpStream) + Send + 'static) -> Url {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!("http://{}/x", l.local_addr().unwrap())).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
        answer(s);
    });
    url
}

/// A server that answers nothing fails one read time-out after the request, and says
/// which limit it hit.
#[test]
fn a_silent_server_fails_at_the_read_time_out() {
    let url = server(|_s| std::thread::sleep(Duration::from_secs(3)));
    let t = Instant::now();
    let e = Client::new(limits(5000, 300, 100))
        .send("GET", &url, &[], None, b"")
        .unwrap_err();
    assert!(
        e.msg
            .ends_with("no data for 300 ms (the time-out of one read or write)"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // With less time left than a read may wait, the deadline is what cut it short.
    let url = server(|_s| std::thread::sleep(Duration::from_secs(3)));
    let e = Client::new(limits(400, 5000, 100))
        .send("GET", &url, &[], None, b"")
        .unwrap_err();
    assert!(
        e.msg.ends_with("not done within the 400 ms deadline"),
        "{e}"
    );
}

/// A server that drips one byte every 50 ms never trips the read time-out: the
/// deadline stops it.
#[test]
fn a_dripping_server_fails_at_the_deadline() {
    let url = server(|mut s| {
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .is_err()
        {
            return;
        }
        for _ in 0..1000 {
            std::thread::sleep(Duration::from_millis(50));
            if s.write_all(b"x").is_err() {
                return;
            }
        }
    });
    let t = Instant::now();
    let e = Client::new(limits(700, 400, 2000))
        .send("GET", &url, &[], None, b"")
        .unwrap_err();
    assert!(
        e.msg.ends_with("not done within the 700 ms deadline"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// An endless body without a length stops at the cap.
#[test]
fn an_endless_server_fails_at_the_cap() {
    let url = server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        while s.write_all(&[b'x'; 4096]).is_ok() {}
    });
    let e = Client::new(limits(5000, 1000, 10_000))
        .send("GET", &url, &[], None, b"")
        .unwrap_err();
    assert!(
        e.msg.ends_with("the body exceeds the 10000-byte cap"),
        "{e}"
    );
}

/// A test PKI: a CA and a server certificate that it signed.
pub(crate) struct TestPki {
    /// The CA certificate, PEM.
    pub(crate) ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestPki {
    /// A CA, and a server certificate for `names` (host names or IP addresses).
    pub(crate) fn new(names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // Each CA its own name: with the same one, webpki would check another test CA's
        // signature and report BadSignature rather than UnknownIssuer.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ca.distinguished_name
            .push(DnType::CommonName, format!("slipway test CA {n}"));
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        TestPki {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    /// The server side's TLS settings (for servers that script their answers).
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }

    /// Writes the CA certificate to `dir/ca.pem`; its path.
    pub(crate) fn ca_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("ca.pem");
        std::fs::write(&p, &self.ca_pem).unwrap();
        p
    }

    /// An https server on the loopback for `requests` connections: each one's request
    /// (head and Content-Length body) comes back through the receiver, or the TLS
    /// error when the handshake failed; each is answered `status` and `body`.
    pub(crate) fn serve(
        &self,
        requests: usize,
        status: u16,
        body: &'static str,
    ) -> (u16, std::sync::mpsc::Receiver<Result<String, String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let config = Arc::clone(&self.server);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..requests {
                let (tcp, _) = l.accept().unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let got = read_request(&mut s).map_err(|e| e.to_string());
                if got.is_ok() {
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
                let _ = tx.send(got);
            }
        });
        (port, rx)
    }
}

/// A request's head and its Content-Length body, as text.
fn read_request(s: &mut impl Read) -> io::Result<String> {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if rest.len() >= len {
                return Ok(text);
            }
        }
        match s.read(&mut b)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got.extend_from_slice(&b[..n]),
        }
    }
}

fn tls_client(roots: tls::Roots) -> Result<Client, String> {
    Ok(Client::new(limits(5000, 5000, 1000)).with_tls(tls::Tls::new(roots)?))
}

/// Over TLS with the test CA: a bearer token arrives (what the registry client will
/// send) and the answer is read.
#[test]
fn https_with_a_configured_ca() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let dir = crate::provision::tests::tempfile_lite::Dir::new();
    let client = tls_client(tls::Roots::File(pki.ca_file(&dir.0))).unwrap();
    let (port, seen) = pki.serve(1, 200, "{}");
    let url = Url::parse(&format!("https://127.0.0.1:{port}/v2/")).unwrap();
    let token = Credentials::Bearer("t0k".into());
    let r = client.send("GET", &url, &[], Some(&token), b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    let req = seen.recv().unwrap().unwrap();
    assert!(req.starts_with("GET /v2/ HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("\r\nAuthorization: Bearer t0k\r\n"), "{req}");
    assert!(
        req.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{req}"
    );
}

/// A certificate for another name: refused, and the server reads no request.
#[test]
fn https_to_a_name_the_certificate_does_not_cover() {
    let pki = TestPki::new(&["logs.example"]);
    let dir = crate::provision::tests::tempfile_lite::Dir::new();
    let client = tls_client(tls::Roots::File(pki.ca_file(&dir.0))).unwrap();
    let (port, seen) = pki.serve(1, 200, "{}");
    let url = Url::parse(&format!("https://127.0.0.1:{port}/v2/")).unwrap();
    let token = Credentials::Bearer("t0k".into());
    let e = client
        .send("GET", &url, &[], Some(&token), b"")
        .unwrap_err();
    assert!(
        e.msg.starts_with(&format!(
            "TLS handshake with 127.0.0.1:{port} failed: the server's certificate was refused"
        )),
        "{e}"
    );
    assert!(!e.unreachable);
    assert!(seen.recv().unwrap().is_err(), "the server read a request");
}

#[test]
fn ca_files_that_hold_no_certificate_are_refused_by_name() {
    let dir = crate::provision::tests::tempfile_lite::Dir::new();
    let p = dir.0.join("ca.pem");
    std::fs::write(&p, "not a certificate\n").unwrap();
    let e = tls_client(tls::Roots::File(p.clone())).err().unwrap();
    assert_eq!(
        e,
        format!(
            "the CA file {}: no usable CA certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
            p.display()
        )
    );
    let missing = dir.0.join("missing.pem");
    let e = tls_client(tls::Roots::File(missing.clone())).err().unwrap();
    assert!(
        e.starts_with(&format!("reading the CA file {}: ", missing.display())),
        "{e}"
    );
}

mod arbitrary {
    //! Property tests: any answer, complete or cut, fast or slow, gives a reply or an
    //! error, never a panic; a reply's body is within the cap, and a well-formed answer
    //! is read exactly.

    use super::super::*;
    use proptest::prelude::*;

    /// How the body is delimited.
    #[derive(Debug, Clone)]
    enum Framing {
        Length,
        /// Chunk boundaries (offsets into the body) and whether chunks have extensions.
        Chunked(Vec<usize>, bool),
        Close,
    }

    #[derive(Debug, Clone)]
    struct Answer {
        status: u16,
        framing: Framing,
        body: Vec<u8>,
        max_body: usize,
    }

    impl Answer {
        fn bytes(&self) -> Vec<u8> {
            let mut out = format!("HTTP/1.1 {} Whatever\r\nX-A: b\r\n", self.status).into_bytes();
            match &self.framing {
                Framing::Length => {
                    out.extend(format!("Content-Length: {}\r\n\r\n", self.body.len()).bytes());
                    out.extend(&self.body);
                }
                Framing::Close => {
                    out.extend(b"\r\n");
                    out.extend(&self.body);
                }
                Framing::Chunked(cuts, ext) => {
                    out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut cuts: Vec<usize> =
                        cuts.iter().map(|c| c % (self.body.len() + 1)).collect();
                    cuts.push(0);
                    cuts.push(self.body.len());
                    cuts.sort_unstable();
                    cuts.dedup();
                    for w in cuts.windows(2) {
                        let chunk = &self.body[w[0]..w[1]];
                        let e = if *ext { ";name=\"v\"" } else { "" };
                        out.extend(format!("{:x}{e}\r\n", chunk.len()).bytes());
                        out.extend(chunk);
                        out.extend(b"\r\n");
                    }
                    out.extend(b"0\r\nTrailer: x\r\n\r\n");
                }
            }
            out
        }
    }

    fn answer() -> impl Strategy<Value = Answer> {
        let framing = prop_oneof![
            Just(Framing::Length),
            Just(Framing::Close),
            (prop::collection::vec(0usize..400, 0..8), any::<bool>())
                .prop_map(|(c, e)| Framing::Chunked(c, e)),
        ];
        (
            prop_oneof![200u16..204, 205u16..304, 305u16..600],
            framing,
            prop::collection::vec(any::<u8>(), 0..400),
            0usize..500,
        )
            .prop_map(|(status, framing, body, max_body)| Answer {
                status,
                framing,
                body,
                max_body,
            })
    }

    /// A server seen through the network: `pieces` bytes per read, in turn, and a
    /// time-out (what [`Timed`] gives when the server goes quiet) at `stall`.
    struct Slow {
        data: Vec<u8>,
        at: usize,
        pieces: Vec<usize>,
        turn: usize,
        stall: Option<usize>,
    }

    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.stall.is_some_and(|s| self.at >= s) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no data"));
            }
            let piece = self.pieces[self.turn % self.pieces.len()].max(1);
            self.turn += 1;
            let end = self.stall.unwrap_or(usize::MAX).min(self.data.len());
            let n = piece.min(buf.len()).min(end - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn slow(
        data: Vec<u8>,
        pieces: Vec<usize>,
        buffer: usize,
        stall: Option<usize>,
    ) -> BufReader<Slow> {
        BufReader::with_capacity(
            buffer,
            Slow {
                data,
                at: 0,
                pieces,
                turn: 0,
                stall,
            },
        )
    }

    proptest! {
        /// Well-formed answers, whole or cut short (the connection ends) or stalled (a
        /// read times out) anywhere, read in pieces of any size.
        #[test]
        fn answers_whole_cut_or_stalled(
            a in answer(),
            cut in prop::option::of(any::<prop::sample::Index>()),
            stall in prop::option::of(any::<prop::sample::Index>()),
            pieces in prop::collection::vec(1usize..64, 1..6),
            buffer in 1usize..256,
        ) {
            let full = a.bytes();
            let mut data = full.clone();
            if let Some(c) = &cut {
                data.truncate(c.index(full.len()));
            }
            let stall = stall.map(|s| s.index(full.len()));
            let complete = data.len() == full.len() && stall.is_none();
            let got = read_reply(&mut slow(data, pieces, buffer, stall), false, a.max_body);
            match got {
                Ok(r) => {
                    prop_assert!(r.body.len() <= a.max_body);
                    prop_assert_eq!(r.status, a.status);
                    prop_assert_eq!(r.header("x-a"), Some("b"));
                    if complete {
                        prop_assert_eq!(&r.body, &a.body);
                    } else {
                        // Without a length, a cut looks like the end; with one, it is
                        // never taken for a whole answer.
                        prop_assert!(matches!(a.framing, Framing::Close), "a cut answer was accepted");
                        prop_assert!(a.body.starts_with(&r.body));
                    }
                }
                Err(e) => {
                    if complete {
                        prop_assert!(a.body.len() > a.max_body, "{e}");
                        let cap = format!("{}-byte cap", a.max_body);
                        prop_assert!(e.to_string().contains(&cap), "{e}");
                    }
                }
            }
        }

        /// Hostile chunk-size lines (huge, signed, junk, endless extensions), then
        /// anything.
        #[test]
        fn hostile_chunk_lines(
            size in "[0-9a-fA-F]{0,40}|[-+ 0-9a-fxX;=\"]{0,40}",
            ext in prop::option::of("[ -~]{0,5000}"),
            rest in prop::collection::vec(any::<u8>(), 0..300),
            max_body in 0usize..1000,
        ) {
            let mut data = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}").into_bytes();
            if let Some(e) = ext {
                data.push(b';');
                data.extend(e.bytes());
            }
            data.extend(b"\r\n");
            data.extend(rest);
            if let Ok(r) = read_reply(&mut &data[..], false, max_body) {
                prop_assert!(r.body.len() <= max_body);
            }
        }

        /// Any bytes at all, after a status line or not.
        #[test]
        fn any_bytes(
            status_line in prop::bool::ANY,
            data in prop::collection::vec(any::<u8>(), 0..2000),
            head_only in prop::bool::ANY,
            max_body in 0usize..1000,
        ) {
            let mut all = if status_line { b"HTTP/1.1 200 OK\r\n".to_vec() } else { Vec::new() };
            all.extend(data);
            if let Ok(r) = read_reply(&mut &all[..], head_only, max_body) {
                prop_assert!(r.body.len() <= max_body);
            }
        }

        /// URL parsing takes any text.
        #[test]
        fn any_url(s in "(https?://)?[ -~]{0,60}") {
            if let Ok(u) = Url::parse(&s) {
                prop_assert!(u.port > 0 && u.path.starts_with('/'));
            }
        }
    }
}
