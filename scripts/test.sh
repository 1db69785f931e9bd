#!/usr/bin/env bash
# Runs Canopy's whole test suite, the way CI does (.ci/run calls this script).
# Installs the Debian packages the tests need when they are missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3: the live-server tests drive the server with an independent HTTP client (Python's standard library).
# libsqlite3-dev: GRDB builds against the system SQLite.
# slurm-wlm, munge: a real three-node Slurm cluster on this host for the Slurm executor's tests.
# python3-pip: schemathesis, which checks a live server against its OpenAPI document; python3-venv: JupyterLab.
# docker.io, busybox-static, curl: a real dockerd (its own socket and data root) and a test image made on the spot,
# for the container runtime's tests.
# openssh-client, openssh-sftp-server: the stock ssh, scp and ssh-keygen that the SSH server is tested with, and the
# sftp-server its sftp subsystem runs in a task.
packages=(python3 python3-pip python3-venv python3-requests libsqlite3-dev slurm-wlm munge docker.io busybox-static curl bubblewrap openssh-client openssh-sftp-server)
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

# Two cluster accounts for the Slurm suite's tenant test: tenants mapped to accounts of their own
# (--slurm-tenant-user) cannot reach each other's jobs. System accounts, no home, no login shell.
if [ "$(id -u)" = 0 ]; then
    for u in canopy-slurm-a canopy-slurm-b; do
        id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
    done
fi

swift build --build-tests

# schemathesis (PyPI), pinned; installed once.
schemathesis_version=4.32.5
if ! python3 -m pip show schemathesis 2>/dev/null | grep -q "^Version: $schemathesis_version\$"; then
    echo "installing schemathesis $schemathesis_version"
    python3 -m pip install -q "schemathesis==$schemathesis_version" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "schemathesis==$schemathesis_version"
fi

# JupyterLab (PyPI), pinned, in a virtual environment of Debian's python3 under /opt, where the tasks' own uids can
# read it: the live test of `canopy jupyter` runs it as a task and uses it through the proxy. Installed once.
jupyterlab_version=4.6.6
jupyter_venv=/opt/canopy-test/jupyter
if [ "$(id -u)" = 0 ] && ! "$jupyter_venv/bin/python3" -m pip show jupyterlab 2>/dev/null | grep -q "^Version: $jupyterlab_version\$"; then
    echo "installing jupyterlab $jupyterlab_version into $jupyter_venv"
    rm -rf "$jupyter_venv"
    mkdir -p "$(dirname "$jupyter_venv")"
    /usr/bin/python3 -m venv "$jupyter_venv"
    "$jupyter_venv/bin/python3" -m pip install -q "jupyterlab==$jupyterlab_version"
    chmod -R a+rX "$jupyter_venv"
fi

# The Slurm cluster (scripts/slurm-cluster.sh) and a private dockerd (scripts/dockerd.sh); their daemons need root.
# Both are stopped again however the tests end.
if [ "$(id -u)" = 0 ]; then
    export CANOPY_TEST_SLURM_DIR=${CANOPY_TEST_SLURM_DIR:-$PWD/.build/slurm-test}
    export CANOPY_TEST_DOCKER_DIR=${CANOPY_TEST_DOCKER_DIR:-/tmp/canopy-test-dockerd-$$}
    # The Slurm and container suites must run, not skip: a run as root without them is a failure.
    export CANOPY_REQUIRE_SLURM=1 CANOPY_REQUIRE_DOCKER=1 CANOPY_REQUIRE_JUPYTER=1
    trap 'scripts/slurm-cluster.sh down "$CANOPY_TEST_SLURM_DIR"; scripts/dockerd.sh down "$CANOPY_TEST_DOCKER_DIR"' EXIT
    scripts/slurm-cluster.sh up "$CANOPY_TEST_SLURM_DIR"
    scripts/dockerd.sh up "$CANOPY_TEST_DOCKER_DIR"
else
    echo "not root: the Slurm cluster and container tests are skipped (their daemons need root)"
fi

swift test --skip-build "$@"

# With no arguments (the whole suite, as CI runs it): a short run of every fuzz target over its committed corpus,
# and schemathesis against a live server. Either failing fails the run.
if (($# == 0)); then
    scripts/fuzz.sh --runs 20000
    scripts/schemathesis.sh
fi
