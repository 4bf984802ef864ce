//! Named points in a build where the tests of the output transaction stop or fail it
//! (tests/it/output_transaction.rs): `SLIPWAY_TEST_PAUSE=NAME` prints `slipway: paused at
//! NAME` to stderr and sleeps there (for a test to send a signal at a known point);
//! `SLIPWAY_TEST_FAIL=NAME` fails the build there, as a full disk would. Neither is set
//! outside tests; unset, a point costs one environment lookup.

use anyhow::Result;

/// Environment variable: the point to pause at.
pub const PAUSE_ENV: &str = "SLIPWAY_TEST_PAUSE";
/// Environment variable: the point to fail at.
pub const FAIL_ENV: &str = "SLIPWAY_TEST_FAIL";

/// The build reached the point `name`.
pub fn point(name: &str) -> Result<()> {
    if std::env::var_os(PAUSE_ENV).is_some_and(|v| v == name) {
        eprintln!("slipway: paused at {name}");
        // Until a signal ends the process; a forgotten pause still ends.
        std::thread::sleep(std::time::Duration::from_secs(120));
    }
    if std::env::var_os(FAIL_ENV).is_some_and(|v| v == name) {
        anyhow::bail!("failing at {name} ({FAIL_ENV} is set)");
    }
    Ok(())
}
