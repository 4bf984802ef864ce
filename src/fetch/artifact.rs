//! Pinned non-Debian files (`[[artifact]]`): fetched over HTTP(S) or from `file://`, or
//! taken from `--artifact-dir` by sha256 for air-gapped builds, verified, and cached by
//! digest like packages. Every download stays within the cache's [`Limits`]: the locked
//! size (else the size cap), an overall deadline and, over HTTP, a per-read time-out.

use super::cache::{copy_hashing, warn, BlobState, Cache};
use super::limits::{limit_of, CapReader, LimitHit, Limits};
use super::verify::{create_new, FILE_MODE};
use crate::exit::{err, with_code, Code};
use crate::io::hash::{sha256_file, HashingWriter};
use crate::lock::LockedArtifact;
use crate::push::deadline::{Deadline, DeadlineReader, Timeouts, CONNECT};
use crate::recipe::Artifact;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where artifacts may come from.
#[derive(Debug, Default)]
pub struct Sources {
    /// A directory of files matched by sha256 (`--artifact-dir`, `--vendor DIR/artifacts`).
    pub dirs: Vec<PathBuf>,
    /// No network.
    pub offline: bool,
    by_digest: Option<HashMap<String, PathBuf>>,
    /// Locked sizes by sha256: the size cap of those downloads.
    sizes: HashMap<String, u64>,
}

impl Sources {
    /// Sources from local directories, optionally offline.
    pub fn new(dirs: Vec<PathBuf>, offline: bool) -> Self {
        Sources {
            dirs,
            offline,
            by_digest: None,
            sizes: HashMap::new(),
        }
    }

    /// Caps the download of each artifact in `locked` at its locked size (keyed by
    /// sha256, so a lock made for another recipe version is still right where it
    /// applies).
    pub fn locked_sizes(&mut self, locked: &[LockedArtifact]) {
        for a in locked {
            self.sizes.insert(a.sha256.clone(), a.size);
        }
    }

    fn local(&mut self, sha256: &str) -> Result<Option<PathBuf>> {
        if self.by_digest.is_none() {
            let mut m = HashMap::new();
            for d in &self.dirs {
                for e in walkdir::WalkDir::new(d).sort_by_file_name() {
                    let e = e.with_context(|| format!("reading {}", d.display()))?;
                    if e.file_type().is_file() {
                        let (h, _) = sha256_file(e.path())?;
                        m.entry(h).or_insert_with(|| e.path().to_path_buf());
                    }
                }
            }
            self.by_digest = Some(m);
        }
        Ok(self.by_digest.as_ref().and_then(|m| m.get(sha256).cloned()))
    }
}

fn how_to_provide(a: &Artifact) -> String {
    format!(
        "expected sha256 {}; put a file with that sha256 in a directory and pass --artifact-dir DIR, or fix the recipe's url/sha256",
        a.sha256
    )
}

