#!/usr/bin/env bash
# Training speed of tuneforge-train against the same training step written in
# Python with PyTorch (bench/train_speed.py: same libtorch, same model, batch
# shape, loss, clipping and AdamW), in one run; the FLOP/s that speed means,
# as a fraction of the GEMM throughput measured here in the same run; and
# peak memory after 1 and after 4 epochs. Usage: bench/train_speed.sh BIN_DIR
#
# Speeds are at the median step (this machine's timings jump between runs).
# Every step is a batch of B sequences of exactly T tokens (random letters,
# as plain-text documents of T bytes), so both sides see the same shapes:
# B=8, T=128 for the FLOP rows, and B=1, T=32 for rows where each operation
# is small and what runs between kernels shows; both use all cores with
# OpenMP's PASSIVE idle policy. Timings here move by 15% between runs, so
# each row alternates the two sides REPEAT times (default 3) and compares
# their median runs.
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
cd "$(dirname "$0")/.."
THREADS=$(nproc)
REPEAT=${REPEAT:-3}
B=8
T=128
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=PASSIVE
PY=/usr/bin/python3

docs() {  # count -> a text file of `count` documents of T letters
  $PY -c "
import random, sys
random.seed(1)
docs = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz ') for _ in range($T)) for _ in range(int(sys.argv[1]))]
open(sys.argv[2], 'w').write('<DOC>'.join(docs))" "$1" "$2"
}

# GEMM throughput through the same library: the MLP's shape and a square one.
GEMM=0
for shape in "$((B * T)) 512 2048" "1024 1024 1024"; do
  line=$($PY bench/train_speed.py gemm $shape "$THREADS")
  echo "$line"
  GEMM=$(awk -v a="$GEMM" -v b="${line##* }" 'BEGIN { print (b > a ? b : a) }')
done

cpp_speed() {  # preset steps epochs -> "tokens/s-at-the-median-step peak_MB" (uses B, T)
  docs $(($2 * B)) "$WORK/data.txt"
  "$BIN/tuneforge-train" --model "$1" --data "$WORK/data.txt" --separator '<DOC>' \
    --validation-split 0 --max-seq-len $T --batch-size $B --epochs "$3" --log-every 1 \
    --threads "$THREADS" >"$WORK/out.txt"
  local median mem
  median=$(grep -o 'tokens/s [0-9]*' "$WORK/out.txt" | tail -n +3 | awk '{ print $2 }' | sort -n |
    awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  mem=$(grep -o 'peak memory [0-9]*' "$WORK/out.txt" | awk '{ print $3 }')
  echo "$median $mem"
}

# name arch d_model layers heads kv_heads d_ff steps batch length
printf "%-12s %8s %10s %10s %7s %12s %9s\n" model "B x T" "C++ tok/s" "Py tok/s" ratio "C++ GFLOP/s" "of GEMM"
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

while read -r name arch C L H K F steps B T; do
  # C++ and Python alternate REPEAT times; each side's median run counts.
  cpps="" pys=""
  for _ in $(seq "$REPEAT"); do
    read -r c _ <<<"$(cpp_speed "$name" "$steps" 1)"
    cpps="$cpps $c"
    pys="$pys $($PY bench/train_speed.py train "$arch" "$C" "$L" "$H" "$K" "$F" $B $T "$steps" "$THREADS" | awk '{ print $3 }')"
  done
  cpp=$(echo "$cpps" | median)
  py=$(echo "$pys" | median)
  # Training FLOPs per token: 6 x the matmul weights (blocks and head) plus
  # the attention scores and values, 12 x layers x T x C.
  flops=$(awk -v a="$arch" -v C="$C" -v L="$L" -v H="$H" -v K="$K" -v F="$F" -v T=$T 'BEGIN {
    D = C / H
    block = (a == "gpt2") ? 12 * C * C : C * H * D + 2 * C * K * D + H * D * C + 3 * C * F
    print 6 * (L * block + 258 * C) + 12 * L * T * C }')
  awk -v n="$name" -v c="$cpp" -v p="$py" -v f="$flops" -v g="$GEMM" -v B="$B" -v T="$T" 'BEGIN {
    printf "%-12s %8s %10.0f %10.0f %6.2fx %12.1f %8.0f%%\n", n, B "x" T, c, p, c / p, c * f / 1e9, 100 * c * f / 1e9 / g }'
done <<'CONFIGS'
tiny-gpt2 gpt2 128 4 4 4 512 60 8 128
tiny-llama llama 128 4 4 2 344 60 8 128
small-gpt2 gpt2 512 8 8 8 2048 16 8 128
small-llama llama 512 8 8 4 1376 16 8 128
tiny-gpt2 gpt2 128 4 4 4 512 300 1 32
tiny-llama llama 128 4 4 2 344 300 1 32
CONFIGS
B=8
T=128

read -r _ one <<<"$(cpp_speed tiny-llama 24 1)"
read -r _ four <<<"$(cpp_speed tiny-llama 24 4)"
echo "tiny-llama peak memory: ${one} MB after 1 epoch, ${four} MB after 4 epochs"
