"""Production clients on both ends of the real worker: librdkafka (confluent-kafka) producers
compressing with every codec Kafka allows, librdkafka consumers in a group on what it
publishes, and a batch the worker cannot decode.

Tansu broker, real Redis, the real `riskstream worker` process. Waiting for "everything
consumed" compares the group's committed offsets with the highest offsets the producers'
delivery reports gave, never with the broker's end offsets (Tansu's undercount batches of
several records).
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import jsonschema
import orjson
import pytest
import redis

from events import load_schema, parse_event
from export import load_bundle
from riskstream.localstack import TansuBroker
from tests.conftest import MakeTopics
from tests.integration.codec_support import (
    CODECS,
    batch_codecs,
    next_offsets,
    produce_confluent,
    read_in_group,
)
from tests.integration.fault_support import (
    FAR_FUTURE_MS,
    Offsets,
    Stack,
    World,
    assert_windows_equal,
    read_all,
    wait_until,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

# One events partition: a user's window is in arrival order, so the reference (file order)
# holds only where all of a user's records share one.
TOPICS = {"events": 1, "alerts": 2, "dlq": 1, "scores": 1}
PER_USER = 30  # a user's first events only: a few hundred events a codec


def _keyless(i: int) -> bool:
    """Every fifth record is sent without a key: the worker must dead-letter it (field key)."""
    return i % 5 == 4


def _lines_of(tiny_world: Path, attackers: int, normal: int) -> list[bytes]:
    """The first `PER_USER` events of some attackers and some normal users, in file order."""
    labels = [orjson.loads(x) for x in tiny_world.joinpath("labels.jsonl").read_bytes().split()]
    bad = sorted({ep["user_id"] for ep in labels})[:attackers]
    lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()
    good: list[str] = []
    for line in lines:
        user = orjson.loads(line)["user_id"]
        if user not in bad and user not in good and len(good) < normal:
            good.append(user)
    chosen, taken = set(bad) | set(good), Counter[str]()
    out = []
    for line in lines:
        user = orjson.loads(line)["user_id"]
        if user in chosen and taken[user] < PER_USER:
            taken[user] += 1
            out.append(line)
    return out


def _copy(line: bytes, codec: str) -> bytes:
    """The event as another user's: `user_id` and `event_id` get a `~codec` suffix."""
    obj = orjson.loads(line)
    obj["user_id"] = f"{obj['user_id']}~{codec}"
    obj["event_id"] = f"{obj['event_id']}~{codec}"
    return orjson.dumps(obj)


def _base(name: str) -> tuple[str, str]:
    base, _, codec = name.rpartition("~")
    return base, codec


def _stack(broker: TansuBroker, redis_url: str, topics: dict[str, str], prefix: str,
           bundle: Path, tmp: Path, **env: str) -> Stack:  # fmt: skip
    group = f"rs-codec-{uuid.uuid4().hex[:10]}"
    return Stack(broker.url, redis_url, topics, prefix, bundle, group, tmp,
                 env={"RISKSTREAM_VARIANT": "fp32", **env})  # fmt: skip


def test_confluent_producers_with_every_codec_give_the_uncompressed_windows_and_alerts(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tiny_world: Path,
    tmp_path: Path,
) -> None:
    """The same events five times, once per codec (none, gzip, snappy, lz4, zstd), each copy
    under its own users, from idempotent librdkafka producers, with headers, every fifth
    record without a key, and one malformed record per copy. Every copy must be windowed as
    the reference of its keyed records is, alert on the same (user, type, event) as the
    uncompressed copy, and dead-letter the malformed and the keyless records."""
    topics = make_topics(TOPICS)
    base_lines = _lines_of(tiny_world, attackers=6, normal=4)
    copies: dict[str, list[bytes]] = {c: [_copy(x, c) for x in base_lines] for c in CODECS}
    delivered = []
    for codec, lines in copies.items():
        records = []
        for i, line in enumerate(lines):
            key = None if _keyless(i) else orjson.loads(line)["user_id"].encode()
            headers = [("producer", b"confluent-kafka"), ("codec", codec.encode()),
                       ("seq", str(i).encode())]  # fmt: skip
            records.append((key, line, headers))
        records.insert(len(records) // 2, (None, b"{not json " + codec.encode(), []))
        delivered += produce_confluent(kafka_broker.bootstrap, topics["events"], records, codec)
    total = sum(len(v) for v in copies.values())
    print(f"{len(base_lines)} events a codec, {total + len(CODECS)} records in all")
    assert batch_codecs(kafka_broker.bootstrap, topics["events"], 1) == set(CODECS)

    stack = _stack(kafka_broker, redis_url, topics, key_prefix, tiny_bundle, tmp_path)
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], 1)
    ends = next_offsets((d.partition, d.offset) for d in delivered)
    try:
        with workers() as spawn:
            worker = spawn(stack, "worker")
            took = wait_until("every offset committed", lambda: offsets.caught_up(ends), 240,
                              [worker])  # fmt: skip
            print(f"consumed and committed in {took:.1f} s")
            assert worker.events() == total + len(CODECS)
            assert worker.metric("undecodable_batches_total") == 0
    finally:
        offsets.close()

    # Windows: every keyed event of every copy, in order, once.
    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    all_lines = [x for c in CODECS for i, x in enumerate(copies[c]) if not _keyless(i)]
    events = [parse_event(x, now_ms=FAR_FUTURE_MS) for x in all_lines]
    assert_windows_equal(redis_client, key_prefix, World(tmp_path, all_lines, events, []), bundle)

    # Alerts: per codec, the same (user, type, event) as the uncompressed copy.
    alert_records = read_all(kafka_broker.bootstrap, topics["alerts"], TOPICS["alerts"])
    by_codec: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for record in alert_records:
        alert = orjson.loads(record.value)
        user, codec = _base(alert["user_id"])
        by_codec[codec].add((user, alert["type"], _base(alert["event_id"])[0]))
    assert by_codec["none"], "no alert at all: the comparison would be empty"
    for codec in CODECS:
        assert by_codec[codec] == by_codec["none"], codec

    # librdkafka consumers in a group: every alert once, valid; offsets committed.
    schema = load_schema("alert")
    expect = {(r.partition, r.offset) for r in alert_records}
    group = f"alerts-reader-{uuid.uuid4().hex[:8]}"
    got, committed = read_in_group(kafka_broker.bootstrap, topics["alerts"], group, expect)
    assert Counter((r.partition, r.offset) for r in got) == Counter(expect), "each alert once"
    assert committed == next_offsets(expect)
    for r in got:
        alert = orjson.loads(r.value)
        jsonschema.validate(alert, schema, format_checker=jsonschema.FormatChecker())
        assert r.key == alert["user_id"].encode()
    again, _ = read_in_group(kafka_broker.bootstrap, topics["alerts"], group, set(), timeout_s=3)
    assert again == [], "the group's committed offsets were not honoured"

    # Dead letters, read the same way: the malformed and the keyless records of each copy,
    # with their source; a keyless one names the field `key`.
    dlq_records = read_all(kafka_broker.bootstrap, topics["dlq"], 1)
    expect = {(r.partition, r.offset) for r in dlq_records}
    group = f"dlq-reader-{uuid.uuid4().hex[:8]}"
    dead, committed = read_in_group(kafka_broker.bootstrap, topics["dlq"], group, expect)
    keyless = [x for c in CODECS for i, x in enumerate(copies[c]) if _keyless(i)]
    malformed = [b"{not json " + c.encode() for c in CODECS]
    assert sorted(r.value for r in dead) == sorted(malformed + keyless)
    assert committed == {0: max(o for _, o in expect) + 1}
    for r in dead:
        assert r.headers["source_topic"] == topics["events"].encode()
        assert r.headers["reason"]
        if r.value in keyless:
            assert r.headers.get("field") == b"key", r.headers


