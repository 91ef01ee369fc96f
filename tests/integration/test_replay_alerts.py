"""`riskstream replay` and `riskstream alerts tail` against the real broker (Tansu)."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from events import Alert, Reason, WindowSummary, alert_to_dict, format_ts_ms, load_schema
from riskstream.cli import main
from riskstream.dev import DEV_STATE_ENV
from riskstream.localstack import TansuBroker, describe_partition_counts
from riskstream.tools import TokenBucket, read_alerts, replay_file

pytestmark = pytest.mark.integration

MakeTopics = Callable[[Mapping[str, int]], dict[str, str]]
Record = tuple[int, bytes | None, bytes]  # partition, key, value
T0_MS = 1793577600000  # 2026-11-02T00:00:00Z


def _consume_all(
    bootstrap: str, topic: str, partitions: int, timeout_s: float = 30
) -> list[Record]:
    """Every record of `topic` (group-less), until two polls in a row bring nothing."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[Record] = []
    empty = 0
    deadline = time.monotonic() + timeout_s
    try:
        while empty < 2 and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            n = sum(len(records) for records in batch.values())
            for tp, records in batch.items():
                out.extend((tp.partition, r.key, r.value) for r in records)
            empty = empty + 1 if n == 0 else 0
    finally:
        consumer.close()
    return out


def _event(i: int, user: str | None, ts_ms: int) -> bytes:
    body: dict[str, Any] = {"event_id": f"e{i:05d}", "ts": format_ts_ms(ts_ms), "type": "click"}
    if user is not None:
        body["user_id"] = user
    return json.dumps(body).encode()


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# -- replay ---------------------------------------------------------------------------------------


def test_replay_sends_every_line_keyed_by_user(
    kafka_broker: TansuBroker, make_topics: MakeTopics, tmp_path: Path
) -> None:
    topic = make_topics({"events": 4})["events"]
    good = [_event(i, f"u-{i % 12:02d}", T0_MS + i * 1000) for i in range(300)]
    keyless = [
        _event(900, None, T0_MS),  # JSON without user_id
        b"this is not json",
        json.dumps({"event_id": "e-int", "user_id": 42, "ts": T0_MS}).encode(),  # not a string
    ]
    lines = good[:100] + keyless[:2] + good[100:] + keyless[2:]
    path = _write(tmp_path / "events.jsonl", [*lines, b"", b"   "])

    summary = replay_file(path, kafka_broker.url, topic=topic)

    got = _consume_all(kafka_broker.bootstrap, topic, 4)
    assert Counter(value for _, _, value in got) == Counter(lines)  # the raw bytes, each once
    assert summary.sent == len(lines) == 303
    assert (summary.failed, summary.keyless, summary.skipped_blank) == (0, 3, 2)
    assert summary.mode == "max"
    by_key: dict[bytes | None, list[bytes]] = defaultdict(list)
    partitions_of: dict[bytes | None, set[int]] = defaultdict(set)
    for partition, key, value in got:
        by_key[key].append(value)
        partitions_of[key].add(partition)
    assert sorted(by_key[None]) == sorted(keyless)
    for i in range(12):
        key = f"u-{i:02d}".encode()
        assert by_key[key] == [v for v in good if json.loads(v)["user_id"] == key.decode()]
        assert len(partitions_of[key]) == 1, "one user's events spread over partitions"
    assert summary.partitions == dict(sorted(Counter(p for p, _, _ in got).items()))
    assert len(summary.partitions) > 1


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_replay_compresses_its_batches(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    codec: str,
) -> None:
    from tests.integration.codec_support import batch_codecs

    topic = make_topics({"events": 2})["events"]
    # kafka-python sends a batch uncompressed when compressing does not shrink it (a lone short
    # event, when the producer flushes early): a repetitive page keeps every batch compressible.
    lines = [
        _event(i, f"u{i % 7}", T0_MS + i)[:-1] + b', "page": "/' + b"catalogue/" * 40 + b'"}'
        for i in range(200)
    ]
    path = _write(tmp_path / "e.jsonl", lines)
    args = ["replay", "--events", str(path), "--broker", kafka_broker.url, "--topic", topic]
    assert main([*args, "--compression", codec, "--no-progress"]) == 0
    assert f"sent 200 events to {topic}" in capsys.readouterr().out
    assert f"{codec}-compressed" in replay_file(path, kafka_broker.url, topic=topic,
                                                compression=codec).describe()  # fmt: skip
    assert Counter(v for _, _, v in _consume_all(kafka_broker.bootstrap, topic, 2)) == Counter(
        lines * 2
    )
    assert batch_codecs(kafka_broker.bootstrap, topic, 2) == {codec}


