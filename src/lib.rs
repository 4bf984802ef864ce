//! slipway: builds slim, immutable container-host OS images and minimal OCI base
//! images from Debian packages, and boots them in QEMU to prove they work.
//!
//! The pipeline, one module per stage:
//! `recipe` -> `resolve` (Debian indices, solver) -> `lock` -> `fetch` (cache, apt)
//! -> `deb` (package reader) -> `assemble` (tree, maintainer-script effects) -> `writers`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod apt;
pub mod assemble;
pub mod boot;
pub mod cli;
pub mod deb;
pub mod disk;
pub mod effects;
pub mod exit;
pub mod fetch;
pub mod formats;
pub mod inspect;
pub mod io;
pub mod kernel;
pub mod lock;
pub mod output;
pub mod pipeline;
pub mod preload;
pub mod push;
pub mod recipe;
pub mod remote;
pub mod report;
pub mod resolve;
pub mod sbom;
pub mod support;
pub mod testing;
pub mod tool;
pub mod tree;
pub mod writers;
