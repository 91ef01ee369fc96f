"""Faust's aiokafka transport, with the consumer's fetch wait set by us instead of Faust.

Faust builds its worker consumer with `fetch_max_wait_ms=1500`, hard-coded. A broker that
answers a fetch as soon as data is there (Apache Kafka, `fetch_min_bytes=1`) makes that harmless,
but one that holds every fetch for the whole wait (Tansu 0.6 does, measured: p50 386 ms event
→ consumer at 1,000 events/s with 1,500 ms, 1.7 ms with 10 ms) puts up to the whole wait into
every event's latency. `fetch_max_wait_ms` (a setting) bounds it on any broker.

aiokafka leaves its group on close (LeaveGroup, so the others rebalance at once) only when its
generation is above 0: Apache Kafka numbers generations from 1, Tansu from 0, so a member of a
group's first generation left silently there and its partitions waited for the session timeout
(measured: 10.9 s from SIGTERM to a hand-over). `leave_group_from_generation_zero` patches that.

Tansu (its memory and S3 engines) lists every record batch object of a partition, oldest first, on
each fetch, and stops listing when the fetch's max wait is spent: a partition holding more batches
than it can list within the wait (about 20-30k single-record batches at 20 ms on the 2-core
host) gets empty fetch responses for ever, whatever the consumer does, and a restart does not
help (the cause of issue 29's stalls: `docs/operations.md`). `catch_up_fetch_wait` patches
aiokafka's fetcher: a fetch request for a partition the broker said has records past the fetch
offset (its last high watermark) waits up to `CATCH_UP_WAIT_MS`; a broker with data answers at
once (Kafka and Tansu both return as soon as `fetch_min_bytes` is there), so only the listing's
time is spent, and a consumer that has caught up keeps the short wait.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import faust
    from faust.types import TransportT

__all__ = ["CATCH_UP_WAIT_MS", "catch_up_fetch_wait", "leave_group_from_generation_zero",
           "worker_transport"]  # fmt: skip

log = logging.getLogger(__name__)

#: A fetch for a partition known to have records past its fetch offset waits up to this long.
CATCH_UP_WAIT_MS: Final = 1000


def catch_up_fetch_wait(wait_ms: int = CATCH_UP_WAIT_MS) -> None:
    """Make aiokafka's fetcher (in this process) send a fetch request that holds a partition with
    known lag (last high watermark past its fetch offset) with a max wait of at least `wait_ms`;
    idempotent (the last `wait_ms` wins)."""
    from aiokafka.consumer import fetcher

    original = fetcher.Fetcher._get_actions_per_node
    original = getattr(original, "riskstream_original", original)

    def _get_actions_per_node(self: Any, assignment: Any) -> Any:
        actions = original(self, assignment)
        for _node_id, request in actions[0]:
            if request._max_wait_ms >= wait_ms:
                continue
            for topic, partitions in request.topics:
                for partition, offset, _max_bytes in partitions:
                    state = assignment.state_value(fetcher.TopicPartition(topic, partition))
                    highwater = getattr(state, "highwater", None)
                    if highwater is not None and highwater > offset:
                        request._max_wait_ms = wait_ms
                        break
                else:
                    continue
                break
        return actions

    _get_actions_per_node.riskstream_patched = True  # type: ignore[attr-defined]
    _get_actions_per_node.riskstream_original = original  # type: ignore[attr-defined]
    fetcher.Fetcher._get_actions_per_node = _get_actions_per_node


def leave_group_from_generation_zero() -> None:
    """Make aiokafka's group coordinator (in this process) send LeaveGroup from generation 0
    too (Tansu's first); idempotent."""
    from aiokafka import errors
    from aiokafka.consumer import group_coordinator as gc

    original = gc.GroupCoordinator._maybe_leave_group
    if getattr(original, "riskstream_patched", False):
        return

    async def _maybe_leave_group(self: Any) -> None:
        # aiokafka 0.14 tests `generation > 0`; -1 (DEFAULT_GENERATION_ID) means not joined.
        if self.generation == 0 and self._group_instance_id is None:
            try:
                await self._send_req(gc.LeaveGroupRequest(self.group_id, self.member_id))
            except errors.KafkaError as err:
                log.warning("LeaveGroup request failed: %s", err)
            self.reset_generation()
            return
        await original(self)

    _maybe_leave_group.riskstream_patched = True  # type: ignore[attr-defined]
    _maybe_leave_group.riskstream_original = original  # type: ignore[attr-defined]
    gc.GroupCoordinator._maybe_leave_group = _maybe_leave_group


def worker_transport(app: faust.App, fetch_max_wait_ms: int) -> TransportT:
    """The aiokafka transport for `app` whose worker consumer waits ≤ `fetch_max_wait_ms`.

    Set it as `app.transport` before the app's first topic: topics reach for the transport.
    """
    from faust.transport.drivers import aiokafka as driver
    from mode.services import WaitResults

    from stream.codecs import tolerate_undecodable_batches

    tolerate_undecodable_batches()  # an undecodable batch is dead-lettered, not fatal
    leave_group_from_generation_zero()  # a stopped worker hands its partitions on at once
    catch_up_fetch_wait()  # a partition with many batches on Tansu is still fetched

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher (aiokafka 0.8–0.14).
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
            # Faust hands each message to the streams with wait_first(callback(message),
            # suspend_flow.wait()): four tasks and an asyncio.wait a message, a quarter of the
            # worker's interpreter time (py-spy --gil). While the flow runs, await the callback
            # alone: it waits only for room in a stream's buffer, which the streams empty even
            # while the flow is suspended for a rebalance (their events are then skipped).
            if (
                len(coros) == 2
                and timeout is None
                and inspect.iscoroutine(coros[0])
                and inspect.iscoroutine(coros[1])
                and not self.suspend_flow.is_set()
            ):
                callback, suspended = coros
                suspended.close()  # never awaited: close it, or Python warns
                return WaitResults([callback], [await callback], False)
            return await super().wait_first(*coros, timeout=timeout)

    class Transport(driver.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport(app.conf.broker_consumer, app)
