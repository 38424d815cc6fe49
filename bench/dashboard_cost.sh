#!/usr/bin/env bash
# What the dashboard costs `trapline run`: the latency phase of bench/run_mode.py at 10,000
# lines/s (one attack line in 20: 500 detections/s), once without the HTTP server and once
# serving it with 20 clients on the live feed (/api/events), alternated RUNS times. Compare the
# CPU columns. Not part of `cargo test`.
#
#   bench/dashboard_cost.sh [RUNS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-2}
RATE=${2:-10000}
BIN=${TRAPLINE_BIN:-${CARGO_TARGET_DIR:-target}/release/trapline}
[ -x "$BIN" ] || { echo "error: no release binary at $BIN (cargo build --release)" >&2; exit 2; }
BIN=$(realpath "$BIN")
TMP=$(mktemp -d "${TMPDIR:-/tmp}/trapline-dashcost.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
for i in $(seq "$RUNS"); do
  for clients in 0 20; do
    echo "== run $i, live-feed clients: $clients"
    python3 bench/run_mode.py --bin "$BIN" --rules "$PWD/rules" --templates "$PWD/templates" --tmp "$TMP" \
      --rates "$RATE" --sustain-rates "" --feed-clients "$clients" | grep -E '^\| [0-9]|live feed:'
  done
done
