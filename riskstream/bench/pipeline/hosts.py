"""A part's ceiling per host: the same measurement in N processes at once, summed.

One worker process is bound by its interpreter lock; `riskstream worker --processes N` runs N.
The model's and Redis's ceilings are measured the same way: N processes, each loading the bundle
(ONNX Runtime with cores // N threads, as `worker --processes N` gives each) and timing its own
share after a common start, their rates summed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from events import Event
from events.window import Records
from riskstream.supervisor import default_processes

__all__ = ["model_ceiling_host", "redis_ceiling_host"]


def _model_job(
    bundle: str, windows: list[Records], batch: int, device: str, threads: int, start: Any
) -> dict[str, float]:
    from export.loader import load_bundle
    from riskstream.bench.pipeline import ceilings

    loaded = load_bundle(Path(bundle), device, threads=threads, spin=False)  # type: ignore[arg-type]
    loaded.score_windows(windows[:batch], max_batch=batch)  # warm
    start.wait()
    return ceilings.model_ceiling(loaded, windows, batch)


def _redis_job(
    url: str, bundle: str, events: list[Event], batch: int, n: int, start: Any
) -> dict[str, float]:
    import redis

    from riskstream.bench.pipeline import ceilings

    loaded = ceilings.load_cpu_bundle(Path(bundle), None)
    client = redis.Redis.from_url(url)
    start.wait()
    try:
        return ceilings.redis_ceiling(client, loaded, events, batch, n)
    finally:
        client.close()


def _in_processes(processes: int, job: Any, args: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(processes)
        with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
            futures = [pool.submit(job, *(*a, start)) for a in args]
            results = [f.result() for f in futures]
    return {"processes": processes, "each": results}


def model_ceiling_host(
    bundle: Path, windows: list[Records], batch: int, processes: int, device: str = "cpu"
) -> dict[str, Any]:
    """Windows/s of `processes` model-only processes at once (each on its slice of windows)."""
    share = len(windows) // processes
    threads = max(1, default_processes() // processes)  # as `riskstream worker` shares them
    args = [(str(bundle), windows[i * share : (i + 1) * share], batch, device, threads)
            for i in range(processes)]  # fmt: skip
    out = _in_processes(processes, _model_job, args)
    out["windows_per_s"] = sum(r["windows_per_s"] for r in out["each"])
    return out


def redis_ceiling_host(
    url: str, bundle: Path, events: list[Event], batch: int, n: int, processes: int
) -> dict[str, Any]:
    """Events/s of `processes` window-script clients at once (each on its slice of events)."""
    share = len(events) // processes
    args = [(url, str(bundle), events[i * share : (i + 1) * share], batch, n)
            for i in range(processes)]  # fmt: skip
    out = _in_processes(processes, _redis_job, args)
    out["events_per_s"] = sum(r["events_per_s"] for r in out["each"])
    return out
