#!/usr/bin/env bash
# Agents and workers over NATS JetStream: events/s through one worker and through three (the
# stream filled by an agent first), and the latency the stream adds between a line appended on
# an agent and its detection in a worker's out.txt. The shipped rules; a fresh nats-server and
# fresh daemons per measurement, all on this machine. Not part of `cargo test`.
#
#   bench/nats_workers.sh [-- extra options of bench/nats_workers.py, e.g. --lines 500000 --workers 1,2,3]
#
# Needs the release binary (cargo build --release; TRAPLINE_BIN or $CARGO_TARGET_DIR are
# honoured), nats-server >= 2.10 (.ci/setup.sh installs one into ~/.local/bin;
# TRAPLINE_NATS_SERVER overrides) and python3 (standard library only), on Linux. Results go to
# stdout and bench/out/nats_workers.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
run_python_bench bench/nats_workers.py nats_workers "$@"
