//! Writers: turn the in-memory tree into outputs (a directory, a reproducible tar).
//! Each returns what it wrote (path, size, sha256).

pub mod dir;
pub mod oci;
pub mod tar;
