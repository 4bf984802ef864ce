//! Small I/O building blocks shared by every stage: hashing, atomic files, progress.

pub mod atomic;
pub mod hash;
pub mod progress;
