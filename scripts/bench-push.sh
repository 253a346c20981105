#!/usr/bin/env bash
# End-to-end push benchmark of `lucia all` (release build, WAL on, fsync
# policy `always`): throughput in MB/s of raw log lines from a separate
# load-generating process, resident memory, and bytes stored against raw
# bytes once everything is flushed. Results go into BENCHMARKS.md by hand.
#
#   scripts/bench-push.sh [SIZE_MB] [STREAMS] [ZSTD_LEVEL] [ENCODING]
#
# ZSTD_LEVEL and ENCODING (zstd-columns, zstd, snappy, none) default to the
# ingester's defaults. LUCIA_BIN runs a given binary instead of building one
# (to compare two builds side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/lucia-target}"
SIZE_MB="${1:-300}"
STREAMS="${2:-1000}"
LEVEL="${3:-}"
ENCODING="${4:-}"
GENLOGS="$(cd .. && pwd)/shared/tools/genlogs.py"

# /usr/bin/time (Debian's `time`) measures the server's CPU; zstd the baseline.
for tool in time zstd; do
    [ -x "/usr/bin/$tool" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$tool"
done
if [ -n "${LUCIA_BIN:-}" ]; then
    BIN="$LUCIA_BIN"
else
    cargo build --release --bin lucia
    BIN="$CARGO_TARGET_DIR/release/lucia"
fi
WORK="$(mktemp -d)"
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

python3 "$GENLOGS" --size-mb "$SIZE_MB" --format mixed -o "$WORK/logs.txt"
RAW_BYTES=$(wc -c <"$WORK/logs.txt")
cat >"$WORK/lucia.yaml" <<YAML
limits_config:
  ingestion_rate_mb: 100000
  ingestion_burst_size_mb: 100000
  max_global_streams_per_user: 1000000
  max_line_size: 0
ingester:
  chunk_block_size: 262144
${LEVEL:+  chunk_compression_level: $LEVEL}
${ENCODING:+  chunk_encoding: $ENCODING}
YAML
PORT=3190
# Under /usr/bin/time, for the CPU of the whole run including the final
# flush (head blocks still open at the end are compressed then).
/usr/bin/time -f "%U %S" -o "$WORK/cpu.txt" \
    "$BIN" all --config.file "$WORK/lucia.yaml" --data.dir "$WORK/data" \
    --http.listen-address "127.0.0.1:$PORT" --log.level warn &
TIME_PID=$!
until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.2; done
PID=$(pgrep -P "$TIME_PID")
# CPU seconds the server spent (user + system), from /proc/PID/stat.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$PID/stat"; }
CPU_BEFORE=$(cpu_seconds)

"$BIN" bench push --url "http://127.0.0.1:$PORT/loki/api/v1/push" \
    --input "$WORK/logs.txt" --streams "$STREAMS" --concurrency 8
CPU_AFTER=$(cpu_seconds)
echo "server CPU during the push: $(python3 -c "print(round($CPU_AFTER - $CPU_BEFORE, 2))") s; raw MB per server CPU-second: $(python3 -c "print(round($RAW_BYTES / 1e6 / max($CPU_AFTER - $CPU_BEFORE, 0.01), 1))")"
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
echo "resident memory after the push: $((RSS_KB / 1024)) MiB (peak $((HWM_KB / 1024)) MiB) with $STREAMS streams"

kill -TERM "$PID"
wait "$TIME_PID"
CPU_TOTAL=$(awk '{print $1 + $2}' "$WORK/cpu.txt")
echo "server CPU during the push and the final flush: $(python3 -c "print(round($CPU_TOTAL - $CPU_BEFORE, 2))") s; raw MB per server CPU-second: $(python3 -c "print(round($RAW_BYTES / 1e6 / max($CPU_TOTAL - $CPU_BEFORE, 0.01), 1))")"
# Object bytes only: directories are an artefact of the local filesystem store.
STORED=$(find "$WORK/data/chunks" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
ZSTD3=$(zstd -3 -c -q "$WORK/logs.txt" | wc -c)
echo "raw bytes: $RAW_BYTES, stored chunk+index bytes: $STORED, ratio: $(python3 -c "print(round($RAW_BYTES/$STORED, 2))")x"
echo "same data through zstd -3 as one stream: $ZSTD3 bytes, ratio: $(python3 -c "print(round($RAW_BYTES/$ZSTD3, 2))")x"
