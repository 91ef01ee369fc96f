"""Third-party clients (confluent-kafka, i.e. librdkafka) and a look at the broker's batches.

Nothing here waits on end offsets (Tansu's undercount batches of several records): producers
return the offsets their delivery reports gave, consumers read until they have seen given
(partition, offset) pairs, or until two polls in a row bring nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.codecs import codec_name

#: Kafka's codecs as librdkafka's `compression.type` names them.
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Delivered:
    """Where one produced record went (from its delivery report)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


def produce_confluent(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes, Headers]],
    codec: str,
    *,
    linger_ms: int = 50,
) -> list[Delivered]:
    """Send `(key, value, headers)` with an idempotent librdkafka producer compressing with
    `codec`; flushes, fails on any delivery error, returns the delivery reports in send order."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # acks=all, ordered, no duplicates on retry
            "compression.type": codec,
            "linger.ms": linger_ms,  # several records a batch: compression works on batches
            "client.id": f"codec-test-{codec}",
        }
    )
    reports: list[Delivered | None] = [None] * len(records)
    errors: list[str] = []

    def report(i: int) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                reports[i] = Delivered(msg.partition(), msg.offset(), msg.key(), msg.value())

        return on_delivery

    for i, (key, value, headers) in enumerate(records):
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report(i))
        producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} records not delivered within 60 s ({codec})"
    assert not errors, f"delivery errors ({codec}): {errors[:3]}"
    assert all(r is not None for r in reports)
    return [r for r in reports if r is not None]


def next_offsets(positions: Iterable[tuple[int, int]]) -> dict[int, int]:
    """`{partition: highest offset + 1}` of `(partition, offset)` pairs: what a consumer that
    read them all commits.

    >>> next_offsets([(0, 4), (1, 2), (0, 9)])
    {0: 10, 1: 3}
    """
    out: dict[int, int] = {}
    for partition, offset in positions:
        out[partition] = max(out.get(partition, 0), offset + 1)
    return out


@dataclass(frozen=True)
class Read:
    """One record as a confluent-kafka consumer got it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def read_in_group(
    bootstrap: str, topic: str, group: str, expect: set[tuple[int, int]], timeout_s: float = 60
) -> tuple[list[Read], dict[int, int]]:
    """A confluent-kafka consumer in `group` (offsets committed synchronously after each poll,
    auto-commit off) reads until it has seen every `(partition, offset)` of `expect`, then one
    more poll. Returns every record it got (repeats included) and the group's committed
    offsets."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    got: list[Read] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        extra = 1
        while extra >= 0 and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            for msg in batch:
                assert msg.error() is None, msg.error()
                got.append(
                    Read(msg.partition(), msg.offset(), msg.key(), msg.value(),
                         dict(msg.headers() or []))
                )  # fmt: skip
            if batch:
                consumer.commit(asynchronous=False)
            if expect <= {(r.partition, r.offset) for r in got}:
                extra -= 1
        partitions = sorted({p for p, _ in expect})
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return got, {tp.partition: tp.offset for tp in committed}


def batch_codecs(bootstrap: str, topic: str, partitions: int, timeout_s: float = 30) -> set[str]:
    """The codecs of the record batches the broker holds for `topic` (read with aiokafka,
    group-less, until two fetches in a row bring nothing)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.consumer import fetcher

    seen: set[str] = set()
    original = fetcher.MemoryRecords

    class Recording:
        def __init__(self, data: bytes) -> None:
            self._inner = original(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def has_next(self) -> bool:
            return bool(self._inner.has_next())

        def next_batch(self) -> Any:
            batch = self._inner.next_batch()
            if batch is not None:
                seen.add(codec_name(batch.attributes))
            return batch

    async def read() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=200
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            empty, deadline = 0, time.monotonic() + timeout_s
            while empty < 2 and time.monotonic() < deadline:
                got = await consumer.getmany(timeout_ms=500)
                empty = 0 if any(got.values()) else empty + 1
        finally:
            await consumer.stop()

    fetcher.MemoryRecords = Recording
    try:
        asyncio.run(read())
    finally:
        fetcher.MemoryRecords = original
    return seen