/// Makes sure the artifact is in the cache and returns its blob path. A download runs in
/// a locked work directory of the cache: removed as soon as the download fails, and by
/// the next run's [`Cache::open`] if this one is killed.
pub fn fetch(cache: &Cache, a: &Artifact, src: &mut Sources) -> Result<PathBuf> {
    match cache.check(&a.sha256)? {
        BlobState::Valid => return Ok(cache.blob_path(&a.sha256)),
        BlobState::Corrupt => warn(&format!(
            "cache: artifact {} ({}): the cached copy did not match its sha256 {}; fetching it again",
            a.dest, a.url, a.sha256
        )),
        BlobState::Missing => {}
    }
    if let Some(p) = src.local(&a.sha256)? {
        let tmp = cache.temp_dir()?;
        let copy = tmp.path().join("artifact");
        let mut from =
            std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
        copy_hashing(&mut from, &copy)?;
        return cache.insert(&copy, &a.sha256);
    }
    if !src.offline {
        if let Some(p) = from_registry(cache, a, src)? {
            return Ok(p);
        }
    }
    if src.offline {
        return Err(err(
            Code::Fetch,
            format!(
                "artifact {}: not in the cache and --offline is set; {}",
                a.url,
                how_to_provide(a)
            ),
        ));
    }
    let limits = cache.download_limits();
    let cap = match src.sizes.get(&a.sha256) {
        Some(&n) => (n, LimitHit::LockedSize(n)),
        None => (limits.max_size, LimitHit::MaxSize(limits.max_size)),
    };
    let tmp = cache.temp_dir()?;
    let dl = tmp.path().join("download");
    let (digest, _size) = match download(&a.url, &dl, limits, cap) {
        Ok(d) => d,
        Err(e) => {
            let hit =
                e.downcast_ref::<LimitHit>().is_some() || e.chain().any(|c| c.is::<LimitHit>());
            let hint = if hit {
                String::new()
            } else {
                format!(" ({})", how_to_provide(a))
            };
            let e = e.context(format!("artifact {}: cannot fetch it{hint}", a.url));
            return Err(with_code(Code::Fetch, e));
        }
    };
    if digest != a.sha256 {
        return Err(err(
            Code::Fetch,
            format!(
                "artifact {}: downloaded file has sha256 {digest}, expected {} (the recipe's sha256 is wrong or the file changed upstream); {}",
                a.url,
                a.sha256,
                how_to_provide(a)
            ),
        ));
    }
    if let Some(reg) = cache.registry() {
        reg.note_built(1);
    }
    cache.insert(&dl, &a.sha256)
}

/// The artifact from the registry cache, checked against the recipe's sha256 (and its
/// locked size, when the lock has one); `None` when the registry has no good copy.
fn from_registry(cache: &Cache, a: &Artifact, src: &Sources) -> Result<Option<PathBuf>> {
    let Some(reg) = cache.registry().filter(|r| r.reads()) else {
        return Ok(None);
    };
    let locked = src.sizes.get(&a.sha256).copied();
    let limit = locked.unwrap_or(cache.download_limits().max_size);
    let tmp = cache.temp_dir()?;
    let file = tmp.path().join("artifact");
    let what = format!("artifact {} ({})", a.dest, a.url);
    match reg.pull_blob(&a.sha256, limit, locked.is_some(), &file, &what) {
        crate::remote::Pulled::Got => Ok(Some(cache.insert(&file, &a.sha256)?)),
        crate::remote::Pulled::Missing => Ok(None),
        crate::remote::Pulled::Refused(w) => {
            warn(&w);
            Ok(None)
        }
    }
}

/// Copies every locked artifact out of the cache into `dir` (for `slipway vendor`) as
/// `SHA256[..12]-NAME`, verified as it is written, 0644, through a random `O_EXCL` name
/// ([`Cache::export`]). Returns the bytes copied.
pub fn vendor(cache: &Cache, artifacts: &[LockedArtifact], dir: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut total = 0;
    for a in artifacts {
        let dest = dir.join(format!("{}-{}", &a.sha256[..12], vendor_name(&a.url)));
        if cache
            .export(&a.sha256, &dest, 0o644)
            .with_context(|| format!("vendoring artifact {} ({})", a.dest, a.url))?
        {
            total += a.size;
        }
    }
    Ok(total)
}

/// The last path segment of `url` with anything but `[A-Za-z0-9._+-]` made `_`
/// (`artifact` when nothing is left): a plain file name, never a path.
fn vendor_name(url: &str) -> String {
    let last = url.split(['?', '#']).next().unwrap_or("");
    let last = last.rsplit('/').next().unwrap_or("");
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.trim_matches('.').is_empty() {
        "artifact".into()
    } else {
        name
    }
}

