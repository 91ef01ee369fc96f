"""`riskstream bench train-scale`: how reading the corpus grows with its size, JSON lines vs the
Parquet dataset — wall time, events/s, peak RSS and bytes per event — at a series of world
sizes, with a linear fit of peak RSS on events.

Each read runs in a fresh process, so its peak RSS (VmHWM) is its own: the figure is the
peak minus the RSS after the imports (numpy, pyarrow, the package), over the events kept.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from riskstream.bench.core import BenchResult
from simulator import WorldConfig, simulate_world

__all__ = ["bench_train_scale", "fit_growth"]


def _rss_bytes() -> int:
    """This process's resident set now (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM: reset by exec, unlike `ru_maxrss`, which a
    child started by fork + exec inherits from its parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(events: str) -> None:
    """In a fresh process: read `events` (file or dataset) into a corpus; print the figures."""
    import gc

    from training.data import load_corpus

    gc.collect()
    base = _rss_bytes()
    began = time.perf_counter()
    corpus = load_corpus(Path(events), progress=False, kept_labels=False)
    wall = time.perf_counter() - began
    gc.collect()
    held = _rss_bytes()
    peak = _peak_rss_bytes()
    n = corpus.n_events
    print(
        json.dumps(
            {
                "events": n,
                "users": len(corpus.users),
                "wall_s": wall,
                "base_rss": base,
                "peak_rss": peak,
                "held_rss": held,
            }
        )
    )


def _measure(events: Path) -> dict[str, Any]:
    code = f"from riskstream.bench.train_scale import child; child({str(events)!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def fit_growth(events: list[int], rss: list[int]) -> tuple[float, float]:
    """Least-squares line rss = a + b × events: (b in bytes/event, a in MiB)."""
    if len(events) < 2:
        return float("nan"), float("nan")
    b, a = np.polyfit(np.asarray(events, float), np.asarray(rss, float), 1)
    return float(b), float(a) / 2**20


def bench_train_scale(
    users: tuple[int, ...], days: float, seed: int, work: Path, jobs: tuple[int, ...]
) -> BenchResult:
    """For each world size: simulate (cached in `work`), ingest with each of `jobs`, then read
    the JSON lines and the dataset in fresh processes."""
    from training.ingest import ingest

    rows: list[dict[str, Any]] = []
    series: dict[str, tuple[list[int], list[int]]] = {"jsonl": ([], []), "parquet": ([], [])}
    for n in users:
        world = work / f"world-{n}u-{days:g}d-s{seed}"
        if not (world / "events.jsonl").is_file():
            simulate_world(WorldConfig(users=n, days=days, seed=seed), world, progress=False)
        size = (world / "events.jsonl").stat().st_size
        dataset = world / "dataset"
        for j in jobs:
            began = time.perf_counter()
            report = ingest(world / "events.jsonl", dataset, jobs=j, progress=False)
            wall = time.perf_counter() - began
            rows.append(
                {
                    "step": f"ingest (jobs {j})",
                    "events": report.events,
                    "wall s": wall,
                    "events/s": report.lines / wall,
                    "peak RSS MiB": "–",
                    "B/event": "–",
                    "held B/event": "–",
                    "input MB": size / 1e6,
                }
            )
        for kind, path in (("jsonl", world / "events.jsonl"), ("parquet", dataset)):
            m = _measure(path)
            grown = m["peak_rss"] - m["base_rss"]
            rows.append(
                {
                    "step": f"read {kind}",
                    "events": m["events"],
                    "wall s": m["wall_s"],
                    "events/s": m["events"] / m["wall_s"],
                    "peak RSS MiB": m["peak_rss"] / 2**20,
                    "B/event": grown / max(m["events"], 1),
                    "held B/event": (m["held_rss"] - m["base_rss"]) / max(m["events"], 1),
                    "input MB": size / 1e6 if kind == "jsonl" else report.bytes / 1e6,
                }
            )
            series[kind][0].append(m["events"])
            series[kind][1].append(m["peak_rss"])
    notes = [
        f"worlds: {', '.join(f'{u:,}' for u in users)} users × {days:g} days (seed {seed}); "
        "each read in a fresh process (OMP_NUM_THREADS=1)",
        "B/event: (peak RSS − RSS after imports) / events kept; held: RSS after the read, "
        "corpus alive, over events",
    ]
    for kind, (ev, rss) in series.items():
        slope, intercept = fit_growth(ev, rss)
        notes.append(f"peak RSS fit, read {kind}: {intercept:,.0f} MiB + {slope:,.0f} B × events")
    return BenchResult(name="train-scale", rows=rows, notes=notes)
