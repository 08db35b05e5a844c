#!/usr/bin/env bash
# The scheduler under load, with a real server on loopback (no workers), in
# one run: GetJob calls/s and p50/p99 latency with 1 and 64 concurrent
# callers beside the standard health Check of the same server (an empty
# call: the ceiling here), without and with a tokens file; CreateJob per second (each commits to disk before
# it returns); the delay of one event to 1,000 concurrent watchers; and the
# server's memory with 100,000 jobs stored. Usage: bench/scheduler.sh BIN_DIR
set -euo pipefail
BIN=$(cd "${1:-build/bin}" && pwd)
SECONDS_PER_MEASURE=${SECONDS_PER_MEASURE:-5}
WORK=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

DATA="$WORK/data"
start_server() {
  rm -f "$WORK/port"
  "$BIN/tuneforge-server" --listen=127.0.0.1:0 --port-file="$WORK/port" --data-dir="$DATA" \
    --local-workers=0 "$@" >"$WORK/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
  ADDR=127.0.0.1:$(cat "$WORK/port")
}
stop_server() { kill "$SERVER"; wait "$SERVER" || true; SERVER=; }
rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER/status"; }

echo "cores: $(nproc)"
start_server
"$BIN/tuneforge-bench-scheduler" --addr "$ADDR" --seconds "$SECONDS_PER_MEASURE" --watchers 1000
echo "server memory after the load: $(rss_mb) MB"
stop_server

# The same reads with authentication: a tokens file of 1,000 users (each
# call hashes its token and compares it with every digest), and an audit log;
# then another tenant's GetJob and CancelJob on that job beside the same
# calls on a missing id: the time must not tell them apart.
echo "with a tokens file of 1000 tokens:"
TOKEN_LINES=$("$BIN/tuneforge-server" token --role=user --name=bench --tenant=bench 2>/dev/null)
TOKEN=$(echo "$TOKEN_LINES" | head -1)
OTHER_LINES=$("$BIN/tuneforge-server" token --role=user --name=prober --tenant=other 2>/dev/null)
{ echo "$TOKEN_LINES" | tail -1
  echo "$OTHER_LINES" | tail -1
  for i in $(seq 999); do
    echo "user u$i team-$((i % 50)) sha256:$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)"
  done; } >"$WORK/tokens"
# A data directory of its own, as the first measure had: a job or two.
DATA="$WORK/data-tokens"
start_server --tokens-file="$WORK/tokens"
"$BIN/tuneforge-bench-scheduler" --addr "$ADDR" --seconds "$SECONDS_PER_MEASURE" \
  --token "$TOKEN" --other-token "$(echo "$OTHER_LINES" | head -1)" --reads-only
stop_server
DATA="$WORK/data"

# 100,000 finished jobs (copies of one real record), inserted offline, then
# the server started on them: memory at rest, and after paging through every
# job with ListJobs and reading 2,000 of them with GetJob.
DB="$WORK/data/tuneforge.db"
sqlite3 "$DB" "
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO jobs (id, state, request_id, training_dataset, validation_dataset, labels, record)
SELECT 'bulk' || i, 3, NULL, j.training_dataset, j.validation_dataset, j.labels,
       json_set(j.record, '\$.id', 'bulk' || i, '\$.state', 'SUCCEEDED', '\$.request_id', '')
FROM n, (SELECT * FROM jobs ORDER BY seq LIMIT 1) AS j;"
stored=$(sqlite3 "$DB" "SELECT COUNT(*) FROM jobs")
active=$(sqlite3 "$DB" "SELECT COUNT(*) FROM jobs WHERE state IN (1, 2, 6)")
start_server
sleep 1
echo "jobs stored: $stored ($active queued); server memory at rest: $(rss_mb) MB"
"$BIN/tuneforge-bench-scheduler" --addr "$ADDR" --read-all
echo "server memory after reading every job: $(rss_mb) MB"
