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
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
ROUNDS=${2:-2}
CORES=$(nproc)
cd "$(dirname "$0")/.."
SMALL=$(mktemp --suffix=.json)
OUT=$(mktemp -d)
trap 'rm -rf "$SMALL" "$OUT"' EXIT
python3 -c "import json,sys; json.dump(json.load(open('examples/hr.json'))[:64], open(sys.argv[1],'w'))" "$SMALL"

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
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
