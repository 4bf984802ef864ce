//! A static file server for `[[forward]]`: consumes a directory, produces an HTTP/1.0
//! server on 127.0.0.1 (an ephemeral port) that answers `GET /path` with the file and
//! everything else with 404. The guest reaches it only through QEMU's `guestfwd`.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A running server; stopped when dropped.
pub struct Server {
    /// The port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `dir` on 127.0.0.1:0.
    pub fn start(dir: &Path) -> Result<Server> {
        let l = TcpListener::bind("127.0.0.1:0").context("binding a port on 127.0.0.1")?;
        let port = l
            .local_addr()
            .context("reading the server's address")?
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = answer(c, &dir);
                }
            }
        });
        Ok(Server {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The file a request path names inside `dir`, refusing `..` and absolute escapes.
fn resolve(dir: &Path, url: &str) -> Option<PathBuf> {
    let rel = url.split(['?', '#']).next()?.trim_start_matches('/');
    let rel = Path::new(rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let p = dir.join(rel);
    let p = if p.is_dir() { p.join("index.html") } else { p };
    p.is_file().then_some(p)
}

/// Serves requests on one connection until the peer closes it. QEMU's `guestfwd` to a
/// TCP address opens a single connection when the VM starts and carries every guest
/// connection's bytes over it, so the connection is never closed from this side and
/// has no read timeout: each answer carries a Content-Length, which is how the guest's
/// client knows it is complete.
fn answer(c: TcpStream, dir: &Path) -> Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut w = c;
    loop {
        let mut request = String::new();
        if r.read_line(&mut request)? == 0 {
            return Ok(());
        }
        if request.trim().is_empty() {
            continue;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
        }
        let mut parts = request.split_whitespace();
        let (method, url) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        match (method, resolve(dir, url)) {
            ("GET" | "HEAD", Some(p)) => {
                let body = std::fs::read(&p)?;
                write!(w, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n", body.len())?;
                if method == "GET" {
                    w.write_all(&body)?;
                }
            }
            _ => {
                let body = b"not found\n";
                write!(
                    w,
                    "HTTP/1.0 404 Not Found\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                w.write_all(body)?;
            }
        }
        w.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn serves_files_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("hello.txt"), "hi there\n").unwrap();
        let s = Server::start(d.path()).unwrap();
        // One connection, several requests, as QEMU's guestfwd carries them.
        let c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut w = c;
        let mut get = |path: &str| {
            write!(w, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let (mut head, mut len) = (String::new(), 0usize);
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                if let Some(v) = l.strip_prefix("Content-Length: ") {
                    len = v.trim().parse().unwrap();
                }
                if l.trim().is_empty() {
                    break;
                }
                head.push_str(&l);
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            format!("{head}{}", String::from_utf8(body).unwrap())
        };
        let ok = get("/hello.txt");
        assert!(
            ok.starts_with("HTTP/1.0 200") && ok.ends_with("hi there\n"),
            "{ok}"
        );
        assert!(get("/../etc/passwd").starts_with("HTTP/1.0 404"));
        assert!(get("/nope").starts_with("HTTP/1.0 404"));
        assert!(get("/hello.txt").starts_with("HTTP/1.0 200"));
    }
}
