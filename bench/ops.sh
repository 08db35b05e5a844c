#!/usr/bin/env bash
# The engine's operations one by one, forward and backward, as the fused CPU
# kernels and as libtorch's formulas (bench/ops_bench.cc), with 1 thread
# (OpenBLAS too) and with all cores. Usage: bench/ops.sh BIN_DIR
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
export OMP_WAIT_POLICY=PASSIVE
OPENBLAS_NUM_THREADS=1 "$BIN/tuneforge-bench-ops" --threads 1
echo
"$BIN/tuneforge-bench-ops" --threads "$(nproc)"
