#!/usr/bin/env bash
# Training speed of tuneforge-train against the same training step written in
# Python with PyTorch (bench/train_speed.py: same libtorch, same model, batch
# shape, loss, clipping and AdamW), in one run; the FLOP/s that speed means,
# as a fraction of the GEMM throughput measured here in the same run; and
# peak memory after 1 and after 4 epochs. Usage: bench/train_speed.sh BIN_DIR
#
# Three sides per row: the engine as it trains (fused CPU kernels), the
# engine with --no-fused-kernels (the same formulas as libtorch operations,
# as the Python loop has them), and Python. Every step is a batch of B
# sequences of exactly T tokens (random letters, as plain-text documents of
# T bytes), so all sides see the same shapes. Speeds are at the median step
# (the first two steps excluded). Timings here move by 15% between runs, so
# each row alternates the three sides REPEAT times (default 3), reports each
# side's median run, the ratio of the medians, and the range of the
# per-round ratios. The table runs with 1 thread (OPENBLAS_NUM_THREADS=1
# too: the quietest measure of the work) and with all cores (the workers'
# default); OpenMP's idle policy is PASSIVE on every side. THREADS="2" runs
# one setting, ONLY=REGEX only the rows whose "model method BxT" matches.
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
cd "$(dirname "$0")/.."
CORES=$(nproc)
REPEAT=${REPEAT:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=PASSIVE
PY=/usr/bin/python3

source bench/common.sh  # docs, median

# preset threads steps B T lora_rank epochs [flags] -> "tokens/s-at-the-median-step peak_MB"
cpp_speed() {
  local preset=$1 threads=$2 steps=$3 b=$4 t=$5 lora=$6 epochs=$7
  shift 7
  docs $((steps * b)) "$t" "$WORK/data.txt"
  "$BIN/tuneforge-train" --model "$preset" --data "$WORK/data.txt" --separator '<DOC>' \
    --validation-split 0 --max-seq-len "$t" --batch-size "$b" --epochs "$epochs" --log-every 1 \
    --threads "$threads" --lora-rank "$lora" "$@" >"$WORK/out.txt"
  local mid mem
  mid=$(grep -o 'tokens/s [0-9]*' "$WORK/out.txt" | tail -n +3 | awk '{ print $2 }' | median)
  mem=$(grep -o 'peak memory [0-9]*' "$WORK/out.txt" | awk '{ print $3 }')
  echo "$mid $mem"
}

# Training FLOPs per token: 6 x the matmul weights that train (forward,
# input and weight gradients), 4 x the frozen ones (no weight gradient), and
# the attention scores and values, 12 x layers x T x C.
flops_per_token() {  # arch C L H K F T lora
  awk -v a="$1" -v C="$2" -v L="$3" -v H="$4" -v K="$5" -v F="$6" -v T="$7" -v r="$8" 'BEGIN {
    D = C / H
    block = (a == "gpt2") ? 12 * C * C : C * H * D + 2 * C * K * D + H * D * C + 3 * C * F
    n = L * block + 258 * C
    adapters = (a == "gpt2") ? L * r * (C + 3 * C) : L * r * (2 * C + H * D + K * D)
    print (r > 0 ? 4 * n + 6 * adapters : 6 * n) + 12 * L * T * C }'
}

for threads in ${THREADS:-1 $CORES}; do
  if [ "$threads" = 1 ]; then export OPENBLAS_NUM_THREADS=1; else unset OPENBLAS_NUM_THREADS; fi
  echo "== $threads thread(s)"
  # GEMM throughput through the same library: the MLP's shape and a square one.
  GEMM=0
  for shape in "1024 512 2048" "1024 1024 1024"; do
    line=$($PY bench/train_speed.py gemm $shape "$threads")
    echo "$line"
    GEMM=$(awk -v a="$GEMM" -v b="${line##* }" 'BEGIN { print (b > a ? b : a) }')
  done
  printf "%-12s %-5s %6s %10s %10s %10s %7s %13s %8s %8s\n" model train "B x T" "C++ tok/s" \
    "composed" "Py tok/s" "C++/Py" "(rounds)" "GFLOP/s" "of GEMM"
  while read -r name arch C L H K F steps B T lora; do
    method=$([ "$lora" -gt 0 ] && echo "lora" || echo "full")
    [[ "$name $method ${B}x$T" =~ ${ONLY:-.} ]] || continue
    fused="" composed="" py="" rounds=""
    for _ in $(seq "$REPEAT"); do
      read -r f _ <<<"$(cpp_speed "$name" "$threads" "$steps" "$B" "$T" "$lora" 1)"
      read -r c _ <<<"$(cpp_speed "$name" "$threads" "$steps" "$B" "$T" "$lora" 1 --no-fused-kernels)"
      p=$($PY bench/train_speed.py train "$arch" "$C" "$L" "$H" "$K" "$F" "$B" "$T" "$steps" \
        "$threads" "$lora" | awk '{ print $3 }')
      fused="$fused $f" composed="$composed $c" py="$py $p"
      rounds="$rounds $(awk -v f="$f" -v p="$p" 'BEGIN { printf "%.2f", f / p }')"
    done
    f=$(echo "$fused" | median)
    c=$(echo "$composed" | median)
    p=$(echo "$py" | median)
    lo=$(echo "$rounds" | tr ' ' '\n' | grep . | sort -g | head -1)
    hi=$(echo "$rounds" | tr ' ' '\n' | grep . | sort -g | tail -1)
    flops=$(flops_per_token "$arch" "$C" "$L" "$H" "$K" "$F" "$T" "$lora")
    awk -v n="$name" -v m="$method" -v f="$f" -v c="$c" -v p="$p" -v lo="$lo" -v hi="$hi" \
      -v fl="$flops" -v g="$GEMM" -v B="$B" -v T="$T" 'BEGIN {
      printf "%-12s %-5s %6s %10.0f %10.0f %10.0f %6.2fx %13s %8.1f %7.0f%%\n", n, m, B "x" T, f, c, p,
        f / p, lo "-" hi, f * fl / 1e9, 100 * f * fl / 1e9 / g }'
  done <<'CONFIGS'
tiny-gpt2 gpt2 128 4 4 4 512 40 8 128 0
tiny-llama llama 128 4 4 2 344 40 8 128 0
small-gpt2 gpt2 512 8 8 8 2048 10 8 128 0
small-llama llama 512 8 8 4 1376 10 8 128 0
small-gpt2 gpt2 512 8 8 8 2048 10 8 128 8
small-llama llama 512 8 8 4 1376 10 8 128 8
tiny-gpt2 gpt2 128 4 4 4 512 200 1 32 0
tiny-llama llama 128 4 4 2 344 200 1 32 0
CONFIGS
done

read -r _ one <<<"$(cpp_speed tiny-llama "$CORES" 24 8 128 0 1)"
read -r _ four <<<"$(cpp_speed tiny-llama "$CORES" 24 8 128 0 4)"
echo "tiny-llama peak memory: ${one} MB after 1 epoch, ${four} MB after 4 epochs"
