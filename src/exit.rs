//! Exit codes, documented in `slipway --help`. Errors carry a code only where the caller
//! (a script, CI) branches on it; everything else exits 1.

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

/// An error with an exit code.
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

/// An error that exits with `code`.
pub fn err(code: Code, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        msg: msg.into(),
    })
}

/// `e` with exit code `code`, its chain of causes kept (unless it already has one).
pub fn with_code(code: Code, e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| c.is::<Coded>() || c.is::<Chained>()) {
        return e;
    }
    anyhow::Error::new(Chained { code, inner: e })
}

/// An error given a code after the fact: shows as the error it wraps.
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

/// The exit code for `e`: the first coded error in its chain, else 1.
pub fn code_of(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code as i32;
        }
        if let Some(c) = cause.downcast_ref::<Chained>() {
            return c.code as i32;
        }
        if cause
            .downcast_ref::<crate::fetch::cache::DigestMismatch>()
            .is_some()
        {
            return Code::Fetch as i32;
        }
    }
    Code::Failure as i32
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
        let fetch = err(Code::Fetch, "offline");
        assert_eq!(code_of(&with_code(Code::BadInput, fetch)), 4);
    }
}
