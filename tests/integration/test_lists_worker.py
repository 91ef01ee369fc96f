"""Allow / deny lists and segment thresholds in the real worker: Tansu broker, real Redis,
`riskstream worker --rules` with a lists file, `riskstream lists add` against a real PostgreSQL.

One worker, events produced in phases (users picked from offline scores of the tiny world):
1. a deny-listed quiet user gets a `deny_list` alert; an allow-listed attacker gets none (and
   `allow_list_suppressed_total` counts it); a segment that lowers the threshold for a quiet
   user's device raises a model alert that names the segment; a segment that raises it for an
   attacker's devices holds back the alerts that user's scores would raise; an expired entry
   raises nothing;
2. `riskstream lists add` (audited in PostgreSQL) puts another quiet user on the deny list while
   the worker runs: that user's events, produced after, get a `deny_list` alert (hot reload);
3. a lists file with an invalid CIDR is refused (`rules_refused_total`), and the old lists keep
   serving: a user on them still gets a `deny_list` alert.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import psycopg
import pytest

from events import load_schema, parse_event
from export import load_bundle
from export.score import score_file
from riskstream.cli import main
from riskstream.localstack import TansuBroker, find_free_port
from tests.conftest import MakeTopics
from tests.integration.test_services_smoke import _consumer_on, _producer, _stop_worker
from tests.integration.test_stream_worker import _read, _worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

PARTITIONS = 2
WAIT_S = 120
NOW_MS = 1_900_000_000_000


def _pick(tiny_bundle: Path, tiny_world: Path, tmp_path: Path) -> dict[str, Any]:
    """Users for each role, from offline scores (equal to the worker's: test_stream_worker)."""
    lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()
    labelled = {json.loads(x)["user_id"] for x in
                tiny_world.joinpath("labels.jsonl").read_text().splitlines()}  # fmt: skip
    by_user: dict[str, list[bytes]] = defaultdict(list)
    for v in lines:
        by_user[parse_event(v, now_ms=NOW_MS).user_id].append(v)
    path = tmp_path / "all.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    scored = tmp_path / "scores.jsonl"
    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    score_file(bundle, path, scored, progress=False)
    scores = {r["event_id"]: r for r in map(orjson.loads, scored.read_bytes().splitlines())}
    thr = bundle.thresholds
    quiet, loud = [], []
    for user, evs in sorted(by_user.items()):
        parsed = [parse_event(v, now_ms=NOW_MS) for v in evs]
        peak = max(scores[e.event_id][h] / thr[h] for e in parsed for h in thr)
        over = [e for e in parsed[3:] if any(scores[e.event_id][h] >= thr[h] for h in thr)]
        devices = {e.device_id for e in parsed}
        one_device = len(devices) == 1 and None not in devices  # the segment sees every event
        if user not in labelled and peak < 0.8 and len(evs) >= 8 and one_device:
            quiet.append(user)
        if user in labelled and len(over) >= 5 and None not in devices:
            loud.append(user)
    assert len(quiet) >= 5, "too few quiet users"
    assert len(loud) >= 2, "too few attackers that alert"
    first = lambda u: parse_event(by_user[u][0], now_ms=NOW_MS)  # noqa: E731
    return {
        "by_user": by_user,
        "deny": quiet[0],
        "segment_low": quiet[1],
        "expired": quiet[2],
        "hot": quiet[3],
        "kept": quiet[4],
        "allow": loud[0],
        "segment_high": loud[1],
        "low_device": first(quiet[1]).device_id,
        "high_devices": sorted({parse_event(v, now_ms=NOW_MS).device_id for v in by_user[loud[1]]}),
    }


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples (0 while the worker's endpoint is not up yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_lists_and_segments_in_the_worker(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    key_prefix: str,
    tiny_bundle: Path,
    tiny_world: Path,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    who = _pick(tiny_bundle, tiny_world, tmp_path)
    lists = tmp_path / "lists.txt"
    lists.write_text(
        "# action kind value expires reason\n"
        f"deny user {who['deny']} 2099-01-01 chargeback ring (case 12)\n"
        f"allow user {who['allow']} never VIP customer\n"
        f"deny user {who['expired']} 2000-01-01 long expired\n"
        f"deny user {who['kept']} never on the list before the bad file\n"
    )
    rules = tmp_path / "rules.yaml"
    high = ", ".join(who["high_devices"])
    rules.write_text(
        "segments:\n"
        "  - id: watched_device\n"
        f"    when: {{device_id: [{who['low_device']}]}}\n"
        "    thresholds: {fraud: 0.0001}\n"
        "  - id: trusted_devices\n"
        f"    when: {{device_id: [{high}]}}\n"
        "    thresholds: {fraud: 1.0, abnormal_click: 1.0}\n"
        "lists: [lists.txt]\n"
    )
    topics = make_topics({"events": PARTITIONS, "alerts": 1, "dlq": 1})
    port = find_free_port()
    env = {
        **os.environ,
        "RISKSTREAM_EVENTS_TOPIC": topics["events"], "RISKSTREAM_ALERTS_TOPIC": topics["alerts"],
        "RISKSTREAM_DLQ_TOPIC": topics["dlq"], "RISKSTREAM_REDIS_PREFIX": key_prefix,
        "RISKSTREAM_FAUST_DATADIR": str(tmp_path / "faust"), "RISKSTREAM_DEVICE": "cpu",
        "RISKSTREAM_VARIANT": "fp32",
    }  # fmt: skip
    args = [
        "--bundle", str(tiny_bundle), "--broker", kafka_broker.url, "--redis", redis_url,
        "--group", f"rs-{uuid.uuid4().hex[:10]}", "--rules", str(rules),
        "--metrics-port", str(port), "--log-level", "warn",
    ]  # fmt: skip
    producer = _producer(kafka_broker.bootstrap)

    def produce(*users: str) -> None:
        for user in users:
            for v in who["by_user"][user]:
                producer.send(topics["events"], key=user.encode(), value=v)
        producer.flush()

    alerts: list[dict[str, Any]] = []
    consumer = _consumer_on(kafka_broker.bootstrap, topics["alerts"], 1)

    def wait_for(what: str, done: Any, proc: Any) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            assert proc.poll() is None, f"worker exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"no {what}: {[a['user_id'] for a in alerts]}"
            drain()

    def drain() -> None:
        got: list[Any] = []
        _read(consumer, got)
        alerts.extend(orjson.loads(r.value) for r in got)

    def of(user: str) -> list[dict[str, Any]]:
        return [a for a in alerts if a["user_id"] == user]

    phase1 = ("deny", "allow", "segment_low", "segment_high", "expired")
    try:
        with _worker(args, env, tmp_path / "worker.log") as proc:
            produce(*(who[r] for r in phase1))
            # every phase-1 event scored: events_total counts them
            total = sum(len(who["by_user"][who[r]]) for r in phase1)
            wait_for("phase 1", lambda: _metric(port, "events_total") >= total, proc)
            wait_for("deny alert", lambda: of(who["deny"]) and of(who["segment_low"]), proc)
            for _ in range(8):  # what else phase 1 raised (nothing, if all goes well)
                drain()

            deny = of(who["deny"])
            assert [a["reasons"][0]["code"] for a in deny] == ["deny_list"]
            assert "chargeback ring (case 12)" in deny[0]["reasons"][0]["detail"]
            assert f"{lists}:2" in deny[0]["reasons"][0]["detail"]
            assert "+lists-" in deny[0]["model_version"]
            assert of(who["allow"]) == []
            assert _metric(port, "allow_list_suppressed_total") >= 1
            low = of(who["segment_low"])
            assert low, "the segment's low threshold raised no alert"
            assert low[0]["type"] == "fraud"
            assert low[0]["threshold"] == pytest.approx(0.0001)
            assert low[0]["reasons"][0]["code"] == "segment_threshold"
            assert "segment watched_device" in low[0]["reasons"][0]["detail"]
            assert "+rules-" in low[0]["model_version"]
            assert of(who["segment_high"]) == []
            assert of(who["expired"]) == []

            # 2. an audited change while the worker runs, applied to the next events
            monkeypatch.setenv("RISKSTREAM_DATABASE_URL", database_url)
            code = main(["lists", "add", "deny", "user", who["hot"], "--file", str(lists),
                         "--reason", "seen in case 7", "--expires", "2099-01-01",
                         "--by", "alice"])  # fmt: skip
            assert code == 0
            time.sleep(1)
            produce(who["hot"])
            began = time.monotonic()
            wait_for("hot-reloaded deny", lambda: of(who["hot"]), proc)
            assert time.monotonic() - began < WAIT_S
            assert of(who["hot"])[0]["reasons"][0]["code"] == "deny_list"
            assert "seen in case 7" in of(who["hot"])[0]["reasons"][0]["detail"]

            # 3. a bad lists file is refused, the old lists keep serving
            refused = _metric(port, "rules_refused_total")
            with lists.open("a") as fh:
                fh.write("deny ip 10.0.0.1/8 never host bits set\n")
            produce(who["kept"])
            wait_for("deny from the old lists", lambda: of(who["kept"]), proc)
            assert of(who["kept"])[0]["reasons"][0]["code"] == "deny_list"
            assert _metric(port, "rules_refused_total") == refused + 1
            assert _stop_worker(proc) == 0
    finally:
        consumer.close()
        producer.close()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert f"{lists}:7: invalid CIDR '10.0.0.1/8'" in log
    schema = load_schema("alert")
    for alert in alerts:
        jsonschema.validate(alert, schema, format_checker=jsonschema.FormatChecker())
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT actor, operation, action, kind, value, reason, source FROM list_changes"
        ).fetchall()
    assert rows == [("alice", "add", "deny", "user", who["hot"], "seen in case 7", "cli")]
