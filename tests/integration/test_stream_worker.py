"""The stream worker as a real process: Tansu broker, real Redis, `riskstream worker`.

Events (good ones and malformed ones) are produced keyed by user; the worker's debug scores
must equal `riskstream score` on the same file, malformed messages must reach the dead-letter
topic with their reasons, alerts must validate against the schema, `/health` and `/metrics`
must answer, and SIGTERM must stop it cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from events import load_schema, parse_event
from export import load_bundle
from export.score import score_file
from riskstream.localstack import TansuBroker, find_free_port
from riskstream.localstack.broker import read_log_tail
from tests.conftest import MakeTopics
from tests.integration.test_services_smoke import _consumer_on, _producer, _stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
WAIT_S = 180
NOW_MS = 1_900_000_000_000
BAD = [b"{not json", b'{"event_id": "b1", "user_id": "ub", "type": "click"}', b"[]"]


@contextlib.contextmanager
def _worker(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "riskstream", "worker", "--processes", "1", *args],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    except BaseException:
        print(f"--- worker log ---\n{read_log_tail(log, 20_000)}")
        raise
    finally:
        _stop_worker(proc)


def _read(consumer: Any, into: list[Any]) -> None:
    for records in consumer.poll(timeout_ms=250).values():
        into.extend(records)


def test_worker_scores_alerts_and_dead_letters(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    key_prefix: str,
    tiny_bundle: Path,
    tiny_world: Path,
    tmp_path: Path,
) -> None:
    topics = make_topics({"events": PARTITIONS, "alerts": 2, "dlq": 1, "scores": PARTITIONS})
    # A slice of the world: every event of some attackers and some normal users, in file order.
    labels = [json.loads(x) for x in tiny_world.joinpath("labels.jsonl").read_text().splitlines()]
    attackers = sorted({ep["user_id"] for ep in labels})[:25]
    lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()
    users = {parse_event(v, now_ms=NOW_MS).user_id for v in lines[:3000]} | set(attackers)
    good = [v for v in lines if parse_event(v, now_ms=NOW_MS).user_id in users]
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(good) + b"\n")

    metrics_port = find_free_port()
    env = {
        **os.environ,
        "RISKSTREAM_EVENTS_TOPIC": topics["events"],
        "RISKSTREAM_ALERTS_TOPIC": topics["alerts"],
        "RISKSTREAM_DLQ_TOPIC": topics["dlq"],
        "RISKSTREAM_SCORES_TOPIC": topics["scores"],
        "RISKSTREAM_REDIS_PREFIX": key_prefix,
        "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6",
        "RISKSTREAM_FAUST_DATADIR": str(tmp_path / "faust"),
        "RISKSTREAM_DEVICE": "cpu",
        # FP32: dynamic INT8 quantises activations per batch, so its scores move (≤ 0.04
        # measured) with what else is in the batch; parity is a property of the FP32 graph.
        "RISKSTREAM_VARIANT": "fp32",
    }
    args = [
        "--bundle", str(tiny_bundle), "--broker", kafka_broker.url, "--redis", redis_url,
        "--group", f"rs-{uuid.uuid4().hex[:10]}", "--debug-scores",
        "--metrics-port", str(metrics_port), "--log-level", "warn",
    ]  # fmt: skip
    producer = _producer(kafka_broker.bootstrap)
    bad_at = dict(zip((100, len(good) // 2, len(good) - 10), BAD, strict=True))
    for i, value in enumerate(good):
        if i in bad_at:
            producer.send(topics["events"], key=b"bad", value=bad_at[i])
        producer.send(topics["events"], key=parse_event(value, now_ms=NOW_MS).user_id.encode(),
                      value=value)  # fmt: skip
    producer.flush()
    producer.close()

    scores: list[Any] = []
    dlq: list[Any] = []
    alerts: list[Any] = []
    consumers = {
        "scores": _consumer_on(kafka_broker.bootstrap, topics["scores"], PARTITIONS),
        "dlq": _consumer_on(kafka_broker.bootstrap, topics["dlq"], 1),
        "alerts": _consumer_on(kafka_broker.bootstrap, topics["alerts"], 2),
    }
    try:
        with _worker(args, env, tmp_path / "worker.log") as proc:
            deadline = time.monotonic() + WAIT_S
            while len({orjson.loads(r.value)["event_id"] for r in scores}) < len(good):
                assert proc.poll() is None, f"worker exited with {proc.returncode}"
                assert time.monotonic() < deadline, f"{len(scores)} of {len(good)} scores"
                _read(consumers["scores"], scores)
            for _ in range(8):
                _read(consumers["dlq"], dlq)
                _read(consumers["alerts"], alerts)
            health = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/health", timeout=5)
            assert json.loads(health.read())["ready"] is True
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            text = metrics.read().decode()
            assert f"events_total {len(good) + 3}.0" in text
            assert f"event_lag_seconds_count {len(good) + 3}.0" in text
            assert 'dlq_total{reason="message"} 2.0' in text
            assert 'dlq_total{reason="ts"} 1.0' in text
            assert _stop_worker(proc) == 0
    finally:
        for consumer in consumers.values():
            consumer.close()

    # Its log is a file: log lines only, no Faust banner, spinner frames or escape codes.
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "dead letter" in log  # at --log-level warn: the dead letters' warnings
    for art in ("ƒaµS", "\x1b[", "\r", "-INT-"):
        assert art not in log, f"{art!r} in the worker's log"

    # Parity with offline scoring of the same file.
    reference = tmp_path / "reference.jsonl"
    score_file(load_bundle(tiny_bundle, "cpu", variant="fp32"), events_file, reference,
               progress=False)  # fmt: skip
    offline = {r["event_id"]: r for r in map(orjson.loads, reference.read_bytes().splitlines())}
    online = {r["event_id"]: r for r in (orjson.loads(x.value) for x in scores)}
    assert online.keys() == offline.keys()
    worst = max(
        abs(online[e][h] - offline[e][h]) for e in offline for h in ("fraud", "abnormal_click")
    )
    assert worst <= 1e-4

    # Dead letters: the original bytes, their reasons and where they came from.
    assert sorted(r.value for r in dlq) == sorted([BAD[0], BAD[1], BAD[2]])
    for record in dlq:
        headers = {k: v for k, v in record.headers}
        assert headers["source_topic"].decode() == topics["events"]
        assert headers["reason"]
    # Alerts: schema-valid, keyed by user, from this bundle, on users that attacked.
    schema = load_schema("alert")
    version = load_bundle(tiny_bundle, "cpu").model_version
    assert alerts, "no alert for 25 attackers"
    for record in alerts:
        alert = orjson.loads(record.value)
        jsonschema.validate(alert, schema, format_checker=jsonschema.FormatChecker())
        assert record.key.decode() == alert["user_id"]
        assert alert["model_version"].startswith(version)
    labelled = {ep["user_id"] for ep in labels}
    on_attackers = sum(orjson.loads(r.value)["user_id"] in labelled for r in alerts)
    assert on_attackers >= len(alerts) * 0.8
