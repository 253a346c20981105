#!/usr/bin/env bash
# Alert-router benchmark, side by side in one run: the same alerts
# (`lucia bench alerts`: ALERTS distinct firing alerts over 50 rule names,
# batches of BATCH per `POST /api/v2/alerts`, CONCURRENCY requests in
# flight) into Lucia's alert-router and into Alertmanager 0.25 (Debian's
# `prometheus-alertmanager`), one after the other, with the same
# configuration file (grouped by alertname, a receiver without
# integrations, so the measure is the API and the dispatcher, not a
# webhook). The second pass posts the same alerts again, as Prometheus
# re-sends firing alerts. Prints alerts/s per pass, CPU seconds, resident
# memory with every alert active, and the ratios Lucia / Alertmanager.
#
# usage: scripts/bench-alerts.sh [ALERTS] [BATCH] [CONCURRENCY]   (default 100000 100 8)
# LUCIA_BIN=path uses that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
ALERTS=${1:-100000}
BATCH=${2:-100}
CONCURRENCY=${3:-8}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/lucia-target}"
if [ -n "${LUCIA_BIN:-}" ]; then
    BIN=$LUCIA_BIN # e.g. a debug build, to try the script quickly
else
    cargo build --release --bin lucia >/dev/null
    BIN="$CARGO_TARGET_DIR/release/lucia"
fi
AM=$(command -v prometheus-alertmanager || command -v alertmanager || true)
[ -n "$AM" ] || { echo "Alertmanager is not installed (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/bench-alerts.XXXXXX)
TICK=$(getconf CLK_TCK)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$WORK"' EXIT

cpu_seconds() { awk -v t="$TICK" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "http://$1/-/ready" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "not ready: $1" >&2
    exit 1
}

cat > "$WORK/alertmanager.yml" <<'EOF'
route:
  receiver: blackhole
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
receivers:
- name: blackhole
EOF

"$BIN" alert-router --config.file "$WORK/alertmanager.yml" --storage.path "$WORK/lucia" \
    --web.listen-address 127.0.0.1:19093 --log.level warn &
LUCIA=$!
"$AM" --config.file "$WORK/alertmanager.yml" --storage.path "$WORK/am" \
    --web.listen-address 127.0.0.1:19094 --cluster.listen-address= --log.level warn 2>"$WORK/am.log" &
AMPID=$!
wait_ready 127.0.0.1:19093
wait_ready 127.0.0.1:19094

declare -A RATE1 RATE2 CPU RSS HWM
run() { # name addr pid
    local name=$1 addr=$2 pid=$3
    local cpu0 rss0 out cpu1 count
    cpu0=$(cpu_seconds "$pid")
    rss0=$(status_kb "$pid" VmRSS)
    out=$("$BIN" bench alerts --url "http://$addr" --alerts "$ALERTS" --batch "$BATCH" \
        --concurrency "$CONCURRENCY" --passes 2)
    echo "$out" | sed "s/^/$name: /"
    cpu1=$(cpu_seconds "$pid")
    # Let both settle (Go's collector, background work) before reading RSS.
    sleep 5
    RSS[$name]=$(status_kb "$pid" VmRSS)
    HWM[$name]=$(status_kb "$pid" VmHWM)
    RATE1[$name]=$(echo "$out" | awk '/^pass 1/ {print $(NF-1)}')
    RATE2[$name]=$(echo "$out" | awk '/^pass 2/ {print $(NF-1)}')
    CPU[$name]=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.2f", b - a}')
    count=$(curl -s "http://$addr/api/v2/alerts" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
    awk -v n="$name" -v c="${CPU[$name]}" -v r0="$rss0" -v r="${RSS[$name]}" -v h="${HWM[$name]}" \
        -v a="$ALERTS" -v count="$count" 'BEGIN {
        printf "%s: %d alerts active; %.2f CPU s for both passes; RSS %.0f MiB before, %.0f MiB with every alert (%.0f bytes per alert), peak %.0f MiB\n",
            n, count, c, r0 / 1024, r / 1024, (r - r0) * 1024 / a, h / 1024 }'
}

run lucia 127.0.0.1:19093 $LUCIA
run alertmanager 127.0.0.1:19094 $AMPID
awk -v l1="${RATE1[lucia]}" -v a1="${RATE1[alertmanager]}" -v l2="${RATE2[lucia]}" -v a2="${RATE2[alertmanager]}" \
    -v lc="${CPU[lucia]}" -v ac="${CPU[alertmanager]}" -v lr="${RSS[lucia]}" -v ar="${RSS[alertmanager]}" \
    -v lh="${HWM[lucia]}" -v ah="${HWM[alertmanager]}" 'BEGIN {
    printf "lucia / alertmanager: new alerts/s %.2fx, updates/s %.2fx, CPU %.2fx, RSS %.2fx, peak RSS %.2fx\n",
        l1 / a1, l2 / a2, lc / ac, lr / ar, lh / ah }'
