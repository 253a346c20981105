#!/usr/bin/env bash
# Remote-write benchmark, side by side in one run: the same workload
# (`lucia bench remote-write`: SERIES series, DURATION of 15 s samples, sent
# as fast as the server takes it) into Lucia's tsdb and into Prometheus 2.42
# (Debian's `prometheus`, --web.enable-remote-write-receiver), one after the
# other. Prints CPU seconds per million samples, peak and final resident
# memory, memory per active series, and bytes per sample of the compacted
# blocks.
#
# usage: scripts/bench-tsdb.sh [SERIES] [DURATION]   (default 100000 4h)
# The data spans DURATION ending now, so both servers compact the oldest
# block (Prometheus once its head spans 3 h, Lucia an hour after a block
# ends).
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${1:-100000}
DURATION=${2:-4h}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/lucia-target}"
cargo build --release --bin lucia >/dev/null
BIN="$CARGO_TARGET_DIR/release/lucia"
WORK=$(mktemp -d /tmp/bench-tsdb.XXXXXX)
TICK=$(getconf CLK_TCK)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

cpu_seconds() { awk -v t="$TICK" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m {s += $2} END {print s + 0}'; }
wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "http://$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "not ready: $1" >&2
    exit 1
}

run() { # name addr pid
    local name=$1 addr=$2 pid=$3
    local cpu0 rss0 out samples cpu1 hwm rss1
    cpu0=$(cpu_seconds "$pid")
    rss0=$(status_kb "$pid" VmRSS)
    out=$("$BIN" bench remote-write --url "http://$addr/api/v1/write" --series "$SERIES" --duration "$DURATION")
    echo "$name: $out"
    samples=$(echo "$out" | awk '{print $2}')
    cpu1=$(cpu_seconds "$pid")
    hwm=$(status_kb "$pid" VmHWM)
    rss1=$(status_kb "$pid" VmRSS)
    awk -v n="$name" -v c0="$cpu0" -v c1="$cpu1" -v s="$samples" -v h="$hwm" -v r0="$rss0" -v r1="$rss1" -v series="$SERIES" 'BEGIN {
        printf "%s: %.2f CPU s per million samples; peak RSS %.0f MiB; RSS after %.0f MiB; %.0f bytes of memory per active series\n",
            n, (c1 - c0) / s * 1e6, h / 1024, r1 / 1024, (r1 - r0) * 1024 / series }'
}

# Lucia: tsdb alone, WAL fsync `never` (Prometheus does not fsync per write either).
printf 'tsdb:\n  wal_fsync: never\n' > "$WORK/lucia.yaml"
"$BIN" tsdb --config.file "$WORK/lucia.yaml" --web.listen-address 127.0.0.1:19091 \
    --storage.tsdb.path "$WORK/lucia" --data.dir "$WORK/lucia-data" --log.level warn &
LUCIA=$!
wait_ready 127.0.0.1:19091/ready
run lucia 127.0.0.1:19091 $LUCIA
echo "lucia: waiting for block compaction"
for _ in $(seq 1 300); do
    [ "$(metric 127.0.0.1:19091 lucia_tsdb_block_samples_total)" != 0 ] && break
    sleep 1
done
sleep 5
awk -v b="$(metric 127.0.0.1:19091 lucia_tsdb_block_bytes)" -v s="$(metric 127.0.0.1:19091 lucia_tsdb_block_samples_total)" \
    'BEGIN { printf "lucia: compacted blocks %d bytes for %d samples: %.3f bytes per sample\n", b, s, b / s }'
echo "lucia: data dir $(du -sb "$WORK/lucia" | cut -f1) bytes in all (blocks, head chunks, WAL, index)"
kill $LUCIA; wait $LUCIA 2>/dev/null || true

# Prometheus 2.42 with the remote-write receiver.
printf 'global:\n  scrape_interval: 1h\n' > "$WORK/prometheus.yml"
prometheus --config.file "$WORK/prometheus.yml" --web.listen-address 127.0.0.1:19092 \
    --web.enable-remote-write-receiver --storage.tsdb.path "$WORK/prom" --log.level warn &
PROM=$!
wait_ready 127.0.0.1:19092/-/ready
run prometheus 127.0.0.1:19092 $PROM
echo "prometheus: waiting for block compaction"
for _ in $(seq 1 300); do
    [ "$(metric 127.0.0.1:19092 prometheus_tsdb_compactions_total)" != 0 ] && break
    sleep 1
done
sleep 5
python3 - "$WORK/prom" <<'PY'
import json, os, sys
root = sys.argv[1]
size = samples = 0
for d in os.listdir(root):
    meta = os.path.join(root, d, "meta.json")
    if not os.path.exists(meta):
        continue
    samples += json.load(open(meta))["stats"]["numSamples"]
    for dp, _, files in os.walk(os.path.join(root, d)):
        size += sum(os.path.getsize(os.path.join(dp, f)) for f in files)
print(f"prometheus: compacted blocks {size} bytes for {samples} samples: {size / max(samples, 1):.3f} bytes per sample")
PY
echo "prometheus: data dir $(du -sb "$WORK/prom" | cut -f1) bytes in all (blocks, head chunks, WAL)"
kill $PROM; wait $PROM 2>/dev/null || true
rm -rf "$WORK"
