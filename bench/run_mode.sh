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
[ "${1:-}" = "--" ] && shift
BIN=${TRAPLINE_BIN:-${CARGO_TARGET_DIR:-target}/release/trapline}
if [ ! -x "$BIN" ]; then
  echo "error: no release binary at $BIN; build it first: cargo build --release" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "error: needs python3" >&2; exit 2; }
# The daemons run in their own temporary directories.
BIN=$(realpath "$BIN")
if [ -n "$(find src rules Cargo.toml -newer "$BIN" -print -quit)" ]; then
  echo "warning: $BIN is older than the sources; rebuild with cargo build --release for current figures" >&2
fi
OUT=bench/out
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/trapline-runbench.XXXXXX")
PY=""
cleanup() {
  if [ -n "$PY" ] && kill -0 "$PY" 2>/dev/null; then
    kill -TERM "$PY" 2>/dev/null || true
    wait "$PY" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 bench/run_mode.py --bin "$BIN" --rules "$PWD/rules" --templates "$PWD/templates" \
  --tmp "$TMP" --out "$OUT/run_mode.md" "$@" &
PY=$!
wait "$PY"
