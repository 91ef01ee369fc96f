#!/usr/bin/env bash
# GPU figures for docs/benchmarks.md, on a machine with a CUDA device (onnxruntime-gpu 1.31
# wants CUDA 13 / cuDNN 9). Where there is none it stops at the first step with one line.
#   1. `riskstream bench gpu`: CUDA verified (the session's own providers), FP16 parity vs FP32,
#      model-only windows/s at batch 256 / 1,024 / 4,096 for each preset (tiny, small, base);
#   2. the default bundle (small, trained here on CUDA, exported with --fp16) under
#      `riskstream bench bundle` (ORT CPU vs CUDA FP32/FP16);
#   3. `riskstream bench pipeline` with CUDA workers, 1 and 2 processes.
# PYTHON (default .venv/bin/python) and OUT (default out/bench/gpu) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-out/bench/gpu}
rs() { "$PY" -m riskstream "$@"; }

rs bench gpu --presets tiny,small,base --out "$OUT"   # exits 1 with one line without CUDA

WORK=out/gpu
if [ ! -f "$WORK/bundle/manifest.json" ]; then
    rs simulate --users 2000 --days 1 --seed 7 --out "$WORK/world"
    rs train --events "$WORK/world/events.jsonl" --labels "$WORK/world/labels.jsonl" \
        --feedback "$WORK/world/feedback.jsonl" --out "$WORK/model" --device cuda --quiet
    rs export --model "$WORK/model" --out "$WORK/bundle" --int8 --fp16 --quiet --force
fi
rs bench bundle "$WORK/bundle" --out "$OUT" --quiet
rs bench pipeline --bundle "$WORK/bundle" --device cuda --processes 1,2 \
    --loads 25,50,75,100 --duration-s 15 --out "$OUT/pipeline"
echo "written: $OUT"
