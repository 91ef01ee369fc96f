"""A shadow bundle beside the live one, in real `riskstream worker` processes (Tansu, Redis).

The same events go to two workers: one with the live bundle only, one with the live bundle and
a shadow bundle (the same graph, another model version and far lower thresholds, so that it
would alert more). The second's `alerts` must be the first's, alert for alert; the shadow's would-be
alerts appear on `alerts.shadow` only, with its model version, and its scores (on the very
same windows) on `scores.shadow`. `riskstream shadow report` must count what was published.
A shadow bundle that fails verification is refused before the worker starts, in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from events import load_schema, parse_event
from export import read_manifest
from riskstream.localstack import TansuBroker
from riskstream.localstack.broker import read_log_tail
from tests.conftest import MakeTopics
from tests.integration.test_services_smoke import _consumer_on, _producer, _stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
WAIT_S = 240
NOW_MS = 1_900_000_000_000
SHADOW_VERSION = "shadow-test-0001"
TOPICS = {"events": PARTITIONS, "alerts": 2, "dlq": 1, "scores": PARTITIONS,
          "alerts.shadow": 2, "scores.shadow": PARTITIONS}  # fmt: skip


#: The shadow's thresholds: far below the live ones (the tiny model's scores are bimodal: about
#: 0.85 and 0.98 live; halving them flagged no other user), so that it flags more users.
LOW = 1e-3


def shadow_copy(source: Path, dest: Path, version: str, threshold: float | None = LOW) -> Path:
    """`source` copied to `dest`, announcing `version`, with `threshold` for both heads (None:
    the source's thresholds)."""
    shutil.copytree(source, dest)
    manifest = read_manifest(source)
    if threshold is not None:
        manifest = replace(manifest, thresholds=dict.fromkeys(manifest.thresholds, threshold))
    manifest = replace(manifest, model_version=version)
    (dest / "manifest.json").write_text(manifest.to_json())
    return dest


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
        print(f"--- worker log {log.name} ---\n{read_log_tail(log, 20_000)}")
        raise
    finally:
        _stop_worker(proc)


def _env(topics: dict[str, str], prefix: str, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RISKSTREAM_EVENTS_TOPIC": topics["events"],
        "RISKSTREAM_ALERTS_TOPIC": topics["alerts"],
        "RISKSTREAM_DLQ_TOPIC": topics["dlq"],
        "RISKSTREAM_SCORES_TOPIC": topics["scores"],
        "RISKSTREAM_SHADOW_ALERTS_TOPIC": topics["alerts.shadow"],
        "RISKSTREAM_SHADOW_SCORES_TOPIC": topics["scores.shadow"],
        "RISKSTREAM_REDIS_PREFIX": prefix,
        "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6",
        "RISKSTREAM_FAUST_DATADIR": str(tmp),
        "RISKSTREAM_DEVICE": "cpu",
        "RISKSTREAM_VARIANT": "fp32",  # INT8 scores move with the batch: parity needs FP32
    }


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    consumer = _consumer_on(bootstrap, topic, partitions)
    records: list[Any] = []
    try:
        empty = 0
        while empty < 3:
            got = [r for rs in consumer.poll(timeout_ms=300).values() for r in rs]
            records += got
            empty = 0 if got else empty + 1
    finally:
        consumer.close()
    return records


def _wait_scored(
    bootstrap: str, topic: str, want: int, procs: list[subprocess.Popen[bytes]]
) -> None:
    consumer = _consumer_on(bootstrap, topic, PARTITIONS)
    seen: set[str] = set()
    deadline = time.monotonic() + WAIT_S
    try:
        while len(seen) < want:
            for proc in procs:
                assert proc.poll() is None, f"a worker exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{topic}: {len(seen)} of {want} scores"
            for records in consumer.poll(timeout_ms=250).values():
                seen.update(orjson.loads(r.value)["event_id"] for r in records)
    finally:
        consumer.close()


def _essence(records: list[Any]) -> dict[str, tuple[Any, ...]]:
    """Alerts by id: what must not differ between two workers (not `detected_at`)."""
    out = {}
    for r in records:
        a = orjson.loads(r.value)
        assert r.key.decode() == a["user_id"]
        out[a["alert_id"]] = (a["type"], a["user_id"], a["event_id"], a["model_version"],
                              round(a["score"], 4), a["severity"])  # fmt: skip
    return out


def test_a_shadow_never_changes_the_live_alerts_and_publishes_its_own(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    key_prefix: str,
    tiny_bundle: Path,
    tiny_world: Path,
    tmp_path: Path,
) -> None:
    started_ms = int(time.time() * 1000)
    shadow = shadow_copy(tiny_bundle, tmp_path / "shadow", SHADOW_VERSION)
    live_version = read_manifest(tiny_bundle).model_version
    labels = [json.loads(x) for x in tiny_world.joinpath("labels.jsonl").read_text().splitlines()]
    attackers = sorted({ep["user_id"] for ep in labels})[:25]
    lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()
    users = {parse_event(v, now_ms=NOW_MS).user_id for v in lines[:2000]} | set(attackers)
    good = [v for v in lines if parse_event(v, now_ms=NOW_MS).user_id in users]

    plain, shadowed = make_topics(TOPICS), make_topics(TOPICS)
    producer = _producer(kafka_broker.bootstrap)
    for value in good:
        key = parse_event(value, now_ms=NOW_MS).user_id.encode()
        producer.send(plain["events"], key=key, value=value)
        producer.send(shadowed["events"], key=key, value=value)
    producer.flush()
    producer.close()

    common = ["--bundle", str(tiny_bundle), "--broker", kafka_broker.url, "--redis", redis_url,
              "--debug-scores", "--metrics-port", "0", "--log-level", "warn"]  # fmt: skip
    a_args = [*common, "--group", f"rs-a-{uuid.uuid4().hex[:8]}"]
    b_args = [*common, "--group", f"rs-b-{uuid.uuid4().hex[:8]}", "--shadow-bundle", str(shadow)]
    a_env = _env(plain, key_prefix + "a:", tmp_path / "faust-a")
    b_env = _env(shadowed, key_prefix + "b:", tmp_path / "faust-b")
    with (
        _worker(a_args, a_env, tmp_path / "worker-a.log") as a,
        _worker(b_args, b_env, tmp_path / "worker-b.log") as b,
    ):
        bs = kafka_broker.bootstrap
        _wait_scored(bs, plain["scores"], len(good), [a, b])
        _wait_scored(bs, shadowed["scores.shadow"], len(good), [a, b])
        assert _stop_worker(a) == 0
        assert _stop_worker(b) == 0

    bs = kafka_broker.bootstrap
    alerts_a = _read_all(bs, plain["alerts"], 2)
    alerts_b = _read_all(bs, shadowed["alerts"], 2)
    shadow_alerts = _read_all(bs, shadowed["alerts.shadow"], 2)
    live_scores = _read_all(bs, shadowed["scores"], PARTITIONS)
    shadow_scores = _read_all(bs, shadowed["scores.shadow"], PARTITIONS)
    assert not _read_all(bs, plain["alerts.shadow"], 2), "a worker without shadow published some"

    # 1. The live alerts of the worker with a shadow are those of the worker without.
    live_a, live_b = _essence(alerts_a), _essence(alerts_b)
    assert live_a, "no live alert for 25 attackers"
    assert live_b == live_a
    assert all(v[3].startswith(live_version) for v in live_b.values())

    # 2. The shadow's would-be alerts: on alerts.shadow only, schema-valid, its version.
    schema = load_schema("alert")
    sh = _essence(shadow_alerts)
    assert sh, "no shadow alert"
    for record in shadow_alerts:
        jsonschema.validate(orjson.loads(record.value), schema,
                            format_checker=jsonschema.FormatChecker())  # fmt: skip
    assert all(v[3].split("+")[0] == SHADOW_VERSION for v in sh.values())
    assert not any(SHADOW_VERSION in v[3] for v in live_b.values())
    # Lower thresholds: the shadow alerts every pair the live model does, and more.
    live_pairs = {(v[1], v[0]) for v in live_b.values()}
    shadow_pairs = {(v[1], v[0]) for v in sh.values()}
    assert live_pairs <= shadow_pairs
    assert len(shadow_pairs) > len(live_pairs)

    # 3. Its scores: the same windows (same graph: the same numbers), its version.
    live_s = {r["event_id"]: r for r in (orjson.loads(x.value) for x in live_scores)}
    shadow_s = {r["event_id"]: r for r in (orjson.loads(x.value) for x in shadow_scores)}
    assert shadow_s.keys() == live_s.keys()
    assert {r["model_version"] for r in shadow_s.values()} == {SHADOW_VERSION}
    worst = max(abs(shadow_s[e][h] - live_s[e][h]) for e in live_s
                for h in ("fraud", "abnormal_click"))  # fmt: skip
    assert worst <= 1e-5

    # 4. The report counts what was published.
    report = subprocess.run(
        [sys.executable, "-m", "riskstream", "shadow", "report", "--since", str(started_ms),
         "--broker", kafka_broker.url, "--alerts-topic", shadowed["alerts"],
         "--shadow-topic", shadowed["alerts.shadow"], "--no-decisions", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["live_versions"] == [live_version]
    assert data["shadow_versions"] == [SHADOW_VERSION]
    for row in data["heads"]:
        head = row["head"]
        lp = {p for p in live_pairs if p[1] == head}
        sp = {p for p in shadow_pairs if p[1] == head}
        assert row["live_alerts"] == sum(v[0] == head for v in live_b.values())
        assert row["shadow_alerts"] == sum(v[0] == head for v in sh.values())
        assert (row["both"], row["only_live"], row["only_shadow"]) == (
            len(lp & sp), len(lp - sp), len(sp - lp))  # fmt: skip


def test_a_bad_shadow_bundle_is_refused_in_one_line(
    kafka_broker: TansuBroker, redis_url: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    tampered = shadow_copy(tiny_bundle, tmp_path / "tampered", SHADOW_VERSION, None)
    with (tampered / "model.onnx").open("ab") as f:
        f.write(b"\0")  # its sha256 no longer matches the manifest
    base = [sys.executable, "-m", "riskstream", "worker", "--bundle", str(tiny_bundle),
            "--broker", kafka_broker.url, "--redis", redis_url, "--metrics-port", "0"]  # fmt: skip
    for shadow, expected, names in (
        (tampered, "error: shadow bundle refused: ", "model.onnx"),
        (tmp_path / "missing", f"error: --shadow-bundle {tmp_path / 'missing'}: no manifest.json",
         "missing"),
    ):  # fmt: skip
        done = subprocess.run([*base, "--shadow-bundle", str(shadow)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode != 0
        err = done.stderr.strip()
        assert err.startswith(expected), err
        assert names in err
        assert "Traceback" not in err
        assert len(err.splitlines()) == 1, err
