"""`riskstream bench pipeline`: every part's ceiling and the worker, same machine, same minute.

1. model only: ONNX windows/s on the stream's own windows at the worker's batch size, in one
   process and in N at once (per host);
2. Redis only: the window script alone (one client, and N at once);
3. parse + encode only: the worker's per-event path, and the parts a batch path could replace;
4. for each mode (shared; with `--isolate` also isolated: the worker pinned to cores of its own,
   the broker, Redis and the load generator to the others) and process count (`--processes
   1,N`): transport only (N null workers: consume → produce), the worker (`riskstream worker
   --processes N`) draining a backlog, its sustained capacity (the highest open-loop rate held
   with bounded lag for `--span-s`, found by a short search: capacity.py), then open-loop load
   at 25–75 % of that capacity, with each process's CPU and cores;
5. cost vs window size N and batch size (one process, shared);
6. quality vs speed: each bundle and variant's drain rate beside its test PR-AUC (one process).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis
from tqdm import tqdm

from events.terminal import bars_wanted
from export.loader import load_bundle
from export.manifest import read_manifest
from riskstream.bench.core import machine_info
from riskstream.bench.pipeline import affinity, capacity, ceilings, hosts, load
from riskstream.bench.pipeline.affinity import AffinityPlan
from riskstream.bench.pipeline.cpu import CpuMeter
from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.bench.pipeline.profile import Sampler
from riskstream.bench.pipeline.report import quantile_ms, write_report
from riskstream.bench.pipeline.stack import BenchStack, Topics, WorkerProcess

__all__ = ["PipelineOptions", "run_pipeline_bench"]

_WARM_UP: Final = 2_000
_MODEL_WINDOWS: Final = 40_000
_RULE: Final = capacity.LagRule()


@dataclass(frozen=True)
class PipelineOptions:
    """What `riskstream bench pipeline` is told (flags map one to one)."""

    bundle: Path
    events: Path | None = None  # default: simulate `users` × `days`
    out: Path = Path("out/bench/pipeline")
    batch: int = 1024  # the worker's default batch_max
    partitions: int = 8
    loads_pct: tuple[int, ...] = (25, 50, 75)  # of the sustained capacity
    duration_s: float = 20.0  # per load level
    span_s: float = 60.0  # per capacity probe
    max_probes: int = 5  # the capacity search's probes per mode and process count
    isolate: bool = False  # also the isolated mode (affinity.py), beside the shared one
    lag_rule: capacity.LagRule = _RULE  # what counts as bounded lag
    drain_events: int = 60_000
    window_sizes: tuple[int, ...] = (16, 64, 256)
    batch_sizes: tuple[int, ...] = (32, 256, 1024)
    compare: tuple[Path, ...] = ()  # more bundles for quality vs speed
    variants: tuple[str, ...] = ("fp32", "int8")
    redis_url: str | None = None
    rules: Path | None = None  # the worker's rules file (the CLI passes config/rules.yaml)
    users: int = 20_000
    days: float = 1.0
    processes: tuple[int, ...] = (1,)  # the CLI passes 1 and the host's cores
    device: str = "cpu"  # the workers' and the model ceiling's (cuda: scripts/bench-gpu.sh)
    profile: bool = False  # py-spy on every worker process: each drain and load level


def _events(opts: PipelineOptions, workdir: Path) -> Path:
    if opts.events is not None:
        return opts.events
    from simulator import WorldConfig, simulate_world

    world = workdir / "world"
    # 12 % attackers (as the CI world): enough alerts per load level for latency quantiles.
    config = WorldConfig(users=opts.users, days=opts.days, seed=7, attack_share=0.12)
    simulate_world(config, world, progress=True)
    return world / "events.jsonl"


class _Bench:
    def __init__(
        self,
        opts: PipelineOptions,
        stack: BenchStack,
        data: ceilings.BenchEvents,
        plan: AffinityPlan | None = None,
    ):
        self.opts = opts
        self.stack = stack
        self.data = data
        self.plan = plan  # None: shared mode (nothing pinned)
        self.pinned: dict[str, list[int] | None] = {}  # the last worker's processes' cores

    @property
    def mode(self) -> str:
        return "shared" if self.plan is None else "isolated"

    @contextmanager
    def worker(
        self, bundle: Path, backlog: int, **settings: Any
    ) -> Iterator[tuple[Topics, WorkerProcess]]:
        topics = self.stack.topics(self.opts.partitions)
        if backlog:
            lines, keys = self.data.lines[:backlog], self.data.keys[:backlog]
            load.produce(self.stack.broker.bootstrap, topics.events, lines, keys)
        cpus = None if self.plan is None else self.plan.workers
        worker = self.stack.start_worker(bundle, topics, rules=self.opts.rules,
                                         device=self.opts.device, cpus=cpus,
                                         **settings)  # fmt: skip
        try:
            self.pinned = self._pin(worker)
            yield topics, worker
        finally:
            worker.stop()

    def _pin(self, worker: WorkerProcess) -> dict[str, list[int] | None]:
        """Isolated mode: each worker process and service onto its cores; every mode: the
        cores each process may run on, as the OS reports them."""
        pids = {**_worker_pids(worker), **self.stack.service_pids()}
        if self.plan is not None:
            services = [name for name in pids if not name.startswith("worker ")]
            plan = affinity.assign(self.plan, worker.worker_pids(), services)
            return affinity.pin_all(plan, pids)
        return {name: _cores_of(pid) for name, pid in
                {**pids, affinity.BENCH: os.getpid()}.items()}  # fmt: skip

    def meter(self, worker: WorkerProcess) -> CpuMeter:
        return CpuMeter({**_worker_pids(worker), **self.stack.service_pids()})

    def sampler(self, worker: WorkerProcess, label: str | None) -> Sampler | None:
        """py-spy on the worker's processes (--profile), its files under `out/profiles/`."""
        if not self.opts.profile or label is None:
            return None
        return Sampler(_worker_pids(worker), self.opts.out / "profiles", label)

    def drain(
        self, bundle: Path, processes: int = 1, profile: str | None = None, **settings: Any
    ) -> dict[str, Any]:
        count = min(self.opts.drain_events, len(self.data.lines))
        with self.worker(bundle, count, processes=processes, **settings) as (_, worker):
            drained = load.drain_backlog(worker, count, self.meter(worker),
                                         sampler=self.sampler(worker, profile))  # fmt: skip
            return dataclasses.asdict(drained)

    def _slice(self, offset: int, n: int) -> slice:
        if offset + n > len(self.data.lines):
            raise PipelineBenchError(
                f"--events: {len(self.data.lines):,} events are too few for the load offered "
                f"(need ≥ {offset + n:,}); pass a bigger file, a shorter --span-s or "
                "--duration-s, or fewer --loads"
            )
        return slice(offset, offset + n)

    def probe(self, rate: float, processes: int, records: list[dict[str, Any]]) -> capacity.Probe:
        """`rate` offered for `--span-s` on a fresh worker (no backlog left by an earlier
        probe); the verdict on its lag, its record (CPU, lag samples) appended to `records`."""
        o, d = self.opts, self.data
        with self.worker(o.bundle, 0, processes=processes, batch_max=o.batch) as (topics, worker):
            clock = load.AlertClock(self.stack.broker.bootstrap, topics.alerts)
            try:
                self._warm(topics, worker)
                level = load.Level(0, rate, o.span_s)
                sl = self._slice(_WARM_UP, int(rate * o.span_s))
                # An overloaded probe's backlog is not waited for: the next probe's worker is new.
                load.offer_load(self.stack.broker.bootstrap, topics, worker, clock,
                                d.lines[sl], d.keys[sl], d.ids[sl], level, self.meter(worker),
                                catch_up_s=5.0)  # fmt: skip
            finally:
                clock.close()
        sent_per_s = level.sent / max(level.offered_s, 1e-6)
        verdict = capacity.judge(rate, level.sustained_per_s, level.lag, level.offered_s,
                                 o.lag_rule, sent_per_s)  # fmt: skip
        verdict = dataclasses.replace(
            verdict, latency_p99_ms=quantile_ms(level.alert_latencies_ms, 0.99)
        )
        records.append({**dataclasses.asdict(verdict), "offered_s": level.offered_s,
                        "cpu": level.cpu, "lag": level.lag})  # fmt: skip
        return verdict

    def _warm(self, topics: Topics, worker: WorkerProcess) -> None:
        """Until the group has joined and the model is warm."""
        d = self.data
        load.produce(self.stack.broker.bootstrap, topics.events,
                     d.lines[:_WARM_UP], d.keys[:_WARM_UP])  # fmt: skip
        worker.wait_done(_WARM_UP, 120)

    def open_loop(self, capacity_per_s: float, processes: int) -> list[dict[str, Any]]:
        o, d = self.opts, self.data
        levels: list[dict[str, Any]] = []
        with self.worker(o.bundle, 0, processes=processes, batch_max=o.batch) as (topics, worker):
            clock = load.AlertClock(self.stack.broker.bootstrap, topics.alerts)
            meter = self.meter(worker)
            try:
                self._warm(topics, worker)
                offset = _WARM_UP
                for pct in tqdm(o.loads_pct, desc=f"open-loop load, {self.mode}, "
                                f"{processes} proc.", unit="level",
                                disable=not bars_wanted(True)):  # fmt: skip
                    level = load.Level(pct, capacity_per_s * pct / 100, o.duration_s)
                    sl = self._slice(offset, int(level.offered_per_s * level.duration_s))
                    label = f"{self.mode}-{processes}p-{pct}pct"
                    load.offer_load(self.stack.broker.bootstrap, topics, worker, clock,
                                    d.lines[sl], d.keys[sl], d.ids[sl], level, meter,
                                    self.sampler(worker, label))  # fmt: skip
                    offset = sl.stop
                    levels.append(dataclasses.asdict(level))
            finally:
                clock.close()
        return levels

    def run(self, processes: int) -> dict[str, Any]:
        """Transport-only ceiling, drained rate, sustained capacity and open-loop load."""
        o = self.opts
        transport = self.drain(o.bundle, processes, transport_only=True, batch_max=o.batch)
        label = f"{self.mode}-{processes}p-drain"
        pipeline = self.drain(o.bundle, processes, label, batch_max=o.batch)
        cores = self.pinned
        records: list[dict[str, Any]] = []
        search = capacity.search_capacity(
            lambda rate: self.probe(rate, processes, records),
            pipeline["events_per_s"],
            max_probes=o.max_probes,
        )
        found = search.capacity_per_s
        levels = [] if found is None else self.open_loop(found, processes)
        return {"mode": self.mode, "processes": processes, "cores": cores,
                "transport": transport, "pipeline": pipeline,
                "capacity": {"start_per_s": search.start_per_s, "capacity_per_s": found,
                             "load_limited": search.load_limited,
                             "span_s": o.span_s, "rule": dataclasses.asdict(o.lag_rule),
                             "probes": records},
                "levels": levels}  # fmt: skip


