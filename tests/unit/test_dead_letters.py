"""Dead letters stay publishable whatever was refused: the value is cut to `dlq_max_bytes` (and
says so in its headers), the key to `DLQ_MAX_KEY_BYTES`; a dead letter the broker still refuses
as too large goes out with its headers only instead of stalling the partition; a parser bug
dead-letters the message instead of failing the batch; the log stays quiet under a flood."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from events import InvalidEvent
from stream.dlq import DLQ_MAX_KEY_BYTES, DeadLetterLog, dead_letter, dead_letter_of, is_too_large
from stream.messages import Incoming
from stream.processor import Outcome, Processor
from stream.prometheus import Metrics
from stream.runtime import WorkerRuntime
from stream.settings import WorkerSettings

TOO_BIG = InvalidEvent("message", "is 3145728 bytes, over the 65536 limit")


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read RISKSTREAM_* variables: none of the machine's (or another test's)."""
    for name in list(os.environ):
        if name.startswith("RISKSTREAM_"):
            monkeypatch.delenv(name)


def _msg(value: bytes | None, key: bytes | None = b"u1") -> Incoming:
    return Incoming(value, key, "events", 2, 41)


def test_a_dead_letter_within_the_limit_is_kept_whole() -> None:
    d = dead_letter(_msg(b"{bad"), InvalidEvent("message", "is not JSON"), 1000)
    assert (d.key, d.value, d.field, d.reason) == (
        b"u1",
        b"{bad",
        "message",
        "message: is not JSON",
    )
    assert dict(d.headers) == {
        "reason": b"message: is not JSON", "field": b"message", "source_topic": b"events",
        "source_partition": b"2", "source_offset": b"41",
    }  # fmt: skip


