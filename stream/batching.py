"""Micro-batches from a Faust stream that keep filling while the last one is processed.

Faust's `take_events` stops adding to its buffer until the agent has finished with the batch it
yielded, then acks it: delivery (about 100 µs an event in Faust, measured: the transport alone
drains 10k events/s) and processing run one after the other. `take_batches` lets the stream's
passive drainer fill the next batch meanwhile, and leaves the acks to the caller, who acks a
batch only once it is processed: at-least-once as before, with at most `hard_max` events
buffered beside the batch processed. How big a batch may be is asked before each cut
(`stream.latency.BatchController` sizes it by the latency budget).

It uses the same Faust stream hooks as `take_events` (a processor and the passive drainer),
written against faust-streaming 0.15.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from stream.latency import BatchPlan

__all__ = ["take_batches"]


async def take_batches(
    stream: Any, plan: Callable[[], BatchPlan], hard_max: int
) -> AsyncIterator[list[Any]]:
    """Yield lists of events, each cut at `plan().max_size` events or `plan().wait_s` after its
    first event arrived (an event that arrived while the last batch was processed has waited
    already: it is not made to wait again); at most `hard_max` are buffered. `plan` is asked
    before each cut. The caller acks every event (`await stream.ack(event)`) once done with its
    batch."""
    buffer: list[Any] = []
    first_at = [0.0]  # monotonic time the buffer's oldest event arrived
    size = [min(plan().max_size, hard_max)]
    full = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def add(value: Any) -> Any:
        while len(buffer) >= hard_max:  # the buffer is full: wait until a batch is taken
            room.clear()
            await stream.wait(room)
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches: an item without its event")
        if not buffer:
            first_at[0] = time.monotonic()
        buffer.append(event)
        if len(buffer) >= size[0]:
            full.set()
        return value

    stream.enable_acks = False  # the caller acks, after processing
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # as take_events does
    try:
        while not stream.should_stop:
            cut = plan()
            size[0] = max(1, min(cut.max_size, hard_max))
            if len(buffer) >= size[0]:
                full.set()
            else:  # the size may have grown since `add` last compared
                full.clear()
            left = cut.wait_s if not buffer else first_at[0] + cut.wait_s - time.monotonic()
            if left > 0 and not full.is_set():
                await stream.wait_for_stopped(full, timeout=left)
            if buffer and (full.is_set() or time.monotonic() >= first_at[0] + cut.wait_s):
                batch = buffer[: size[0]]
                del buffer[: size[0]]
                if len(buffer) < size[0]:
                    full.clear()
                room.set()
                yield batch
    finally:
        stream._processors.remove(add)
