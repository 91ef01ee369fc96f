#!/usr/bin/env bash
# Lint, type-check and run the tests (unit, doctests, integration against a real broker and Redis:
# the session fixtures start Tansu and, unless REDIS_URL is set, an embedded Valkey).
#   bash scripts/test.sh            the full suite (what CI runs), slowest tests listed at the end
#   bash scripts/test.sh --quick    the development loop: everything not marked slow or fault
# Any other argument goes to pytest (e.g. a path or -k EXPR).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
for a in "$@"; do
  if [ "$a" = "--quick" ]; then
    args+=(-m "not slow and not fault")
  else
    args+=("$a")
  fi
done
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest ${args[@]+"${args[@]}"}
