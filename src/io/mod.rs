//! Small I/O building blocks shared by every stage: hashing, atomic files, progress, and
//! the output transaction (staging, signals, the test points that interrupt it).

pub mod atomic;
pub mod faults;
pub mod hash;
pub mod progress;
pub mod signals;
pub mod sparse;
pub mod stage_cache;
pub mod staging;
