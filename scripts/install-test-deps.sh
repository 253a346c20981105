#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: cargo-nextest, the
# Debian node exporter the scrape tests scrape, and the Python client
# libraries the real-client tests use.
set -euo pipefail

if ! command -v prometheus-node-exporter >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi

python3 -m pip install --quiet --disable-pip-version-check \
    pytest==8.3.5 python-logging-loki==0.3.1 requests python-snappy "moto[server]==5.2.5" \
    websocket-client==1.9.2 prometheus-client==0.26.0
