"""Publishing with retry (`stream.publish.publish_all`), the one helper the runtime and the
undecodable-batch dead letters share: everything reaches the broker before it returns, the failed
ones are resent with a doubling, capped backoff, and a dead letter refused as too large goes out
with its headers only instead of stalling the partition."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from stream.codecs import UndecodableBatch, dead_letter_undecodable
from stream.prometheus import Metrics
from stream.publish import Record, publish_all
from stream.settings import WorkerSettings


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RISKSTREAM_"):
            monkeypatch.delenv(name)


class FakeBroker:
    """A `Send` that fails each record's first `fail[value]` sends, then takes it."""

    def __init__(self, fail: dict[bytes, int] | None = None, limit: int | None = None) -> None:
        self.fail = dict(fail or {})
        self.limit = limit  # values longer than this are refused as too large, every time
        self.calls: list[Record] = []
        self.taken: list[Record] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        self.calls.append((topic, key, value, headers))
        if self.limit is not None and len(value) > self.limit:
            raise RuntimeError("Error while sending") from MessageSizeTooLargeError()
        if self.fail.get(value, 0) > 0:
            self.fail[value] -= 1
            raise KafkaTimeoutError()
        self.taken.append((topic, key, value, headers))


def _run(broker: FakeBroker, records: list[Record], **kw: Any) -> tuple[int, list[float]]:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    rounds = asyncio.run(publish_all(broker, records, sleep=sleep, **kw))
    return rounds, slept


def test_all_taken_at_once_is_one_round_without_sleeping() -> None:
    broker = FakeBroker()
    records: list[Record] = [("alerts", b"u1", b"a", None), ("dlq", None, b"d", [("f", b"x")])]
    assert _run(broker, records, max_backoff_s=1.0) == (1, [])
    assert broker.taken == records


def test_failures_are_resent_alone_with_a_doubling_capped_backoff() -> None:
    broker = FakeBroker(fail={b"a": 5, b"b": 1})
    retried: list[int] = []
    records: list[Record] = [("alerts", b"u", b"a", None), ("alerts", b"u", b"b", None),
                             ("alerts", b"u", b"c", None)]  # fmt: skip
    rounds, slept = _run(broker, records, max_backoff_s=0.5, on_retry=lambda: retried.append(1))
    assert rounds == 6
    assert slept == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert len(retried) == 5  # once per round with failures
    assert sorted(r[2] for r in broker.taken) == [b"a", b"b", b"c"]  # each exactly once here
    assert [r[2] for r in broker.calls].count(b"c") == 1  # a taken record is not resent


def test_a_dead_letter_refused_as_too_large_goes_out_with_its_headers_only() -> None:
    broker = FakeBroker(limit=100)
    big = b"y" * 5000
    records: list[Record] = [("dlq", b"k", big, [("field", b"text")]), ("alerts", b"u", b"a", None)]
    rounds, slept = _run(broker, records, max_backoff_s=1.0, dlq_topic="dlq")
    assert (rounds, slept) == (2, [0.1])
    taken = {r[0]: r for r in broker.taken}
    _, key, value, headers = taken["dlq"]
    assert (key, value) == (b"k", b"")
    h = dict(headers or [])
    assert h["field"] == b"text"
    assert (h["truncated"], h["original_bytes"]) == (b"1", b"5000")
    assert h["sha256"] == hashlib.sha256(big).hexdigest().encode()


def test_too_large_is_shrunk_only_on_the_dead_letter_topic() -> None:
    broker = FakeBroker(limit=100)
    records: list[Record] = [("alerts", b"u", b"z" * 500, None)]

    async def go() -> None:
        await asyncio.wait_for(
            publish_all(broker, records, max_backoff_s=0.001, dlq_topic="dlq"), timeout=0.3
        )

    with pytest.raises(TimeoutError):  # an alert is never cut: it is retried until the stop
        asyncio.run(go())
    assert all(len(r[2]) == 500 for r in broker.calls)
    assert len(broker.calls) > 1


def test_undecodable_batch_dead_letters_are_published_through_it() -> None:
    batch = UndecodableBatch("ev", 0, 10, 12, "lz4", "no lz4", b"r" * 300)
    broker = FakeBroker(fail={b"r" * 300: 2})
    metrics = Metrics()
    settings = WorkerSettings(dlq_topic="dlq", retry_max_backoff_s=0.01)
    asyncio.run(dead_letter_undecodable([batch], broker, settings, metrics))
    assert len(broker.calls) == 3
    ((topic, key, value, headers),) = broker.taken
    assert (topic, key, value) == ("dlq", None, b"r" * 300)
    assert dict(headers or [])["records"] == b"3"
    assert metrics.retries.labels("broker")._value.get() == 2
