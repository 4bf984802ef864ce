//! Named module sets, so recipes say `modules = ["storage", "root", "var"]` instead of
//! listing drivers. Consumes a name from `[kernel] modules`, produces module names.
//!
//! Every name here exists, as a module or built in, in Debian 13's and Debian 12's
//! `linux-image-cloud-amd64` (6.12 and 6.1); the boot test plans every feature against
//! both. Dependencies are not listed: the closure adds them from `.modinfo`.

/// One named set of modules.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// The name recipes use.
    pub name: &'static str,
    /// What it is for, one line.
    pub about: &'static str,
    /// The modules it asks for.
    pub modules: &'static [&'static str],
}

/// Every feature, in the order `slipway` documents them.
pub const FEATURES: &[Feature] = &[
    // Block devices a cloud VM boots from: virtio-blk and virtio-scsi (QEMU, GCE's
    // virtio_scsi), NVMe (AWS Nitro, GCE, Azure v6; built in on Debian's cloud
    // kernels), SCSI disks (sd_mod, which virtio_scsi and hv_storvsc present), and
    // Azure's Hyper-V storage (hv_storvsc over the hv_vmbus bus). virtio_pci is built
    // in on 6.12 but a module on 6.1.
    Feature {
        name: "storage",
        about: "boot disks: virtio-blk, virtio-scsi, NVMe, SCSI disks, Hyper-V storage",
        modules: &[
            "virtio_pci",
            "virtio_blk",
            "virtio_scsi",
            "nvme",
            "sd_mod",
            "hv_vmbus",
            "hv_storvsc",
        ],
    },
    // The read-only root: dm-verity over squashfs (erofs roots were retired, decision
    // 0034), and overlayfs for the writable /etc over it (slipway-init mounts it).
    Feature {
        name: "root",
        about: "verified read-only root: dm-verity, squashfs; overlay for /etc",
        modules: &["dm_verity", "squashfs", "overlay"],
    },
    // The writable /var partition (ext4 is built in on Debian's cloud kernels; naming
    // it keeps a recipe right on kernels where it is not).
    Feature {
        name: "var",
        about: "writable /var: ext4",
        modules: &["ext4"],
    },
    // NICs: virtio-net (QEMU, GCE's older shapes), AWS ENA, Google gVNIC, Azure netvsc.
    Feature {
        name: "network",
        about: "NICs: virtio-net, AWS ena, Google gve, Azure hv_netvsc",
        modules: &["virtio_net", "ena", "gve", "hv_vmbus", "hv_netvsc"],
    },
    // What containerd, runc and CNI bridge networking load: overlayfs snapshots, the
    // bridge and veth pairs, bridged traffic through netfilter, NAT and conntrack, and
    // iptables in both flavours (Debian's iptables is iptables-nft, which still uses
    // xt_* matches through nft_compat; legacy tables for older tooling).
    Feature {
        name: "containers",
        about: "containerd/CNI: overlay, bridge, veth, br_netfilter, NAT, conntrack, iptables/nft",
        modules: &[
            "overlay",
            "bridge",
            "veth",
            "br_netfilter",
            "nf_conntrack",
            "nf_nat",
            "nf_tables",
            "nft_compat",
            "nft_chain_nat",
            "nft_masq",
            "nft_ct",
            "xt_conntrack",
            "xt_MASQUERADE",
            "xt_addrtype",
            "xt_nat",
            "xt_mark",
            "xt_comment",
            "ip_tables",
            "iptable_filter",
            "iptable_nat",
            "ip6_tables",
            "ip6table_filter",
            "ip6table_nat",
        ],
    },
    // First-boot configuration sources: QEMU's fw_cfg (ignition-style config), FAT and
    // ISO 9660 config drives (cloud-init NoCloud, Azure's provisioning ISO), and the
    // code pages FAT mounts with by default (cp437, iocharset ascii, utf8 names).
    Feature {
        name: "provisioning",
        about: "config sources: qemu_fw_cfg, vfat, isofs and their code pages",
        modules: &[
            "qemu_fw_cfg",
            "vfat",
            "isofs",
            "nls_cp437",
            "nls_ascii",
            "nls_utf8",
        ],
    },
    // Host-guest channels: virtio-console ports (qemu-guest-agent) and AF_VSOCK over
    // virtio (and Hyper-V sockets on Azure).
    Feature {
        name: "guest-channels",
        about: "host-guest channels: virtio_console, vsock (virtio and Hyper-V)",
        modules: &[
            "virtio_console",
            "vsock",
            "vmw_vsock_virtio_transport",
            "hv_sock",
        ],
    },
    // What systemd mounts itself: autofs (for automount units) and efivarfs; and the
    // ESP at /efi on a two-slot disk (vfat with the code pages FAT mounts with by
    // default, cp437 and iocharset ascii, and utf8 names), which systemd-bless-boot
    // renames the booted UKI on and the agent writes updates' UKIs to. `provisioning`
    // names vfat too; this keeps a host without it able to mount its ESP.
    Feature {
        name: "systemd",
        about: "systemd's own mounts: autofs4, efivarfs; the ESP at /efi (vfat, code pages)",
        modules: &[
            "autofs4",
            "efivarfs",
            "vfat",
            "nls_cp437",
            "nls_ascii",
            "nls_utf8",
        ],
    },
];

/// The feature called `name`, if any.
pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_kebab_case() {
        let mut names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FEATURES.len());
        for f in FEATURES {
            assert!(f.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert!(!f.modules.is_empty());
            assert!(feature(f.name).is_some());
        }
    }
}
