//! Every integration test of the main crate, in one test binary.
//!
//! One binary links once: as 32 binaries, each compiling `common` again and linking the
//! whole library in release mode, the tests took four minutes to build in CI before the
//! first one ran. Each file here is the module its tests are named after
//! (`host_image::a_corrupt_block_of_systemd_panics_after_switch_root`); nextest still runs
//! every test in its own process, and `.config/nextest.toml` puts the modules that boot
//! QEMU into the `vm` test group by that name (docs/testing.md).
#![allow(clippy::unwrap_used)]

mod common;

mod ab_updates;
mod adversarial;
mod agent;
mod bare_metal;
mod bare_metal_host;
mod base_catalogue;
mod base_images;
mod base_recipes;
mod cache_integrity;
mod cloud_formats;
mod deb_hostile;
mod disk;
mod disk_images;
mod doctor_recipes;
mod downloads;
mod foundation;
mod harness_keys;
mod host_image;
mod host_recipe;
mod initramfs_boot;
mod k8s_node;
mod kernel_modules;
mod node_agents;
mod node_cri;
mod oci;
mod output_transaction;
mod push;
mod push_hostile;
mod registry_cache;
mod resolver_oracle;
mod secure_boot;
mod squashfs;
mod structure;
mod testing_harness;
mod tree;
mod updates;
