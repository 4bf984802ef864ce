//! `slipway-agent test-agent`: serves the host over a virtio-serial port.
//!
//! Consumes frames (see `protocol`) from `/dev/virtio-ports/NAME` (or any character
//! device given with `--device`, e.g. a pty in tests); produces one response frame per
//! request. One request at a time. A virtio-serial port reports hang-up while no host
//! is connected, and reads return end-of-file: the agent waits through hang-ups with the
//! port open and, after end-of-file or an error inside a frame, reopens it (dropping the
//! half-read frame), so the host may connect, disconnect and reconnect at will.

use crate::provision::write_atomic;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use slipway_common::base64::{decode as b64_decode, encode as b64_encode};
use slipway_common::protocol::{read_frame, write_frame, Message, Op, Request, Response};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The PATH commands run with.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The default exec timeout.
const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// How long to wait for the port to appear.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a finished command's output pipes to close.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Largest file `read` returns.
const MAX_READ: u64 = 48 << 20;

/// What to serve.
pub enum Target {
    /// A virtio-serial port by name.
    Port(String),
    /// Any character device (tests: a pty).
    Device(PathBuf),
}

/// The device of virtio-serial port `name`: udev's `/dev/virtio-ports/NAME` link, or,
/// before udev has made it (or without udev), the `/dev/vportXpY` whose sysfs `name`
/// matches.
fn find_port(name: &str) -> Option<PathBuf> {
    let link = Path::new("/dev/virtio-ports").join(name);
    if link.exists() {
        return Some(link);
    }
    fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find(|e| fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim_end() == name))
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|p| p.exists())
}

