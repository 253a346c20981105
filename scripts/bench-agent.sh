#!/usr/bin/env bash
# Agent benchmark: `lucia agent` tailing (1) one large file and (2) 1,000
# small files into a local `lucia all`, against `cat` of the same files as
# the ceiling. Reports lines/s, MB/s, the agent's CPU-seconds and RSS.
#
#   scripts/bench-agent.sh [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/lucia-target}"
SIZE_MB="${1:-200}"
GENLOGS="$(cd .. && pwd)/shared/tools/genlogs.py"

cargo build --release --bin lucia
BIN="$CARGO_TARGET_DIR/release/lucia"
WORK="$(mktemp -d)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

mkdir -p "$WORK/large" "$WORK/small"
python3 "$GENLOGS" --size-mb "$SIZE_MB" --format mixed -o "$WORK/large/app.log"
(cd "$WORK/small" && split -n l/1000 -d -a 4 "$WORK/large/app.log" part- && for f in part-*; do mv "$f" "$f.log"; done)
LINES=$(wc -l <"$WORK/large/app.log")
BYTES=$(wc -c <"$WORK/large/app.log")

cat >"$WORK/lucia.yaml" <<YAML
limits_config:
  ingestion_rate_mb: 100000
  ingestion_burst_size_mb: 100000
  max_global_streams_per_user: 1000000
  max_line_size: 0
YAML
"$BIN" all --config.file "$WORK/lucia.yaml" --data.dir "$WORK/data" \
    --http.listen-address 127.0.0.1:3194 --log.level warn &
PIDS+=($!)
until curl -sf http://127.0.0.1:3194/ready >/dev/null; do sleep 0.2; done

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
sent_entries() { { curl -sf "http://127.0.0.1:$1/metrics" || true; } | awk '/^promtail_sent_entries_total/ {s += $2} END {print s + 0}'; }

run_case() { # name, glob, agent port
    local name="$1" glob="$2" port="$3" pid t0 t1
    cat >"$WORK/agent-$port.yaml" <<YAML
server:
  http_listen_port: $port
positions:
  filename: $WORK/positions-$port.yaml
  sync_period: 1s
clients:
  - url: http://127.0.0.1:3194/loki/api/v1/push
scrape_configs:
  - job_name: bench
    static_configs:
      - targets: [localhost]
        labels:
          job: bench-$port
          __path__: $glob
YAML
    t0=$(date +%s.%N)
    "$BIN" agent --config.file "$WORK/agent-$port.yaml" --log.level warn &
    pid=$!
    PIDS+=("$pid")
    until [ "$(sent_entries "$port")" -ge "$LINES" ]; do sleep 0.1; done
    t1=$(date +%s.%N)
    python3 - "$name" "$LINES" "$BYTES" "$t0" "$t1" "$(cpu_seconds "$pid")" "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")" <<'PY'
import sys
name, lines, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0, t1, cpu, hwm_kb = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
secs = t1 - t0
print(f"{name}: {secs:.2f}s wall, {lines/secs:,.0f} lines/s, {size/1e6/secs:.1f} MB/s; "
      f"agent CPU {cpu:.2f}s = {size/1e6/max(cpu, 1e-3):.1f} MB per CPU-second; peak RSS {hwm_kb/1024:.0f} MiB")
PY
    kill "$pid"; wait "$pid" || true
}

run_case "one large file ($SIZE_MB MB)" "$WORK/large/*.log" 9081
run_case "1,000 small files" "$WORK/small/*.log" 9082

T0=$(date +%s.%N)
cat "$WORK"/large/*.log "$WORK"/small/*.log >/dev/null
T1=$(date +%s.%N)
python3 -c "print(f'cat of both sets (ceiling): {2*$BYTES/1e6/($T1-$T0):.0f} MB/s')"
