#!/usr/bin/env bash
# The demo: a scheduler with one local worker on a free loopback port, the HR
# example dataset uploaded, tiny-gpt2 fine-tuned on it while the CLI streams
# progress, then everything shut down. Usage: scripts/demo.sh BIN_DIR
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
cd "$(dirname "$0")/.."
DEMO=.demo
rm -rf "$DEMO" && mkdir -p "$DEMO"

"$BIN/tuneforge-server" --listen=127.0.0.1:0 --port-file="$DEMO/port" \
  --data-dir="$DEMO/data" --local-workers=1 >"$DEMO/server.log" 2>&1 &
SERVER=$!
stop() {
  kill -TERM "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 100); do [ -s "$DEMO/port" ] && break; sleep 0.1; done
[ -s "$DEMO/port" ] || { echo "the server did not start; see $DEMO/server.log"; cat "$DEMO/server.log"; exit 1; }
export TUNEFORGE_ADDR="127.0.0.1:$(cat "$DEMO/port")"
TF="$BIN/tuneforge"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Server on $TUNEFORGE_ADDR with one local worker. Base models:"
"$TF" models list

step "Uploading examples/hr.json (208 HR question/answer pairs)"
"$TF" datasets upload examples/hr.json
DATASET=$("$TF" -o name datasets list | tail -n 1)

step "Fine-tuning tiny-gpt2: 6 epochs, 10% of the examples held out for validation"
JOB=$("$TF" -o name jobs create --model tiny-gpt2 --training-dataset "$DATASET" \
  --epochs 6 --batch-size 8 --learning-rate 3e-3 --warmup-steps 20 --log-every 6)
echo "created $JOB. In another shell, poll it with:"
echo "  TUNEFORGE_ADDR=$TUNEFORGE_ADDR $BIN/tuneforge jobs get $JOB"

step "Streaming $JOB (train loss every 6 steps, validation loss every epoch)"
"$TF" jobs watch "$JOB"

step "The trained model is stored as a model of its own (fine-tune it further with --model $JOB)"
"$TF" models get "models/ft-${JOB#jobs/}"

step "Done. Shutting down the server and its worker."
