#!/usr/bin/env bash
# Runs Canopy's whole test suite, the way CI does (.ci/run calls this script).
# Installs the Debian packages the tests need when they are missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3: the live-server tests drive the server with an independent HTTP client (Python's standard library).
# libsqlite3-dev: GRDB builds against the system SQLite.
# libxml2: the toolchain's FoundationXML (the Data Forest dialect's XML bodies) loads it at run time.
packages=(python3 libsqlite3-dev libxml2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

swift build --build-tests
swift test --skip-build "$@"
