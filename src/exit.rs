//! Exit codes, documented in `slipway --help`. Errors carry a code only where the caller
//! (a script, CI) branches on it; everything else exits 1.
//!
//! A code rides along an `anyhow::Error` without flattening it: [`with_code`] (or
//! [`WithCode::with_code`] on a `Result`) wraps the error so that `{:#}` still prints its
//! whole chain of causes, once, and [`code_of`] finds the first code in the chain. The
//! typed errors a caller branches on and that imply a code live here too
//! ([`DigestMismatch`]), so this module depends on no stage.

use std::fmt;

/// `slipway` exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Something failed (build error, tool failure).
    Failure = 1,
    /// Bad input: command line, recipe, unknown or unsatisfiable packages.
    BadInput = 2,
    /// The lock no longer matches the recipe, or pins versions the archive dropped.
    LockOutdated = 3,
    /// A file could not be fetched or failed verification (missing offline, wrong sha256).
    Fetch = 4,
}

/// An error with an exit code and a message of its own (no cause).
#[derive(Debug)]
pub struct Coded {
    /// The exit code.
    pub code: Code,
    /// The message.
    pub msg: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Coded {}

/// A file whose content does not have the digest it should (exit code 4). The cache
/// branches on it: a mismatching cached file is fetched again.
#[derive(Debug)]
pub struct DigestMismatch {
    /// What was checked.
    pub what: String,
    /// The digest it should have.
    pub expected: String,
    /// The digest it has.
    pub actual: String,
}

impl fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: sha256 is {}, expected {}",
            self.what, self.actual, self.expected
        )
    }
}

impl std::error::Error for DigestMismatch {}

/// An error that exits with `code`, with `msg` as its whole message.
pub fn err(code: Code, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        msg: msg.into(),
    })
}

/// `e` with exit code `code`, its chain of causes kept; unless it already has a code:
/// the code given nearest the failure wins (a fetch failure stays 4 under a recipe's
/// context).
pub fn with_code(code: Code, e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| code_here(c).is_some()) {
        return e;
    }
    anyhow::Error::new(Chained { code, inner: e })
}

/// Gives a `Result`'s error an exit code, keeping its chain: `x.with_code(Code::BadInput)?`.
pub trait WithCode<T> {
    /// The error, if any, with exit code `code` (see [`with_code`]).
    fn with_code(self, code: Code) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn with_code(self, code: Code) -> anyhow::Result<T> {
        self.map_err(|e| with_code(code, e.into()))
    }
}

/// An error given a code after the fact: shows as the error it wraps, and its causes are
/// the wrapped error's causes, so the chain prints once.
#[derive(Debug)]
struct Chained {
    code: Code,
    inner: anyhow::Error,
}

impl fmt::Display for Chained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for Chained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// The code `cause` itself carries, if any (not its causes').
fn code_here(cause: &(dyn std::error::Error + 'static)) -> Option<Code> {
    if let Some(c) = cause.downcast_ref::<Coded>() {
        return Some(c.code);
    }
    if let Some(c) = cause.downcast_ref::<Chained>() {
        return Some(c.code);
    }
    cause.downcast_ref::<DigestMismatch>().map(|_| Code::Fetch)
}

/// The exit code for `e`: the first coded error in its chain, else 1.
pub fn code_of(e: &anyhow::Error) -> i32 {
    e.chain().find_map(code_here).unwrap_or(Code::Failure) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_code_keeps_the_chain_and_the_first_code() {
        let e = with_code(
            Code::BadInput,
            anyhow::anyhow!("root cause").context("step"),
        );
        assert_eq!(code_of(&e), 2);
        assert_eq!(format!("{e:#}"), "step: root cause");
        assert_eq!(e.chain().count(), 2, "{e:?}");
        let fetch = err(Code::Fetch, "offline");
        assert_eq!(code_of(&with_code(Code::BadInput, fetch)), 4);
    }

    #[test]
    fn a_digest_mismatch_exits_4_under_context_and_a_later_code() {
        let m = DigestMismatch {
            what: "x.deb".into(),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        let e = anyhow::Error::new(m).context("fetching x");
        assert_eq!(code_of(&e), 4);
        let e = with_code(Code::BadInput, e);
        assert_eq!(code_of(&e), 4);
        assert_eq!(
            format!("{e:#}"),
            "fetching x: x.deb: sha256 is bb, expected aa"
        );
    }

    #[test]
    fn the_result_extension_codes_only_errors() {
        let ok: Result<u8, std::io::Error> = Ok(1);
        assert_eq!(ok.with_code(Code::Fetch).ok(), Some(1));
        let bad: Result<u8, std::io::Error> = Err(std::io::Error::other("gone"));
        let e = bad.with_code(Code::Fetch).unwrap_err();
        assert_eq!((code_of(&e), e.to_string()), (4, "gone".to_string()));
        assert_eq!(code_of(&anyhow::anyhow!("plain")), 1);
    }
}
