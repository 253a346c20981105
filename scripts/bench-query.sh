#!/usr/bin/env bash
# Read-path benchmark: LogQL over flushed chunks in `lucia all` (release),
# side by side in one run with `zstd -dc | grep -F` over the same logs.
#
#   scripts/bench-query.sh [SIZE_MB]
#
# Pushes SIZE_MB of genlogs' mixed logs over 100 streams, stops lucia (which
# flushes every chunk to the store), starts it again (so every query reads
# the store), then times:
#   1. {job="bench"} |= "<needle that never occurs>"  (a full scan)
#   2. sum by (detected_level) (count_over_time({job="bench"}[1m]))
#   3. the same line filter as `zstd -dc logs.zst | grep -F -c <needle>`
# and reports raw GB/s (per CPU-second of the measured process).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/lucia-target}"
SIZE_MB="${1:-1000}"
GENLOGS="$(cd .. && pwd)/shared/tools/genlogs.py"
NEEDLE="needle-that-never-occurs-7f3a"

# LUCIA_BIN runs a given binary instead of building one.
if [ -n "${LUCIA_BIN:-}" ]; then
    BIN="$LUCIA_BIN"
else
    cargo build --release --bin lucia
    BIN="$CARGO_TARGET_DIR/release/lucia"
fi
WORK="$(mktemp -d)"
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID"; rm -rf "$WORK"' EXIT

python3 "$GENLOGS" --size-mb "$SIZE_MB" --format mixed -o "$WORK/logs.txt"
RAW_BYTES=$(wc -c <"$WORK/logs.txt")
cat >"$WORK/lucia.yaml" <<YAML
limits_config:
  ingestion_rate_mb: 100000
  ingestion_burst_size_mb: 100000
  max_global_streams_per_user: 1000000
  max_line_size: 0
querier:
  max_query_length: 0
  max_query_series: 1000000
  query_timeout: 10m
YAML
PORT=3192
URL="http://127.0.0.1:$PORT"
start_lucia() {
    "$BIN" all --config.file "$WORK/lucia.yaml" --data.dir "$WORK/data" \
        --http.listen-address "127.0.0.1:$PORT" --log.level warn &
    PID=$!
    until curl -sf "$URL/ready" >/dev/null; do sleep 0.2; done
}
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

start_lucia
"$BIN" bench push --url "$URL/loki/api/v1/push" --input "$WORK/logs.txt" --streams 100 --concurrency 8
kill -TERM "$PID"; wait "$PID"
start_lucia

NOW=$(date +%s)
START=$(( (NOW - 3600) * 1000000000 ))
END=$(( (NOW + 60) * 1000000000 ))
time_query() { # name, query
    local before after t0 t1
    before=$(cpu_seconds "$PID")
    t0=$(date +%s.%N)
    curl -sf -G "$URL/loki/api/v1/query_range" --data-urlencode "query=$2" \
        --data-urlencode "start=$START" --data-urlencode "end=$END" \
        --data-urlencode "limit=100" --data-urlencode "step=60s" -o "$WORK/out.json"
    t1=$(date +%s.%N)
    after=$(cpu_seconds "$PID")
    python3 - "$1" "$RAW_BYTES" "$t0" "$t1" "$before" "$after" "$WORK/out.json" <<'PY'
import json, sys
name, raw, t0, t1, c0, c1, path = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:7]), sys.argv[7]
body = json.load(open(path))
secs, cpu = t1 - t0, max(c1 - c0, 1e-3)
print(f"{name}: {secs:.2f}s wall, {cpu:.2f} CPU-s, {raw/1e9/secs:.2f} GB/s raw, {raw/1e9/cpu:.2f} GB/s per CPU-second, "
      f"{len(body['data']['result'])} results")
PY
}
time_query "line filter over flushed chunks" "{job=\"bench\"} |= \"$NEEDLE\""
time_query "sum by (detected_level) (count_over_time[1m])" "sum by (detected_level) (count_over_time({job=\"bench\"}[1m]))"

zstd -3 -q -c "$WORK/logs.txt" >"$WORK/logs.zst"
T0=$(date +%s.%N)
( zstd -dc "$WORK/logs.zst" | grep -F -c "$NEEDLE" ) >/dev/null || true
T1=$(date +%s.%N)
python3 -c "import sys; raw, t0, t1 = $RAW_BYTES, $T0, $T1; print(f'zstd -dc | grep -F (two processes, up to two cores): {t1-t0:.2f}s wall, {raw/1e9/(t1-t0):.2f} GB/s raw')"

# Label and series endpoints with 100,000 streams (in the ingester's memory).
kill -TERM "$PID"; wait "$PID"
rm -rf "$WORK/data"
start_lucia
head -c 100000000 "$WORK/logs.txt" >"$WORK/logs100.txt"
"$BIN" bench push --url "$URL/loki/api/v1/push" --input "$WORK/logs100.txt" --streams 100000 --concurrency 8
time_get() { # name, path and query string
    local t0 t1
    t0=$(date +%s.%N)
    curl -sf "$URL$2" -o "$WORK/out.json"
    t1=$(date +%s.%N)
    python3 - "$1" "$t0" "$t1" "$WORK/out.json" <<'PY'
import json, sys
name, t0, t1, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
data = json.load(open(path))["data"]
print(f"{name}: {(t1 - t0) * 1000:.0f} ms, {len(data)} items")
PY
}
time_get "labels (100,000 streams)" "/loki/api/v1/labels?start=$START&end=$END"
time_get "label/stream/values (100,000 streams)" "/loki/api/v1/label/stream/values?start=$START&end=$END"
time_get "series {job=\"bench\"} (100,000 streams)" "/loki/api/v1/series?match%5B%5D=%7Bjob%3D%22bench%22%7D&start=$START&end=$END"
