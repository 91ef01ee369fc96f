"""Decisions → feedback lines that `riskstream train --feedback` reads (`training.data`).

A confirmed case is a positive episode of its type over the behaviour the alerts covered
(`window_start`..`window_end`); a false positive is a known negative over the same span, one line
per alert type it dismissed; escalations decide nothing and are left out. Every line carries `ts`,
when the decision became known: the trainer ignores a line known at or after its cut.

>>> from events import Decision
>>> d = Decision("d1", "3", ("a1",), ("fraud",), "u1", "false_positive", 1793577600000,
...              1793577660000, "alice", 1793578000000)
>>> feedback_lines(d)[0]["kind"], feedback_lines(d)[0]["label"]
('review_false_positive', 'fraud')
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from events import Decision, InvalidDecision, format_ts_ms, parse_decision
from riskstream.review.exceptions import ReviewError

__all__ = [
    "decisions_from_database",
    "decisions_from_topic",
    "feedback_lines",
    "write_feedback",
]


def feedback_lines(decision: Decision) -> list[dict[str, Any]]:
    """The feedback lines of one decision ([] for an escalation)."""
    common = {
        "user_id": decision.user_id,
        "start": format_ts_ms(decision.window_start_ms),
        "end": format_ts_ms(decision.window_end_ms),
        "ts": format_ts_ms(decision.decided_at_ms),
        "decision_id": decision.decision_id,
        "source": "review",
    }
    if decision.label is not None:
        return [{"kind": "review_confirmed", "label": decision.label, **common}]
    if decision.verdict == "false_positive":
        return [
            {"kind": "review_false_positive", "label": t, **common}
            for t in sorted(set(decision.alert_types))
        ]
    return []


def write_feedback(decisions: list[Decision], out: Path) -> dict[str, int]:
    """Write the feedback lines of `decisions` (by when they became known) to `out`."""
    counts = {"positive": 0, "negative": 0, "skipped": 0}
    lines: list[bytes] = []
    for d in sorted(decisions, key=lambda d: (d.decided_at_ms, d.decision_id)):
        made = feedback_lines(d)
        if not made:
            counts["skipped"] += 1
        for line in made:
            counts["positive" if line["kind"] == "review_confirmed" else "negative"] += 1
            lines.append(orjson.dumps(line))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(line + b"\n" for line in lines))
    return counts


def decisions_from_database(url: str, since_ms: int | None, until_ms: int | None) -> list[Decision]:
    """The decisions stored in the review database, known in [since, until)."""
    from psycopg import AsyncConnection

    from riskstream.review.store import decisions_between

    async def read() -> list[dict[str, Any]]:
        async with await AsyncConnection.connect(url) as conn:
            return await decisions_between(conn, since_ms, until_ms)

    return [parse_decision(orjson.dumps(d)) for d in asyncio.run(read())]


def decisions_from_topic(
    bootstrap: str, topic: str, since_ms: int | None, until_ms: int | None, timeout_s: float = 30.0
) -> list[Decision]:
    """The decisions on the topic (read group-less until drained), known in [since, until);
    the same decision published twice counts once."""
    from kafka import KafkaConsumer, TopicPartition

    from riskstream.tools.common import kafka_security, partition_count
    from stream.kafka_clients import kafka_config

    security = kafka_security()  # the worker's SSL/SASL settings
    partitions = partition_count(bootstrap, topic, security=security)
    config = kafka_config(bootstrap, security, "kafka-python", group_id=None,
                          enable_auto_commit=False, client_id="riskstream-labels")  # fmt: skip
    consumer = KafkaConsumer(**config)
    found: dict[str, Decision] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        empty, deadline = 0, time.monotonic() + timeout_s
        while empty < 2 and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            empty = 0 if batch else empty + 1
            for records in batch.values():
                for rec in records:
                    try:
                        d = parse_decision(rec.value)
                    except InvalidDecision as exc:
                        raise ReviewError(
                            f"{topic}:{rec.partition}:{rec.offset}: not a decision: {exc}"
                        ) from None
                    if since_ms is not None and d.decided_at_ms < since_ms:
                        continue
                    if until_ms is not None and d.decided_at_ms >= until_ms:
                        continue
                    found[d.decision_id] = d
    finally:
        consumer.close()
    return list(found.values())
