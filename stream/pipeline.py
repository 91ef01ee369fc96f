"""The worker's batch path as a two-stage pipeline: batch k+1 is staged while batch k finishes.

A runtime that stages (`WorkerRuntime`) splits a batch in two: `stage` (parse, the window update
in Redis, the model inputs: mostly Python and numpy, holding the GIL) and `finish` (the ONNX
model, rules, cooldown check, publication: ONNX Runtime and the sockets release the GIL).
`BatchPipeline` runs the stage of the next batch while the previous one finishes, so on a
worker process the model of one batch and the Redis round trip and numpy work of the next
overlap. What it keeps:

- stages run one at a time, in batch order, and so do finishes: per user, events reach the
  window store and are judged in partition order, once (a batch finishes only after the one
  before it, hence after its cooldowns were set);
- a batch is acked as soon as its `finish` returned (its alerts and dead letters are on the
  broker), not when the next batch comes, and after every batch before it was acked;
- an error in either stage ends the worker as before (`on_failure`: the batch is not acked;
  Redis and broker errors are retried inside the runtime), and a batch after a failed one is
  never finished.

A runtime without `stage` (the bench's transport-only one), or `stages=False` (the worker's
default, `RISKSTREAM_PIPELINE_STAGES`: it did not pay where measured), hands each batch whole to
`handle`, one at a time and in order, as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stream.messages import Incoming
from stream.publish import Send

__all__ = ["BatchPipeline", "InFlight"]


class InFlight:
    """A batch handed to the runtime and not yet acked."""

    def __init__(
        self,
        events: list[Any],
        incoming: list[Incoming],
        began: float,
        oldest_s: float | None = None,
        full: bool = False,
    ) -> None:
        self.events = events  # what the caller acks once the batch is finished
        # Cut at the size the plan allowed then: staged, the plan may have grown by the ack.
        self.full = full
        self.incoming = incoming
        self.began = began  # perf_counter when cut
        self.oldest_s = oldest_s  # age of its oldest message when cut (None: unknown)
        self.done_at = began  # perf_counter when finished
        self.staged = asyncio.Event()  # set once staged (or failed to)
        self.job: asyncio.Future[object] | None = None


class BatchPipeline:
    """Batches in flight through `runtime`, at most two: one staging, one finishing."""

    def __init__(
        self,
        runtime: Any,
        send: Send,
        ack: Callable[[InFlight], Awaitable[None]],
        on_failure: Callable[[InFlight], Awaitable[None]],
        *,
        stages: bool = True,
    ) -> None:
        self.runtime = runtime
        self.send = send
        self.ack = ack  # acks a finished batch's events
        self.on_failure = on_failure  # a batch raised: ends the worker (must not return)
        # False (or a runtime without `stage`): each batch handled whole, one after another
        self.staging = stages and callable(getattr(runtime, "stage", None))
        self.inflight: list[InFlight] = []  # submitted, not yet acked; oldest first

    async def _run(self, item: InFlight, before: InFlight | None) -> object:
        try:
            return await self._steps(item, before)
        finally:
            # Unstaged, a batch counts as staged once handled and acked: the next one is cut
            # only then, as the worker did before the pipeline.
            item.staged.set()

    async def _steps(self, item: InFlight, before: InFlight | None) -> object:
        try:
            staged = None
            if self.staging:
                try:
                    staged = await self.runtime.stage(item.incoming)
                finally:
                    item.staged.set()
            if before is not None and before.job is not None:  # finish in order
                await asyncio.wait([before.job])
                if before.job.cancelled() or before.job.exception() is not None:
                    # that one ended the worker; this one must not be finished nor acked
                    raise _BeforeFailedError
            if self.staging:
                result = await self.runtime.finish(item.incoming, staged, self.send)
            else:
                result = await self.runtime.handle(item.incoming, self.send)
        except _BeforeFailedError:
            raise
        except Exception:
            await self.on_failure(item)
            raise
        item.done_at = time.perf_counter()
        # acked here, as soon as finished (not when the next batch comes): the batch after
        # this one waits for this whole job, so acks keep the batches' order
        await self.ack(item)
        self.inflight.remove(item)
        return result

    async def submit(self, item: InFlight) -> None:
        """Start `item`; return once it is staged and the batch before it is finished and
        acked (at most two in flight: the next batch may then be cut and staged)."""
        before = self.inflight[-1] if self.inflight else None
        self.inflight.append(item)
        item.job = asyncio.ensure_future(self._run(item, before))
        await item.staged.wait()
        if before is not None and before.job is not None:
            await asyncio.wait([before.job])
            if not before.job.cancelled() and before.job.exception() is not None:
                await before.job  # it failed (and ended the worker): raise here too
        if item.job.done():  # it failed to stage (or finished already): surface it here
            await item.job

    async def drain(self) -> None:
        """Wait for every batch in flight to be finished and acked (raises if one failed)."""
        for item in list(self.inflight):
            if item.job is not None:
                await asyncio.shield(item.job)

    async def stop(self, grace_s: float, on_timeout: Callable[[InFlight], None]) -> None:
        """Stopping: let the batches in flight finish and be acked, in order, within `grace_s`
        in all; one that cannot calls `on_timeout` (which ends the worker without acking it)."""
        deadline = time.monotonic() + grace_s
        for item in list(self.inflight):
            assert item.job is not None
            try:
                await asyncio.wait_for(
                    asyncio.shield(item.job), timeout=max(0.0, deadline - time.monotonic())
                )
            except (TimeoutError, asyncio.CancelledError):
                on_timeout(item)
                raise


class _BeforeFailedError(Exception):
    """The batch before failed (and ended the worker): this one is left unfinished."""
