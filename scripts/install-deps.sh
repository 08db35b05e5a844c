#!/usr/bin/env bash
# Installs every Debian package that Tuneforge's build, tests and demo need.
# Idempotent: when all packages are present it does nothing (not even apt-get update).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # RPC
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # core libraries
  libabsl-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libsqlite3-dev libcli11-dev
  libsimdjson-dev
  # operations: the /metrics HTTP endpoint
  libcpp-httplib-dev
  # training engine: libtorch (CPU) and a fast BLAS for its matrix products
  libtorch-dev libopenblas0-pthread
  # data-parallel training: the Gloo headers c10d's backend needs
  libgloo-dev
  # Unicode-aware regular expressions for BPE pre-tokenization
  libpcre2-dev
  # tests: GoogleTest, and clang's libFuzzer with its sanitizers for the fuzz targets
  libgtest-dev libgmock-dev python3 sqlite3 procps clang-14 libclang-rt-14-dev
  # tests: certificates for TLS (openssl); promtool checks /metrics (prometheus);
  # the completion scripts run in zsh as well as bash
  openssl prometheus zsh
  # an independent PyTorch reference for the engine's numerics (same libtorch)
  python3-torch
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js and npm run the tokenizer's oracle (tiktoken, which the tests install
# from npm). A machine may already have them from another source; only when
# the commands are missing do Debian's packages come in.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
