#!/usr/bin/env bash
# Data-parallel training against one process, side by side in one run.
# Usage: data_parallel.sh BIN_DIR [ROUNDS]
#
# Every line trains the same optimizer steps (N = the cores micro-batches
# of 4 examples each) for one epoch of examples/hr.json (tiny-*) or its
# first 64 examples (small-*, d_model 512):
#   1 process, 1 core        --grad-accum N --threads 1, OpenBLAS on 1 thread
#   1 process, all cores     --grad-accum N (intra-op and OpenBLAS threads on every core)
#   N ranks x 1 core         --world-size N (N = the cores), one micro-batch
#                            each, OpenBLAS on 1 thread, over loopback
# and prints the run's wall time, the mean of its reported tokens/s and its
# final training loss (the same in all three: the runs take the same steps).
# Rounds alternate the three so drift on this machine hits them alike.
#
# Then the ranks against the same data-parallel loop in Python
# (bench/data_parallel.py: DistributedDataParallel over Gloo, same libtorch,
# model, batch shape, loss, clipping and AdamW): N ranks x 1 core, each
# training 4 sequences of exactly 128 tokens per step (random letters, as
# text documents), tokens/s of all ranks at the median step, ROUNDS
# alternated runs per side, their medians and the per-round ratios.
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
ROUNDS=${2:-2}
CORES=$(nproc)
cd "$(dirname "$0")/.."
SMALL=$(mktemp --suffix=.json)
OUT=$(mktemp -d)
trap 'rm -rf "$SMALL" "$OUT"' EXIT
python3 -c "import json,sys; json.dump(json.load(open('examples/hr.json'))[:64], open(sys.argv[1],'w'))" "$SMALL"

PY=/usr/bin/python3
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
source bench/common.sh  # docs, median

summary() {  # log -> "tokens/s loss"
  awk '/tokens\/s/ { for (i = 1; i <= NF; i++) if ($i == "tokens/s") { s += $(i+1); n++ } }
       /^done:/ { sub(",", "", $5); loss = $5 }
       END { printf "%8.0f %s\n", s / n, loss }' "$1"
}

run() {  # label model data: one line
  local label=$1 model=$2 data=$3
  local args=(--model "$model" --data "$data" --validation "$data" --epochs 1 --log-every 1
              --batch-size 4)
  local start end
  start=$(date +%s.%N)
  case $label in
    one-core)
      OPENBLAS_NUM_THREADS=1 "$BIN/tuneforge-train" "${args[@]}" --grad-accum "$CORES" \
        --threads 1 > "$OUT/r0" ;;
    all-cores) "$BIN/tuneforge-train" "${args[@]}" --grad-accum "$CORES" > "$OUT/r0" ;;
    ranks)
      local port rank
      port=$(free_port)
      local dp=(--world-size "$CORES" --rendezvous "127.0.0.1:$port" --threads 1)
      for rank in $(seq 1 $((CORES - 1))); do
        OPENBLAS_NUM_THREADS=1 "$BIN/tuneforge-train" "${args[@]}" "${dp[@]}" --rank "$rank" \
          > "$OUT/r$rank" &
      done
      OPENBLAS_NUM_THREADS=1 "$BIN/tuneforge-train" "${args[@]}" "${dp[@]}" --rank 0 > "$OUT/r0"
      wait
      ;;
  esac
  end=$(date +%s.%N)
  read -r tps loss < <(summary "$OUT/r0")
  printf "%-11s %-22s %6.1f s  %8s tokens/s  final loss %s\n" "$model" \
    "$(case $label in one-core) echo '1 process, 1 core';; all-cores) echo '1 process, all cores';;
                      ranks) echo "$CORES ranks x 1 core";; esac)" \
    "$(echo "$end - $start" | bc)" "$tps" "$loss"
}

echo "cores: $(nproc), rounds: $ROUNDS"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for model in tiny-gpt2 tiny-llama; do
    for label in one-core all-cores ranks; do run "$label" "$model" examples/hr.json; done
  done
  for model in small-gpt2 small-llama; do
    for label in one-core all-cores ranks; do run "$label" "$model" "$SMALL"; done
  done
done

# preset steps B T -> tokens/s of every rank at the median step (rank 0's report)
cpp_ranks() {
  local preset=$1 steps=$2 b=$3 t=$4 port rank
  docs $((steps * b * CORES)) "$t" "$OUT/docs.txt"
  port=$(free_port)
  local args=(--model "$preset" --data "$OUT/docs.txt" --separator '<DOC>' --validation-split 0
              --max-seq-len "$t" --batch-size "$b" --epochs 1 --log-every 1 --threads 1
              --world-size "$CORES" --rendezvous "127.0.0.1:$port")
  for rank in $(seq 1 $((CORES - 1))); do
    OPENBLAS_NUM_THREADS=1 "$BIN/tuneforge-train" "${args[@]}" --rank "$rank" > /dev/null &
  done
  OPENBLAS_NUM_THREADS=1 "$BIN/tuneforge-train" "${args[@]}" --rank 0 > "$OUT/r0"
  wait
  grep -o 'tokens/s [0-9]*' "$OUT/r0" | tail -n +3 | awk '{ print $2 }' | median
}

# arch C L H K F steps B T -> the same from Python's ranks
py_ranks() {
  local port rank
  port=$(free_port)
  for rank in $(seq 1 $((CORES - 1))); do
    OPENBLAS_NUM_THREADS=1 $PY bench/data_parallel.py "$rank" "$CORES" "$port" "$@" > /dev/null &
  done
  OPENBLAS_NUM_THREADS=1 $PY bench/data_parallel.py 0 "$CORES" "$port" "$@" | awk '{ print $3 }'
  wait
}

echo "against Python DDP: $CORES ranks x 1 core, 4 x 128 tokens per rank and step"
printf "%-12s %10s %10s %7s %13s\n" model "C++ tok/s" "Py tok/s" "C++/Py" "(rounds)"
while read -r name arch C L H K F steps; do
  cpp="" py="" rounds=""
  for _ in $(seq "$ROUNDS"); do
    c=$(cpp_ranks "$name" "$steps" 4 128)
    p=$(py_ranks "$arch" "$C" "$L" "$H" "$K" "$F" 4 128 "$steps")
    cpp="$cpp $c" py="$py $p"
    rounds="$rounds $(awk -v c="$c" -v p="$p" 'BEGIN { printf "%.2f", c / p }')"
  done
  c=$(echo "$cpp" | median)
  p=$(echo "$py" | median)
  lo=$(echo "$rounds" | tr ' ' '\n' | grep . | sort -g | head -1)
  hi=$(echo "$rounds" | tr ' ' '\n' | grep . | sort -g | tail -1)
  awk -v n="$name" -v c="$c" -v p="$p" -v lo="$lo" -v hi="$hi" \
    'BEGIN { printf "%-12s %10.0f %10.0f %6.2fx %13s\n", n, c, p, c / p, lo "-" hi }'
done <<'CONFIGS'
tiny-gpt2 gpt2 128 4 4 4 512 40
tiny-llama llama 128 4 4 2 344 40
small-gpt2 gpt2 512 8 8 8 2048 12
small-llama llama 512 8 8 4 1376 12
CONFIGS
