#!/usr/bin/env bash
# Builds the Debian package, installs it, checks that the installed trapline works from / with
# the installed files only (its built-in rules, /etc/trapline/trapline.yml), checks the systemd
# unit, and purges the package again. Run as root (or with sudo), after `cargo test`: the
# package is made from the dev build the tests already compiled (`--profile dev`, which
# cargo-deb 3.8 warns about and accepts), so this step costs seconds instead of a release
# build's minutes. Release packages are built with plain `cargo deb`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

installed() {
    dpkg-query -W -f='${Status}' trapline 2>/dev/null | grep -q 'ok installed'
}
if installed || [ -e /etc/trapline/trapline.yml ]; then
    # This test installs, then purges, the package: it must not take over a real installation.
    echo "package-test: trapline is already installed on this machine (or /etc/trapline/trapline.yml exists);" >&2
    echo "package-test: remove it first (dpkg --purge trapline) or run on a clean machine" >&2
    exit 1
fi

work=$(mktemp -d)
cleanup() {
    if installed; then "${sudo[@]}" dpkg --purge trapline >/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "package-test: building the package"
cargo deb --profile dev --locked --fast --quiet --output "$work/trapline.deb" >/dev/null
dpkg-deb --info "$work/trapline.deb" | grep -E '^ (Package|Version|Depends):'
dpkg-deb --contents "$work/trapline.deb" | awk '{print "  " $6}'

echo "package-test: installing"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive dpkg -i "$work/trapline.deb"
dpkg-query -W -f='${Conffiles}\n' trapline | grep -q '/etc/trapline/trapline.yml' \
    || { echo "package-test: /etc/trapline/trapline.yml is not a conffile" >&2; exit 1; }
[ "$(command -v trapline)" = /usr/bin/trapline ] || { echo "package-test: trapline is not /usr/bin/trapline" >&2; exit 1; }

# From /, with an empty home: only the installed files can be used (config found in /etc).
mkdir "$work/home"
in_root() { (cd / && env -u XDG_CONFIG_HOME HOME="$work/home" NO_COLOR=1 /usr/bin/trapline "$@"); }

line='203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] "GET /item.php?id=1+UNION+SELECT+1,2 HTTP/1.1" 200 99 "-" "sqlmap/1.7"'
set +e
out=$(printf '%s\n' "$line" | in_root scan --json --fail-on-match -)
rc=$?
set -e
if [ "$rc" -ne 1 ] || ! grep -q '"class":"sqli"' <<<"$out"; then
    echo "package-test: scan of an attack line did not detect it (exit $rc):" >&2
    echo "$out" >&2
    exit 1
fi
echo "package-test: scan detects with the installed config and built-in rules"

# The packaged config does not set up XDR, so the one rule that names it gets a warning (TL111);
# errors fail.
# Summaries are prefixed so that CI does not take "N passed, N failed" for the suite's result.
# (An assignment, unlike an argument of echo, fails the script when the command fails.)
out=$(in_root lint)
echo "package-test: lint (installed config): $(tail -n 1 <<<"$out")"
out=$(in_root test)
echo "package-test: test (built-in rules): $(tail -n 1 <<<"$out")"
in_root init "$work/project" >/dev/null
out=$(in_root lint --deny-warnings --config "$work/project/trapline.yml")
echo "package-test: lint (after init): $(tail -n 1 <<<"$out")"

unit=/usr/lib/systemd/system/trapline.service
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit"
    # Exposure as systemd rates it (0 best, 10 worst); the unit is at about 1.7.
    if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
        systemd-analyze security --offline=yes --threshold=30 "$unit" | tail -n 1
    fi
    echo "package-test: systemd unit verified"
elif [ "${TRAPLINE_E2E_REQUIRED:-}" = 1 ]; then
    echo "package-test: systemd-analyze not installed (.ci/setup.sh installs systemd); the unit must be verified" >&2
    exit 1
else
    echo "package-test: systemd-analyze not installed; unit not verified"
fi

echo "package-test: purging"
"${sudo[@]}" dpkg --purge trapline >/dev/null
if [ -e /usr/bin/trapline ] || [ -e /etc/trapline/trapline.yml ] || [ -e "$unit" ]; then
    echo "package-test: files left after dpkg --purge" >&2
    exit 1
fi
echo "package-test: ok in $(($(date +%s) - started)) s"
