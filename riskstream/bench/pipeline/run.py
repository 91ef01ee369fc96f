"""`riskstream bench pipeline`: every part's ceiling and the worker, same machine, same minute.

1. model only: ONNX windows/s on the stream's own windows at the worker's batch size;
2. transport only: the worker app with a runtime that does nothing (consume → produce);
3. Redis only: the window script alone;
4. the worker: a backlog drained (capacity), then open-loop load at 25–125 % of it;
5. cost vs window size N and batch size;
6. quality vs speed: each bundle and variant's drain rate beside its test PR-AUC.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis
from tqdm import tqdm

from export.manifest import read_manifest
from riskstream.bench.core import machine_info
from riskstream.bench.pipeline import ceilings, load
from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.bench.pipeline.report import write_report
from riskstream.bench.pipeline.stack import BenchStack, Topics, WorkerProcess

__all__ = ["PipelineOptions", "run_pipeline_bench"]

_WARM_UP: Final = 2_000
_MODEL_WINDOWS: Final = 40_000


@dataclass(frozen=True)
class PipelineOptions:
    """What `riskstream bench pipeline` is told (flags map one to one)."""

    bundle: Path
    events: Path | None = None  # default: simulate `users` × `days`
    out: Path = Path("benchmarks/results/pipeline")
    batch: int = 1024  # the worker's default batch_max
    partitions: int = 8
    loads_pct: tuple[int, ...] = (25, 50, 75, 100, 125)
    duration_s: float = 20.0
    drain_events: int = 60_000
    window_sizes: tuple[int, ...] = (16, 64, 256)
    batch_sizes: tuple[int, ...] = (32, 256, 1024)
    compare: tuple[Path, ...] = ()  # more bundles for quality vs speed
    variants: tuple[str, ...] = ("fp32", "int8")
    redis_url: str | None = None
    rules: Path | None = None  # the worker's rules file (the CLI passes config/rules.yaml)
    users: int = 20_000
    days: float = 1.0


def _events(opts: PipelineOptions, workdir: Path) -> Path:
    if opts.events is not None:
        return opts.events
    from training.simulator import WorldConfig, simulate_world

    world = workdir / "world"
    # 12 % attackers (as the CI world): enough alerts per load level for latency quantiles.
    config = WorldConfig(users=opts.users, days=opts.days, seed=7, attack_share=0.12)
    simulate_world(config, world, progress=True)
    return world / "events.jsonl"


class _Bench:
    def __init__(self, opts: PipelineOptions, stack: BenchStack, data: ceilings.BenchEvents):
        self.opts = opts
        self.stack = stack
        self.data = data

    @contextmanager
    def worker(
        self, bundle: Path, backlog: int, **settings: Any
    ) -> Iterator[tuple[Topics, WorkerProcess]]:
        topics = self.stack.topics(self.opts.partitions)
        if backlog:
            lines, keys = self.data.lines[:backlog], self.data.keys[:backlog]
            load.produce(self.stack.broker.bootstrap, topics.events, lines, keys)
        worker = self.stack.start_worker(bundle, topics, rules=self.opts.rules, **settings)
        try:
            yield topics, worker
        finally:
            worker.stop()

    def drain(self, bundle: Path, **settings: Any) -> dict[str, Any]:
        count = min(self.opts.drain_events, len(self.data.lines))
        with self.worker(bundle, count, **settings) as (_, worker):
            return dataclasses.asdict(load.drain_backlog(worker, count))

    def open_loop(self, capacity: float) -> list[dict[str, Any]]:
        o, d = self.opts, self.data
        levels: list[dict[str, Any]] = []
        with self.worker(o.bundle, 0, batch_max=o.batch) as (topics, worker):
            clock = load.AlertClock(self.stack.broker.bootstrap, topics.alerts)
            try:
                load.produce(self.stack.broker.bootstrap, topics.events,
                             d.lines[:_WARM_UP], d.keys[:_WARM_UP])  # fmt: skip
                worker.wait_done(_WARM_UP, 120)  # the group has joined, the model is warm
                offset = _WARM_UP
                for pct in tqdm(o.loads_pct, desc="open-loop load", unit="level"):
                    level = load.Level(pct, capacity * pct / 100, o.duration_s)
                    n = int(level.offered_per_s * level.duration_s)
                    if offset + n > len(d.lines):
                        raise PipelineBenchError(
                            f"--events: {len(d.lines):,} events are too few for the load levels "
                            f"(need ≥ {offset + n:,}); pass a bigger file or fewer --loads"
                        )
                    sl = slice(offset, offset + n)
                    load.offer_load(self.stack.broker.bootstrap, topics, worker, clock,
                                    d.lines[sl], d.keys[sl], d.ids[sl], level)  # fmt: skip
                    offset += n
                    levels.append(dataclasses.asdict(level))
            finally:
                clock.close()
        return levels


def run_pipeline_bench(opts: PipelineOptions) -> dict[str, Any]:
    """Run every part; write `pipeline.json`, `pipeline.md` and PNGs under `opts.out`."""
    # kafka-python logs each connection, and warns when the offer thread holds the GIL.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        workdir = Path(tmp)
        data = ceilings.BenchEvents.load(_events(opts, workdir))
        bundle = ceilings.load_cpu_bundle(opts.bundle, None)
        steps = tqdm(total=7, desc="bench pipeline", unit="step")
        result: dict[str, Any] = {
            "machine": machine_info(),
            "options": _jsonable(opts),
            "bundle": _describe(bundle),
            "events": len(data.lines),
        }

        steps.set_postfix_str("model ceiling")
        windows = ceilings.stream_windows(bundle, data.events[:_MODEL_WINDOWS])
        result["model"] = ceilings.model_ceiling(bundle, windows, opts.batch)
        steps.update()

        with BenchStack(workdir, opts.redis_url) as stack:
            steps.set_postfix_str("Redis ceiling")
            client = redis.Redis.from_url(stack.redis.url)
            n = bundle.policy.max_events
            result["redis"] = ceilings.redis_ceiling(
                client, bundle, data.events[:_MODEL_WINDOWS], opts.batch, n
            )
            steps.update()
            bench = _Bench(opts, stack, data)

            steps.set_postfix_str("transport ceiling")
            result["transport"] = bench.drain(opts.bundle, transport_only=True,
                                              batch_max=opts.batch)  # fmt: skip
            steps.update()

            steps.set_postfix_str("pipeline capacity")
            result["pipeline"] = bench.drain(opts.bundle, batch_max=opts.batch)
            steps.update()

            steps.set_postfix_str("open-loop load")
            result["levels"] = bench.open_loop(result["pipeline"]["events_per_s"])
            steps.update()

            steps.set_postfix_str("cost vs N and batch")
            result["cost_vs_n"] = [
                {"n": size,
                 "model": ceilings.model_cost_at(bundle, size, opts.batch, workdir),
                 "redis": ceilings.redis_ceiling(client, bundle, data.events[:_MODEL_WINDOWS],
                                                 opts.batch, size, fold=True)}
                for size in opts.window_sizes
            ]  # fmt: skip
            result["cost_vs_batch"] = [
                {"batch": b,
                 "model": ceilings.model_ceiling(bundle, windows, b),
                 "pipeline": result["pipeline"] if b == opts.batch
                 else bench.drain(opts.bundle, batch_max=b)}
                for b in opts.batch_sizes
            ]  # fmt: skip
            steps.update()

            steps.set_postfix_str("quality vs speed")
            result["quality"] = _quality(bench, opts, bundle.variant, result["pipeline"])
            steps.update()
            client.close()
        steps.close()
    write_report(result, opts.out)
    return result


def _quality(
    bench: _Bench, opts: PipelineOptions, default_variant: str, measured: dict[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in (opts.bundle, *opts.compare):
        manifest = read_manifest(path)
        for variant in opts.variants:
            info = manifest.variants.get(variant)
            if info is None or not info.verified:
                continue
            same = path == opts.bundle and variant == default_variant
            drain = measured if same else bench.drain(path, batch_max=opts.batch, variant=variant)
            heads = manifest.evaluation.get("heads", {})
            rows.append({
                "bundle": str(path), "preset": manifest.source.get("preset"),
                "variant": variant, "events_per_s": drain["events_per_s"],
                "fraud_pr_auc": heads.get("fraud", {}).get("pr_auc"),
                "abnormal_click_pr_auc": heads.get("abnormal_click", {}).get("pr_auc"),
            })  # fmt: skip
    return rows


def _describe(bundle: Any) -> dict[str, Any]:
    return {"model_version": bundle.model_version, "variant": bundle.variant,
            "preset": bundle.manifest.source.get("preset"),
            "max_events": bundle.policy.max_events}  # fmt: skip


def _jsonable(opts: PipelineOptions) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(opts), default=str))  # type: ignore[no-any-return]