def test_a_long_value_keeps_its_prefix_its_length_and_its_hash() -> None:
    value = bytes(range(256)) * 12_288  # 3 MiB
    d = dead_letter(_msg(value), TOO_BIG, 65_536)
    assert d.value == value[:65_536]
    headers = dict(d.headers)
    assert headers["truncated"] == b"1"
    assert headers["original_bytes"] == str(len(value)).encode()
    assert headers["sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["reason"] == TOO_BIG.reason.encode()
    assert "key_truncated" not in headers


def test_a_huge_key_is_cut_too_and_zero_keeps_headers_only() -> None:
    d = dead_letter(_msg(b"x" * 10, key=b"k" * 100_000), TOO_BIG, 0)
    assert d.value == b""
    assert d.key == b"k" * DLQ_MAX_KEY_BYTES
    headers = dict(d.headers)
    assert headers["key_truncated"] == b"1"
    assert headers["original_key_bytes"] == b"100000"
    assert headers["original_bytes"] == b"10"
    assert dead_letter(_msg(None, key=None), TOO_BIG, 10).key is None


def test_the_review_service_dead_letters_with_the_same_builder() -> None:
    # alerts.dlq and events.dlq: one builder (stream.dlq), the same headers, the same caps.
    from events import InvalidAlert
    from riskstream.review.service import alert_dead_letter

    exc = InvalidAlert("score", "must be a number in [0, 1]")
    value = b"z" * 70_000
    d = alert_dead_letter(exc, b"k" * 2000, value, "alerts", 1, 9)
    same = dead_letter_of(b"k" * 2000, value, field="score", reason=str(exc), topic="alerts",
                          partition=1, offset=9, max_bytes=65_536)  # fmt: skip
    assert d == same
    headers = dict(d.headers)
    assert (headers["reason"], headers["field"]) == (b"score: must be a number in [0, 1]", b"score")
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        b"alerts", b"1", b"9",
    )  # fmt: skip
    assert headers["truncated"] == b"1"
    assert headers["original_bytes"] == b"70000"
    assert headers["sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["key_truncated"] == b"1"
    assert len(d.key or b"") == DLQ_MAX_KEY_BYTES
    assert alert_dead_letter(exc, None, None, "alerts", 0, 0).value == b""


def test_settings_bound_dlq_max_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().dlq_max_bytes == 65_536
    monkeypatch.setenv("RISKSTREAM_DLQ_MAX_BYTES", "2000000")
    with pytest.raises(ValueError, match="dlq_max_bytes"):
        WorkerSettings()


def test_too_large_is_found_through_the_wrappers() -> None:
    wrapped = RuntimeError("Error while sending")  # as Faust wraps aiokafka's error
    wrapped.__cause__ = MessageSizeTooLargeError("too big")
    assert is_too_large(wrapped)
    assert not is_too_large(KafkaTimeoutError())


def _runtime() -> WorkerRuntime:
    """A WorkerRuntime with only what `_publish` reads (no model, no Redis)."""
    rt = WorkerRuntime.__new__(WorkerRuntime)
    rt.settings = WorkerSettings(dlq_topic="dlq", retry_max_backoff_s=0.01)
    rt.metrics = Metrics()
    return rt


def test_a_dead_letter_the_broker_refuses_as_too_large_goes_out_with_headers_only() -> None:
    big = dead_letter(_msg(b"y" * 5000), InvalidEvent("text", "is longer than 16384"), 65_536)
    small = dead_letter(_msg(b"{"), InvalidEvent("message", "is not JSON"), 65_536)
    out = Outcome(dead_letters=[big, small], alerts=[("u1", {"alert_id": "a"})])
    sent: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []
    calls = {"n": 0}

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        calls["n"] += 1
        if len(value) > 1000:  # a broker whose limit is below ours
            raise RuntimeError("Error while sending") from MessageSizeTooLargeError()
        if topic == "alerts" and calls["n"] < 4:  # a passing failure: retried as it was
            raise KafkaTimeoutError()
        sent.append((topic, key, value, dict(headers or [])))

    asyncio.run(_runtime()._publish(cast(Any, send), out))
    by_topic = {(t, v[:1]): h for t, _, v, h in sent}
    assert len(sent) == 3
    assert by_topic[("dlq", b"{")]["field"] == b"message"
    stripped = by_topic[("dlq", b"")]
    assert stripped["field"] == b"text"
    assert stripped["truncated"] == b"1"
    assert stripped["original_bytes"] == b"5000"
    assert stripped["sha256"] == hashlib.sha256(b"y" * 5000).hexdigest().encode()
    assert ("alerts", b"{") in by_topic


def test_a_parser_bug_dead_letters_the_message_instead_of_failing_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(raw: bytes, *, now_ms: int | None = None) -> Any:
        raise TypeError("a bug")

    monkeypatch.setattr("stream.processor.parse_event", broken)
    none = cast(Any, None)
    proc = Processor(none, none, dlq_max_bytes=4)
    out = Outcome()
    assert proc.parse([_msg(b"{1234567}"), _msg(None)], 0, out) == []
    assert [(d.field, d.reason, d.value) for d in out.dead_letters] == [
        ("message", "message: could not be parsed (TypeError)", b"{123"),
        ("message", "message: is empty (a tombstone)", b""),
    ]


def test_a_flood_of_dead_letters_logs_a_line_now_and_then(caplog: pytest.LogCaptureFixture) -> None:
    journal = DeadLetterLog(every_s=3600)
    with caplog.at_level(logging.WARNING, logger="stream.processor"):
        for i in range(10_000):
            journal.report(_msg(b"x"), InvalidEvent("message", f"bad {i}"))
        journal.report(_msg(b"x"), TypeError("a bug"), unexpected=True)
    assert [r.levelname for r in caplog.records] == ["WARNING", "ERROR"]
    assert caplog.records[1].exc_info is not None
    journal.every_s = 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stream.processor"):
        journal.report(_msg(b"x"), InvalidEvent("message", "bad"))
    assert "and 9999 more since the last report" in caplog.text
