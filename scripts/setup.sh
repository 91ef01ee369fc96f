#!/usr/bin/env bash
# Set up riskstream on a fresh machine: a .venv with the package, training, review and test extras,
# and Debian's chromium (+ its driver) for the browser tests of the review console.
# torch is pinned so pip takes the CPU build from this machine's disk, not a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[train,review,dev]"
# The review console's browser tests drive the system's chromium (never a downloaded browser).
command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)
echo "riskstream set up in $(pwd)/.venv"
