#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md, each writing its JSON (and markdown) under
# docs/bench/<name>/, the artefacts the docs cite. Speeds: run it on a quiet machine.
# About 10 minutes on a quiet 2-core machine without the quality and pipeline runs at the end
# (each about an hour more).
set -euo pipefail
cd "$(dirname "$0")/.."
rs=.venv/bin/riskstream
$rs bench parse --limit 300000 --out docs/bench/parse
$rs bench simulate --users 20000 --days 2 --out docs/bench/simulate
$rs bench train --preset tiny --users 2000 --days 1 --out docs/bench/train
$rs bench train --preset small --users 20000 --days 2 --out docs/bench/train
$rs bench train --preset tiny --users 20000 --days 2 --out docs/bench/train/20k
# Reading the corpus, JSON lines vs the Parquet dataset, as it grows (worlds kept out of git).
$rs bench train-scale --users 1000,2000,4000,8000 --jobs 1,2 --work out/train-scale \
    --out docs/bench/train-scale
# The bundle and Redis windows: on the demo's bundle (the demo runs first when it is missing).
[ -f out/demo/bundle/manifest.json ] || $rs demo
$rs bench bundle out/demo/bundle --quiet --out docs/bench/bundle
$rs bench redis-memory --users 20000 --out docs/bench/redis
$rs bench lists-lookup --entries 1000000 --rounds 20 --out docs/bench/lists
[ "${1:-}" = "--all" ] || exit 0
# Model vs GBDT on other worlds (docs/benchmarks.md, quality; its defaults, about an hour), then
# the worker: the default bundle on a demo-sized world, 1 and 2 processes.
$rs bench quality
# The label-efficiency table (its worlds and runs kept out of git under out/efficiency).
$rs bench quality --out out/efficiency --seeds 3 --world hard --users 2000 --days 2 \
    --attack-share 0.05 --label-share 0.1 --label-share 0.3 --label-share 1.0 --pretrain-users 20000
mkdir -p docs/bench/efficiency && cp out/efficiency/quality.{json,md} docs/bench/efficiency/
# The same with ten times the pretraining budget (its own pretrained encoder and runs).
$rs bench quality --out out/efficiency --seeds 3 --world hard --users 2000 --days 2 \
    --attack-share 0.05 --label-share 0.1 --label-share 0.3 --label-share 1.0 --pretrain-users 20000 \
    --pretrain-windows 60000
mkdir -p docs/bench/efficiency-60k && cp out/efficiency/quality.{json,md} docs/bench/efficiency-60k/
$rs simulate --users 2000 --days 1 --seed 7 --out out/b17/world
$rs train --events out/b17/world/events.jsonl --labels out/b17/world/labels.jsonl \
    --feedback out/b17/world/feedback.jsonl --out out/b17/model1 --seed 1
$rs export --model out/b17/model1 --out out/b17/bundle --int8 --force
$rs bench pipeline --bundle out/b17/bundle --processes 1,2 --loads 25,50,75,100 \
    --window-sizes 16,64 --batch-sizes 256,1024 --out docs/bench/pipeline
# Sustained capacity (issue 30 §1): the highest open-loop rate held with bounded lag, levels of
# it, shared and isolated (worker on its own core), one window and batch size.
# Its bundle: trained on a 4,000-user world (2,000 left a head too few episodes, that time).
$rs simulate --users 4000 --days 1 --seed 7 --out out/cap/world
$rs train --events out/cap/world/events.jsonl --labels out/cap/world/labels.jsonl \
    --feedback out/cap/world/feedback.jsonl --out out/cap/model1 --seed 1
$rs export --model out/cap/model1 --out out/cap/bundle --int8 --force
$rs simulate --users 8000 --days 1 --seed 7 --attack-share 0.12 --out out/cap/big
$rs bench pipeline --bundle out/cap/bundle --events out/cap/big/events.jsonl \
    --processes 1,2 --window-sizes 64 --batch-sizes 1024 --isolate --span-s 20 --probes 4 \
    --duration-s 15 --out docs/bench/pipeline-capacity
# The same with the issue's 60 s spans, on a bigger world (60 s spans need more events).
$rs simulate --users 14000 --days 1 --seed 7 --attack-share 0.12 --out out/cap/big12
$rs bench pipeline --bundle out/cap/bundle --events out/cap/big12/events.jsonl \
    --processes 1,2 --window-sizes 64 --batch-sizes 1024 --isolate --span-s 60 --probes 4 \
    --duration-s 20 --out docs/bench/pipeline-capacity-quiet
# The decision API with every lever, on the same bundle (needs a real Redis: RISKSTREAM_REDIS_URL).
if [ -n "${RISKSTREAM_REDIS_URL:-}" ]; then
  $rs bench decide --bundle out/cap/bundle --rates 100,200,300,400,600 --seconds 20 \
    --http httptools --max-batch 32 --workers 2 --out docs/bench/decide/quiet
fi
# Where the worker's time goes: the same run with py-spy on every worker process (its own
# folder: py-spy takes ~0.1 core of the two, so the figures above come from a run without it).
$rs bench pipeline --bundle out/b17/bundle --processes 1,2 --loads 25,50,75,100 \
    --window-sizes 16 --batch-sizes 1024 --profile --out docs/bench/pipeline-profile
# The same 2-process run with ONNX Runtime's threads as before issue 17 (two per process).
RISKSTREAM_INFERENCE_THREADS=2 $rs bench pipeline --bundle out/b17/bundle --processes 2 \
    --loads 25,50,75 --window-sizes 16 --batch-sizes 1024 --out docs/bench/pipeline-threads2
# What the broker pays per fetch and per produce request (its CPU under open load).
$rs bench tansu-cpu --out docs/bench/tansu
# The same 2-process run with the worker's fetch wait at 100 ms (Tansu's CPU per consumer).
RISKSTREAM_FETCH_MAX_WAIT_MS=100 $rs bench pipeline --bundle out/b17/bundle --processes 2 \
    --loads 25,50,75 --window-sizes 16 --batch-sizes 1024 --out docs/bench/pipeline-fetch100
# Long run: the supervised worker for 30 minutes at 300 events/s with a Redis restart, a SIGTERM
# and a SIGKILL of the worker process (Tansu in memory; `--storage s3` adds the broker restart,
# at the few tens of events/s moto allows). The committed artefact is a 15-minute run of the test
# suite's tiny bundle (docs/benchmarks.md, "Long runs").
$rs bench soak --bundle out/b17/bundle --minutes 30 --rate 300 --out docs/bench/soak
# The same with the load generator batching events (linger 200 ms: Tansu slows with the record
# batches a partition holds); the committed artefact is a 20-minute run.
$rs bench soak --bundle out/cap/bundle --minutes 20 --rate 300 --linger-ms 200 \
    --out docs/bench/soak-20min
