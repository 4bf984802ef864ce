//! SIGINT, SIGTERM and SIGHUP end a build cleanly: the paths registered here (the output
//! staging directory, temporary files, the output lock file) are removed, and the process
//! exits 128 + the signal number (130, 143, 129), as a shell reports a signal death.
//!
//! [`install`] runs first thing in `main`: it blocks the three signals in the main thread
//! before any other thread exists (every later thread inherits the mask, so none can
//! take the default action) and starts one thread that waits for them with `sigwait`.
//! No async-signal handler and no `unsafe`: the cleanup runs in an ordinary thread.
//! Child processes do not inherit the mask (std's `Command` resets it).
//!
//! The registry's lock also guards the commit of an output ([`critical`]): a signal that
//! arrives while the staging directory is being swapped in waits for the swap, so the
//! cleanup removes either the whole new set (before) or the whole old one (after).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

static NEXT: AtomicU64 = AtomicU64::new(1);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static REGISTRY: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());

/// A path removed if a signal ends the process; dropping this forgets it (the owner
/// renamed or removed it).
#[derive(Debug)]
pub struct Registered(u64);

/// Registers `path` (a file or a directory tree) for removal on SIGINT/SIGTERM/SIGHUP.
pub fn register(path: &Path) -> Registered {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry().push((id, path.to_path_buf()));
    Registered(id)
}

impl Drop for Registered {
    fn drop(&mut self) {
        registry().retain(|(id, _)| *id != self.0);
    }
}

fn registry() -> std::sync::MutexGuard<'static, Vec<(u64, PathBuf)>> {
    // A panic while holding the lock leaves a usable list.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with the cleanup held off: a signal arriving meanwhile is acted on after
/// `f` returns. For steps that must not be cut in half (swapping the output in).
pub fn critical<R>(f: impl FnOnce() -> R) -> R {
    let _held = registry();
    f()
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and starts the thread that cleans up
/// and exits when one arrives. Call once, from `main`, before any other thread starts.
pub fn install() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("warning: cannot block SIGINT/SIGTERM ({e}): an interrupted build may leave its staging behind");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                clean_up_and_exit(sig);
            }
        });
    if let Err(e) = spawned {
        eprintln!("warning: cannot start the signal thread ({e})");
        let _ = set.thread_unblock();
    }
}

/// Exits with `code`, unless a signal is being handled: then its thread exits (128 +
/// the signal) once it has cleaned up. A child killed by the same Ctrl-C can make the
/// build fail at the same moment; the signal's status wins.
pub fn exit(code: i32) -> ! {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
    std::process::exit(code)
}

fn clean_up_and_exit(sig: nix::sys::signal::Signal) -> ! {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let list = registry();
    // Newest first: temporary files inside a staging directory go before it.
    for (_, p) in list.iter().rev() {
        let _ = crate::io::atomic::remove_tree(p);
    }
    if list.is_empty() {
        eprintln!("slipway: interrupted by {}", sig.as_str());
    } else {
        eprintln!(
            "slipway: interrupted by {}: removed the partial output",
            sig.as_str()
        );
    }
    std::process::exit(128 + sig as i32)
}
