#!/usr/bin/env bash
# Training throughput of tuneforge-train against intra-op threads and
# OpenMP's idle policy, side by side in one run. Usage: engine_threads.sh BIN_DIR
#
# Each line trains one epoch of examples/hr.json (tiny-*) or its first 64
# examples (small-*, d_model 512) and reports the mean tokens/s of the run;
# the last lines compare GPT-2 and Llama of the same size at the default
# (PASSIVE, all cores).
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
cd "$(dirname "$0")/.."
SMALL=$(mktemp --suffix=.json)
trap 'rm -f "$SMALL"' EXIT
python3 -c "import json,sys; json.dump(json.load(open('examples/hr.json'))[:64], open(sys.argv[1],'w'))" "$SMALL"

run() {  # model data policy threads
  local model=$1 data=$2 policy=$3 threads=$4
  OMP_WAIT_POLICY=$policy "$BIN/tuneforge-train" --model "$model" --data "$data" \
    --validation "$data" --epochs 1 --log-every 1 --threads "$threads" |
    awk -v m="$model" -v p="$policy" -v t="$threads" '
      /tokens\/s/ { for (i = 1; i <= NF; i++) if ($i == "tokens/s") { s += $(i+1); n++ } }
      END { printf "%-11s %-8s threads=%d  %8.0f tokens/s\n", m, p, t, s / n }'
}

echo "cores: $(nproc)"
for policy in PASSIVE ACTIVE; do
  for threads in 1 2; do run tiny-gpt2 examples/hr.json "$policy" "$threads"; done
done
for policy in PASSIVE ACTIVE; do
  for threads in 1 2; do run small-gpt2 "$SMALL" "$policy" "$threads"; done
done
echo "GPT-2 vs Llama, PASSIVE, $(nproc) threads:"
run tiny-gpt2 examples/hr.json PASSIVE "$(nproc)"
run tiny-llama examples/hr.json PASSIVE "$(nproc)"
run small-gpt2 "$SMALL" PASSIVE "$(nproc)"
run small-llama "$SMALL" PASSIVE "$(nproc)"
