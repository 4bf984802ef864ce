#!/usr/bin/env bash
# Reads an `apt-get -s install ...` plan on stdin and refuses it, naming the packages, if
# it would remove any (issue 15: installing bookworm's qemu-system-x86 once removed the
# machine's backports qemu-utils, and with it qemu-img). Exit 0: no removal; exit 1: the
# refusal is on stderr. Used by scripts/setup-host.sh; tested in tests/it/foundation.rs.
set -euo pipefail
plan=$(cat)
removed=$(printf '%s\n' "$plan" | sed -n 's/^Remv \([^ ]*\).*/\1/p' | tr '\n' ' ')
removed=${removed% }
if [ -n "$removed" ]; then
  echo "setup-host: refusing: installing ${*:-these packages} would remove: $removed" >&2
  printf '%s\n' "$plan" | grep '^Remv' >&2
  echo "setup-host: nothing was installed; pin the packages to one suite or remove them by hand first" >&2
  exit 1
fi