def test_replay_rate_holds_the_producer_back(
    kafka_broker: TansuBroker, make_topics: MakeTopics, tmp_path: Path
) -> None:
    """Behaviour, not speed: paced at 1,000/s, 2,000 events cannot go out faster than the
    token bucket lets them (its banked burst aside), however fast the machine; how close to the
    asked rate a loaded machine keeps is `TokenBucket`'s fake-clock test's business (below),
    and a slow machine only makes the run longer, which this does not bound."""
    topic = make_topics({"events": 4})["events"]
    n, rate = 2000, 1000.0
    path = _write(tmp_path / "e.jsonl", [_event(i, f"u{i % 50}", T0_MS + i) for i in range(n)])
    summary = replay_file(path, kafka_broker.bootstrap, topic=topic, rate=rate)
    print(f"asked {rate:.0f}/s: {summary.describe()}")
    assert summary.sent == n
    burst = TokenBucket(rate).burst
    assert summary.wall_s >= (n - 1 - burst) / rate, summary.describe()


def test_replay_speedup_follows_the_events_time_gaps(
    kafka_broker: TansuBroker, make_topics: MakeTopics, tmp_path: Path
) -> None:
    topic = make_topics({"events": 1})["events"]
    path = _write(tmp_path / "e.jsonl", [_event(i, "u1", T0_MS + i * 1000) for i in range(3)])
    summary = replay_file(path, kafka_broker.bootstrap, topic=topic, speedup=10)
    print(summary.describe())
    assert summary.sent == 3
    assert summary.wall_s >= 0.18  # held back for the two 1 s gaps at 10x: 0.2 s


def test_token_bucket_paces_without_drift() -> None:
    """A fake clock that oversleeps 30% each time: the bucket still holds the rate."""
    now = [0.0]

    def oversleep(s: float) -> None:
        now[0] += s * 1.3

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=oversleep)
    for _ in range(5001):
        bucket.acquire()
    assert now[0] == pytest.approx(5.0, rel=0.01)


