//! Disk images for host recipes: the GPT layout (UAPI Discoverable Partitions
//! Specification), the dm-verity hash tree of the read-only root, and the partitions
//! written into one raw image.

pub mod verity;
