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
# The worker: tiny and small trained on the default world (20k users × 2 days), then the
# pipeline benchmark (about 10 minutes) on its own simulated stream.
.venv/bin/riskstream simulate --users 20000 --days 2 --seed 7 --out out/bench/world
for preset in tiny small; do
    .venv/bin/riskstream train --events out/bench/world/events.jsonl \
        --labels out/bench/world/labels.jsonl --feedback out/bench/world/feedback.jsonl \
        --out "out/bench/$preset" --preset "$preset"
    .venv/bin/riskstream export --model "out/bench/$preset" --out "out/bench/$preset-bundle" --int8
done
.venv/bin/riskstream bench pipeline --bundle out/bench/tiny-bundle \
    --compare out/bench/small-bundle --out benchmarks/results/pipeline
