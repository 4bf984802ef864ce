#!/usr/bin/env bash
# Installs every Debian host package slipway's build, tests and benchmarks use.
# Idempotent and quick when everything is present; called by `make` (setup target).
set -euo pipefail

packages=(
  apt gpgv debian-archive-keyring   # the archive client and Debian's keys (always)
  ca-certificates openssl           # https artifacts; CA tests compare with openssl
  binutils xz-utils zstd            # ar/objcopy for tests and UKIs; compressors for tests
  skopeo umoci                      # OCI image checks
  docker-registry apache2-utils     # a real registry for push tests; htpasswd for its auth
  qemu-user-static                  # running arm64 images in tests
  curl iproute2                     # base-recipe tests: fetch from nginx in its own network namespace
  mmdebstrap                        # benchmark peer for assembling trees
  hyperfine                         # benchmarks
  faketime                          # reproducibility tests build with the clock moved
  qemu-system-x86                   # boot tests (TCG)
  cryptsetup-bin                    # veritysetup: the reference for slipway's dm-verity tree; the initramfs boot test
  erofs-utils                       # mkfs.erofs: read-only root file systems in boot tests
  dosfstools mtools                # mkfs.vfat, mmd/mcopy/mdir: the EFI system partition, without mounting
  genisoimage                       # iso9660 OpenStack config drives in boot tests (what Nova itself runs)
  squashfs-tools                    # mksquashfs: size comparison with erofs for the read-only root
  ovmf                              # UEFI firmware for booting UKIs under QEMU
  qemu-utils                        # qemu-img: qcow2 output, test overlays
  containerd runc                   # slipway-node's CRI tests run a private containerd (bookworm: 1.6) with runc
  containernetworking-plugins       # CNI plugins (bridge, host-local, loopback): the pod-network CRI test
  fdisk cpio kmod                   # sfdisk (reads back slipway's GPT); cpio reads initramfs back; depmod -b regenerates pruned module indexes
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-host: all ${#packages[@]} host packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-host: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup-host: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
