#!/usr/bin/env bash
# Lint, type-check and run every test (unit, doctests, integration against a real broker and Redis:
# the session fixtures start Tansu and, unless REDIS_URL is set, an embedded Valkey).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
