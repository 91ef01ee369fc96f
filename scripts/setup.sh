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
# Without recommends: apt would otherwise add ~150 packages (systemd, cups, avahi) for nothing.
# Not root: sudo where there is one; otherwise one line saying what to run (the browser test skips).
APT=(apt-get)
[ "$(id -u)" -eq 0 ] || APT=(sudo apt-get)
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    echo "setup.sh: chromium not installed: installing it needs root and there is no sudo; as root run" \
      "'apt-get install -y --no-install-recommends chromium chromium-driver'" >&2
  elif ! { "${APT[@]}" update && "${APT[@]}" install -y --no-install-recommends chromium chromium-driver; }; then
    echo "setup.sh: chromium not installed: '${APT[*]} install' failed (no rights?); the browser test" \
      "will skip until it is" >&2
  fi
fi
echo "riskstream set up in $(pwd)/.venv"
