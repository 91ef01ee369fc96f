"""`riskstream bench bundle BUNDLE`: windows/s and per-batch latency per engine and batch size.

Windows are real ones (a small simulated world, encoded with the bundle's spec and window), each
batch padded to its longest window as the worker does. Only the model call is timed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
from tqdm import tqdm

from events import ModelInputs, windows_to_inputs
from events.terminal import bars_wanted
from events.window import Records
from export.loader import Bundle, cuda_present, load_bundle
from riskstream.bench.core import BenchResult

__all__ = ["BATCH_SIZES", "bench_bundle", "render_bench"]

log = logging.getLogger(__name__)

BATCH_SIZES: Final = (1, 32, 256)
_BUDGET_S: Final = 2.0  # timed seconds per engine and batch size (after one warm-up batch)


def _windows(bundle: Bundle, users: int = 1500) -> list[Records]:
    from simulator import WorldConfig, simulate_world
    from training.data import load_corpus
    from training.examples import batch_windows, build_examples

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp)
        simulate_world(WorldConfig(users=users, days=1.0, seed=11), world, progress=False)
        corpus = load_corpus(world / "events.jsonl", spec=bundle.spec, progress=False)
    examples = build_examples(corpus, np.arange(len(corpus.users)), bundle.policy)
    idx = np.random.default_rng(0).permutation(len(examples))
    return batch_windows(corpus, examples, idx)


def _time(run: Any, batches: list[ModelInputs]) -> dict[str, float]:
    run(batches[0])
    latencies: list[float] = []
    spent = 0.0
    for batch in batches[1:]:
        began = time.perf_counter()
        run(batch)
        took = time.perf_counter() - began
        latencies.append(took)
        spent += took
        if spent >= _BUDGET_S and len(latencies) >= 5:
            break
    ms = np.array(latencies) * 1000
    sizes = [len(b.features) for b in batches[1 : len(latencies) + 1]]
    # From the median batch: a noisy neighbour on 2 cores shifts the mean, not the median.
    return {
        "windows_per_s": float(np.median(sizes)) / float(np.median(ms)) * 1000,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "batches": len(latencies),
    }


def _torch_runner(bundle: Bundle) -> tuple[Any, str] | None:
    checkpoint = bundle.manifest.source.get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        return None
    try:
        import torch

        from training.checkpoint import load_checkpoint
    except ImportError:
        return None
    model = load_checkpoint(Path(checkpoint)).model

    def run(x: ModelInputs) -> None:
        with torch.no_grad():
            model(torch.from_numpy(x.features), torch.from_numpy(x.attention_mask))

    return run, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def bench_bundle(path: Path, progress: bool = True, users: int = 1500) -> BenchResult:
    """Time torch eager (when the source checkpoint is there), ORT FP32 and INT8, and CUDA
    FP32/FP16 on a GPU, at batch 1, 32 and 256."""
    cpu = load_bundle(path, "cpu", variant="fp32")
    windows = _windows(cpu, users)
    engines: list[tuple[str, Any]] = []
    notes = [f"bundle {path} (model {cpu.model_version}), {len(windows):,} real windows, "
             f"N = {cpu.policy.max_events}, batches padded to their longest window"]  # fmt: skip
    torch_runner = _torch_runner(cpu)
    if torch_runner is None:
        notes.append("torch eager: skipped (source checkpoint or torch not here)")
    else:
        engines.append(("torch eager (CPU)", torch_runner[0]))
        notes.append(torch_runner[1])
    engines.append(("ORT FP32 (CPU)", cpu.predict))
    variants = cpu.manifest.variants
    if "int8" in variants:
        int8 = load_bundle(path, "cpu", variant="int8")
        engines.append(("ORT INT8 (CPU)", int8.predict))
    if cuda_present():
        for name in ("fp32", "fp16"):
            if name in variants:
                gpu = load_bundle(path, "cuda", variant=name)
                engines.append((f"ORT {name.upper()} ({gpu.provider})", gpu.predict))
    rows: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(engines) * len(BATCH_SIZES), desc="bench", disable=not bars_wanted(progress)
    )
    for batch_size in BATCH_SIZES:
        count = max(8, min(len(windows) // batch_size, 400))
        batches = [
            windows_to_inputs(windows[i * batch_size : (i + 1) * batch_size], cpu.spec)
            for i in range(count)
        ]
        for name, run in engines:
            rows.append({"engine": name, "batch": batch_size, **_time(run, batches)})
            bar.update()
    bar.close()
    by = {(r["engine"], r["batch"]): r["windows_per_s"] for r in rows}
    for b in BATCH_SIZES:
        fp32 = by.get(("ORT FP32 (CPU)", b))
        if fp32 and ("torch eager (CPU)", b) in by:
            notes.append(
                f"batch {b}: ORT FP32 / torch = {fp32 / by[('torch eager (CPU)', b)]:.2f}×"
            )
        if fp32 and ("ORT INT8 (CPU)", b) in by:
            notes.append(f"batch {b}: INT8 / FP32 = {by[('ORT INT8 (CPU)', b)] / fp32:.2f}×")
    return BenchResult("bundle", rows, notes)


def render_bench(result: BenchResult, out: Path | None) -> None:
    """Print the table; save JSON (and a markdown table) when `out` is given."""
    result.print()
    if out is None:
        return
    result.save(out)
    lines = ["| engine | batch | windows/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {r['engine']} | {r['batch']} | {r['windows_per_s']:,.0f} | {r['p50_ms']:.2f} | "
        f"{r['p99_ms']:.2f} |"
        for r in result.rows
    ]
    (out / "bundle.md").write_text("\n".join(lines) + "\n")
