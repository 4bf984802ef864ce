//! Time limits of a push: one overall deadline and a per-read time-out.
//!
//! Consumes `--timeout` / `--read-timeout` values (or `SLIPWAY_PUSH_TIMEOUT` /
//! `SLIPWAY_PUSH_READ_TIMEOUT`); produces [`Timeouts`], the [`Deadline`] a client checks
//! before every request, backoff and read, and [`DeadlineReader`], a reader adapter that
//! refuses to read past it. The per-read time-out is the socket's (no byte for that long
//! fails the read); it also bounds how far a read already waiting can run past the
//! deadline, because a request that starts with less time left than one read time-out
//! gets the remaining time as its own limit instead.

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// How long a whole push may take, and how long one read may wait for a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The overall deadline, from the start of the push.
    pub total: Duration,
    /// The longest wait for any byte (and for a write to make progress).
    pub read: Duration,
}

/// The default overall deadline: 1 hour (a few GB over a slow uplink).
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(3600);
/// The default read time-out: 60 s (a registry committing a large blob to object
/// storage can be quiet for tens of seconds after the last byte).
pub const DEFAULT_READ: Duration = Duration::from_secs(60);
/// The connect time-out (never longer than the time left).
pub const CONNECT: Duration = Duration::from_secs(10);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            total: DEFAULT_TOTAL,
            read: DEFAULT_READ,
        }
    }
}

/// A duration setting: the flag's value, else the environment variable `var` (parsed by
/// [`parse_duration`]; a bad value is bad input naming the variable), else `default`.
pub fn setting(flag: Option<Duration>, var: &str, default: Duration) -> anyhow::Result<Duration> {
    match flag {
        Some(d) => Ok(d),
        None => match std::env::var(var) {
            Ok(v) => parse_duration(&v)
                .map_err(|e| crate::exit::err(crate::exit::Code::BadInput, format!("{var}: {e}"))),
            Err(_) => Ok(default),
        },
    }
}

/// Parses a duration: a number of seconds (`90`, `1.5`) or with a unit (`500ms`, `90s`,
/// `10m`, `1h`). Zero and negative values are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let bad = || format!("{s:?} is not a duration (use seconds, or 500ms, 90s, 10m, 1h)");
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let secs = v * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Seconds for messages: `2 s`, `0.5 s`.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// The instant a push must be done by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    /// A deadline `total` from now.
    pub fn after(total: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + total,
            total,
        }
    }

    /// The time left; zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// True once the deadline has passed.
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The whole allowance, for messages.
    pub fn total(&self) -> Duration {
        self.total
    }
}

/// A reader that fails with `TimedOut` once `deadline` has passed.
pub struct DeadlineReader<R> {
    inner: R,
    deadline: Deadline,
}

impl<R> DeadlineReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, deadline: Deadline) -> Self {
        DeadlineReader { inner, deadline }
    }
}

impl<R: Read> Read for DeadlineReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.deadline.passed() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the {} deadline passed", secs(self.deadline.total())),
            ));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
        for bad in ["", "0", "-1", "s", "1d", "nan", "inf", "1e30"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
        assert_eq!(secs(Duration::from_secs(2)), "2 s");
        assert_eq!(secs(Duration::from_millis(500)), "0.5 s");
    }

    #[test]
    fn reader_stops_at_the_deadline() {
        let d = Deadline::after(Duration::from_millis(30));
        let mut r = DeadlineReader::new(&b"abc"[..], d);
        let mut buf = [0u8; 2];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        std::thread::sleep(Duration::from_millis(40));
        assert!(d.passed());
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("deadline"), "{e}");
    }
}
