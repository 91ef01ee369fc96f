"""Isolated mode (`--isolate`): the worker's processes on cores of their own, everything else
(the broker, Redis, this process: the load generator and the alert consumer) on the others.

On a shared host the broker's ingest and the load generator take ~0.5 of 2 cores from the
worker while load is offered; pinned apart, what is measured is the worker's own latency and
capacity beside a broker that does not compete for its cores. The plan (which process to which
cores) is a pure function, tested; pinning sets every thread of a process (Linux affinity is
per thread, and threads started later inherit their creator's).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from riskstream.bench.pipeline.exceptions import PipelineBenchError

__all__ = [
    "AffinityPlan",
    "assign",
    "host_cores",
    "inherited",
    "pin",
    "pin_all",
    "plan_affinity",
]

BENCH: str = "bench (load generator)"  # CpuMeter's name for this process


def host_cores() -> list[int]:
    """The cores this process may run on (its affinity), in order."""
    if not hasattr(os, "sched_getaffinity"):
        return list(range(os.cpu_count() or 1))
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class AffinityPlan:
    """Cores for the services (broker, Redis, load generator) and for the worker processes."""

    services: tuple[int, ...]
    workers: tuple[int, ...]


def plan_affinity(cores: Sequence[int]) -> AffinityPlan:
    """Split `cores`: the lowest quarter (at least one) to the services, the rest to the
    worker (2 cores: services on the first, the worker on the second). One core: refused."""
    ordered = sorted(set(cores))
    if len(ordered) < 2:
        raise PipelineBenchError(
            f"--isolate needs at least 2 cores (this host gives the benchmark {len(ordered)}): "
            "run without --isolate"
        )
    services = max(1, len(ordered) // 4)
    return AffinityPlan(tuple(ordered[:services]), tuple(ordered[services:]))


def assign(
    plan: AffinityPlan, worker_pids: Sequence[int], service_names: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """Name → cores: `worker i` its own core when there are as many worker cores as worker
    processes, else all workers share the worker cores; every service (and this process, as
    `BENCH`) the service cores."""
    out: dict[str, tuple[int, ...]] = {}
    own = len(plan.workers) >= len(worker_pids)
    for i, _pid in enumerate(worker_pids):
        out[f"worker {i}"] = (plan.workers[i],) if own else plan.workers
    for name in (*service_names, BENCH):
        out[name] = plan.services
    return out


def _tids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(Path("/proc") / str(pid) / "task")]
    except OSError:  # no /proc: the process's main thread only
        return [pid]


def pin(pid: int, cores: Sequence[int]) -> list[int] | None:
    """Every thread of `pid` onto `cores`; the affinity the OS then reports, None when the
    process may not be pinned (gone, or not ours: an external Redis)."""
    wanted = set(cores)
    try:
        for tid in _tids(pid):
            try:
                os.sched_setaffinity(tid, wanted)
            except ProcessLookupError:  # a thread that ended meanwhile
                continue
        return sorted(os.sched_getaffinity(pid))
    except (PermissionError, ProcessLookupError):
        return None


def pin_all(
    assignment: Mapping[str, Sequence[int]], pids: Mapping[str, int]
) -> dict[str, list[int] | None]:
    """Pin each named process (`BENCH`: this one) to its cores; name → the affinity it has."""
    return {name: pin(pids.get(name, os.getpid()) if name == BENCH else pids[name], cores)
            for name, cores in assignment.items() if name == BENCH or name in pids}  # fmt: skip


@contextmanager
def inherited(cores: Sequence[int] | None) -> Iterator[None]:
    """While inside, this thread runs on `cores`, so a process it starts inherits them (the
    worker's supervisor then sizes itself to them); the thread's affinity is restored after."""
    if cores is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cores))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
