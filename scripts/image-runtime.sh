#!/usr/bin/env bash
# An image's runtime stage: installs the packages listed in FILE (from
# runtime-packages.sh) and nothing else, adds the user the image runs as
# (uid and gid 10001, no home, no shell), and makes the DIRs it writes to.
#   image-runtime.sh FILE DIR...
set -euo pipefail
list=$1
shift
apt-get update -qq
# shellcheck disable=SC2046  # one package per word
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  $(cat "$list") ca-certificates
rm -rf /var/lib/apt/lists/* "$list"
groupadd --gid 10001 tuneforge
useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
  --shell /usr/sbin/nologin tuneforge
mkdir -p "$@"
chown 10001:10001 "$@"
