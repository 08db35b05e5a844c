#!/usr/bin/env bash
# What the engine's batching and memory options buy, in one run, on the
# same data and model. Usage: bench/engine_options.sh BIN_DIR
#
# Batching: one epoch of examples/hr.json (prompt/completion pairs of 98 to
# 282 tokens; the first 96 for small-gpt2) on tiny-gpt2 and small-gpt2, with
# batches of 8 padded in random order, padded and grouped by length (the
# default), or packed into rows of max_seq_len (512, capped by the context:
# 256 for tiny-gpt2): optimizer steps, real (unpadded) tokens/s and the
# validation loss after the epoch.
# Recomputation: small-gpt2 and small-llama on text documents of 512 tokens,
# batch 4, with and without recomputing blocks in backward: tokens/s and the
# process's peak memory.
# Workers' defaults: OpenMP PASSIVE, all cores.
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=PASSIVE
PY=/usr/bin/python3
$PY -c "import json,sys; json.dump(json.load(open('examples/hr.json'))[:96], open(sys.argv[1],'w'))" "$WORK/hr96.json"

summary() {  # label -> one line from tuneforge-train's output on stdin
  awk -v k="$1" '
    / step [0-9]+\/[0-9]+ / { split($4, s, "/"); steps = s[2] }
    /tokens\/s/ { for (i = 1; i <= NF; i++) if ($i == "tokens/s") { t += $(i+1); n++ } }
    /^epoch .*validation_loss/ { for (i = 1; i <= NF; i++) if ($i == "validation_loss") v = $(i+1) }
    /^packed/ { rows = $5 }
    /peak memory/ { mem = $(NF-1) }
    END { printf "%-42s steps %3d  %6.0f tokens/s  val_loss %-6s  peak %5d MB\n", k, steps, t / n, (v == "" ? "-" : v), mem }'
}

batching() {  # model data
  for mode in "padded, random order:--no-group-by-length" "padded, grouped by length:" "packed into rows of max_seq_len:--packing"; do
    local label=${mode%%:*} flag=${mode#*:}
    local start=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$BIN/tuneforge-train" --model "$1" --data "$2" --validation-split 0.1 --epochs 1 \
      --log-every 1 --max-seq-len 512 --learning-rate 1e-3 $flag | summary "$1 $label"
  done
}

echo "cores: $(nproc)"
echo "== batching (one epoch)"
batching tiny-gpt2 examples/hr.json
batching small-gpt2 "$WORK/hr96.json"

echo "== recomputation (text documents of 512 tokens, batch 4)"
$PY -c "
import random, sys
random.seed(1)
docs = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz ') for _ in range(512)) for _ in range(24)]
open(sys.argv[1], 'w').write('<DOC>'.join(docs))" "$WORK/docs.txt"
for model in small-gpt2 small-llama; do
  for flag in "" --recompute-activations; do
    # shellcheck disable=SC2086
    "$BIN/tuneforge-train" --model "$model" --data "$WORK/docs.txt" --separator '<DOC>' \
      --validation-split 0 --max-seq-len 512 --batch-size 4 --epochs 1 --log-every 1 $flag |
      summary "$model ${flag:-stored activations}"
  done
done
