#!/usr/bin/env bash
# Content-scanning throughput: `trapline sweep` vs Debian's `yara` command, same YARA rules
# (rules/webshell.yar), same tree, warm page cache, all cores.
#
#   bench/sweep_vs_yara.sh [TREE...]
#
# Default trees: the PHP applications of Debian's wordpress, phpmyadmin, mediawiki and
# roundcube packages (apt-get install wordpress phpmyadmin mediawiki roundcube-core yara).
# Neither tool follows symbolic links and both skip files over 8 MiB, so both read the same
# files. Reports, best of 3 runs: seconds, files/s, MB/s, peak RSS (with GNU time), for
#   yara            yara -r -N -p CORES rules/webshell.yar TREE   (once per tree)
#   sweep yara      trapline sweep --rules rules/webshell.yar TREE...        (yara-x)
#   sweep content   trapline sweep --rules rules/webshell-content.yml TREE...
#   sweep both      trapline sweep --rules rules TREE...                      (shipped pack)
# Results go to stdout and bench/out/sweep.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
mkdir -p "$OUT"
if [ $# -gt 0 ]; then TREES=("$@"); else
  TREES=(/usr/share/wordpress /usr/share/phpmyadmin /usr/share/mediawiki /usr/share/roundcube)
fi
for t in "${TREES[@]}"; do [ -d "$t" ] || { echo "missing tree $t (see the header)"; exit 2; }; done
command -v yara >/dev/null || { echo "needs yara (apt-get install yara)"; exit 2; }
CORES=$(nproc)

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/trapline

# What both tools read: regular files, links not followed, at most 8 MiB.
read -r FILES BYTES < <(find "${TREES[@]}" -type f -size -8193k -printf '%s\n' |
  awk '{n++; b+=$1} END {print n, b}')
MB=$(awk "BEGIN {print $BYTES/1e6}")
find "${TREES[@]}" -type f -exec cat {} + > /dev/null 2>&1 || true

TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "%M" -o "$OUT/rss.txt")
RESULTS=$OUT/sweep.tsv
: > "$RESULTS"
measure() { # name cmd...
  local name=$1; shift
  local best="" rss="-" found=""
  for _ in 1 2 3; do
    local s e
    s=$(date +%s.%N)
    "${TIME[@]}" "$@" > "$OUT/stdout.txt" 2> "$OUT/stderr.txt" || true
    e=$(date +%s.%N)
    local t
    t=$(awk "BEGIN {print $e - $s}")
    if [ -z "$best" ] || awk "BEGIN {exit !($t < $best)}"; then
      best=$t
      [ ${#TIME[@]} -gt 0 ] && rss=$(tail -1 "$OUT/rss.txt")
      found=$(wc -l < "$OUT/stdout.txt")
    fi
  done
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$best" \
    "$(awk "BEGIN {printf \"%.0f\", $FILES/$best}")" "$(awk "BEGIN {printf \"%.1f\", $MB/$best}")" "$rss" "$found" |
    tee -a "$RESULTS"
}

echo "tree: ${TREES[*]}"
echo "files: $FILES, MB: $MB, cores: $CORES, yara $(yara --version)"
printf 'tool\tseconds\tfiles/s\tMB/s\tpeak RSS KiB\tmatch lines\n'
# yara takes one target per run: the trees one after the other, each on all cores.
measure "yara" sh -c 'for t; do yara -r -N -w -p "$0" -z 8388608 rules/webshell.yar "$t" || exit; done' "$CORES" "${TREES[@]}"
measure "sweep yara" "$BIN" sweep --quiet --rules rules/webshell.yar "${TREES[@]}"
measure "sweep content" "$BIN" sweep --quiet --rules rules/webshell-content.yml "${TREES[@]}"
measure "sweep both" "$BIN" sweep --quiet --rules rules "${TREES[@]}"

{
  echo "| tool | seconds | files/s | MB/s | peak RSS (KiB) |"
  echo "|---|---:|---:|---:|---:|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$RESULTS"
  echo
  echo "$FILES files, $MB MB ($(basename -a "${TREES[@]}" | paste -sd' ')), $CORES cores, yara $(yara --version)."
} > "$OUT/sweep.md"
cat "$OUT/sweep.md"
