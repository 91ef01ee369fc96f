"""The vectorised batch path alone (issue 30 §2): per-window / per-chunk calls as the worker made
them before, against one numpy pass per batch, interleaved on the same windows.

    OMP_NUM_THREADS=1 .venv/bin/python docs/bench/pipeline-overlap/events_batch.py \\
        --bundle B --events WORLD/events.jsonl --out docs/bench/pipeline-overlap/events_batch.json

Windows: every event's window over the first 40,000 events of `--events` (in-memory store, the
bundle's policy), cut into batches of 1,024 as the worker's drain cuts them; chunks of 64.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from events import encode_event, parse_event, select_window
from events.aggregates import window_aggregates
from events.features import windows_to_inputs
from events.window import InMemoryWindowStore, select_windows
from export.loader import load_bundle, score_windows
from riskstream.bench.core import machine_info
from stream.processor import SCORE_CHUNK

BATCH = 1024


def _best_of(fn: Callable[[], object], rounds: int) -> list[float]:
    took = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        took.append(time.perf_counter() - began)
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--events", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    load_before = os.getloadavg()
    bundle = load_bundle(args.bundle, "cpu", spin=False, threads=1)
    lines = args.events.read_bytes().splitlines()[:40_000]
    store = InMemoryWindowStore(bundle.policy)
    stored: list[bytes] = []
    for line in lines:
        ev = parse_event(line)
        appended = store.append(ev.user_id, encode_event(ev, bundle.spec))
        if not appended.duplicate:
            stored.append(appended.stored)
    batches = [stored[i : i + BATCH] for i in range(0, len(stored) - BATCH + 1, BATCH)]
    windows = [[select_window(s, bundle.policy) for s in b] for b in batches]
    n = sum(len(b) for b in batches)

    def per_chunk_inputs() -> None:  # what score_windows did before, less the model runs
        for ws in windows:
            order = sorted(range(len(ws)), key=lambda i: len(ws[i]))
            for lo in range(0, len(order), SCORE_CHUNK):
                x = windows_to_inputs([ws[i] for i in order[lo : lo + SCORE_CHUNK]], bundle.spec)
                window_aggregates(x.features, x.attention_mask)

    trees = bundle.gbdt is not None
    parts: dict[str, Callable[[], object]] = {
        "select: select_window per window": lambda: [
            [select_window(s, bundle.policy) for s in b] for b in batches
        ],
        "select: select_windows per batch": lambda: [
            select_windows(b, bundle.policy) for b in batches
        ],
        "inputs + aggregates: per chunk of 64": per_chunk_inputs,
        "inputs + aggregates: prepare_windows per batch": lambda: [
            bundle.prepare_windows(ws, SCORE_CHUNK) for ws in windows
        ],
        "scoring: per chunk (before)": lambda: [
            score_windows(bundle.predict, bundle.spec, ws, SCORE_CHUNK) for ws in windows
        ],
        "scoring: Bundle.score_windows (after)": lambda: [
            bundle.score_windows(ws, SCORE_CHUNK) for ws in windows
        ],
    }
    took: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(args.rounds):  # interleaved: each round times every part once
        for name, fn in parts.items():
            took[name] += _best_of(fn, 1)
    result = {
        "machine": machine_info(),
        "load_before": load_before,
        "bundle": {"variant": bundle.variant, "trees": trees, "max": bundle.policy.max_events},
        "windows": n,
        "batch": BATCH,
        "chunk": SCORE_CHUNK,
        "us_per_window_median": {k: statistics.median(v) / n * 1e6 for k, v in took.items()},
        "us_per_window_min": {k: min(v) / n * 1e6 for k, v in took.items()},
        "rounds": args.rounds,
    }
    result["load_after"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["us_per_window_median"].items():
        print(f"{v:8.1f} µs/window  {k}")


if __name__ == "__main__":
    main()
