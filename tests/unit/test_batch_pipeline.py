"""stream.pipeline: batch k+1 staged while batch k finishes; order, acks and failures kept."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from stream.messages import Incoming
from stream.pipeline import BatchPipeline, InFlight


def _batch(k: int, size: int = 3) -> list[Incoming]:
    return [Incoming(b"{}", b"u", "events", 0, k * size + i) for i in range(size)]


class _Runtime:
    """Stages and finishes with random delays; records what ran when."""

    def __init__(self, fail_stage: int | None = None, fail_finish: int | None = None) -> None:
        self.log: list[tuple[str, int]] = []
        self.staging: set[int] = set()
        self.finishing: set[int] = set()
        self.overlapped = 0  # stages that ran while a finish was running
        self.fail_stage = fail_stage
        self.fail_finish = fail_finish
        self.rng = random.Random(3)

    async def stage(self, batch: list[Incoming]) -> int:
        k = batch[0].offset // 3
        assert not self.staging, "two stages at once"
        self.staging.add(k)
        self.log.append(("stage", k))
        if self.finishing:
            self.overlapped += 1
        await asyncio.sleep(self.rng.random() / 500)
        self.staging.discard(k)
        if k == self.fail_stage:
            raise ValueError(f"stage {k}")
        return k

    async def finish(self, batch: list[Incoming], staged: int, send: Any) -> str:
        assert not self.finishing, "two finishes at once"
        self.finishing.add(staged)
        self.log.append(("finish", staged))
        await asyncio.sleep(self.rng.random() / 500)
        self.finishing.discard(staged)
        if staged == self.fail_finish:
            raise ValueError(f"finish {staged}")
        return f"done {staged}"


async def _no_send(*_: Any) -> None:
    return None


def _run(runtime: Any, batches: int) -> tuple[list[int], list[int], list[tuple[str, int]]]:
    acked: list[int] = []
    failed: list[int] = []
    log: list[tuple[str, int]] = runtime.log if hasattr(runtime, "log") else []

    async def ack(item: InFlight) -> None:
        acked.append(item.incoming[0].offset // 3)
        log.append(("ack", item.incoming[0].offset // 3))

    async def on_failure(item: InFlight) -> None:
        failed.append(item.incoming[0].offset // 3)

    async def main() -> None:
        pipeline = BatchPipeline(runtime, _no_send, ack, on_failure)
        try:
            for k in range(batches):
                await pipeline.submit(InFlight([k], _batch(k), 0.0))
            await pipeline.drain()
        except ValueError:
            pass
        # nothing left running once it returns or failed
        await asyncio.sleep(0.02)

    asyncio.run(main())
    return acked, failed, log


def test_stages_and_finishes_in_order_each_once_acked_after_finish() -> None:
    runtime = _Runtime()
    acked, failed, log = _run(runtime, 30)
    assert failed == []
    assert acked == list(range(30))
    assert [k for what, k in log if what == "stage"] == list(range(30))
    assert [k for what, k in log if what == "finish"] == list(range(30))
    for k in range(30):
        # a batch is finished after it was staged and after the one before was finished;
        # acked after its finish, and after the batch before it was acked
        assert log.index(("stage", k)) < log.index(("finish", k)) < log.index(("ack", k))
        if k:
            assert log.index(("finish", k - 1)) < log.index(("finish", k))
            assert log.index(("ack", k - 1)) < log.index(("ack", k))
    assert runtime.overlapped > 0  # the point: a stage ran while the batch before finished


@pytest.mark.parametrize("where", ["stage", "finish"])
def test_a_failed_batch_is_not_acked_nor_any_after_it(where: str) -> None:
    runtime = _Runtime(**{f"fail_{where}": 4})  # type: ignore[arg-type]
    acked, failed, log = _run(runtime, 10)
    assert failed == [4]
    assert acked == [0, 1, 2, 3]
    assert ("finish", 5) not in log  # a batch after a failed one is never finished
    if where == "stage":
        assert ("finish", 4) not in log


def test_a_batch_is_acked_once_finished_without_waiting_for_the_next() -> None:
    # A quiet stream: no batch comes after this one, and it must be committed all the same.
    runtime = _Runtime()
    acked: list[int] = []

    async def ack(item: InFlight) -> None:
        acked.append(item.incoming[0].offset // 3)

    async def on_failure(item: InFlight) -> None:
        raise AssertionError("no failure here")

    async def main() -> None:
        pipeline = BatchPipeline(runtime, _no_send, ack, on_failure)
        await pipeline.submit(InFlight([0], _batch(0), 0.0))
        for _ in range(200):
            if acked:
                break
            await asyncio.sleep(0.005)
        assert pipeline.inflight == []

    asyncio.run(main())
    assert acked == [0]


def test_a_runtime_without_stages_gets_whole_batches_in_order() -> None:
    handled: list[int] = []

    class Whole:
        async def handle(self, batch: list[Incoming], send: Any) -> None:
            handled.append(batch[0].offset // 3)
            await asyncio.sleep(0.001)

    acked, failed, _ = _run(Whole(), 8)
    assert handled == acked == list(range(8))
    assert failed == []


def test_stop_finishes_and_acks_what_is_in_flight() -> None:
    runtime = _Runtime()
    acked: list[int] = []
    timed_out: list[int] = []

    async def ack(item: InFlight) -> None:
        acked.append(item.incoming[0].offset // 3)

    async def on_failure(item: InFlight) -> None:
        raise AssertionError("no failure here")

    async def main() -> None:
        pipeline = BatchPipeline(runtime, _no_send, ack, on_failure)
        for k in range(3):
            await pipeline.submit(InFlight([k], _batch(k), 0.0))
        assert len(pipeline.inflight) <= 1  # at most the last one, finishing
        await pipeline.stop(5.0, lambda item: timed_out.append(item.incoming[0].offset))

    asyncio.run(main())
    assert acked == [0, 1, 2]
    assert timed_out == []


def test_stages_off_hands_a_staging_runtime_whole_batches() -> None:
    class Both(_Runtime):
        def __init__(self) -> None:
            super().__init__()
            self.handled: list[int] = []

        async def handle(self, batch: list[Incoming], send: Any) -> None:
            self.handled.append(batch[0].offset // 3)

    runtime = Both()
    acked: list[int] = []

    async def ack(item: InFlight) -> None:
        acked.append(item.incoming[0].offset // 3)

    async def on_failure(item: InFlight) -> None:
        raise AssertionError("no failure here")

    async def main() -> None:
        pipeline = BatchPipeline(runtime, _no_send, ack, on_failure, stages=False)
        for k in range(5):
            await pipeline.submit(InFlight([k], _batch(k), 0.0))
            assert acked[-1] == k
        await pipeline.drain()

        assert pipeline.inflight == []  # unstaged: each submit returns once it is acked

    asyncio.run(main())
    assert runtime.handled == acked == list(range(5))
    assert runtime.log == []  # neither stage nor finish
