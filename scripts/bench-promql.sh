#!/usr/bin/env bash
# PromQL latency, side by side in one run: the same remote-write workload
# (`lucia bench remote-write`, SERIES series, DURATION of 15 s samples) into
# Lucia's tsdb and Prometheus 2.42, both kept running, then a mix of
# dashboard-style queries (range queries over the last hour, step 60 s, and
# a few instant queries) against each in turn. Prints the median latency of
# each query on each server and the ratio Prometheus / Lucia (above 1:
# Lucia is faster).
#
# usage: scripts/bench-promql.sh [SERIES] [DURATION] [RUNS]   (default 100000 2h 7)
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${1:-100000}
DURATION=${2:-2h}
RUNS=${3:-7}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/lucia-target}"
cargo build --release --bin lucia >/dev/null
BIN="$CARGO_TARGET_DIR/release/lucia"
WORK=$(mktemp -d /tmp/bench-promql.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
START=$(( ($(date +%s) - 7200) * 1000 ))

wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "http://$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "not ready: $1" >&2
    exit 1
}

printf 'tsdb:\n  wal_fsync: never\n' > "$WORK/lucia.yaml"
"$BIN" tsdb --config.file "$WORK/lucia.yaml" --web.listen-address 127.0.0.1:19191 \
    --storage.tsdb.path "$WORK/lucia" --data.dir "$WORK/lucia-data" --log.level warn &
printf 'global:\n  scrape_interval: 1h\n' > "$WORK/prometheus.yml"
prometheus --config.file "$WORK/prometheus.yml" --web.listen-address 127.0.0.1:19192 \
    --web.enable-remote-write-receiver --storage.tsdb.path "$WORK/prom" --log.level warn &
wait_ready 127.0.0.1:19191/ready
wait_ready 127.0.0.1:19192/-/ready
for addr in 127.0.0.1:19191 127.0.0.1:19192; do
    "$BIN" bench remote-write --url "http://$addr/api/v1/write" --series "$SERIES" \
        --duration "$DURATION" --start "$START"
done

# Let Lucia compact the block that ended over an hour ago before timing
# (Prometheus keeps two hours in its head and compacts nothing here).
for _ in $(seq 1 120); do
    n=$(curl -s http://127.0.0.1:19191/metrics | awk '$1 == "lucia_tsdb_block_samples_total" {print $2}')
    [ "${n:-0}" != 0 ] && break
    sleep 1
done
sleep 5

python3 - "$RUNS" "$START" "$DURATION" <<'PY'
import json, statistics, sys, time, urllib.error, urllib.parse, urllib.request

runs, start_ms = int(sys.argv[1]), int(sys.argv[2])
units = {"h": 3600, "m": 60, "s": 1}
dur = int(sys.argv[3][:-1]) * units[sys.argv[3][-1]]
end = start_ms / 1000 + dur - 30
servers = {"lucia": "127.0.0.1:19191", "prometheus": "127.0.0.1:19192"}
# Dashboard panels: one metric name has 200 series; `{job="bench"}` all.
range_queries = [
    "sum(rate(bench_requests_total_0[5m]))",
    "sum by (region) (rate(bench_requests_total_0[5m]))",
    "topk(5, rate(bench_requests_total_4[5m]))",
    "avg by (region) (bench_queue_length_1)",
    "max_over_time(bench_temperature_celsius_2[10m])",
    "bench_requests_total_0{instance=\"host-4:9100\"}",
    "histogram_quantile(0.9, sum by (le) (rate(bench_requests_total_0[5m])))",
    "sum by (instance) (rate({__name__=~\"bench_requests_total_.*\"}[5m]))",
    "count by (region) (bench_info_3)",
    "quantile(0.99, bench_temperature_celsius_6)",
]
instant_queries = [
    "count({job=\"bench\"})",
    "count by (__name__) ({job=\"bench\"})",
    "sum(bench_queue_length_1)",
]

def run(addr, path, params):
    url = f"http://{addr}/api/v1/{path}?" + urllib.parse.urlencode(params)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=300) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        print(f"  {addr}: {e.code} {e.read()[:200]!r}")
        return float("nan"), -1
    return time.perf_counter() - t0, len(body["data"]["result"])

cases = [("query_range", q, {"query": q, "start": end - 3600, "end": end, "step": 60}) for q in range_queries]
cases += [("query", q, {"query": q, "time": end}) for q in instant_queries]
print(f"{'query':<80} {'lucia ms':>9} {'prom ms':>9} {'prom/lucia':>10} series")
ratios = []
for path, q, params in cases:
    times = {name: [] for name in servers}
    sizes = {}
    for _ in range(runs):
        for name, addr in servers.items():
            t, n = run(addr, path, params)
            times[name].append(t)
            sizes[name] = n
    lm = statistics.median(times["lucia"]) * 1000
    pm = statistics.median(times["prometheus"]) * 1000
    if lm == lm and pm == pm:
        ratios.append(pm / lm)
    kind = "range" if path == "query_range" else "instant"
    same = "" if sizes["lucia"] == sizes["prometheus"] else f" (lucia {sizes['lucia']} vs {sizes['prometheus']})"
    print(f"{kind + ' ' + q:<80} {lm:9.1f} {pm:9.1f} {pm / lm:10.2f} {sizes['prometheus']}{same}")
print(f"geometric mean prom/lucia: {statistics.geometric_mean(ratios):.2f}; lucia faster on {sum(r > 1 for r in ratios)} of {len(ratios)}")
PY
