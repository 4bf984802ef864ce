//! `slipway test`: boot tests for host images. Consumes test definitions (`qemu/*.toml`,
//! [`definition`]), builds the images they name once per run, boots each on a
//! copy-on-write overlay under QEMU and drives it through the in-image test agent
//! ([`steps`]), failing at once on console badness ([`strict`], as CoreOS's kola does).
//! Produces a summary with per-test times, JUnit XML ([`junit`]) and an exit code
//! ([`runner`]). The images are shared with the cargo tests through the fixture cache
//! ([`fixtures`]). Before the first boot [`prepare`] makes the machine: firmware and
//! variables, TPM, network boot, drives, forwards. How to write a test: docs/testing.md.

pub mod definition;
pub mod fixtures;
pub mod junit;
pub mod prepare;
pub mod runner;
pub mod serve;
pub mod steps;
pub mod strict;
