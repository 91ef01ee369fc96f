"""A partition holding many record batches on Tansu is still fetched (issue 29's stall).

Tansu lists every batch object of a partition on each fetch and stops listing when the fetch's
max wait is spent; past that many batches a fetch with the worker's short wait comes back empty
for ever. Here the wait is cut to 1 ms instead of the partition grown to the soak's 20-30k
batches: the same race, made certain. `stream.transport.catch_up_fetch_wait` holds a fetch for a
partition with known lag up to `CATCH_UP_WAIT_MS`; both ways are measured.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from riskstream.localstack import TansuBroker, create_topics, find_free_ports
from stream.kafka_clients import kafka_config, plaintext

pytestmark = pytest.mark.integration

BATCHES = 20_000
TAIL = 300


async def _fetch_tail(bootstrap: str, topic: str, end: int, within_s: float) -> tuple[int, float]:
    """Records an aiokafka consumer (1 ms fetch wait) gets from `end - TAIL` within `within_s`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=1)  # fmt: skip
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, end - TAIL)
        got, began = 0, time.monotonic()
        while got < TAIL and time.monotonic() - began < within_s:
            batch = await consumer.getmany(tp, timeout_ms=500)
            got += sum(len(v) for v in batch.values())
        return got, time.monotonic() - began
    finally:
        await consumer.stop()


def test_a_partition_with_many_batches_is_fetched_with_the_catch_up_wait(tmp_path: Path) -> None:
    from aiokafka.consumer import fetcher
    from confluent_kafka import Producer

    from stream.transport import catch_up_fetch_wait

    broker = TansuBroker(port=find_free_ports(1)[0], log_path=tmp_path / "tansu.log").start()
    try:
        create_topics(broker.bootstrap, {"many-batches": 1}, timeout_s=30.0)
        producer = Producer(kafka_config(broker.bootstrap, plaintext(), "confluent",
                                         **{"linger.ms": 0, "batch.num.messages": 1}))  # fmt: skip
        for i in range(BATCHES):  # one record a batch, as a producer at a low rate sends them
            producer.produce("many-batches", b"x" * 300, partition=0)
            if i % 100 == 99:
                producer.flush()
        assert producer.flush(30) == 0
        patched = fetcher.Fetcher._get_actions_per_node
        original = getattr(patched, "riskstream_original", patched)
        fetcher.Fetcher._get_actions_per_node = original
        try:
            unpatched, _ = asyncio.run(_fetch_tail(broker.bootstrap, "many-batches", BATCHES, 10))
        finally:
            fetcher.Fetcher._get_actions_per_node = patched
        catch_up_fetch_wait()
        got, took = asyncio.run(_fetch_tail(broker.bootstrap, "many-batches", BATCHES, 30))
        print(
            f"[fetch] {BATCHES} batches, 1 ms wait: {unpatched}/{TAIL} records in 10 s "
            f"without the catch-up wait, {got}/{TAIL} in {took:.2f} s with it"
        )
        assert unpatched < TAIL  # the stall: Tansu's listing cut off by the wait
        assert got == TAIL
    finally:
        broker.stop()
