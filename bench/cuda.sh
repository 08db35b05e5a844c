#!/usr/bin/env bash
# The engine on a CUDA machine that has PyTorch but none of Debian's
# packages: builds the engine and tuneforge-train alone against that
# PyTorch's libtorch; runs the engine's tests (on the CPU, under libtorch
# 2.x); checks that training on CUDA in fp32 follows the CPU's losses and
# that bf16 trains; and measures training tokens/s on CUDA in fp32 and bf16
# beside the same loop in Python (bench/train_speed.py, under autocast for
# bf16), with the GEMM throughput of the same GPU. Sized for one call of a
# few minutes; everything lands in OUT_DIR (summary.txt first).
#
#   scripts/device-deps.sh        # on a machine with apt: .deps/ (git-ignored)
#   bench/cuda.sh OUT_DIR         # on the GPU machine, .deps/ carried there
#
# Never run yet: no GPU has been lent to this project's sessions so far.
set -uo pipefail
OUT=$(mkdir -p "${1:?usage: bench/cuda.sh OUT_DIR}" && cd "$1" && pwd)
cd "$(dirname "$0")/.."
DEPS=$PWD/.deps/root
PY=${PYTHON:-python3}
ARCH_LIB=$DEPS/usr/lib/$(gcc -dumpmachine)
export PKG_CONFIG_PATH=$ARCH_LIB/pkgconfig PKG_CONFIG_SYSROOT_DIR=$DEPS
export LD_LIBRARY_PATH=$ARCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TUNEFORGE_PYTHON=$(command -v "$PY")
SUMMARY=$OUT/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$SUMMARY"

TORCH_PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
if ! { cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DTUNEFORGE_ENGINE_ONLY=ON \
         -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS/usr" &&
       cmake --build build-cuda -j "$(nproc)" --target engine_test tuneforge-train; } \
     >"$OUT/build.log" 2>&1; then
  say "build FAILED (build.log)"
  tail -30 "$OUT/build.log" >>"$SUMMARY"
  exit 1
fi
say "build ok"

# CudaWhereThereIsNone expects a machine without a GPU.
timeout 300 build-cuda/bin/engine_test --gtest_brief=1 \
  --gtest_filter=-TrainerTest.CudaWhereThereIsNone >"$OUT/engine_test.log" 2>&1
say "engine tests: $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/engine_test.log" | tr '\n' ' ')"

# Training runs: random letters as documents of T bytes, as bench/train_speed.sh.
source bench/common.sh  # docs, median
train() {  # preset device precision steps B T log -> the run's output in log
  docs $(($4 * $5)) "$6" "$OUT/data.txt"
  build-cuda/bin/tuneforge-train --model "$1" --device "$2" --precision "$3" --data "$OUT/data.txt" \
    --separator '<DOC>' --validation-split 0 --max-seq-len "$6" --batch-size "$5" --epochs 1 \
    --log-every 1 --learning-rate 1e-3 >"$7" 2>&1
}
losses() { grep -o 'train_loss [0-9.]*' "$1" | awk '{ print $2 }'; }
median_speed() { grep -o 'tokens/s [0-9]*' "$1" | tail -n +4 | awk '{ print $2 }' | median; }

# fp32 on CUDA against the CPU: the same losses step by step (cuBLAS without
# TF32, as libtorch's default is), and bf16 close to them.
for preset in tiny-gpt2 tiny-llama; do
  train "$preset" cpu fp32 20 8 128 "$OUT/$preset-cpu.log"
  train "$preset" cuda fp32 20 8 128 "$OUT/$preset-cuda-fp32.log"
  train "$preset" cuda bf16 20 8 128 "$OUT/$preset-cuda-bf16.log"
  say "$preset: largest relative loss difference over 20 steps, cuda fp32 vs cpu:" \
    "$(paste <(losses "$OUT/$preset-cpu.log") <(losses "$OUT/$preset-cuda-fp32.log") |
       awk '{ d = ($1 - $2) / $1; d = d < 0 ? -d : d; if (d > m) m = d } END { printf "%.2e", m }')," \
    "cuda bf16 vs cpu:" \
    "$(paste <(losses "$OUT/$preset-cpu.log") <(losses "$OUT/$preset-cuda-bf16.log") |
       awk '{ d = ($1 - $2) / $1; d = d < 0 ? -d : d; if (d > m) m = d } END { printf "%.2e", m }');" \
    "bf16 loss $(losses "$OUT/$preset-cuda-bf16.log" | head -1) -> $(losses "$OUT/$preset-cuda-bf16.log" | tail -1)"
done

# Speed: median step, C++ against the same loop in Python, fp32 and bf16.
say "$(printf '%-12s %-5s %8s %10s %10s %7s' model prec 'B x T' 'C++ tok/s' 'Py tok/s' ratio)"
while read -r name arch C L H K F steps B T; do
  for precision in fp32 bf16; do
    train "$name" cuda "$precision" "$steps" "$B" "$T" "$OUT/speed.log"
    cpp=$(median_speed "$OUT/speed.log")
    py=$(BENCH_DEVICE=cuda BENCH_BF16=$([ "$precision" = bf16 ] && echo 1 || echo 0) \
      $PY bench/train_speed.py train "$arch" "$C" "$L" "$H" "$K" "$F" "$B" "$T" "$steps" 1 |
      awk '{ print $3 }')
    say "$(awk -v n="$name" -v p="$precision" -v c="$cpp" -v y="$py" -v B="$B" -v T="$T" \
      'BEGIN { printf "%-12s %-5s %8s %10.0f %10.0f %6.2fx", n, p, B "x" T, c, y, c / y }')"
  done
done <<'CONFIGS'
tiny-gpt2 gpt2 128 4 4 4 512 30 8 128
small-gpt2 gpt2 512 8 8 8 2048 30 32 512
small-llama llama 512 8 8 4 1376 30 32 512
CONFIGS
for precision in fp32 bf16; do
  say "gemm $precision: $(BENCH_DEVICE=cuda BENCH_BF16=$([ "$precision" = bf16 ] && echo 1 || echo 0) \
    $PY bench/train_speed.py gemm 8192 8192 8192 1)"
done
rm -f "$OUT/data.txt"
