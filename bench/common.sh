# Shared by the benchmark wrappers that drive a Python script against the release binary
# (bench/run_mode.sh, bench/nats_workers.sh). Sourced, from the repository's root.
#
#   run_python_bench SCRIPT OUTPUT_NAME [options of the script...]
#
# Checks the release binary (TRAPLINE_BIN or $CARGO_TARGET_DIR are honoured) and python3, warns
# when the binary is older than the sources, and runs SCRIPT with --bin, --rules, --templates,
# --tmp (a temporary directory, removed afterwards, also on Ctrl-C) and --out
# bench/out/OUTPUT_NAME.md.
run_python_bench() {
  local script=$1 name=$2
  shift 2
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
  mkdir -p bench/out
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/trapline-bench.XXXXXX")
  PY=""
  trap _bench_cleanup EXIT
  trap 'exit 130' INT TERM
  python3 "$script" --bin "$BIN" --rules "$PWD/rules" --templates "$PWD/templates" \
    --tmp "$TMP" --out "bench/out/$name.md" "$@" &
  PY=$!
  wait "$PY"
}

_bench_cleanup() {
  if [ -n "$PY" ] && kill -0 "$PY" 2>/dev/null; then
    kill -TERM "$PY" 2>/dev/null || true
    wait "$PY" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
