//! Disk images for host recipes: the GPT layout (UAPI Discoverable Partitions
//! Specification), the dm-verity hash tree of the read-only root, and the partitions
//! written into one raw image.

pub mod enroll;
pub mod erofs;
pub mod esp;
pub mod ext4;
pub mod gpt;
pub mod image;
pub mod initramfs;
pub mod layout;
pub mod loader;
pub mod manifest;
pub mod pcr;
pub mod root;
pub mod rootfs;
pub mod sign;
pub mod slots;
pub mod squashfs;
pub mod uki;
pub mod verity;
