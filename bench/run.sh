#!/usr/bin/env bash
# Throughput benchmark: trapline scan vs ripgrep vs fail2ban-regex on the same corpus.
#
#   bench/run.sh [LINES] [CORPUS_DIR] [ATTACK_SHARE]
#
# Builds a corpus of LINES (default 1,200,000) access-log lines, ATTACK_SHARE of them (default
# 0.005) real scanner lines, then reports for each tool elapsed time, CPU time, lines/s, MB/s
# and peak RSS, and the ratios. Needs: python3, GNU time
# (/usr/bin/time), ripgrep and fail2ban (Debian packages `time ripgrep fail2ban`); the tools
# that are missing are skipped. Results go to stdout and bench/out/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-1200000}
CORPUS=${2:-../shared/corpus}
SHARE=${3:-0.005}
[ -d "$CORPUS" ] || CORPUS=""
OUT=bench/out
mkdir -p "$OUT"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)"; exit 2; }

cargo build --release --quiet
BIN=target/release/trapline
LOG=$OUT/corpus-$LINES-$SHARE.log
[ -s "$LOG" ] || python3 bench/gen_corpus.py "$LOG" "$LINES" "$CORPUS" "$SHARE"
MB=$(python3 -c "import os;print(os.path.getsize('$LOG')/1e6)")
python3 bench/gen_rules.py "$OUT/rules-10" 10
python3 bench/gen_rules.py "$OUT/rules-1000" 1000
python3 bench/literals.py rules > "$OUT/literals.txt"

# Warm the page cache so every tool reads from memory.
cat "$LOG" > /dev/null

RESULTS=$OUT/results.tsv
: > "$RESULTS"
measure() { # name lines cmd...
  local name=$1 lines=$2; shift 2
  local best="" rss="" cpu=""
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M %U %S" -o "$OUT/time.txt" "$@" > /dev/null 2> "$OUT/stderr.txt" || true
    read -r e m u s < "$OUT/time.txt"
    if [ -z "$best" ] || python3 -c "import sys;sys.exit(0 if $e < $best else 1)"; then
      best=$e; rss=$m; cpu=$(python3 -c "print(round($u + $s, 2))")
    fi
  done
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$lines" "$best" "$rss" "$cpu" >> "$RESULTS"
  printf '%-40s %8ss (cpu %ss) %12.0f lines/s  %8.1f MB/s  %7.1f MB RSS\n' "$name" "$best" "$cpu" \
    "$(python3 -c "print($lines/max($best,0.001))")" "$(python3 -c "print($MB*$lines/$LINES/max($best,0.001))")" "$(python3 -c "print($rss/1024)")"
}

echo "corpus: $LOG ($LINES lines, $MB MB, attack share $SHARE), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
measure "trapline, shipped rules ($(grep -c '^  - id:' rules/*.yml | awk -F: '{s+=$2} END {print s}'))" "$LINES" $BIN scan -q --rules rules "$LOG"
measure "trapline, 10 generated rules" "$LINES" $BIN scan -q --rules "$OUT/rules-10" "$LOG"
measure "trapline, 1000 generated rules" "$LINES" $BIN scan -q --rules "$OUT/rules-1000" "$LOG"
measure "trapline, shipped + 1000 generated" "$LINES" $BIN scan -q --rules rules --rules "$OUT/rules-1000" "$LOG"
measure "trapline, shipped rules, 1 thread" "$LINES" $BIN scan -q --threads 1 --rules rules "$LOG"
if command -v rg >/dev/null; then
  measure "rg -c -i -F -f (shipped literals: $(wc -l < "$OUT/literals.txt"))" "$LINES" rg -c -i -F -f "$OUT/literals.txt" "$LOG"
fi
if command -v fail2ban-regex >/dev/null; then
  # fail2ban is ~3 orders of magnitude slower: measure it on the first 100k lines.
  SUB=100000
  head -n $SUB "$LOG" > "$OUT/corpus-sub.log"
  FILTERS="apache-badbots apache-noscript apache-overflows apache-botsearch apache-nohome nginx-botsearch"
  cat > "$OUT/f2b.sh" <<SH
#!/bin/sh
for f in $FILTERS; do fail2ban-regex "$OUT/corpus-sub.log" /etc/fail2ban/filter.d/\$f.conf >/dev/null 2>&1; done
SH
  chmod +x "$OUT/f2b.sh"
  measure "fail2ban-regex ($(echo $FILTERS | wc -w) stock filters, ${SUB} lines)" "$SUB" "$OUT/f2b.sh"
fi

python3 - "$RESULTS" "$MB" "$LINES" <<'PY' | tee "$OUT/results.md"
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
mb, total = float(sys.argv[2]), int(sys.argv[3])
def rate(r): return int(r[1]) / max(float(r[2]), 1e-3)
base = rate(rows[0])
print("| tool | lines/s | MB/s | CPU s | peak RSS | vs trapline (shipped) |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    lr = rate(r)
    print(f"| {r[0]} | {lr:,.0f} | {mb * int(r[1]) / total / max(float(r[2]), 1e-3):.1f} | {r[4]} | {int(r[3]) / 1024:.0f} MB | {lr / base:.2f}x |")
t10 = next((float(r[2]) for r in rows if "10 generated" in r[0]), None)
t1000 = next((float(r[2]) for r in rows if r[0].startswith("trapline, 1000 generated")), None)
if t10 and t1000:
    print(f"\n10 → 1000 rules: time ×{t1000 / t10:.2f}")
PY

# Robustness: 250,000 client addresses never seen before, all inside one second (a botnet,
# rotating IPv6 sources), against the threshold rules' bounded key tables (max_keys 100,000).
FLOOD=$OUT/flood-250000.log
[ -s "$FLOOD" ] || python3 -c '
for i in range(250000):
    ip = "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    print("%s - - [10/Oct/2024:13:00:00 +0000] \"GET /p%d HTTP/1.1\" 404 12 \"-\" \"x\"" % (ip, i))
' > "$FLOOD"
/usr/bin/time -f "%e s, peak RSS %M KB" -o "$OUT/time.txt" $BIN scan -q --rules rules "$FLOOD" > /dev/null 2>&1 || true
echo "key flood (250,000 new client addresses within one second, shipped rules): $(cat "$OUT/time.txt")" | tee -a "$OUT/results.md"
# Four times as many: the tables are full long before, so memory stays where it was.
FLOOD4=$OUT/flood-1000000.log
[ -s "$FLOOD4" ] || python3 -c '
for i in range(1000000):
    ip = "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    print("%s - - [10/Oct/2024:13:00:%02d +0000] \"GET /p%d HTTP/1.1\" 404 12 \"-\" \"x\"" % (ip, i * 60 // 1000000, i))
' > "$FLOOD4"
/usr/bin/time -f "%e s, peak RSS %M KB" -o "$OUT/time.txt" $BIN scan -q --rules rules "$FLOOD4" > /dev/null 2>&1 || true
echo "key flood (1,000,000 new client addresses within one minute, shipped rules): $(cat "$OUT/time.txt")" | tee -a "$OUT/results.md"
