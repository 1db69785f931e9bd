#!/usr/bin/env bash
# Runs Canopy's whole test suite, the way CI does (.ci/run calls this script).
# Installs the Debian packages the tests need when they are missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3: the live-server tests drive the server with an independent HTTP client (Python's standard library).
# libsqlite3-dev: GRDB builds against the system SQLite.
# libxml2: the toolchain's FoundationXML (the Data Forest dialect's XML bodies) loads it at run time.
# slurm-wlm, munge: a real three-node Slurm cluster on this host for the Slurm executor's tests.
packages=(python3 libsqlite3-dev libxml2 slurm-wlm munge)
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

# The Slurm cluster (scripts/slurm-cluster.sh; its daemons need root), stopped again however the tests end.
if [ "$(id -u)" = 0 ]; then
    export CANOPY_TEST_SLURM_DIR=${CANOPY_TEST_SLURM_DIR:-$PWD/.build/slurm-test}
    # The Slurm suite must run, not skip: a run as root without the cluster is a failure.
    export CANOPY_REQUIRE_SLURM=1
    trap 'scripts/slurm-cluster.sh down "$CANOPY_TEST_SLURM_DIR"' EXIT
    scripts/slurm-cluster.sh up "$CANOPY_TEST_SLURM_DIR"
else
    echo "not root: the Slurm cluster tests are skipped (its daemons need root)"
fi

swift test --skip-build "$@"
