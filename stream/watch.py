"""The consumer's progress for /health and /ready: assignment, commits, lag, the broker, Redis.

`CommitWatch` is the pure part: fed each check's committed offsets and the broker's end offsets
per partition, it names the partitions that have lag and whose committed offset has not moved
for `stall_timeout_s`. `check_consumer` reads those from a Faust consumer (`assignment()`,
`highwaters()`, a request to the broker, and `_committed_offset`, private: faust-streaming is
pinned to the minor version this was written against, and `tests/unit/test_faust_pin.py` fails if
the attribute goes away) and updates the runtime's `Health`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from stream.runtime import BatchHandler

__all__ = ["CommitWatch", "ConsumerCheck"]

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


class ConsumerCheck:
    """One health check of a Faust consumer and the runtime's Redis; run from an app timer.

    The broker's end offsets are asked for with a timeout, and not again while a request is
    still out (a broker that does not answer would pile them up otherwise).
    """

    def __init__(self, stall_timeout_s: float, timeout_s: float) -> None:
        self.watch = CommitWatch[Any](stall_timeout_s)
        self.timeout_s = timeout_s
        self._ends: asyncio.Future[Mapping[Any, int]] | None = None

    async def run(self, consumer: Any, runtime: BatchHandler, now: float) -> None:
        """Update `runtime.health` from `consumer` (a Faust `Consumer`) and a Redis PING."""
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
        runtime.health.consumer_checked(
            broker=broker,
            broker_error=error,
            assigned=len(tps),
            stalled=sorted(f"{tp.topic}[{tp.partition}]" for tp in stalled),
        )
