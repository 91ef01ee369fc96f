"""`riskstream backtest`: parity with the worker's runtime over real Redis, the report, refusals.

The parity reference is `stream.runtime.WorkerRuntime.handle` — what the Faust agent calls for
every batch — against the real Redis (windows, cooldowns), publishing to a collecting `send`
instead of the broker. Faust and Kafka are not in it: they deliver the batches, they do not
decide alerts (the worker over a real broker is tested in test_stream_worker.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from events import Label, parse_event
from riskstream.cli import main
from riskstream.tools.backtest import BacktestOptions, measure, read_labels, run_backtest
from stream.messages import Incoming

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

#: Longer than the tiny world (1 day): live and replayed, each (user, type) alerts once, so the
#: worker's wall-clock cooldown and the backtest's event-time one hold back the same alerts.
LONG_COOLDOWN_S = 5 * 86_400
NOW_MS = 1_900_000_000_000


def _key(value: bytes) -> bytes | None:
    try:
        return str(json.loads(value)["user_id"]).encode()
    except (ValueError, KeyError, TypeError):
        return None


@pytest.fixture(scope="module")
def history(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world's labelled users and ~150 others: a smaller file, the same kinds."""
    lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()
    labels = tiny_world.joinpath("labels.jsonl").read_text().splitlines()
    users = {json.loads(x)["user_id"] for x in labels}
    users |= {parse_event(v, now_ms=NOW_MS).user_id for v in lines[:1500]}
    keep = [v for v in lines if parse_event(v, now_ms=NOW_MS).user_id in users]
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    path.write_bytes(b"\n".join(keep) + b"\n")
    return path


def _without_detection_time(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k != "detected_at"}


def test_backtest_alerts_equal_the_worker_runtimes(
    tiny_bundle: Path, history: Path, redis_url: str, key_prefix: str
) -> None:
    _parity(tiny_bundle, history, redis_url, key_prefix, None)


