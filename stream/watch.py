"""The consumer's progress for /health and /ready: assignment, commits, lag, the broker, Redis.

`CommitWatch` is the pure part: fed each check's committed offsets and the broker's end offsets
per partition, it names the partitions that have lag and whose committed offset has not moved
for `stall_timeout_s`; `StallWatchdog` names those stalled for `stall_exit_s` while Redis and the
broker answered, which end the worker (its supervisor restarts it). `ConsumerCheck` reads those
from a Faust consumer (`assignment()`, `highwaters()`, a request to the broker, and
`_committed_offset`, private: faust-streaming is pinned to the minor version this was written
against, and `tests/unit/test_faust_pin.py` fails if the attribute goes away) and updates the
runtime's `Health`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from stream.runtime import BatchHandler

__all__ = ["CommitWatch", "ConsumerCheck", "StallWatchdog"]

log = logging.getLogger(__name__)

_K = TypeVar("_K", bound=Hashable)


class CommitWatch(Generic[_K]):
    """Partitions whose commit stalled while they have lag.

    >>> w = CommitWatch[str](stall_timeout_s=10)
    >>> w.update(0.0, {"p0": 5}, {"p0": 9})  # lag 4: the clock starts
    []
    >>> w.update(11.0, {"p0": 5}, {"p0": 9})  # no commit for 11 s with lag
    ['p0']
    >>> w.update(12.0, {"p0": 7}, {"p0": 9})  # it moved
    []
    >>> w.update(30.0, {"p0": 9}, {"p0": 9})  # caught up: no lag, no stall
    []
    """

    def __init__(self, stall_timeout_s: float) -> None:
        self.stall_timeout_s = stall_timeout_s
        self._since: dict[_K, tuple[int, float]] = {}  # committed offset, when last it moved

    def update(
        self, now: float, committed: Mapping[_K, int | None], ends: Mapping[_K, int]
    ) -> list[_K]:
        """The stalled partitions among `ends` (an unknown committed offset counts as 0)."""
        stalled: list[_K] = []
        for tp, end in ends.items():
            at = committed.get(tp) or 0
            seen = self._since.get(tp)
            if seen is None or seen[0] != at or end <= at:
                self._since[tp] = (at, now)  # moved, or nothing to do: the clock restarts
            elif now - seen[1] >= self.stall_timeout_s:
                stalled.append(tp)
        for tp in set(self._since) - set(ends):  # revoked
            del self._since[tp]
        return stalled

    def lagging_for(self, now: float) -> dict[_K, float]:
        """Per partition: how long it has had lag without a commit, as of the latest update
        (0 for one without lag)."""
        return {tp: now - since for tp, (_, since) in self._since.items()}


class StallWatchdog(Generic[_K]):
    """The partitions that end the worker: lag and no commit for `exit_after_s`, counted only
    while Redis and the broker answer (when either does not, a restart would not help, and the
    clock starts again once both answer). `exit_after_s` 0: never.

    >>> d = StallWatchdog[str](exit_after_s=60)
    >>> d.update(70.0, {"p0": 70.0}, dependencies_ok=True)
    ['p0']
    >>> d.update(71.0, {"p0": 71.0}, dependencies_ok=False)  # Redis down: excused
    []
    >>> d.update(100.0, {"p0": 100.0}, dependencies_ok=True)  # 29 s since Redis answered
    []
    >>> d.update(131.0, {"p0": 131.0, "p1": 0.0}, dependencies_ok=True)
    ['p0']
    """

    def __init__(self, exit_after_s: float) -> None:
        self.exit_after_s = exit_after_s
        self._excused_at = float("-inf")

    def update(
        self, now: float, lagging_for: Mapping[_K, float], *, dependencies_ok: bool
    ) -> list[_K]:
        """The partitions stalled long enough to end the worker."""
        if not dependencies_ok:
            self._excused_at = now
            return []
        if not self.exit_after_s:
            return []
        answered_for = now - self._excused_at
        return [tp for tp, s in lagging_for.items() if min(s, answered_for) >= self.exit_after_s]


class ConsumerCheck:
    """One health check of a Faust consumer and the runtime's Redis; run from an app timer.

    The broker's end offsets are asked for with a timeout, and not again while a request is
    still out (a broker that does not answer would pile them up otherwise).
    """

    def __init__(self, stall_timeout_s: float, timeout_s: float, stall_exit_s: float = 0) -> None:
        self.watch = CommitWatch[Any](stall_timeout_s)
        self.watchdog = StallWatchdog[Any](stall_exit_s)
        self.timeout_s = timeout_s
        self._ends: asyncio.Future[Mapping[Any, int]] | None = None

    async def run(self, consumer: Any, runtime: BatchHandler, now: float) -> list[str]:
        """Update `runtime.health` from `consumer` (a Faust `Consumer`) and a Redis PING;
        returns the partitions stalled long enough to end the worker (`StallWatchdog`)."""
        check_redis = getattr(runtime, "check_redis", None)
        if check_redis is not None:
            await check_redis()
        tps = set(consumer.assignment())
        broker: bool | None = None
        error = ""
        ends: Mapping[Any, int] = {}
        if tps:
            if self._ends is None or self._ends.done():
                self._ends = asyncio.ensure_future(consumer.highwaters(*tps))
            try:
                ends = await asyncio.wait_for(asyncio.shield(self._ends), self.timeout_s)
                broker = True
            except TimeoutError:
                broker, error = False, f"no answer to ListOffsets within {self.timeout_s:g} s"
            except Exception as exc:  # whatever the client raised: unreachable
                broker, error = False, f"{type(exc).__name__}: {exc}"
                self._ends = None
        if broker:
            committed = consumer._committed_offset  # faust-streaming 0.15 (pinned)
            stalled = self.watch.update(now, {tp: committed.get(tp) for tp in ends}, ends)
        else:
            stalled = []
        answering = bool(broker) and runtime.health.redis is not False
        ending = self.watchdog.update(now, self.watch.lagging_for(now), dependencies_ok=answering)
        runtime.health.consumer_checked(
            broker=broker,
            broker_error=error,
            assigned=len(tps),
            stalled=sorted(f"{tp.topic}[{tp.partition}]" for tp in stalled),
        )
        return sorted(f"{tp.topic}[{tp.partition}]" for tp in ending)