def run_pipeline_bench(opts: PipelineOptions) -> dict[str, Any]:
    """Run every part; write `pipeline.json`, `pipeline.md` and PNGs under `opts.out`."""
    # kafka-python logs each connection, and warns when the offer thread holds the GIL.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    cores = affinity.host_cores()
    plan = affinity.plan_affinity(cores) if opts.isolate else None  # one core: refused here
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        workdir = Path(tmp)
        data = ceilings.BenchEvents.load(_events(opts, workdir))
        # As the worker opens it (WorkerSettings.inference_spin off): ONNX Runtime's threads
        # busy-waiting between operators starve everything else on a shared host.
        bundle = load_bundle(opts.bundle, opts.device, spin=False)  # type: ignore[arg-type]
        modes = 2 if plan is not None else 1
        steps = tqdm(total=6 + modes * len(opts.processes), desc="bench pipeline", unit="step",
                     disable=not bars_wanted(True))  # fmt: skip
        most = max(opts.processes)
        result: dict[str, Any] = {
            "machine": machine_info(),
            "load_before": os.getloadavg(),
            "options": _jsonable(opts),
            "bundle": _describe(bundle),
            "events": len(data.lines),
        }

        steps.set_postfix_str("model ceiling")
        windows = ceilings.stream_windows(bundle, data.events[:_MODEL_WINDOWS])
        result["model"] = ceilings.model_ceiling(bundle, windows, opts.batch)
        if most > 1:
            result["model_host"] = hosts.model_ceiling_host(
                opts.bundle, windows, opts.batch, most, opts.device
            )
        if plan is not None:
            result["model_isolated"] = _model_on(opts, windows, plan.workers)
        result["parse_encode"] = ceilings.parse_encode_ceiling(
            data.lines[:_MODEL_WINDOWS], bundle.spec, opts.batch
        )
        steps.update()

        with BenchStack(workdir, opts.redis_url) as stack:
            steps.set_postfix_str("Redis ceiling")
            client = redis.Redis.from_url(stack.redis.url)
            n = bundle.policy.max_events
            result["redis"] = ceilings.redis_ceiling(
                client, bundle, data.events[:_MODEL_WINDOWS], opts.batch, n
            )
            if most > 1:
                result["redis_host"] = hosts.redis_ceiling_host(
                    stack.redis.url,
                    opts.bundle,
                    data.events[:_MODEL_WINDOWS],
                    opts.batch,
                    n,
                    most,
                )
            steps.update()
            bench = _Bench(opts, stack, data)

            result["runs"] = []
            for processes in opts.processes:
                steps.set_postfix_str(f"shared, {processes} worker process(es)")
                result["runs"].append(bench.run(processes))
                steps.update()
            if plan is not None:
                result["isolation"] = {"services": plan.services, "workers": plan.workers}
                isolated = _Bench(opts, stack, data, plan)
                try:
                    for processes in opts.processes:
                        steps.set_postfix_str(f"isolated, {processes} worker process(es)")
                        result["runs"].append(isolated.run(processes))
                        steps.update()
                finally:  # the broker, Redis and this process back on every core
                    names = {"broker", "redis", affinity.BENCH}
                    affinity.pin_all({n: cores for n in names}, stack.service_pids())
            # The one-process run: what the sweeps below compare with.
            first = next((r for r in result["runs"]
                          if r["processes"] == 1 and r["mode"] == "shared"), None)  # fmt: skip
            if first is None:
                first = {"pipeline": bench.drain(opts.bundle, batch_max=opts.batch)}
            result["pipeline"] = first["pipeline"]

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
        result["load_after"] = os.getloadavg()
    write_report(result, opts.out)
    return result


def _model_on(opts: PipelineOptions, windows: list[Any], cpus: tuple[int, ...]) -> dict[str, Any]:
    """The model-only ceiling with this process pinned to the isolated worker's cores (ONNX
    Runtime on as many threads): the model's share of what the isolated worker has."""
    with affinity.inherited(cpus):  # ONNX Runtime's threads, made with the session, inherit
        loaded = load_bundle(opts.bundle, opts.device, threads=len(cpus), spin=False)  # type: ignore[arg-type]
        out = ceilings.model_ceiling(loaded, windows, opts.batch)
    return {**out, "cores": list(cpus)}


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


def _cores_of(pid: int) -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(pid))
    except (OSError, AttributeError):
        return None


def _worker_pids(worker: WorkerProcess) -> dict[str, int]:
    return {f"worker {i}": pid for i, pid in enumerate(worker.worker_pids())}


def _describe(bundle: Any) -> dict[str, Any]:
    return {"model_version": bundle.model_version, "variant": bundle.variant,
            "preset": bundle.manifest.source.get("preset"),
            "max_events": bundle.policy.max_events}  # fmt: skip


def _jsonable(opts: PipelineOptions) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(opts), default=str))  # type: ignore[no-any-return]
