#!/usr/bin/env bash
# `trapline run` benchmark: append → detection latency at 1k and 10k lines/s (written, and
# durable after the checkpoint's fsync), then the highest append rate one daemon keeps up
# with, with its CPU and peak RSS. The shipped rules; a fresh daemon on a temporary project per
# measurement. Not part of `cargo test`.
#
#   bench/run_mode.sh [-- extra options of bench/run_mode.py, e.g. --sustain-rates 100000,200000]
#
# Needs the release binary (cargo build --release; TRAPLINE_BIN or $CARGO_TARGET_DIR are
# honoured) and python3 (standard library only), on Linux (inotify, /proc). Results go to
# stdout and bench/out/run_mode.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
run_python_bench bench/run_mode.py run_mode "$@"
