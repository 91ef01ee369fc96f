#!/usr/bin/env bash
# Run every benchmark; each prints a table and writes benchmarks/results/<name>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/riskstream bench simulate --users 20000 --days 2 --out benchmarks/results
.venv/bin/riskstream bench parse --limit 300000 --out benchmarks/results
.venv/bin/riskstream bench train --preset tiny --users 2000 --days 1 --out benchmarks/results
.venv/bin/riskstream bench train --preset small --users 20000 --days 2 --out benchmarks/results
# The ONNX bundle, Redis windows and the worker, on the demo's model (run `riskstream demo` first).
.venv/bin/riskstream export --bench out/demo/bundle --bench-out benchmarks/results
.venv/bin/python benchmarks/redis_memory.py --users 20000
.venv/bin/python benchmarks/worker_throughput.py --bundle out/demo/bundle \
    --events out/demo/world/events.jsonl
