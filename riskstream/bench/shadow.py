"""`riskstream bench shadow`: the live path's latency with and without a shadow model.

The worker's own runtime (`stream.runtime.WorkerRuntime`: the window script on a real Redis,
ONNX Runtime, rules, cooldowns, explanations) handles the same batches of a simulated world
twice per round, once with the live bundle alone and once with a shadow bundle beside it
(default: the live bundle itself under another model version, i.e. a shadow of the same
size); which of the two goes first alternates between rounds, so that a busy or warming host
favours neither. The broker is left out: `send` returns at once, so what is timed is the
worker's own work.

Per batch it records
- live: from the batch's start until its live alerts are handed to the broker (with a shadow,
  the moment the shadow starts: it runs only after that); the issue's target is live latency
  with a shadow within 20 % of live latency without;
- batch: until the batch may be acknowledged (the shadow's scoring and publication
  included): what bounds the worker's capacity, i.e. events/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from events import parse_event
from export import read_manifest
from stream.messages import Incoming
from stream.runtime import WorkerRuntime
from stream.settings import WorkerSettings

__all__ = ["bench_shadow", "render"]

_NOW_MS = 1_900_000_000_000


def _shadow_of(bundle: Path, into: Path) -> Path:
    """`bundle` under another model version: a shadow as big as the live model."""
    shutil.copytree(bundle, into)
    manifest = replace(read_manifest(bundle), model_version="bench-shadow")
    (into / "manifest.json").write_text(manifest.to_json())
    return into


def _batches(lines: list[bytes], batch: int) -> list[list[Incoming]]:
    msgs = [
        Incoming(v, parse_event(v, now_ms=_NOW_MS).user_id.encode(), "events", 0, i,
                 int(time.time() * 1000))
        for i, v in enumerate(lines)
    ]  # fmt: skip
    return [msgs[i : i + batch] for i in range(0, len(msgs), batch)]


def _run(settings: WorkerSettings, batches: list[list[Incoming]]) -> dict[str, list[float]]:
    runtime = WorkerRuntime(settings)
    live_s: list[float] = []
    batch_s: list[float] = []
    began = 0.0
    shadow = runtime.shadow
    if shadow is not None:  # the live part ends where the shadow starts
        run = shadow.run

        async def timed(*args: Any) -> Any:
            live_s.append(time.perf_counter() - began)
            return await run(*args)

        shadow.run = timed  # type: ignore[method-assign,assignment]

    async def send(topic: str, key: bytes | None, value: bytes, headers: object) -> None:
        return None

    async def all_batches() -> None:
        nonlocal began
        for batch in batches:
            began = time.perf_counter()
            await runtime.handle(batch, send)
            batch_s.append(time.perf_counter() - began)
            if shadow is None:
                live_s.append(batch_s[-1])

    asyncio.run(all_batches())
    runtime.client.close()
    return {"live_s": live_s, "batch_s": batch_s}


def _summary(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def bench_shadow(
    bundle: Path,
    events: Path,
    redis_url: str,
    *,
    shadow: Path | None = None,
    limit: int = 20_000,
    batch: int = 256,
    rounds: int = 3,
    variant: str | None = None,
) -> dict[str, Any]:
    """Time `rounds` × (no shadow, shadow) over the first `limit` events of `events`."""
    lines = events.read_bytes().splitlines()[:limit]
    batches = _batches(lines, batch)
    runs: dict[str, dict[str, list[float]]] = {"live only": {}, "live + shadow": {}}
    with tempfile.TemporaryDirectory(prefix="rs-bench-shadow-") as tmp:
        shadow_path = shadow or _shadow_of(bundle, Path(tmp) / "shadow")
        pair: list[tuple[str, Path | None]] = [("live only", None), ("live + shadow", shadow_path)]
        for r in range(rounds):  # which goes first alternates: a warming host favours neither
            for name, path in pair if r % 2 == 0 else pair[::-1]:
                settings = WorkerSettings(
                    bundle=bundle, shadow_bundle=path, redis_url=SecretStr(redis_url),
                    redis_prefix=f"rsbench:{uuid.uuid4().hex[:8]}:", device="cpu",
                    variant=variant, metrics_port=0,  # type: ignore[arg-type]
                )  # fmt: skip
                got = _run(settings, batches)
                for key, values in got.items():
                    runs[name].setdefault(key, []).extend(values)
        shadow_version = read_manifest(shadow_path).model_version
    result: dict[str, Any] = {
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
        "bundle": str(bundle),
        "live_version": read_manifest(bundle).model_version,
        "shadow_version": shadow_version,
        "events": len(lines),
        "batch": batch,
        "rounds": rounds,
    }
    for name, got in runs.items():
        total_s = sum(got["batch_s"])
        result[name] = {
            "live": _summary(got["live_s"]),
            "batch": _summary(got["batch_s"]),
            "events_per_s": round(len(lines) * rounds / total_s, 1),
        }
    base, with_shadow = result["live only"], result["live + shadow"]
    result["live_p50_change"] = round(with_shadow["live"]["p50_ms"] / base["live"]["p50_ms"] - 1, 4)
    result["live_mean_change"] = round(
        with_shadow["live"]["mean_ms"] / base["live"]["mean_ms"] - 1, 4
    )
    result["capacity_change"] = round(with_shadow["events_per_s"] / base["events_per_s"] - 1, 4)
    result["within_target"] = result["live_p50_change"] <= 0.20
    result["median_batches"] = statistics.median(len(b) for b in batches)
    return result


def render(result: dict[str, Any], out: Path | None) -> None:
    """Print a table; with `out`, write shadow.json there."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"live {result['live_version']} vs + shadow {result['shadow_version']}: "
                  f"{result['events']:,} events, batches of {result['batch']}, "
                  f"{result['rounds']} rounds")  # fmt: skip
    for col in ("run", "live p50 ms", "live p95 ms", "batch p50 ms", "batch p95 ms",
                "events/s"):  # fmt: skip
        table.add_column(col, justify="left" if col == "run" else "right", overflow="fold")
    for name in ("live only", "live + shadow"):
        r = result[name]
        table.add_row(name, f"{r['live']['p50_ms']:.1f}", f"{r['live']['p95_ms']:.1f}",
                      f"{r['batch']['p50_ms']:.1f}", f"{r['batch']['p95_ms']:.1f}",
                      f"{r['events_per_s']:,.0f}")  # fmt: skip
    console = Console(highlight=False)
    console.print(table)
    console.print(
        f"live latency p50 {result['live_p50_change']:+.1%} with a shadow (target ≤ +20 %: "
        f"{'met' if result['within_target'] else 'missed'}); capacity "
        f"{result['capacity_change']:+.1%}"
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "shadow.json").write_text(json.dumps(result, indent=2) + "\n")
