#!/usr/bin/env bash
# Upload + validate throughput over loopback, and the server's peak memory as
# the file grows. Usage: bench/upload.sh BIN_DIR [SIZES_MB...]
#
# For each size, a generated prompt/completion JSONL file goes through
# `tuneforge datasets upload` (which hashes the file, then streams it) to a
# local tuneforge-server, which writes it to disk, hashes it and validates
# every record as the chunks arrive. Reported: wall time of the upload
# command, MB/s, and the server's peak resident memory (VmHWM) after it.
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
shift || true
SIZES=("${@:-50 200}")
read -r -a SIZES <<<"${SIZES[*]}"
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT

"$BIN/tuneforge-server" --listen=127.0.0.1:0 --port-file="$WORK/port" --data-dir="$WORK/data" \
  --max-upload-bytes=$((4 << 30)) >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
ADDR="127.0.0.1:$(cat "$WORK/port")"
hwm() { awk '/VmHWM/ {print $2 / 1024}' "/proc/$SERVER/status"; }

printf 'server peak memory at start: %.0f MB\n' "$(hwm)"
for mb in "${SIZES[@]}"; do
  python3 - "$WORK/d$mb.jsonl" "$mb" <<'PY'
import json, random, sys
path, mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(mb)
words = "leave policy employee manager payroll benefit holiday contract notice review".split()
with open(path, "w") as f:
    size = 0
    while size < mb * 1_000_000:
        rec = json.dumps({"prompt": " ".join(rng.choices(words, k=12)) + "?",
                          "completion": " ".join(rng.choices(words, k=40)) + "."}) + "\n"
        f.write(rec)
        size += len(rec)
PY
  bytes=$(stat -c %s "$WORK/d$mb.jsonl")
  start=$(date +%s.%N)
  "$BIN/tuneforge" --addr="$ADDR" datasets upload "$WORK/d$mb.jsonl" >/dev/null
  end=$(date +%s.%N)
  awk -v b="$bytes" -v s="$start" -v e="$end" -v h="$(hwm)" \
    'BEGIN { printf "%4d MB  %6.2f s  %6.1f MB/s  server peak memory %.0f MB\n", b/1e6, e-s, b/1e6/(e-s), h }'
  rm -f "$WORK/d$mb.jsonl"
done