def test_an_undecodable_batch_is_dead_lettered_and_skipped(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tiny_world: Path,
    tmp_path: Path,
) -> None:
    """The issue's crash, reproduced: a worker whose aiokafka cannot decode lz4 (`cramjam`
    hidden from it) gets gzip, then lz4, then gzip batches from librdkafka. It must dead-letter
    the lz4 batches (their raw bytes, reason, topic/partition/offsets), count them, process the
    rest and commit past them, instead of dying on them."""
    from aiokafka.record.default_records import DefaultRecordBatch

    hide = tmp_path / "no-cramjam"
    hide.mkdir()
    hide.joinpath("cramjam.py").write_text('raise ImportError("hidden by the test")\n')
    topics = make_topics(TOPICS)
    lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()[:150]
    parts = {"gzip": lines[:60], "lz4": lines[60:90], "gzip again": lines[90:]}
    produced = {}
    for name, part in parts.items():
        codec = name.split()[0]
        records = [(orjson.loads(x)["user_id"].encode(), x, [("h", b"1")]) for x in part]
        produced[name] = produce_confluent(kafka_broker.bootstrap, topics["events"], records, codec)
    lz4_offsets = {d.offset for d in produced["lz4"]}
    delivered = [d for ds in produced.values() for d in ds]

    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH", "")) if p)
    stack = _stack(kafka_broker, redis_url, topics, key_prefix, tiny_bundle, tmp_path,
                   PYTHONPATH=path)  # fmt: skip
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], 1)
    try:
        with workers() as spawn:
            worker = spawn(stack, "worker")
            ends = next_offsets((d.partition, d.offset) for d in delivered)
            wait_until("committed past the lz4 batches", lambda: offsets.caught_up(ends), 180,
                       [worker])  # fmt: skip
            assert worker.events() == len(lines) - len(parts["lz4"])
            undecodable = worker.metric("undecodable_batches_total")
            assert worker.proc.poll() is None
    finally:
        offsets.close()
    log = worker.log.read_text()
    assert "cannot decode snappy, lz4, zstd" in log  # the start-up warning
    assert re.search(rf"skipped {re.escape(topics['events'])}\[0\] offsets \d+-\d+", log), log

    dlq = read_all(kafka_broker.bootstrap, topics["dlq"], 1)
    assert len(dlq) == undecodable >= 1
    covered: set[int] = set()
    recovered: list[bytes] = []
    for record in dlq:
        h = {k: v for k, v in record.headers}
        assert (h["field"], h["codec"], h["source_topic"], h["source_partition"]) == (
            b"batch", b"lz4", topics["events"].encode(), b"0")  # fmt: skip
        assert b"UnsupportedCodecError" in h["reason"]
        first, last = int(h["source_offset"]), int(h["source_last_offset"])
        covered |= set(range(first, last + 1))
        batch = DefaultRecordBatch(record.value)  # the raw batch: decodable where lz4 is
        recovered += [r.value for r in batch]
    assert covered == lz4_offsets
    assert recovered == parts["lz4"]

    # Windows: the gzip events, none of the lz4 ones.
    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    kept = parts["gzip"] + parts["gzip again"]
    events = [parse_event(x, now_ms=FAR_FUTURE_MS) for x in kept]
    assert_windows_equal(redis_client, key_prefix, World(tmp_path, kept, events, []), bundle)
