"""`riskstream bench train-scale`: how reading the corpus grows with its size, JSON lines vs the
Parquet dataset — wall time, events/s, peak RSS and bytes per event — at a series of world
sizes, with a linear fit of peak RSS on events.

Each read runs in a fresh process, so its peak RSS (VmHWM) is its own: the figure is the
peak minus the RSS after the imports (numpy, pyarrow, the package), over the events kept.

With `phases`, `train`'s data path too, from the dataset, in a fresh process: the corpus, the
split, every phase's examples, the GBDT's matrices and its two fits (selection and refit, their
boosting rounds capped: memory does not grow with rounds, time does) — RSS after each phase
and the peak, everything but the sequence model's own training.
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


def child_phases(events: str, rounds: int) -> None:
    """In a fresh process: `train`'s data path on `events` (no sequence model); prints RSS
    after each phase and the peak (VmHWM)."""
    import gc
    from functools import partial

    from events import LABELS, WindowPolicy
    from training import train as t
    from training.baseline import fit_baseline
    from training.config import TrainConfig
    from training.data import load_corpus
    from training.evaluate import eval_input
    from training.examples import split_time

    setattr(t, "fit_baseline", partial(fit_baseline, max_iter=rounds))  # noqa: B010
    cfg = TrainConfig()
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()

    def mark(phase: str) -> None:
        gc.collect()
        rows.append(
            {
                "phase": phase,
                "s": round(time.perf_counter() - began, 1),
                "rss": _rss_bytes(),
                "peak": _peak_rss_bytes(),
            }
        )

    mark("imports")
    corpus = load_corpus(Path(events), progress=False, session_gap_s=cfg.session_gap_s)
    mark("corpus")
    policy = WindowPolicy(max_events=cfg.max_events, max_age_s=cfg.max_age_s)
    split = split_time(corpus, seed=cfg.seed)
    ex = t.make_examples(corpus, split, policy, cfg)
    mark("examples")
    choose_inp = eval_input(corpus, ex.choose, np.zeros((len(ex.choose), len(LABELS))))
    gbdt = t.select_gbdt(corpus, ex, choose_inp, cfg, False)
    mark("GBDT selection")
    t._refit_gbdt(corpus, ex, gbdt.model, cfg, False)
    mark("GBDT refit")
    out = {"events": corpus.n_events, "examples": sum(ex.sizes().values()), "rows": rows}
    print(json.dumps(out))


def _measure_phases(events: Path, rounds: int) -> dict[str, Any]:
    code = (
        "from riskstream.bench.train_scale import child_phases; "
        f"child_phases({str(events)!r}, {rounds})"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


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
    users: tuple[int, ...],
    days: float,
    seed: int,
    work: Path,
    jobs: tuple[int, ...],
    phases: bool = False,
    rounds: int = 20,
) -> BenchResult:
    """For each world size: simulate (cached in `work`), ingest with each of `jobs`, then read
    the JSON lines and the dataset in fresh processes; with `phases`, `train`'s data path on
    the dataset too (GBDT rounds capped at `rounds`)."""
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
        if phases:
            p = _measure_phases(dataset, rounds)
            base = p["rows"][0]["rss"]
            for r in p["rows"][1:]:
                rows.append(
                    {
                        "step": f"train data path: {r['phase']}",
                        "events": p["events"],
                        "wall s": r["s"],
                        "events/s": "–",
                        "peak RSS MiB": r["peak"] / 2**20,
                        "B/event": (r["peak"] - base) / max(p["events"], 1),
                        "held B/event": (r["rss"] - base) / max(p["events"], 1),
                        "input MB": report.bytes / 1e6,
                    }
                )
            series.setdefault("train data path", ([], []))
            series["train data path"][0].append(p["events"])
            series["train data path"][1].append(p["rows"][-1]["peak"])
    notes = [
        f"worlds: {', '.join(f'{u:,}' for u in users)} users × {days:g} days (seed {seed}); "
        "each read in a fresh process (OMP_NUM_THREADS=1)",
        "B/event: (peak RSS − RSS after imports) / events kept; held: RSS after the read, "
        "corpus alive, over events",
    ]
    if phases:
        notes.append(
            "train data path: from the dataset, `train`'s defaults, in a fresh process: "
            "wall s and RSS from its start; peak RSS so far after each phase, held = RSS then; "
            f"GBDT boosting rounds capped at {rounds}; the sequence model is not trained"
        )
    for kind, (ev, rss) in series.items():
        slope, intercept = fit_growth(ev, rss)
        what = kind if kind == "train data path" else f"read {kind}"
        notes.append(f"peak RSS fit, {what}: {intercept:,.0f} MiB + {slope:,.0f} B × events")
    return BenchResult(name="train-scale", rows=rows, notes=notes)
