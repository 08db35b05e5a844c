#!/usr/bin/env bash
# Full fine-tuning against LoRA on the same model and data, in one run:
# training tokens/s, trained parameters and peak memory (the process's
# maximum resident set). Usage: bench/lora.sh BIN_DIR
#
# Each line trains one epoch of the first 64 examples of examples/hr.json at
# the workers' defaults (OpenMP PASSIVE, all cores).
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
cd "$(dirname "$0")/.."
DATA=$(mktemp --suffix=.json)
trap 'rm -f "$DATA"' EXIT
python3 -c "import json,sys; json.dump(json.load(open('examples/hr.json'))[:64], open(sys.argv[1],'w'))" "$DATA"

run() {  # model method extra-args...
  local model=$1 method=$2
  shift 2
  "$BIN/tuneforge-train" --model "$model" --data "$DATA" --validation "$DATA" --epochs 1 \
    --log-every 1 "$@" |
    awk -v m="$model" -v k="$method" '
      /^model:/ { gsub(/\(/, "", $4); trained = $4 }
      /tokens\/s/ { for (i = 1; i <= NF; i++) if ($i == "tokens/s") { s += $(i+1); n++ } }
      /peak memory/ { mem = $(NF-1) }
      END { printf "%-11s %-14s trained %10d  %7.0f tokens/s  peak %5d MB\n", m, k, trained, s / n, mem }'
}

echo "cores: $(nproc)"
for model in small-gpt2 small-llama; do
  run "$model" full
  run "$model" "lora r=8" --lora-rank 8
  run "$model" "lora r=8 all" --lora-rank 8 \
    --lora-targets "$( [ "$model" = small-gpt2 ] && echo c_attn,c_proj,c_fc || echo q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)"
done
