#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that own the shared libraries the given
# binaries load (one per line, sorted), for an image's runtime stage.
# Libraries no package owns (libtorch from a wheel) are left to the caller.
set -euo pipefail
for binary in "$@"; do
  ldd "$binary" | awk '/=> \// { print $3 }'
done | sort -u | while read -r lib; do
  # dpkg knows the path the package installed, which may be behind a symlink.
  dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true
done | cut -d: -f1 | sort -u