/// Serves `target` forever (returns only if it never appears or cannot be opened).
pub fn serve(target: &Target) -> Result<(), String> {
    let start = Instant::now();
    let device = loop {
        let found = match target {
            Target::Port(name) => find_port(name),
            Target::Device(p) => Some(p.clone()).filter(|p| p.exists()),
        };
        if let Some(d) = found {
            break d;
        }
        if start.elapsed() > APPEAR_TIMEOUT {
            let what = match target {
                Target::Port(n) => format!("virtio-serial port {n}"),
                Target::Device(p) => p.display().to_string(),
            };
            return Err(format!(
                "{what} did not appear within {} s (is the virtserialport configured?)",
                APPEAR_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let device = device.as_path();
    eprintln!("slipway-test-agent: serving {}", device.display());
    loop {
        let port = File::options()
            .read(true)
            .write(true)
            .open(device)
            .map_err(|e| format!("opening {}: {e}", device.display()))?;
        make_raw(&port);
        session(&port);
        // The host went away: reopen (drops any half-read frame) after a short pause.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pty (tests) must not translate or echo bytes; a virtio port is not a tty and
/// `tcgetattr` fails, which is fine.
fn make_raw(port: &File) {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    if let Ok(mut t) = tcgetattr(port) {
        cfmakeraw(&mut t);
        let _ = tcsetattr(port, SetArg::TCSANOW, &t);
    }
}

/// Waits until the port has data. While no host is connected a virtio-serial port
/// reports hang-up; the agent keeps the port open and looks again every 250 ms (opening
/// and closing it would signal the host side each time). False only if poll fails.
fn wait_readable(port: &File) -> bool {
    loop {
        let mut fds = [PollFd::new(port.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) => continue,
            Ok(_) => {
                let r = fds[0].revents().unwrap_or(PollFlags::empty());
                if r.contains(PollFlags::POLLIN) {
                    return true;
                }
                if r.contains(PollFlags::POLLNVAL) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Serves requests until the host disconnects.
fn session(port: &File) {
    loop {
        if !wait_readable(port) {
            return;
        }
        let mut reader = port;
        let frame = match read_frame(&mut reader) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // A corrupt length: the stream cannot be resynchronised; start over.
                let _ = write_frame(&mut &*port, &Response::failure(0, e.to_string()));
                return;
            }
            Err(_) => return,
        };
        let response = match Request::from_json(&frame) {
            Ok(req) => handle(req),
            Err(e) => Response::failure(0, format!("bad request: {e}")),
        };
        if write_frame(&mut &*port, &response).is_err() {
            return;
        }
    }
}

/// Performs one request.
pub fn handle(req: Request) -> Response {
    let id = req.id;
    let result = match req.op {
        Op::Ping => ping(),
        Op::Exec {
            argv,
            timeout_ms,
            stdin,
        } => exec(
            &argv,
            timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            stdin.as_deref(),
        ),
        Op::Read { path } => read(&path),
        Op::Write { path, mode, data } => write(&path, mode.unwrap_or(0o644), &data),
    };
    match result {
        Ok(mut r) => {
            r.id = id;
            r.ok = true;
            r
        }
        Err(e) => Response::failure(id, e),
    }
}

fn ping() -> Result<Response, String> {
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_err(|e| format!("reading boot_id: {e}"))?;
    let uptime = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok());
    Ok(Response {
        boot_id: Some(boot_id.trim().to_string()),
        uptime,
        ..Response::default()
    })
}

fn absolute(path: &str) -> Result<&Path, String> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("{path:?} is not an absolute path"))
    }
}

fn read(path: &str) -> Result<Response, String> {
    let p = absolute(path)?;
    let mut data = Vec::new();
    File::open(p)
        .and_then(|f| f.take(MAX_READ + 1).read_to_end(&mut data))
        .map_err(|e| format!("reading {path}: {e}"))?;
    if data.len() as u64 > MAX_READ {
        return Err(format!("{path} is larger than {MAX_READ} bytes"));
    }
    Ok(Response {
        data: Some(b64_encode(&data)),
        ..Response::default()
    })
}

fn write(path: &str, mode: u32, data: &str) -> Result<Response, String> {
    let p = absolute(path)?;
    if mode > 0o7777 {
        return Err(format!("mode {mode:o} is not a permission mode"));
    }
    let bytes = b64_decode(data).map_err(|e| format!("data: {e}"))?;
    write_atomic(p, &bytes, mode, owner_of_self())?;
    Ok(Response::default())
}

/// Files are owned by whoever runs the agent (root in images; the tester in tests).
fn owner_of_self() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// A pipe drained on a thread: the bytes so far, and a signal at end of file.
struct Drain {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Drain {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = mpsc::channel();
    let sink = Arc::clone(&bytes);
    std::thread::spawn(move || {
        if let Some(mut p) = pipe {
            let mut chunk = [0u8; 16384];
            while let Ok(n) = p.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut b) = sink.lock() {
                    b.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let _ = tx.send(());
    });
    Drain { bytes, done }
}

impl Drain {
    /// The output: waits for end of file, but at most [`PIPE_GRACE`], because a process
    /// that left the group (setsid) may hold the pipe open forever.
    fn collect(self) -> Vec<u8> {
        let _ = self.done.recv_timeout(PIPE_GRACE);
        self.bytes
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }
}

fn exec(argv: &[String], timeout_ms: u64, stdin: Option<&str>) -> Result<Response, String> {
    let (prog, args) = argv.split_first().ok_or("argv is empty")?;
    let input = stdin
        .map(b64_decode)
        .transpose()
        .map_err(|e| format!("stdin: {e}"))?;
    let mut child = Command::new(prog)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .current_dir("/")
        .process_group(0)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {prog}: {e}"))?;
    let feeder = child.stdin.take().map(|mut w| {
        let data = input.unwrap_or_default();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        })
    });
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let pgid = Pid::from_raw(i32::try_from(child.id()).map_err(|e| e.to_string())?);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                // The whole group, so grandchildren holding the pipes die too.
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!("{prog}: timed out after {timeout_ms} ms; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {prog}: {e}")),
        }
    };
    // Background processes the command left behind keep its pipes open: do not wait on
    // them forever.
    let _ = killpg(pgid, Signal::SIGKILL);
    let stdout = out.collect();
    let stderr = err.collect();
    drop(feeder); // a command that did not read all its input no longer matters
    Ok(Response {
        exit: status.code(),
        signal: status.signal(),
        stdout: Some(b64_encode(&stdout)),
        stderr: Some(b64_encode(&stderr)),
        ..Response::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], timeout_ms: u64, stdin: Option<&[u8]>) -> Response {
        handle(Request {
            id: 5,
            op: Op::Exec {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                timeout_ms: Some(timeout_ms),
                stdin: stdin.map(b64_encode),
            },
        })
    }

    #[test]
    fn exec_captures_output_status_and_signal_with_a_clean_env() {
        let r = run(
            &["sh", "-c", "echo out; echo err >&2; env; exit 3"],
            10_000,
            None,
        );
        assert!(r.ok, "{r:?}");
        assert_eq!((r.id, r.exit, r.signal), (5, Some(3), None));
        let out = String::from_utf8(b64_decode(r.stdout.as_deref().unwrap()).unwrap()).unwrap();
        assert!(out.starts_with("out\n"), "{out}");
        assert!(
            out.contains("PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"),
            "{out}"
        );
        assert!(!out.contains("HOME="), "{out}");
        assert_eq!(b64_decode(r.stderr.as_deref().unwrap()).unwrap(), b"err\n");

        let r = run(&["cat"], 10_000, Some(b"\x00\xffbytes"));
        assert_eq!(
            b64_decode(r.stdout.as_deref().unwrap()).unwrap(),
            b"\x00\xffbytes"
        );

        let r = run(&["sh", "-c", "kill -TERM $$"], 10_000, None);
        assert_eq!((r.exit, r.signal), (None, Some(15)));

        let t = Instant::now();
        let r = run(&["sh", "-c", "sleep 30 & sleep 30"], 300, None);
        assert!(!r.ok);
        assert!(r.error.unwrap().contains("timed out after 300 ms"));
        assert!(t.elapsed() < Duration::from_secs(10));

        // A daemon that left the process group still holds the pipes: bounded wait.
        let t = Instant::now();
        let r = run(
            &["sh", "-c", "setsid sleep 5 & sleep 0.5; echo started"],
            10_000,
            None,
        );
        assert_eq!(r.exit, Some(0), "{r:?}");
        assert_eq!(
            b64_decode(r.stdout.as_deref().unwrap()).unwrap(),
            b"started\n"
        );
        assert!(t.elapsed() < Duration::from_secs(8));

        let r = run(&["/nonexistent"], 1000, None);
        assert!(r.error.unwrap().starts_with("starting /nonexistent"));
    }

    #[test]
    fn read_write_and_ping() {
        let dir = std::env::temp_dir().join(format!("slipway-ta-{}", std::process::id()));
        let p = dir.join("sub/f");
        let w = handle(Request {
            id: 1,
            op: Op::Write {
                path: p.to_string_lossy().into_owned(),
                mode: Some(0o600),
                data: b64_encode(b"hello"),
            },
        });
        assert!(w.ok, "{w:?}");
        let r = handle(Request {
            id: 2,
            op: Op::Read {
                path: p.to_string_lossy().into_owned(),
            },
        });
        assert_eq!(b64_decode(r.data.as_deref().unwrap()).unwrap(), b"hello");
        let _ = fs::remove_dir_all(&dir);
        let r = handle(Request {
            id: 3,
            op: Op::Read {
                path: "relative".into(),
            },
        });
        assert_eq!(
            r.error.as_deref(),
            Some("\"relative\" is not an absolute path")
        );
        let p = handle(Request {
            id: 4,
            op: Op::Ping,
        });
        assert_eq!(p.boot_id.unwrap().len(), 36);
        assert!(p.uptime.unwrap() > 0.0);
    }
}
