"""Smoke tests of the real parts: Redis, the Tansu broker, and a Faust worker on top of them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from riskstream.localstack import TansuBroker
from riskstream.localstack.broker import read_log_tail
from tests.integration import faust_echo_app as echo

pytestmark = pytest.mark.integration

MakeTopics = Callable[[Mapping[str, int]], dict[str, str]]  # the `make_topics` fixture

REPO_ROOT = Path(__file__).resolve().parents[2]
# Worker boot (~1 s) + Tansu's first group join (~3 s) + the echo itself: ~5 s here.
ECHO_WAIT_S = 60
ECHO_APP_MODULE = "tests.integration.faust_echo_app"  # run with -m from the repository root

# Idempotent window update, the way the stream worker counts an event once by its event_id:
# SADD says whether the id is new; only then does the counter move.
COUNT_ONCE_LUA = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
    return redis.call('INCR', KEYS[2])
end
return tonumber(redis.call('GET', KEYS[2]) or '0')
"""


def test_redis_set_get_and_lua(redis_client: redis.Redis, key_prefix: str) -> None:
    key = f"{key_prefix}greeting"
    assert redis_client.set(key, "hello", ex=60)
    assert redis_client.get(key) == b"hello"

    seen, count = f"{key_prefix}seen", f"{key_prefix}count"
    results = [
        redis_client.eval(COUNT_ONCE_LUA, 2, seen, count, event_id)
        for event_id in ["e1", "e2", "e1", "e3", "e2"]
    ]
    assert results == [1, 2, 2, 3, 3]
    assert redis_client.scard(seen) == 3


# -- kafka-python round trip -------------------------------------------------------------------


def _producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)


def _consumer_on(bootstrap: str, topic: str, partitions: int) -> Any:
    """A group-less consumer reading every partition of `topic` from the beginning."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,  # an empty poll returns quickly
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer


def _keyed_messages(n: int, users: int) -> list[tuple[bytes, dict[str, Any]]]:
    return [
        (
            f"user-{i % users}".encode(),
            {"event_id": f"e{i:04d}", "user_id": f"user-{i % users}", "seq": i},
        )
        for i in range(n)
    ]


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, dict[str, Any]]]) -> None:
    producer = _producer(bootstrap)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=json.dumps(value).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()


Received = list[tuple[int, bytes, dict[str, Any]]]  # (partition, key, value) in arrival order


def _poll_into(consumer: Any, received: Received, timeout_ms: int = 250) -> int:
    batch = consumer.poll(timeout_ms=timeout_ms)
    n = 0
    for tp, records in batch.items():
        for record in records:
            received.append((tp.partition, record.key, json.loads(record.value)))
            n += 1
    return n


def _drain(consumer: Any, received: Received, deadline: float) -> None:
    """Read until two polls in a row come back empty (the writers have stopped).

    Not `end_offsets()`: Tansu's ListOffsets(latest) answers the base offset of the last
    record batch + 1, which undercounts whenever that batch holds more than one record.
    """
    empty = 0
    while empty < 2 and time.monotonic() < deadline:
        empty = empty + 1 if _poll_into(consumer, received) == 0 else 0


def _assert_each_once_in_key_order(received: Received, sent_ids: set[str]) -> None:
    ids = [value["event_id"] for _, _, value in received]
    dupes = sorted(i for i, c in Counter(ids).items() if c > 1)
    assert not dupes, f"{len(dupes)} event ids arrived more than once: {dupes[:10]}"
    assert set(ids) == sent_ids, (
        f"missing {sorted(sent_ids - set(ids))[:10]}, unexpected {sorted(set(ids) - sent_ids)[:10]}"
    )
    seqs_by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions_by_key: dict[bytes, set[int]] = defaultdict(set)
    for partition, key, value in received:
        seqs_by_key[key].append(value["seq"])
        partitions_by_key[key].add(partition)
    for key, seqs in seqs_by_key.items():
        assert seqs == sorted(seqs), f"records of key {key!r} out of order"
        assert len(partitions_by_key[key]) == 1, f"key {key!r} spread over partitions"


def test_kafka_keyed_round_trip(kafka_broker: TansuBroker, make_topics: MakeTopics) -> None:
    topic = make_topics({"keyed": 4})["keyed"]
    messages = _keyed_messages(n=120, users=12)
    _produce(kafka_broker.bootstrap, topic, messages)

    received: Received = []
    consumer = _consumer_on(kafka_broker.bootstrap, topic, partitions=4)
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(messages) and time.monotonic() < deadline:
            _poll_into(consumer, received)
        _drain(consumer, received, deadline)
    finally:
        consumer.close()

    _assert_each_once_in_key_order(received, {v["event_id"] for _, v in messages})
    assert len({partition for partition, _, _ in received}) > 1, "keys did not spread"


# -- a real Faust worker -------------------------------------------------------------------------


@contextlib.contextmanager
def _faust_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the echo app as `faust worker`; stop it at the end; print its log on failure."""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            # --without-web: the CLI's default (--with-web) overrides `web_enabled=False` and
            # binds :6066, which a second worker on the machine would collide with.
            [sys.executable, "-m", ECHO_APP_MODULE, "worker", "--without-web", "-l", "warn"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    except BaseException:
        # pytest shows captured stdout of a failed test: the worker's side of the story.
        print(f"--- faust worker log ({log_path}) ---\n{read_log_tail(log_path, 20_000)}")
        raise
    finally:
        _stop_worker(proc)


def _stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    """SIGTERM (Faust's clean shutdown: flush the producer, commit, leave the group), then kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def test_faust_worker_echoes_each_record_exactly_once(
    kafka_broker: TansuBroker, make_topics: MakeTopics, tmp_path: Path
) -> None:
    topics = make_topics({"in": echo.PARTITIONS, "out": echo.PARTITIONS})
    env = {
        **os.environ,
        echo.ENV_BROKER: kafka_broker.url,
        echo.ENV_IN: topics["in"],
        echo.ENV_OUT: topics["out"],
        echo.ENV_APP_ID: f"echo-{uuid.uuid4().hex[:12]}",  # a fresh consumer group per run
        echo.ENV_DATA_DIR: str(tmp_path / "faust-data"),
    }
    messages = _keyed_messages(n=200, users=25)
    sent_ids = {value["event_id"] for _, value in messages}
    log_path = tmp_path / "faust-worker.log"
    received: Received = []

    consumer = _consumer_on(kafka_broker.bootstrap, topics["out"], partitions=echo.PARTITIONS)
    try:
        with _faust_worker(env, log_path) as worker:
            # Produced while the worker boots: its new group starts from the earliest offset.
            _produce(kafka_broker.bootstrap, topics["in"], messages)
            deadline = time.monotonic() + ECHO_WAIT_S
            while (distinct := len({v["event_id"] for _, _, v in received})) < len(sent_ids):
                if worker.poll() is not None:
                    pytest.fail(f"the worker exited early with code {worker.returncode}")
                if time.monotonic() >= deadline:
                    pytest.fail(
                        f"{distinct} of {len(sent_ids)} records came back in {ECHO_WAIT_S} s"
                    )
                _poll_into(consumer, received)
            code = _stop_worker(worker)
            assert code == 0, f"worker exit code {code} after SIGTERM"
            # Anything it wrote twice (say, after a rebalance) is in the topic by now.
            _drain(consumer, received, deadline=time.monotonic() + 15)
            _assert_each_once_in_key_order(received, sent_ids)
    finally:
        consumer.close()