def test_backtest_parity_with_segments_and_lists(
    tiny_bundle: Path, history: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The same parity with a rules file of segment thresholds and allow / deny lists: deny
    alerts, allow suppression and segment thresholds are decided the same way replayed."""
    users = []
    for line in history.read_bytes().splitlines():
        user = parse_event(line, now_ms=NOW_MS).user_id
        if user not in users:
            users.append(user)
    (tmp_path / "lists.txt").write_text(
        f"deny user {users[0]} never parity check\n"
        f"deny:abnormal_click user {users[1]} never parity check\n"
        + "".join(f"allow user {u} never parity check\n" for u in users[2:40])
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "segments:\n"
        "  - {id: purchases, when: {type: [purchase, checkout]}, thresholds: {fraud: 0.2}}\n"
        "lists: [lists.txt]\n"
    )
    alerts = _parity(tiny_bundle, history, redis_url, key_prefix, rules)
    codes = {r["code"] for a in alerts for r in a["reasons"]}
    assert {"deny_list", "segment_threshold"} <= codes, codes  # parity is not vacuous
    assert not any(a["user_id"] in users[2:40] and a["reasons"][0]["code"] != "deny_list"
                   for a in alerts)  # fmt: skip


def _parity(
    tiny_bundle: Path, history: Path, redis_url: str, key_prefix: str, rules: Path | None
) -> list[dict[str, Any]]:
    from stream.runtime import WorkerRuntime
    from stream.settings import WorkerSettings

    settings = WorkerSettings(
        bundle=tiny_bundle, redis_url=redis_url, redis_prefix=key_prefix, device="cpu",
        metrics_port=0, variant="fp32", cooldown_s=LONG_COOLDOWN_S, inference_threads=1,
        rules=rules,
    )  # fmt: skip
    runtime = WorkerRuntime(settings)
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: object) -> None:
        sent.append((topic, key, value))

    lines = history.read_bytes().splitlines()
    batch = 256
    for start in range(0, len(lines), batch):
        msgs = [
            Incoming(v, _key(v), "events", 0, start + i)
            for i, v in enumerate(lines[start : start + batch])
        ]
        asyncio.run(runtime.handle(msgs, send))
    live = [orjson.loads(v) for topic, _, v in sent if topic == settings.alerts_topic]
    runtime.client.close()

    result = run_backtest(
        tiny_bundle, history, rules,
        BacktestOptions(batch_size=batch, cooldown_s=LONG_COOLDOWN_S, variant="fp32",
                        threads=1, progress=False),
    )  # fmt: skip
    assert live, "the tiny world raised no alert: parity would be vacuous"
    assert len(result.alerts) == len(live)
    by_id = {a["alert_id"]: a for a in live}
    assert set(by_id) == {a["alert_id"] for a in result.alerts}
    for replayed in result.alerts:  # score, severity, reasons, window: all of it
        assert _without_detection_time(replayed) == _without_detection_time(
            by_id[replayed["alert_id"]]
        )
    return live


def test_backtest_report_against_labels(
    tiny_bundle: Path, tiny_world: Path, history: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bt"
    code = main([
        "backtest", "--events", str(history), "--labels", str(tiny_world / "labels.jsonl"),
        "--bundle", str(tiny_bundle), "--rules", "config/rules.yaml", "--out", str(out),
        "--variant", "fp32", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    alerts = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    assert report["alerts"] == len(alerts) > 0
    by = report["by_source"]
    assert {"model:fraud", "model:abnormal_click", "all:fraud", "all:abnormal_click"} <= set(by)
    fraud = by["all:fraud"]
    assert 0.0 <= fraud["precision"] <= 1.0
    assert 0.0 <= fraud["recall"] <= 1.0
    assert fraud["recall_by_kind"], "recall per attack kind"
    assert fraud["normal_users_alerted_per_1000_per_day"] >= 0.0
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| source |" in (out / "report.md").read_text()
    # the alerts are the topic's schema
    import jsonschema

    from events import load_schema

    schema = load_schema("alert")
    for a in alerts[:50]:
        jsonschema.validate(a, schema)


def test_backtest_compare_rules_splits_alerts_into_only_a_only_b_both(
    tiny_bundle: Path, history: Path, tmp_path: Path
) -> None:
    none = tmp_path / "none.yaml"
    none.write_text("rules: []\n")
    out = tmp_path / "cmp"
    code = main([
        "backtest", "--events", str(history), "--bundle", str(tiny_bundle),
        "--rules", "config/rules.yaml", "--compare-rules", str(none), "--out", str(out),
        "--variant", "fp32", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    a = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (out / "b" / "alerts.jsonl").read_text().splitlines()]
    diff = json.loads((out / "compare.json").read_text())
    for kind, d in diff.items():
        assert d["only_a"] + d["both"] == sum(x["type"] == kind for x in a)
        assert d["only_b"] + d["both"] == sum(x["type"] == kind for x in b)
    assert all(not any(r.get("rule_id") for r in x["reasons"]) for x in b)  # B has no rules
    assert sum(d["both"] for d in diff.values()) > 0  # the model's alerts are in both


def test_measure_counts_an_alert_inside_its_episode(tiny_world: Path, history: Path) -> None:
    from riskstream.tools.backtest import BacktestResult

    labels = read_labels(tiny_world / "labels.jsonl")
    lab = next(x for x in labels if x.label == "fraud")
    alert = {
        "alert_id": "a", "type": "fraud", "user_id": lab.user_id, "event_id": "e",
        "event_ts": lab.start_ms + 60_000, "reasons": [], "score": 0.9,
    }  # fmt: skip
    result = BacktestResult(
        alerts=[alert],
        sources=["model"],
        users={lab.user_id, "n1", "n2"},
        report={"period": {"start_ms": lab.start_ms, "days": 1.0}, "users": 3},
    )
    m = measure(result, labels)["model:fraud"]
    assert m["precision"] == 1.0
    assert m["episodes_detected"] == 1
    assert m["detection_delay_s"]["median"] == 60.0
    assert m["normal_users_alerted_per_1000_per_day"] == 0.0


def _review_line(lab: Any, kind: str) -> bytes:
    from events import format_ts_ms

    return orjson.dumps({
        "kind": kind, "label": lab.label, "user_id": lab.user_id,
        "start": format_ts_ms(lab.start_ms), "end": format_ts_ms(lab.end_ms),
        "ts": format_ts_ms(lab.end_ms + 3_600_000), "decision_id": f"d-{lab.user_id}-{kind}",
        "source": "review",
    })  # fmt: skip


def test_a_dataset_replays_as_the_file_it_was_ingested_from(
    tiny_bundle: Path, history: Path, tmp_path: Path
) -> None:
    """`--events DATASET` (riskstream ingest): the events in their original lines' order, so
    the same alerts as the JSON lines themselves."""
    from training.ingest import ingest

    dataset = tmp_path / "dataset"
    ingest(history, dataset, buckets=4, progress=False)
    options = BacktestOptions(variant="fp32", progress=False)
    rules = Path("config/rules.yaml")
    from_file = run_backtest(tiny_bundle, history, rules, options)
    from_dataset = run_backtest(tiny_bundle, dataset, rules, options)
    assert from_file.alerts, "no alerts to compare"
    assert [_without_detection_time(a) for a in from_dataset.alerts] == [
        _without_detection_time(a) for a in from_file.alerts
    ]
    assert from_dataset.report["replayed"] == from_file.report["replayed"]
    assert from_dataset.report["users"] == from_file.report["users"]


def test_feedback_counts_as_labels(
    tiny_bundle: Path, tiny_world: Path, history: Path, tmp_path: Path
) -> None:
    """`--feedback`: analysts' confirmed decisions are label episodes (the same precision and
    recall as the same spans given as --labels), a false positive adds none, a chargeback is
    an episode from its session's start to the purchase (the trainer's reader), and the
    report says what the file gave."""
    from riskstream.tools.backtest import merge_labels

    labels = read_labels(tiny_world / "labels.jsonl")
    normal = next(u for u in sorted({str(json.loads(v)["user_id"]) for v in
                                     history.read_bytes().splitlines()[:200]})
                  if u not in {x.user_id for x in labels})  # fmt: skip
    dismissed = Label(normal, "fraud", labels[0].start_ms, labels[0].end_ms)
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_bytes(
        b"\n".join([_review_line(lab, "review_confirmed") for lab in labels]
                   + [_review_line(dismissed, "review_false_positive")]) + b"\n"
    )  # fmt: skip
    options = BacktestOptions(variant="fp32", progress=False)
    result = run_backtest(tiny_bundle, history, Path("config/rules.yaml"), options,
                          feedback=feedback)  # fmt: skip
    assert result.feedback is not None
    assert len(result.feedback.episodes) == len(labels)
    assert result.feedback.known_negatives == 1
    assert result.report["feedback"]["episodes_by_kind"] == {"review_confirmed": len(labels)}
    by_labels = measure(result, labels)
    by_feedback = measure(result, result.feedback.episodes)
    fields = ("precision", "recall", "episodes", "episodes_detected",
              "normal_users_alerted_per_1000_per_day", "detection_delay_s")  # fmt: skip
    assert by_labels["all:fraud"]["episodes_detected"] > 0
    for name, row in by_labels.items():
        assert {f: row.get(f) for f in fields} == {f: by_feedback[name].get(f) for f in fields}
    # Given both, an episode given twice counts once.
    assert measure(result, merge_labels(labels, result.feedback.episodes)) == by_labels

    # Chargebacks (the simulator's feedback), through the command: episodes of their own kind.
    out = tmp_path / "bt"
    code = main([
        "backtest", "--events", str(history), "--feedback", str(tiny_world / "feedback.jsonl"),
        "--bundle", str(tiny_bundle), "--out", str(out), "--variant", "fp32", "--no-progress",
        "--until", "2026-11-02T06:00:00Z",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    given = report["feedback"]
    assert given["episodes"] == given["episodes_by_kind"]["chargeback"] > 0
    fraud = report["by_source"]["all:fraud"]
    assert fraud["episodes"] == given["episodes"]
    assert set(fraud["recall_by_kind"]) == {"chargeback"}
    assert report["by_source"]["all:abnormal_click"].get("episodes") == 0


def test_a_bad_feedback_line_is_refused_with_its_line(
    tiny_bundle: Path, history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "feedback.jsonl"
    bad.write_text('{"order_id": "o1", "ts": "2026-11-02T00:00:00Z", "kind": "chargeback"}\n'
                   '{"kind": "review_confirmed", "label": "fraud", "user_id": "u1"}\n')  # fmt: skip
    code = main(["backtest", "--events", str(history), "--feedback", str(bad), "--bundle",
                 str(tiny_bundle), "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --feedback: {bad}:2:")
    assert "\n" not in err


def test_empty_period_and_bad_arguments_are_one_line(
    tiny_bundle: Path, history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["backtest", "--events", str(history), "--bundle", str(tiny_bundle),
            "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main([*base, "--since", "2031-01-01T00:00:00Z"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no events in the period from 2031-01-01")
    assert "\n" not in err
    assert main([*base, "--since", "2026-11-03T00:00:00Z", "--until", "2026-11-02T00:00:00Z"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: --since: must be before --until"
    assert main([*base, "--since", "yesterday"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --since:")
    assert "\n" not in err
    assert main(["backtest", "--events", str(tmp_path / "none.jsonl"), "--bundle",
                 str(tiny_bundle), "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:")
    assert "--events" in err
    assert "\n" not in err
