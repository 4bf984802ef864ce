//! Writers: turn the in-memory tree into outputs (a directory, a reproducible tar, a
//! reproducible cpio for initramfs images).
//! Each returns what it wrote (path, size, sha256).

pub mod cpio;
pub mod dir;
pub mod oci;
pub mod tar;
