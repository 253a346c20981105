#!/usr/bin/env bash
# Smoke test of the Lucia image under docker compose, without a registry:
# runs deploy/docker-compose.local.yml (lucia all, alert-router, gateway, agent), then
#   - waits for every container to be healthy,
#   - pushes a log line through the gateway and reads it back (Loki API),
#   - checks the agent shipped the containers' own logs,
#   - checks tsdb scraped all four containers (Prometheus API, `up`),
#   - checks the Alertmanager API and the ruler's Watchdog alert,
#   - runs every Grafana dashboard query (scripts/check-dashboards.py),
# and validates the full-cluster file (deploy/docker-compose.yml) with
# `compose config`. Tears everything down (volumes too) unless KEEP=1.
#
# With --full it runs the full cluster instead: deploy/docker-compose.yml
# with deploy/docker-compose.fake-consul.yml (the tests' fake Consul in place
# of the Consul image; needs `cargo build -p lucia-tests --example
# fake_consul`), every service but Grafana, 3 ingesters.
#
# Usage: scripts/compose-smoke.sh [--build] [--full]   (--build: scripts/build-image.sh --local-base first)
# Env: LUCIA_GATEWAY_PORT (default 13100), COMPOSE ("docker compose" or "docker-compose";
#      found automatically), WAIT_DATA seconds to let rates fill before the
#      dashboard check (default 75).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
full=0
for arg; do
    case "$arg" in
        --build) "$root/scripts/build-image.sh" --local-base ;;
        --full) full=1 ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done

if [[ -z "${COMPOSE:-}" ]]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
export LUCIA_GATEWAY_PORT=${LUCIA_GATEWAY_PORT:-13100}
url="http://127.0.0.1:$LUCIA_GATEWAY_PORT"
if [[ $full == 1 ]]; then
    project=lucia-full
    files=(-f "$root/deploy/docker-compose.yml" -f "$root/deploy/docker-compose.fake-consul.yml")
    services=(consul gateway distributor ingester querier tsdb ruler alert-router agent)
    healthy=11 # consul, 3 ingesters, 7 other roles
    targets=10 # every Lucia container
    self=lucia-distributor
    if [[ ! -x "${FAKE_CONSUL_BIN:-${CARGO_TARGET_DIR:-/var/cache/lucia-target}/debug/examples/fake_consul}" ]]; then
        (cd "$root" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/lucia-target} cargo build -p lucia-tests --example fake_consul)
    fi
else
    project=lucia-smoke
    files=(-f "$root/deploy/docker-compose.local.yml")
    services=()
    healthy=4
    targets=4
    self=lucia-all
fi
compose() { $COMPOSE -p "$project" "${files[@]}" "$@"; }

fail() { echo "FAIL: $*" >&2; compose ps >&2 || true; compose logs --tail=30 >&2 || true; exit 1; }
cleanup() { if [[ "${KEEP:-0}" != 1 ]]; then compose down -v --remove-orphans >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

echo "== full cluster file: $COMPOSE config"
$COMPOSE -f "$root/deploy/docker-compose.yml" config -q
$COMPOSE -f "$root/deploy/docker-compose.yml" config --services | sort | tr '\n' ' '; echo

echo "== up ($project)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
compose up -d "${services[@]}"

echo "== waiting for health"
for _ in $(seq 1 60); do
    states=$(docker ps --filter "label=com.docker.compose.project=$project" --format '{{.Names}} {{.Status}}')
    if [[ $(grep -c "(healthy)" <<<"$states") == "$healthy" ]]; then break; fi
    sleep 2
done
echo "$states"
[[ $(grep -c "(healthy)" <<<"$states") == "$healthy" ]] || fail "not every container is healthy"
for c in $(compose ps -q); do
    user=$(docker exec "$c" id -u)
    echo "$(docker inspect -f '{{.Name}}' "$c") runs as uid $user"
done

echo "== push and query a log line through the gateway"
now=$(date +%s%N)
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$url/loki/api/v1/push" \
    -H 'Content-Type: application/json' \
    -d "{\"streams\":[{\"stream\":{\"service\":\"smoke\"},\"values\":[[\"$now\",\"level=info msg=smoke-$now\"]]}]}")
[[ $code == 204 ]] || fail "push answered $code"
found=""
for _ in $(seq 1 10); do
    found=$(curl -s -G "$url/loki/api/v1/query_range" --data-urlencode 'query={service_name="smoke"}' \
        --data-urlencode limit=10 | grep -o "smoke-$now" || true)
    [[ -n $found ]] && break
    sleep 1
done
[[ -n $found ]] || fail "pushed line not found"
echo "pushed line read back"

echo "== agent: containers' own logs"
for _ in $(seq 1 30); do
    n=$(curl -s -G "$url/loki/api/v1/query_range" --data-urlencode 'query={service_name="'"$self"'"}' \
        --data-urlencode limit=5 | grep -o '"values"' | wc -l)
    [[ $n -gt 0 ]] && break
    sleep 2
done
[[ $n -gt 0 ]] || fail "no logs of $self shipped by the agent"
curl -s "$url/loki/api/v1/label/service_name/values"; echo

echo "== tsdb: scrape of all $targets Lucia containers"
for _ in $(seq 1 30); do
    up=$(curl -s -G "$url/api/v1/query" --data-urlencode 'query=sum(up)' | grep -o '"[0-9.]*"\]' || true)
    [[ $up == "\"$targets\"]" ]] && break
    sleep 2
done
[[ $up == "\"$targets\"]" ]] || fail "sum(up) is $up, want $targets"
echo "sum(up) = $targets"
if [[ $full == 1 ]]; then
    ingesters=$(curl -s -G "$url/api/v1/query" --data-urlencode 'query=count(up{service="lucia-ingester"} == 1)' |
        grep -o '"[0-9]*"\]' || true)
    [[ $ingesters == '"3"]' ]] || fail "healthy ingesters: $ingesters, want 3"
    echo "3 ingesters up"
fi

echo "== alert-router and ruler"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/api/v2/status")
[[ $code == 200 ]] || fail "/api/v2/status answered $code"
for _ in $(seq 1 45); do
    curl -s "$url/api/v2/alerts" | grep -q Watchdog && break
    sleep 2
done
curl -s "$url/api/v2/alerts" | grep -q Watchdog || fail "no Watchdog alert in the alert-router"
echo "Watchdog alert reached the alert-router"

echo "== dashboards (after ${WAIT_DATA:-75}s of data)"
sleep "${WAIT_DATA:-75}"
# lucia-all has no request metrics (only the gateway does): every query
# must run; with the gateway as the service every query must return data.
"$root/scripts/check-dashboards.py" --url "$url" --service "$self"
"$root/scripts/check-dashboards.py" --url "$url" --service lucia-gateway --require-data
echo "SMOKE OK"
