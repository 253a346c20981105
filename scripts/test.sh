#!/usr/bin/env bash
# Runs every test tier that this machine can run: unit, conformance and
# integration tests (cargo nextest), then the real-client tests (Python's Loki
# and Prometheus clients against a running `lucia`). Installs what the tests
# need first, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build outputs outside the clone so CI and later runs reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/lucia-target}"
mkdir -p "$CARGO_TARGET_DIR"

scripts/install-test-deps.sh

cargo build --bin lucia
cargo nextest run --workspace --no-fail-fast

export LUCIA_BIN="$CARGO_TARGET_DIR/debug/lucia"
python3 -m pytest -q tests/clients
