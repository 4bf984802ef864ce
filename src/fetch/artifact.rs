//! Pinned non-Debian files (`[[artifact]]`): fetched over HTTP(S) or from `file://`, or
//! taken from `--artifact-dir` by sha256 for air-gapped builds, verified, and cached by
//! digest like packages.

use super::cache::{copy_hashing, warn, BlobState, Cache};
use super::verify::{create_new, FILE_MODE};
use crate::exit::{err, Code};
use crate::io::hash::{sha256_file, HashingWriter};
use crate::recipe::Artifact;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Write;
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
}

impl Sources {
    /// Sources from local directories, optionally offline.
    pub fn new(dirs: Vec<PathBuf>, offline: bool) -> Self {
        Sources {
            dirs,
            offline,
            by_digest: None,
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

/// Makes sure the artifact is in the cache and returns its blob path.
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
    let tmp = cache.temp_dir()?;
    let dl = tmp.path().join("download");
    let (digest, _size) = download(&a.url, &dl).map_err(|e| {
        err(
            Code::Fetch,
            format!(
                "artifact {}: cannot fetch it: {e:#}; {}",
                a.url,
                how_to_provide(a)
            ),
        )
    })?;
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
    cache.insert(&dl, &a.sha256)
}

/// Downloads `url` to `dest`, hashing while writing. Returns (sha256, size).
fn download(url: &str, dest: &Path) -> Result<(String, u64)> {
    let file = create_new(dest, FILE_MODE)?;
    let mut w = HashingWriter::new(std::io::BufWriter::new(file));
    if let Some(path) = url.strip_prefix("file://") {
        let mut f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
        std::io::copy(&mut f, &mut w).with_context(|| format!("reading {path}"))?;
    } else {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .build();
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            match agent.get(url).call() {
                Ok(resp) => {
                    let mut body = resp.into_reader();
                    std::io::copy(&mut body, &mut w).context("reading the response body")?;
                    last = None;
                    break;
                }
                // 4xx will not get better by retrying.
                Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) => {
                    anyhow::bail!("HTTP status {code}");
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(anyhow::Error::new(e));
        }
    }
    w.flush().context("writing the download")?;
    let (_, digest, size) = w.finish();
    Ok((digest, size))
}
