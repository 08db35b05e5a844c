#!/usr/bin/env bash
# Unpacks the Debian packages the engine's own build needs besides libtorch
# (nlohmann/json, Abseil, CLI11, PCRE2, GoogleTest) into .deps/root, for a machine
# that has PyTorch but reaches no package registry (bench/cuda.sh runs
# there; the folder travels with the working tree). Run here, where apt
# works. Usage: scripts/device-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="nlohmann-json3-dev libabsl-dev libabsl20220623 libcli11-dev libpcre2-dev libpcre2-8-0
          libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libgtest-dev"
rm -rf .deps
mkdir -p .deps/debs .deps/root
(cd .deps/debs && apt-get download $PACKAGES)
for deb in .deps/debs/*.deb; do dpkg -x "$deb" .deps/root; done
rm -rf .deps/debs
du -sh .deps
