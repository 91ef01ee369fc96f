"""CPU use of the benchmark's processes over a span: cores busy (user + system CPU s / wall s).

Every process on the host that the run starts is counted: each worker process, the broker,
Redis, and this process (the open-loop load generator and the alert clock), so that what the
load generator takes from the worker's cores is shown, not hidden. Needs psutil (a dev
dependency); without it the figures are left out.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["CpuMeter"]


class CpuMeter:
    """`start()` then `stop()`: {name: cores busy} for the named pids (gone ones: left out)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench (load generator)": os.getpid()}
        self._began = 0.0
        self._start: dict[str, float] = {}
        self._procs: dict[str, Any] = {}

    def start(self) -> CpuMeter:
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:  # a dev dependency: without it, no CPU figures
            self._procs = {}
            return self
        self._procs = {}
        for name, pid in self.pids.items():
            try:
                self._procs[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self._start = {n: _cpu_s(p) for n, p in self._procs.items()}
        self._began = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        if not self._procs:
            return {}
        import psutil

        wall = max(time.monotonic() - self._began, 1e-6)
        out: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                out[name] = round((_cpu_s(proc) - self._start[name]) / wall, 3)
            except psutil.Error:
                continue
        return out


def _cpu_s(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)
