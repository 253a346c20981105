#!/bin/bash
# lucia-entrypoint ROLE [FLAGS...]: runs `lucia ROLE FLAGS...`, and in a
# cluster (docker compose) first:
#
#   LUCIA_LISTEN_PORT=3100  listen on the container's own IP and this port
#       (exported as LUCIA_IP), so that the address a role advertises to
#       Consul and to the ring is reachable from the other containers. (A
#       role listening on 0.0.0.0 advertises 127.0.0.1.) Adds the role's
#       listen flag: --web.listen-address for alert-router, else
#       --http.listen-address.
#   LUCIA_DATA_SLOTS=1      claim the first free data directory
#       /data/<role>-<n> of a shared volume (held by a lock for the life of
#       the process), add --data.dir for it and export
#       LUCIA_INSTANCE_ID=<role>-<n>. Replicas of a scaled service
#       (`--scale ingester=3`) share one named volume: each gets its own
#       slot, and a recreated container takes over a free slot, its WAL and
#       its ring tokens.
#
# `lucia-entrypoint healthcheck [PATH]` asks the role's /ready (or PATH)
# over the same address and exits 0 on HTTP 200 (the image has no curl).
set -euo pipefail

container_ip() {
    if [[ -n "${LUCIA_IP:-}" ]]; then
        echo "$LUCIA_IP"
        return
    fi
    local ip
    ip=$(getent ahostsv4 "$(hostname)" | awk '$1 !~ /^127\./ { print $1; exit }')
    echo "${ip:-127.0.0.1}"
}

healthcheck() {
    local path=${1:-/ready} host port status
    host=$(container_ip)
    port=${LUCIA_LISTEN_PORT:-3100}
    [[ -n "${LUCIA_LISTEN_PORT:-}" ]] || host=127.0.0.1
    exec 3<>"/dev/tcp/$host/$port"
    printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$path" "$host" "$port" >&3
    read -r -t 5 _ status _ <&3
    [[ "$status" == 200 ]]
}

if [[ "${1:-}" == healthcheck ]]; then
    shift
    healthcheck "$@"
    exit
fi

role=${1:-all}
[[ $# -gt 0 ]] && shift
extra=()

if [[ -n "${LUCIA_LISTEN_PORT:-}" ]]; then
    LUCIA_IP=$(container_ip)
    export LUCIA_IP
    case "$role" in
        alert-router) extra+=("--web.listen-address=$LUCIA_IP:$LUCIA_LISTEN_PORT") ;;
        *) extra+=("--http.listen-address=$LUCIA_IP:$LUCIA_LISTEN_PORT") ;;
    esac
fi

if [[ "${LUCIA_DATA_SLOTS:-}" == 1 ]]; then
    base=${LUCIA_DATA_ROOT:-/data}
    n=1
    while :; do
        slot="$base/$role-$n"
        mkdir -p "$slot"
        exec 9>"$slot/.lock"
        if flock -n 9; then
            break
        fi
        exec 9>&-
        n=$((n + 1))
    done
    # fd 9 stays open across exec: the lock lives as long as lucia does.
    export LUCIA_INSTANCE_ID="$role-$n"
    extra+=("--data.dir=$slot")
    echo "lucia-entrypoint: $role uses data slot $slot (instance $LUCIA_INSTANCE_ID)" >&2
fi

exec /usr/local/bin/lucia "$role" "${extra[@]}" "$@"
