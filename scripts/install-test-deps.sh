#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: cargo-nextest, the
# Python client libraries the real-client tests use (and aiosmtpd, the SMTP
# sink of the alert-router's email test), and Debian's
# prometheus package (prometheus and promtool, for the tsdb API's
# side-by-side tests).
set -euo pipefail

# rocksdb (tsdb) needs libclang at build time for its bindings; the scrape
# tests scrape the Debian node exporter.
need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
# prometheus and promtool: the tsdb's side-by-side tests.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need_apt+=(prometheus-node-exporter)
# amtool and Alertmanager: the alert-router's real-client tests and the
# ruler's (alerts to a real Alertmanager).
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${need_apt[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi

python3 -m pip install --quiet --disable-pip-version-check \
    pytest==8.3.5 python-logging-loki==0.3.1 requests python-snappy "moto[server]==5.2.5" \
    websocket-client==1.9.2 prometheus-client==0.26.0 aiosmtpd==1.4.6
