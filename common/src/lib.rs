//! The basics slipway shares between the host tool (`slipway`) and the static binaries it
//! puts into images (`slipway-init`, `slipway-agent`, `slipway-node`): GUID partition
//! tables (read and written), GUID text, CRC-32, base64, the test agent's wire protocol
//! with the small JSON it needs, civil dates, and the update payload's media types and
//! annotations.
//!
//! The crate has no dependencies, so every binary that goes into an image can link it
//! without growing; see docs/decisions/0029-shared-crate.md.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod base64;
pub mod crc32;
pub mod date;
pub mod gpt;
pub mod guid;
pub mod json;
pub mod protocol;
pub mod update;