def test_replay_cli_limit_and_output(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = make_topics({"events": 2})["events"]
    path = _write(tmp_path / "e.jsonl", [_event(i, f"u{i % 3}", T0_MS + i) for i in range(20)])
    args = ["replay", "--events", str(path), "--broker", kafka_broker.url, "--topic", topic]
    assert main([*args, "--limit", "7", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"sent 7 events to {topic}" in out
    assert "events/s" in out
    assert len(_consume_all(kafka_broker.bootstrap, topic, 2)) == 7


def test_replay_cli_bad_arguments_give_one_line_errors(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DEV_STATE_ENV, str(tmp_path / "no-stack.json"))
    topic = make_topics({"events": 1})["events"]
    path = _write(tmp_path / "e.jsonl", [_event(0, "u1", T0_MS)])
    ok = ["replay", "--events", str(path), "--no-progress"]
    broker = ["--broker", kafka_broker.url, "--topic", topic]

    assert main(["replay", "--events", str(tmp_path / "missing.jsonl")]) == 2
    assert "--events" in _one_error_line(capsys.readouterr().err)
    assert main([*ok, *broker, "--rate", "0"]) == 2
    assert "--rate" in _one_error_line(capsys.readouterr().err)
    assert main([*ok, *broker, "--rate", "10", "--max"]) == 1
    assert "exclude each other" in _one_error_line(capsys.readouterr().err)
    assert main([*ok, *broker, "--rate", "10", "--speedup", "2"]) == 1
    assert "exclude each other" in _one_error_line(capsys.readouterr().err)
    assert main(ok) == 1  # no --broker and no dev stack
    assert "--broker" in _one_error_line(capsys.readouterr().err)
    assert main([*ok, *broker, "--compression", "brotli"]) == 2
    assert "--compression" in _one_error_line(capsys.readouterr().err)
    assert main([*ok, "--broker", "http://127.0.0.1:9092"]) == 1
    assert "kafka://host:port" in _one_error_line(capsys.readouterr().err)

    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    assert main([*ok, "--broker", kafka_broker.url, "--topic", missing]) == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    assert describe_partition_counts(kafka_broker.bootstrap, [missing]) == {}, "auto-created"


# -- alerts tail ----------------------------------------------------------------------------------

SCHEMA = load_schema("alert")


def _alert(user: str, kind: str, severity: str, score: float, at_ms: int) -> dict[str, Any]:
    alert = alert_to_dict(
        Alert(
            alert_id=str(uuid.uuid4()),
            type=kind,  # type: ignore[arg-type]
            user_id=user,
            event_id=f"ev-{user}",
            event_ts_ms=at_ms - 500,
            detected_at_ms=at_ms,
            score=score,
            threshold=0.8,
            severity=severity,  # type: ignore[arg-type]
            model_version="20261102T000000Z-abcdef012345",
            window=WindowSummary(
                events=30,
                span_s=120.0,
                first_ts_ms=at_ms - 120_000,
                last_ts_ms=at_ms - 500,
                type_counts={"click": 30},
                distinct_devices=1,
                distinct_ips=1,
                distinct_countries=1,
            ),
            reasons=(
                Reason("high_rate", f"30 events at 15 per minute for {user}"),
                Reason("new_device", "the scored event comes from a new device " + "x" * 80),
                Reason("third_reason", "never shown in the table"),
            ),
        )
    )
    jsonschema.validate(alert, SCHEMA, format_checker=jsonschema.FormatChecker())
    return alert


ALERTS = [
    _alert("u-fraud-1", "fraud", "high", 0.95, T0_MS + 1000),
    _alert("u-click-2", "abnormal_click", "medium", 0.85, T0_MS + 2000),
    _alert("u-fraud-3", "fraud", "critical", 0.99, T0_MS + 3000),
    _alert("u-click-4", "abnormal_click", "high", 0.91, T0_MS + 4000),
]


@pytest.fixture
def alerts_topic(kafka_broker: TansuBroker, make_topics: MakeTopics) -> str:
    from kafka import KafkaProducer

    topic = make_topics({"alerts": 4})["alerts"]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    try:
        for alert in ALERTS:
            producer.send(topic, key=alert["user_id"].encode(), value=json.dumps(alert).encode())
        producer.send(topic, key=b"junk", value=b"not an alert")
        producer.flush(timeout=30)
    finally:
        producer.close()
    return topic


def test_alerts_tail_table_filter_and_json(
    kafka_broker: TansuBroker,
    alerts_topic: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    base = ["alerts", "tail", "--broker", kafka_broker.url, "--topic", alerts_topic]
    users = [a["user_id"] for a in ALERTS]

    # Not a terminal (captured): JSON lines unless --table, which the table checks below force.
    assert main(base) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(json.loads(line)["alert_id"] for line in lines) == sorted(
        a["alert_id"] for a in ALERTS
    )
    with monkeypatch.context() as m:  # a terminal: the table by default
        m.setattr(sys.stdout, "isatty", lambda: True)
        assert main(base) == 0
    assert "4 alerts (5 records read" in capsys.readouterr().out
    base_json, base = base, [*base, "--table"]

    assert main(base) == 0
    out = capsys.readouterr().out
    for user in users:
        assert user in out
    assert "fraud" in out
    assert "abnormal_click" in out
    assert "0.990/0.800" in out
    assert "30 events at 15 per minute for u-fraud-3" in out
    assert "…" in out  # the long second reason is shortened
    assert "never shown" not in out  # top two reasons only
    assert "4 alerts (5 records read, 1 records skipped" in out
    assert out.index("u-fraud-1") < out.index("u-fraud-3")  # by detected_at

    assert main([*base, "--type", "fraud"]) == 0
    out = capsys.readouterr().out
    assert "u-fraud-1" in out
    assert "u-fraud-3" in out
    assert "u-click-2" not in out
    assert "u-click-4" not in out

    assert main([*base_json, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert sorted(a["alert_id"] for a in parsed) == sorted(a["alert_id"] for a in ALERTS)
    for alert in parsed:
        jsonschema.validate(alert, SCHEMA, format_checker=jsonschema.FormatChecker())

    assert main([*base_json, "--json", "--type", "abnormal_click"]) == 0
    parsed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert sorted(a["user_id"] for a in parsed) == ["u-click-2", "u-click-4"]

    assert main([*base_json, "--json", "--max", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1

    # --follow keeps reading until --timeout-s, printing as alerts come.
    began = time.monotonic()
    assert main([*base_json, "--json", "--follow", "--timeout-s", "1.5"]) == 0
    assert time.monotonic() - began >= 1.4
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


def test_alerts_tail_from_end_shows_only_new_alerts(
    kafka_broker: TansuBroker,
    alerts_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tansu's end offset can be short of the last batch: --from-end must still show none of
    the old alerts, and the new one once it comes."""
    from kafka import KafkaProducer

    base = ["alerts", "tail", "--broker", kafka_broker.url, "--topic", alerts_topic, "--json"]
    assert main([*base, "--from-end"]) == 0
    assert capsys.readouterr().out.strip() == ""

    late = _alert("u-late-5", "fraud", "low", 0.81, T0_MS + 5000)

    def produce_late() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        try:
            producer.send(alerts_topic, key=b"u-late-5", value=json.dumps(late).encode())
            producer.flush(timeout=30)
        finally:
            producer.close()

    timer = threading.Timer(1.5, produce_late)
    timer.start()
    try:
        assert main([*base, "--from-end", "--follow", "--timeout-s", "3.5"]) == 0
    finally:
        timer.join()
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["user_id"] for line in lines] == ["u-late-5"]


def test_read_alerts_helper(kafka_broker: TansuBroker, alerts_topic: str) -> None:
    fraud = read_alerts(kafka_broker.url, alerts_topic, alert_type="fraud")
    assert sorted(a["user_id"] for a in fraud) == ["u-fraud-1", "u-fraud-3"]
    assert len(read_alerts(kafka_broker.bootstrap, alerts_topic)) == 4


def test_alerts_tail_bad_arguments(
    kafka_broker: TansuBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alerts", "tail", "--broker", kafka_broker.url, "--type", "bogus"]) == 2
    assert "--type" in _one_error_line(capsys.readouterr().err)
    missing = f"no-such-alerts-{uuid.uuid4().hex[:8]}"
    assert main(["alerts", "tail", "--broker", kafka_broker.url, "--topic", missing]) == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    assert main(["alerts", "tail", "--broker", kafka_broker.url, "--max", "0"]) == 2
    assert "--max" in _one_error_line(capsys.readouterr().err)