/// Downloads `url` to `dest`, hashing while writing, within `limits` and the size cap
/// `cap` (with the [`LimitHit`] for passing it). Returns (sha256, size).
fn download(
    url: &str,
    dest: &Path,
    limits: &Limits,
    cap: (u64, LimitHit),
) -> Result<(String, u64)> {
    let deadline = Deadline::after(limits.timeouts.total);
    let file = create_new(dest, FILE_MODE)?;
    let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let body: Box<dyn Read> = match url.strip_prefix("file://") {
        Some(path) => Box::new(open_local(path)?),
        None => http_get(url, &limits.timeouts, deadline)?,
    };
    let mut body = CapReader::new(DeadlineReader::new(body, deadline), cap.0, cap.1);
    if let Err(e) = std::io::copy(&mut body, &mut w) {
        return Err(match limit_of(&e) {
            Some(hit) => anyhow::Error::new(hit.clone()),
            None => match timed_out(&e, deadline, &limits.timeouts) {
                Some(hit) => anyhow::Error::new(e).context(hit),
                None => anyhow::Error::new(e).context("reading the download"),
            },
        });
    }
    w.flush().context("writing the download")?;
    let (_, digest, size) = w.finish();
    Ok((digest, size))
}

/// Opens the local file of a `file://` URL. FIFOs and sockets are refused: a read from
/// one can wait forever, and no read time-out applies to local files (the deadline and
/// the size cap do, so `/dev/zero` ends at the cap).
fn open_local(path: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // Non-blocking, so that opening a FIFO does not wait for a writer.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    let t = f
        .metadata()
        .with_context(|| format!("reading {path}"))?
        .file_type();
    if t.is_fifo() || t.is_socket() {
        anyhow::bail!("{path} is a FIFO or socket, not a file");
    }
    Ok(f)
}

/// The response body of a GET of `url`, retried on connection errors and 5xx answers
/// within the deadline (as `slipway push` does, [`crate::push::client`]).
fn http_get(url: &str, t: &Timeouts, deadline: Deadline) -> Result<Box<dyn Read>> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT.min(t.read))
        .timeout_read(t.read)
        .build();
    let mut last = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 << attempt).min(deadline.remaining()));
        }
        if deadline.passed() {
            break;
        }
        // The overall time-out of a ureq request replaces its read time-out, so it is
        // set only when the time left is the tighter limit; otherwise the reader stops
        // at the deadline (a read already waiting runs on by at most one read time-out).
        let left = deadline.remaining();
        let req = agent.get(url);
        let req = if left <= t.read {
            req.timeout(left)
        } else {
            req
        };
        match req.call() {
            Ok(resp) => return Ok(Box::new(resp.into_reader())),
            // 4xx will not get better by retrying.
            Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) => {
                anyhow::bail!("HTTP status {code}");
            }
            Err(e) => last = Some(e),
        }
    }
    let e = match last {
        Some(e) => anyhow::Error::new(e),
        None => anyhow::anyhow!("no attempt started"),
    };
    let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
    let hit = io.and_then(|io| timed_out(io, deadline, t));
    Err(match hit {
        Some(hit) => e.context(hit),
        None if deadline.passed() => e.context(LimitHit::Deadline(deadline.total())),
        None => e,
    })
}

/// Which time limit a timed-out read hit: the deadline once (nearly) passed, else the
/// read time-out.
fn timed_out(e: &std::io::Error, deadline: Deadline, t: &Timeouts) -> Option<LimitHit> {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    if !matches!(e.kind(), TimedOut | WouldBlock) {
        return None;
    }
    if deadline.remaining() < Duration::from_millis(50) {
        Some(LimitHit::Deadline(deadline.total()))
    } else {
        Some(LimitHit::Read(t.read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_names_are_plain_file_names() {
        assert_eq!(
            vendor_name("https://x/a/tool-1.2.tar.gz"),
            "tool-1.2.tar.gz"
        );
        assert_eq!(vendor_name("https://x/dl?f=../../etc"), "dl");
        assert_eq!(vendor_name("https://x/a b/c%2f"), "c_2f");
        assert_eq!(vendor_name("https://x/.."), "artifact");
        assert_eq!(vendor_name("file:///"), "artifact");
    }

    #[test]
    fn fifos_are_refused_without_waiting() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = open_local(p.to_str().unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("FIFO"), "{e:#}");
    }
}
