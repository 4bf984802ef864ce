//! Limits of one artifact download: a size cap, an overall deadline and a per-read
//! time-out.
//!
//! Consumes `--download-max-size`, `--download-timeout`, `--download-read-timeout` (or
//! `SLIPWAY_DOWNLOAD_MAX_SIZE`, `SLIPWAY_DOWNLOAD_TIMEOUT`,
//! `SLIPWAY_DOWNLOAD_READ_TIMEOUT`); produces [`Limits`], and [`CapReader`], a reader
//! adapter that fails with a [`LimitHit`] as soon as a stream passes its cap. Durations
//! parse, and the deadline works, as `slipway push`'s do ([`crate::push::deadline`]).

use crate::exit::{self, Code};
use crate::push::deadline::{self, secs, Timeouts};
use anyhow::Result;
use std::io::{self, Read};
use std::time::Duration;

/// The default size cap of an artifact the lock has no size for: 1 GiB. Assembly holds
/// an artifact in memory, and release tarballs of a few binaries are far smaller.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// The default overall deadline of one artifact download, retries included: 30 minutes.
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(30 * 60);
/// The default read time-out: 60 s without a byte fails the download.
pub const DEFAULT_READ: Duration = deadline::DEFAULT_READ;

const ENV_MAX_SIZE: &str = "SLIPWAY_DOWNLOAD_MAX_SIZE";
const ENV_TOTAL: &str = "SLIPWAY_DOWNLOAD_TIMEOUT";
const ENV_READ: &str = "SLIPWAY_DOWNLOAD_READ_TIMEOUT";

/// The limits of every artifact download of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The size cap of an artifact the lock has no size for.
    pub max_size: u64,
    /// The overall deadline (from the first request) and the per-read time-out.
    pub timeouts: Timeouts,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: DEFAULT_MAX_SIZE,
            timeouts: Timeouts {
                total: DEFAULT_TOTAL,
                read: DEFAULT_READ,
            },
        }
    }
}

impl Limits {
    /// The flags where given, else the environment, else the defaults. A bad variable is
    /// bad input (exit 2).
    pub fn resolve(
        max_size: Option<u64>,
        total: Option<Duration>,
        read: Option<Duration>,
    ) -> Result<Limits> {
        let max_size = match max_size {
            Some(n) => n,
            None => match std::env::var(ENV_MAX_SIZE) {
                Ok(v) => parse_size(&v)
                    .map_err(|e| exit::err(Code::BadInput, format!("{ENV_MAX_SIZE}: {e}")))?,
                Err(_) => DEFAULT_MAX_SIZE,
            },
        };
        let pick = deadline::setting;
        Ok(Limits {
            max_size,
            timeouts: Timeouts {
                total: pick(total, ENV_TOTAL, DEFAULT_TOTAL)?,
                read: pick(read, ENV_READ, DEFAULT_READ)?,
            },
        })
    }
}

/// Parses a size cap: bytes (`1048576`) or a whole number of KiB, MiB or GiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return if n > 0 {
            Ok(n)
        } else {
            Err(format!("{s:?} is not a size (use bytes, or KiB, MiB, GiB)"))
        };
    }
    crate::recipe::raw::Size::try_from(t.to_string()).map(|s| s.0)
}

/// Which limit stopped a download; its message says how to raise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitHit {
    /// More bytes than the lock records for the artifact.
    LockedSize(u64),
    /// More bytes than the size cap.
    MaxSize(u64),
    /// The overall deadline passed.
    Deadline(Duration),
    /// No byte for a whole read time-out.
    Read(Duration),
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::LockedSize(n) => write!(
                f,
                "it is larger than its locked size of {n} bytes (the file changed at its source; \
                 if that is expected, lock again with `slipway lock --update`)"
            ),
            LimitHit::MaxSize(n) => write!(
                f,
                "it is larger than the {} download size cap (raise it with --download-max-size \
                 or {ENV_MAX_SIZE})",
                human(*n)
            ),
            LimitHit::Deadline(d) => write!(
                f,
                "it did not finish within its {} download deadline (raise it with \
                 --download-timeout or {ENV_TOTAL})",
                secs(*d)
            ),
            LimitHit::Read(d) => write!(
                f,
                "no byte came for {}, the download read time-out (raise it with \
                 --download-read-timeout or {ENV_READ})",
                secs(*d)
            ),
        }
    }
}

impl std::error::Error for LimitHit {}

/// `n` bytes for messages: `1 GiB`, `3 MiB`, `1500 bytes`.
fn human(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// A reader that fails (an `io::Error` with the [`LimitHit`] inside) once more than `cap`
/// bytes came through. It reads one byte past the cap to tell "exactly at the cap" from
/// "over it".
pub struct CapReader<R> {
    inner: R,
    left: u64,
    hit: LimitHit,
}

impl<R> CapReader<R> {
    /// Wraps `inner`; `hit` is the error once more than `cap` bytes were read.
    pub fn new(inner: R, cap: u64, hit: LimitHit) -> Self {
        CapReader {
            inner,
            left: cap.saturating_add(1),
            hit,
        }
    }
}

impl<R: Read> Read for CapReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other(self.hit.clone()));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        if self.left == 0 {
            return Err(io::Error::other(self.hit.clone()));
        }
        Ok(n)
    }
}

/// The [`LimitHit`] inside `e`, if a limit is what failed it.
pub fn limit_of(e: &io::Error) -> Option<&LimitHit> {
    e.get_ref().and_then(|i| i.downcast_ref::<LimitHit>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_lets_exactly_cap_bytes_through() {
        let data = vec![7u8; 1000];
        let mut out = Vec::new();
        let mut r = CapReader::new(&data[..], 1000, LimitHit::MaxSize(1000));
        assert_eq!(std::io::copy(&mut r, &mut out).unwrap(), 1000);
        let mut r = CapReader::new(&data[..], 999, LimitHit::MaxSize(999));
        let e = std::io::copy(&mut r, &mut Vec::new()).unwrap_err();
        assert_eq!(limit_of(&e), Some(&LimitHit::MaxSize(999)));
        assert!(e.to_string().contains("--download-max-size"), "{e}");
        let mut endless = CapReader::new(std::io::repeat(0), 4096, LimitHit::LockedSize(4096));
        let e = std::io::copy(&mut endless, &mut std::io::sink()).unwrap_err();
        assert!(e.to_string().contains("locked size of 4096 bytes"), "{e}");
    }

    #[test]
    fn sizes_and_messages() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size(" 2GiB "), Ok(2 << 30));
        for bad in ["", "0", "1MB", "-1", "x"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(1500), "1500 bytes");
        let t = LimitHit::Deadline(Duration::from_secs(2)).to_string();
        assert!(t.contains("2 s download deadline") && t.contains("--download-timeout"));
        let t = LimitHit::Read(Duration::from_millis(500)).to_string();
        assert!(t.contains("0.5 s") && t.contains("SLIPWAY_DOWNLOAD_READ_TIMEOUT"));
    }
}
