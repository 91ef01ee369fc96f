#!/usr/bin/env bash
# The compose stack's trainer (docker/trainer.Dockerfile): leaves a verified model bundle at
# $RISKSTREAM_BUNDLE for the workers, then exits.
#
# - A bundle already there is kept (exit 0 at once) unless RISKSTREAM_TRAIN_FORCE=1.
# - Data: $RISKSTREAM_TRAIN_DATA/events.jsonl when it exists, with labels.jsonl and/or
#   feedback.jsonl beside it; otherwise a simulated world (riskstream simulate).
# - riskstream train, then riskstream export --int8 [--fp16] --force: the bundle is written in a
#   temporary folder beside $RISKSTREAM_BUNDLE and renamed into place, so running workers
#   hot-reload it and never see half of one.
#
# Variables (all optional; docs/deploy.md):
#   RISKSTREAM_BUNDLE         bundle folder to write                  /bundles/current
#   RISKSTREAM_TRAIN_DATA     folder with events.jsonl to train on    /data
#   RISKSTREAM_TRAIN_WORKDIR  simulated world and checkpoint          /work
#   RISKSTREAM_TRAIN_USERS    simulate --users                        20000
#   RISKSTREAM_TRAIN_DAYS     simulate --days                         2
#   RISKSTREAM_TRAIN_SEED     simulate and train --seed               7
#   RISKSTREAM_TRAIN_PRESET   train --preset: tiny, small or base     tiny
#   RISKSTREAM_TRAIN_FP16     1: also export an FP16 graph (GPUs)     1
#   RISKSTREAM_TRAIN_FORCE    1: retrain even if a bundle is there    0
set -euo pipefail

bundle="${RISKSTREAM_BUNDLE:-/bundles/current}"
data="${RISKSTREAM_TRAIN_DATA:-/data}"
workdir="${RISKSTREAM_TRAIN_WORKDIR:-/work}"
users="${RISKSTREAM_TRAIN_USERS:-20000}"
days="${RISKSTREAM_TRAIN_DAYS:-2}"
seed="${RISKSTREAM_TRAIN_SEED:-7}"
preset="${RISKSTREAM_TRAIN_PRESET:-tiny}"
fp16="${RISKSTREAM_TRAIN_FP16:-1}"
force="${RISKSTREAM_TRAIN_FORCE:-0}"

if [[ -f "$bundle/manifest.json" && "$force" != 1 ]]; then
  echo "trainer: $bundle already holds a bundle; keeping it (RISKSTREAM_TRAIN_FORCE=1 retrains)"
  exit 0
fi

if [[ -f "$data/events.jsonl" ]]; then
  world="$data"
  echo "trainer: training on $data/events.jsonl"
else
  world="$workdir/world"
  echo "trainer: no $data/events.jsonl; simulating $users users × $days days (seed $seed)"
  riskstream simulate --users "$users" --days "$days" --seed "$seed" --out "$world" --quiet
fi

train=(train --events "$world/events.jsonl" --out "$workdir/model" --preset "$preset"
  --seed "$seed" --quiet)
if [[ -f "$world/labels.jsonl" ]]; then
  train+=(--labels "$world/labels.jsonl")
fi
if [[ -f "$world/feedback.jsonl" ]]; then
  train+=(--feedback "$world/feedback.jsonl")
fi
riskstream "${train[@]}"

export_args=(export --model "$workdir/model" --out "$bundle" --int8 --force --quiet)
if [[ "$fp16" == 1 ]]; then
  export_args+=(--fp16)
fi
riskstream "${export_args[@]}"
echo "trainer: bundle written to $bundle"
