//! Fetching: every locked package and artifact into the content-addressed cache,
//! verified by sha256.

pub mod artifact;
pub mod cache;
pub mod limits;
pub mod packages;
mod stamped;
pub mod verify;
