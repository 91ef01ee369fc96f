#!/usr/bin/env bash
# Set up riskstream on a fresh machine: a .venv with the package, training extras and test tools.
# torch is pinned so pip takes the CPU build from this machine's disk, not a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[train,dev]"
echo "riskstream set up in $(pwd)/.venv"
