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
  dosfstools mtools                # mkfs.vfat, mmd/mcopy/mdir: the EFI system partition, without mounting
  genisoimage                       # iso9660 OpenStack config drives in boot tests (what Nova itself runs)
  squashfs-tools                    # mksquashfs: squashfs-xz roots; unsquashfs reads the native writer's roots back
  ovmf                              # UEFI firmware for booting UKIs under QEMU (and its snakeoil Secure Boot build)
  ipxe-qemu                         # the NIC option ROMs OVMF network-boots through (slipway test's netboot)
  swtpm swtpm-tools                 # a software TPM 2.0 beside the VM (slipway test's tpm = true)
  osslsigncode                      # Secure Boot: Authenticode signing of the UKI (decision 0039)
  g++ openjdk-17-jdk-headless       # base_catalogue builds a C++ program and a Java class (javac, keytool) to run in the cc and java images
  sbsigntool                        # sbsign: signing EFI binaries for the Secure Boot tests
  socat                             # relays each guest connection of a proxy forward to a host service
  python3-venv                      # the private venv virt-firmware (virt-fw-vars) is installed into
  qemu-utils                        # qemu-img: qcow2 output, test overlays
  containerd runc                   # slipway-node's CRI tests run a private containerd (bookworm: 1.6) with runc
  containernetworking-plugins       # CNI plugins (bridge, host-local, loopback): the pod-network CRI test
  fdisk cpio kmod                   # sfdisk (reads back slipway's GPT); cpio reads initramfs back; depmod -b regenerates pruned module indexes
)

# Every QEMU package comes from the host's own release (bookworm: QEMU 7.2), never half
# from backports: a preinstalled backports qemu-utils would otherwise be removed when
# qemu-system-x86 7.2 is installed, leaving no qemu-img (docs/decisions/0022-boot-time.md).
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
apt_ready=0
apt_update() {
  [ "$apt_ready" = 1 ] && return 0
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "setup-host: need root (or sudo) to run apt-get" >&2; exit 1
  fi
  $SUDO apt-get update -q
  apt_ready=1
}
installed_version() { { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } | sed -n 's/^install ok installed //p'; }

missing=()
for p in "${packages[@]}"; do
  [ -n "$(installed_version "$p")" ] || missing+=("$p")
done

# QEMU packages installed in a version no configured source carries (a backports build the
# machine came with): they are put back to the release's version with the rest.
qemu=()
for p in $( (printf '%s\n' "${packages[@]}"; dpkg-query -W -f='${Package}\n' 'qemu-*' 2>/dev/null) | grep '^qemu-' | sort -u); do
  v=$(installed_version "$p")
  if [ -n "$v" ] || printf '%s\n' "${missing[@]}" | grep -qx "$p"; then qemu+=("$p"); fi
done
foreign=()
for p in "${qemu[@]}"; do
  v=$(installed_version "$p")
  [ -n "$v" ] || continue
  if ! apt-cache madison "$p" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$v"; then
    foreign+=("$p")
  fi
done
if [ ${#foreign[@]} -gt 0 ]; then
  apt_update  # a fresh machine may have no package lists yet: ask again with them
  again=()
  for p in "${foreign[@]}"; do
    v=$(installed_version "$p")
    apt-cache madison "$p" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$v" || again+=("$p")
  done
  foreign=("${again[@]}")
fi

if [ ${#missing[@]} -eq 0 ] && [ ${#foreign[@]} -eq 0 ]; then
  echo "setup-host: all ${#packages[@]} host packages present"
else
  args=()
  for p in "${missing[@]}"; do
    case " ${qemu[*]} " in *" $p "*) [ ${#foreign[@]} -gt 0 ] && [ -n "$codename" ] && p="$p/$codename" ;; esac
    args+=("$p")
  done
  if [ ${#foreign[@]} -gt 0 ]; then
    [ -n "$codename" ] || { echo "setup-host: no VERSION_CODENAME in /etc/os-release" >&2; exit 1; }
    echo "setup-host: ${foreign[*]}: installed from no configured source; putting every QEMU package on $codename's version"
    for p in "${qemu[@]}"; do
      case " ${args[*]} " in *" $p/$codename "*) ;; *) args+=("$p/$codename") ;; esac
    done
  fi
  apt_update
  # Plan first: an install that would remove a package is refused, naming it.
  plan=$(DEBIAN_FRONTEND=noninteractive $SUDO apt-get -s install -y -q --no-install-recommends --allow-downgrades "${args[@]}" 2>&1) || {
    echo "$plan" | tail -20 >&2; echo "setup-host: apt-get cannot plan the install of: ${args[*]}" >&2; exit 1; }
  printf '%s\n' "$plan" | "$(dirname "$0")/apt-plan-check.sh" "${args[@]}"
  echo "setup-host: installing ${args[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends --allow-downgrades "${args[@]}"
fi

# virt-fw-vars (PyPI's virt-firmware, not packaged for bookworm) enrolls custom Secure Boot
# keys into an OVMF variable store. Pinned, in a venv of its own, linked onto PATH.
virt_firmware=26.10
venv=/opt/slipway/virt-firmware
if [ "$("$venv/bin/pip" show virt-firmware 2>/dev/null | sed -n 's/^Version: //p')" != "$virt_firmware" ]; then
  echo "setup-host: installing virt-firmware $virt_firmware into $venv"
  $SUDO /usr/bin/python3 -m venv "$venv"
  $SUDO "$venv/bin/pip" install -q "virt-firmware==$virt_firmware"
fi
$SUDO ln -sf "$venv/bin/virt-fw-vars" /usr/local/bin/virt-fw-vars

# Every tool `slipway doctor` lists (src/host-tools.tsv) must now be present.
absent=()
while IFS=$'\t' read -r tool pkg _; do
  case "$tool" in ''|'#'*) continue ;; esac
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ] || absent+=("$tool ($pkg)")
done < "$(dirname "$0")/../src/host-tools.tsv"
if [ ${#absent[@]} -gt 0 ]; then
  echo "setup-host: after setup these tools are still missing: ${absent[*]}" >&2
  exit 1
fi
echo "setup-host: every host tool slipway doctor lists is present"
