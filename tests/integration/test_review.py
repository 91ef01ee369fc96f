"""The review service on the real broker and a real PostgreSQL: alerts become cases (idempotent on
alert_id, one open case per user), bad alert messages go to the DLQ with their reason, the console
signs in, checks CSRF on every POST, records decisions, publishes them on the decisions topic
(valid against decision.json) and escapes every field that came from an event."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import psycopg
import pytest

from events import load_schema
from riskstream.localstack import TansuBroker
from tests.conftest import MakeTopics
from tests.integration.review_support import (
    PASSWORD,
    USER,
    csrf_of,
    make_alert,
    running_review,
    signed_in,
    wait_for,
)
from tests.integration.test_services_smoke import _consumer_on, _producer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _topics(make_topics: MakeTopics) -> dict[str, str]:
    return make_topics({"alerts": 2, "decisions": 2, "dlq": 1})


def _send(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = _producer(bootstrap)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _alert_msg(alert: dict[str, Any]) -> tuple[bytes, bytes]:
    return alert["user_id"].encode(), orjson.dumps(alert)


def _rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), args).fetchall()


def _drain(bootstrap: str, topic: str, partitions: int, want: int) -> list[Any]:
    consumer = _consumer_on(bootstrap, topic, partitions)
    got: list[Any] = []
    try:

        def enough() -> bool:
            for records in consumer.poll(timeout_ms=250).values():
                got.extend(records)
            return len(got) >= want

        wait_for(enough, f"{want} records on {topic}")
        for records in consumer.poll(timeout_ms=500).values():  # nothing more expected
            got.extend(records)
    finally:
        consumer.close()
    return got


def test_alerts_become_cases_once_and_bad_messages_are_dead_lettered(
    kafka_broker: TansuBroker, make_topics: MakeTopics, database_url: str, tmp_path: Path
) -> None:
    topics = _topics(make_topics)
    first = make_alert("u-1", score=0.91)
    second = make_alert("u-1", type="abnormal_click", severity="critical", score=0.99)
    other = make_alert("u-2", severity="medium")
    redelivered = {**first, "score": 0.5, "severity": "low"}  # same alert_id: changes nothing
    missing_score = make_alert("u-3")
    del missing_score["score"]
    _send(kafka_broker.bootstrap, topics["alerts"], [
        _alert_msg(first), _alert_msg(second), _alert_msg(other), _alert_msg(redelivered),
        _alert_msg(missing_score), (b"u-4", b"{not json"),
    ])  # fmt: skip
    with running_review(database_url, kafka_broker.bootstrap, topics, tmp_path) as review:
        wait_for(lambda: _rows(database_url, "SELECT count(*) FROM alerts")[0][0] == 3, "3 alerts")
        dlq = _drain(kafka_broker.bootstrap, topics["dlq"], 1, 2)
        # The same alert again, later: still nothing changes.
        _send(kafka_broker.bootstrap, topics["alerts"], [_alert_msg(redelivered)])
        wait_for(lambda: review.service.metrics.duplicates._value.get() >= 2, "2 duplicates")

    cases = _rows(database_url, "SELECT user_id, status FROM cases ORDER BY user_id")
    assert cases == [("u-1", "open"), ("u-2", "open")]
    per_case = _rows(
        database_url,
        "SELECT c.user_id, count(*) FROM alerts a JOIN cases c USING (case_id)"
        " GROUP BY 1 ORDER BY 1",
    )
    assert per_case == [("u-1", 2), ("u-2", 1)]
    [(score, severity)] = _rows(
        database_url, "SELECT score, severity FROM alerts WHERE alert_id = %s", first["alert_id"]
    )
    assert (score, severity) == (0.91, "high")
    reasons = {}
    for record in dlq:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["source_topic"] == topics["alerts"]
        reasons[record.value] = (headers["field"], headers["reason"])
    assert reasons[orjson.dumps(missing_score)][0] == "score"
    assert reasons[b"{not json"][0] == "message"
    assert "not valid JSON" in reasons[b"{not json"][1]
    versions = _rows(database_url, "SELECT version, name FROM schema_version")
    assert versions == [(1, "cases"), (2, "list_changes"), (3, "shadow_alerts")]


def test_console_signs_in_checks_csrf_and_publishes_decisions(
    kafka_broker: TansuBroker, make_topics: MakeTopics, database_url: str, tmp_path: Path
) -> None:
    topics = _topics(make_topics)
    a1 = make_alert("u-10", severity="critical", score=0.99, rule_id="card_testing")
    a2 = make_alert("u-10", type="fraud", severity="high", score=0.9)
    b1 = make_alert("u-11", type="abnormal_click", severity="medium", score=0.7)
    _send(kafka_broker.bootstrap, topics["alerts"], [_alert_msg(a) for a in (a1, a2, b1)])
    with (
        contextlib.ExitStack() as stack,
        running_review(database_url, kafka_broker.bootstrap, topics, tmp_path) as review,
    ):
        wait_for(lambda: _rows(database_url, "SELECT count(*) FROM alerts")[0][0] == 3, "alerts")
        anonymous = review.url
        import httpx

        with httpx.Client(base_url=anonymous, timeout=15) as guest:
            assert guest.get("/").status_code == 303  # to the sign-in page
            login = guest.get("/login")
            token = csrf_of(login.text)
            wrong = guest.post(
                "/login", data={"csrf": token, "username": "alice", "password": "nope-nope"}
            )
            assert wrong.status_code == 401
            no_csrf = guest.post("/login", data={"username": "alice", "password": "x"})
            assert no_csrf.status_code == 403
        client = signed_in(review.url)
        stack.callback(client.close)
        queue = client.get("/")
        assert queue.status_code == 200
        assert queue.text.index("u-10") < queue.text.index("u-11")  # critical before medium
        # Both clocks, labelled; the window's reason codes beside the rules (u-11 has no rule).
        assert "Last event (event time, UTC)" in queue.text
        assert "Last alert (detection time, UTC)" in queue.text
        u11_row = queue.text.split("u-11")[1].split("</tr>")[0]
        assert "payment_failures" in u11_row
        assert "card_testing" in queue.text.split("u-10")[1].split("</tr>")[0]
        assert "abnormal_click" not in client.get("/?type=fraud").text.split("<tbody>")[1]
        assert "u-11" not in client.get("/?rule=card_testing").text
        [(case_id,)] = _rows(database_url, "SELECT case_id FROM cases WHERE user_id = 'u-10'")
        page = client.get(f"/cases/{case_id}")
        assert "5 failed payments in 8.5 min" in page.text
        assert "e-7" in page.text
        assert "driving event: payment_failed" in page.text
        # Events on the event clock with offsets; the alert on the detection clock, without
        # one (a replayed day would put it days after its events).
        assert "event time, +8.6 min" in page.text  # the scored event, 515 s after the first
        raised = page.text.split("alert raised")[0].rsplit("<li", 1)[1]
        assert "detection time" in raised
        assert "+" not in raised
        assert "20261102T090000Z-3f9a0c1d2e4b" in page.text
        assert "0.800" in page.text
        # A POST without the session's CSRF token is refused and records nothing.
        forged = client.post(
            f"/cases/{case_id}/decide", data={"verdict": "false_positive", "csrf": "forged"}
        )
        assert forged.status_code == 403
        assert _rows(database_url, "SELECT count(*) FROM decisions")[0][0] == 0
        decided = client.post(
            f"/cases/{case_id}/decide",
            data={"verdict": "confirmed_fraud", "note": "card testing", "csrf": csrf_of(page.text)},
        )
        assert decided.status_code == 303
        again = client.post(
            f"/cases/{case_id}/decide",
            data={"verdict": "false_positive", "csrf": csrf_of(page.text)},
        )
        assert again.status_code == 409  # a closed case keeps its verdict
        [(b_case,)] = _rows(database_url, "SELECT case_id FROM cases WHERE user_id = 'u-11'")
        client.post(
            f"/cases/{b_case}/decide",
            data={"verdict": "false_positive", "csrf": csrf_of(page.text)},
        )
        published = _drain(kafka_broker.bootstrap, topics["decisions"], 2, 2)
        wait_for(
            lambda: (
                _rows(database_url, "SELECT count(*) FROM decisions WHERE published_at IS NULL")
                == [(0,)]
            ),
            "decisions marked published",
        )
        # A new alert for u-10 after the verdict opens a new case.
        a3 = make_alert("u-10", score=0.95)
        _send(kafka_broker.bootstrap, topics["alerts"], [_alert_msg(a3)])
        wait_for(
            lambda: (
                _rows(database_url, "SELECT count(*) FROM cases WHERE user_id = 'u-10'") == [(2,)]
            ),
            "a second case for u-10",
        )
        precision = client.get("/precision").text
        metrics = client.get("/metrics").text

    schema = load_schema("decision")
    by_user = {}
    for record in published:
        decision = orjson.loads(record.value)
        jsonschema.validate(decision, schema, format_checker=jsonschema.FormatChecker())
        assert record.key.decode() == decision["user_id"]
        by_user[decision["user_id"]] = decision
    confirmed = by_user["u-10"]
    assert confirmed["verdict"] == "confirmed_fraud"
    assert sorted(confirmed["alert_ids"]) == sorted([a1["alert_id"], a2["alert_id"]])
    assert confirmed["analyst"] == "alice"
    assert confirmed["note"] == "card testing"
    assert (confirmed["window_start"], confirmed["window_end"]) == (
        "2026-11-02T19:05:00.000Z",  # the earliest window's first event: 515 s before
        "2026-11-02T19:13:35.000Z",  # the latest alerted event
    )
    assert by_user["u-11"]["verdict"] == "false_positive"
    stored = _rows(database_url, "SELECT verdict, analyst FROM decisions ORDER BY decided_at")
    assert stored == [("confirmed_fraud", "alice"), ("false_positive", "alice")]
    # Precision: the plain model version has 1 confirmed (a2) and 1 false positive (b1).
    assert "50 %" in precision
    assert 'review_confirmed_precision{group="rule",key="card_testing"} 1.0' in metrics
    assert (
        'review_confirmed_precision{group="model_version",key="20261102T090000Z-3f9a0c1d2e4b"} 0.5'
        in metrics
    )
    assert 'review_decisions_total{verdict="confirmed_fraud"} 1.0' in metrics


SHADOW_VERSION = "20261206T080000Z-9e1b2c3d4f5a"


def test_precision_page_shows_the_shadow_beside_the_live_model(
    kafka_broker: TansuBroker, make_topics: MakeTopics, database_url: str, tmp_path: Path
) -> None:
    """Shadow alerts (alerts.shadow) are stored apart, open no case, and the Precision page
    compares them with the live alerts per (user, head): both, only one, agreement, and each
    one's precision where analysts decided; every field from an alert renders as text."""
    topics = make_topics({"alerts": 2, "shadow": 2, "decisions": 2, "dlq": 1})
    live = [make_alert("u-30"), make_alert("u-31"), make_alert("u-32", type="abnormal_click")]
    shadow = [
        make_alert("u-30", model_version=SHADOW_VERSION),  # both; confirmed below
        make_alert("u-33", model_version=SHADOW_VERSION),  # only the shadow
        make_alert("u-32", type="abnormal_click", model_version=SHADOW_VERSION, rule_id="r1"),
    ]
    evil = make_alert("<script>alert('s')</script>", model_version="<script>sv()</script>")
    broken = make_alert("u-34", model_version=SHADOW_VERSION)
    del broken["score"]
    _send(kafka_broker.bootstrap, topics["alerts"], [_alert_msg(a) for a in live])
    _send(kafka_broker.bootstrap, topics["shadow"],
          [_alert_msg(a) for a in [*shadow, shadow[0], evil, broken]])  # fmt: skip
    with (
        contextlib.ExitStack() as stack,
        running_review(database_url, kafka_broker.bootstrap, topics, tmp_path) as review,
    ):

        def stored() -> bool:
            counts = _rows(database_url, "SELECT (SELECT count(*) FROM alerts),"
                           " (SELECT count(*) FROM shadow_alerts)")  # fmt: skip
            return counts == [(3, 4)]

        wait_for(stored, "3 live and 4 shadow alerts")
        [dead] = _drain(kafka_broker.bootstrap, topics["dlq"], 1, 1)
        client = signed_in(review.url)
        stack.callback(client.close)
        empty_page = client.get("/precision").text  # nothing decided yet
        token = csrf_of(client.get("/").text)
        for user, verdict in [("u-30", "confirmed_fraud"), ("u-31", "false_positive")]:
            [(case_id,)] = _rows(database_url, "SELECT case_id FROM cases WHERE user_id = %s", user)
            answer = client.post(f"/cases/{case_id}/decide", data={"verdict": verdict,
                                                                   "csrf": token})  # fmt: skip
            assert answer.status_code == 303
        page = client.get("/precision").text
        queue = client.get("/?status=all").text
        metrics = client.get("/metrics").text

    assert {k: v.decode() for k, v in dead.headers}["source_topic"] == topics["shadow"]
    # The shadow's alerts open no case and never reach the queue.
    assert _rows(database_url, "SELECT user_id FROM cases ORDER BY 1") == [
        ("u-30",), ("u-31",), ("u-32",)
    ]  # fmt: skip
    assert "u-33" not in queue
    assert "review_shadow_alerts_ingested_total 4.0" in metrics
    assert "review_alerts_duplicate_total 1.0" in metrics  # shadow[0] redelivered
    section = page.split('id="shadow"')[1]
    first, second = section.split("<h3>")[1:3]
    assert SHADOW_VERSION in first.split("</h3>")[0]
    assert "20261102T090000Z-3f9a0c1d2e4b" in first.split("</h3>")[0]  # the live version

    def row(html: str, head: str) -> list[str]:
        cells = html.split(f'<td class="mono">{head}</td>')[1].split("</tr>")[0]
        return [c.split(">", 1)[1] for c in cells.split("</td>") if ">" in c]

    # fraud: live u-30 u-31, shadow u-30 u-33: 1 both, 1 only each, agreement 1/3; the live
    # model 1 confirmed of 2 decided, the shadow 1 of 1 (u-30; u-33 is undecided).
    assert row(first, "fraud") == ["2", "2", "1", "1", "1", "33 %", "50 % (2)", "100 % (1)"]
    assert row(first, "abnormal_click") == ["1", "1", "1", "0", "0", "100 %", "– (0)", "– (0)"]
    assert row(empty_page.split('id="shadow"')[1], "fraud")[-2:] == ["– (0)", "– (0)"]
    # The second shadow version: every field from its alert is text, not markup.
    assert "<script" not in page
    assert "&lt;script&gt;sv()&lt;/script&gt;" in second
    assert row(second, "fraud")[:5] == ["2", "1", "0", "2", "1"]


def test_labels_export_from_the_database_and_from_the_topic(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from riskstream.cli import main

    topics = _topics(make_topics)
    alerts = [make_alert("u-20"), make_alert("u-21", type="abnormal_click"), make_alert("u-22")]
    _send(kafka_broker.bootstrap, topics["alerts"], [_alert_msg(a) for a in alerts])
    with running_review(database_url, kafka_broker.bootstrap, topics, tmp_path) as review:
        wait_for(lambda: _rows(database_url, "SELECT count(*) FROM alerts")[0][0] == 3, "alerts")
        client = signed_in(review.url)
        try:
            token = csrf_of(client.get("/").text)
            for user, verdict in [("u-20", "confirmed_fraud"), ("u-21", "false_positive"),
                                  ("u-22", "escalated")]:  # fmt: skip
                [(case_id,)] = _rows(
                    database_url, "SELECT case_id FROM cases WHERE user_id = %s", user
                )
                answer = client.post(
                    f"/cases/{case_id}/decide", data={"verdict": verdict, "csrf": token}
                )
                assert answer.status_code == 303
        finally:
            client.close()
        _drain(kafka_broker.bootstrap, topics["decisions"], 2, 3)
    monkeypatch.setenv("RISKSTREAM_DATABASE_URL", database_url)
    from_db, from_topic = tmp_path / "db.jsonl", tmp_path / "topic.jsonl"
    assert main(["labels", "export", "--out", str(from_db)]) == 0
    assert main(["labels", "export", "--out", str(from_topic), "--from-topic", "--broker",
                 kafka_broker.url, "--topic", topics["decisions"]]) == 0  # fmt: skip
    lines = [orjson.loads(x) for x in from_db.read_bytes().splitlines()]
    assert from_topic.read_bytes() == from_db.read_bytes()
    assert sorted((x["user_id"], x["kind"], x["label"]) for x in lines) == [
        ("u-20", "review_confirmed", "fraud"),
        ("u-21", "review_false_positive", "abnormal_click"),
    ]  # the escalation decides nothing
    assert all(x["source"] == "review" and x["ts"] for x in lines)
    later = tmp_path / "later.jsonl"
    assert main(["labels", "export", "--out", str(later), "--since", "2999-01-01"]) == 0
    assert later.read_bytes() == b""


def test_fields_from_events_render_as_text(
    kafka_broker: TansuBroker, make_topics: MakeTopics, database_url: str, tmp_path: Path
) -> None:
    topics = _topics(make_topics)
    evil_user = "<script>alert('u')</script>"
    evil = make_alert(
        evil_user,
        detail='<img src=x onerror="alert(1)"> and <b>bold</b>',
        model_version="<script>mv()</script>",
        rule_id="<script>rule()</script>",
    )
    evil["window"]["type_counts"] = {"<script>t()</script>": 3}
    _send(kafka_broker.bootstrap, topics["alerts"], [_alert_msg(evil)])
    with (
        contextlib.ExitStack() as stack,
        running_review(database_url, kafka_broker.bootstrap, topics, tmp_path) as review,
    ):
        wait_for(lambda: _rows(database_url, "SELECT count(*) FROM alerts")[0][0] == 1, "alert")
        client = signed_in(review.url)
        stack.callback(client.close)
        queue = client.get("/")
        [(case_id,)] = _rows(database_url, "SELECT case_id FROM cases")
        case = client.get(f"/cases/{case_id}")
        assert "script-src" not in case.headers["content-security-policy"]  # default-src 'none'
    for html in (queue.text, case.text):
        assert "<script" not in html
        assert "<img" not in html
        assert "<b>bold" not in html
        assert "&lt;script&gt;alert(&#39;u&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in case.text
    assert "&lt;script&gt;t()&lt;/script&gt;" in case.text


def test_sign_in_is_rate_limited_and_locked_out_and_refusals_name_the_address(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """3 failures per user name, 4 per address, within the window lock it out for 2 s (the
    right password included); X-Forwarded-For counts only from a trusted proxy."""
    import httpx

    limits = {"login_max_failures": 3, "login_max_failures_per_address": 4,
              "login_window_s": 60.0, "login_lockout_s": 2.0, "consume": False}  # fmt: skip
    caplog.set_level(logging.INFO, logger="riskstream.review.web")
    with (
        running_review(
            database_url,
            kafka_broker.bootstrap,
            _topics(make_topics),
            tmp_path,
            trusted_proxies="127.0.0.1",
            **limits,
        ) as review,  # fmt: skip
        httpx.Client(base_url=review.url, timeout=15) as guest,
    ):

        def sign_in(user: str, password: str, client_ip: str) -> httpx.Response:
            token = csrf_of(guest.get("/login").text)  # a sign-in starts a new session
            form = {"csrf": token, "username": user, "password": password}
            return guest.post("/login", data=form, headers={"X-Forwarded-For": client_ip})

        # Per address: 4 wrong guesses at 4 names from one address lock the address.
        for name in ("bob", "carol", "dave", "erin"):
            assert sign_in(name, "wrong-password", "203.0.113.7").status_code == 401
        refused = sign_in(USER, PASSWORD, "203.0.113.7")
        assert refused.status_code == 429
        assert "Too many failed sign-ins" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        assert sign_in(USER, PASSWORD, "203.0.113.8").status_code == 303  # another address
        # Per user name: 3 failures from 3 addresses lock the name, wherever it comes from.
        for i in range(3):
            assert sign_in(USER, "wrong-password", f"198.51.100.{i}").status_code == 401
        assert sign_in(USER, PASSWORD, "198.51.100.9").status_code == 429
        time.sleep(2.1)  # the lockout ends
        assert sign_in(USER, PASSWORD, "198.51.100.9").status_code == 303

    logged = [r.getMessage() for r in caplog.records if r.name == "riskstream.review.web"]
    assert any("refused from 203.0.113.7: wrong user name" in m for m in logged)
    assert any("refused from 203.0.113.7: locked out" in m for m in logged)
    assert any("locked out for 2 s: too many failures for this address" in m for m in logged)
    assert any("for this user name (from 198.51.100.2)" in m for m in logged)
    assert not any("wrong-password" in m or "bob" in m for m in logged)  # no typed secrets


def test_forwarded_for_is_ignored_without_a_trusted_proxy(
    kafka_broker: TansuBroker, make_topics: MakeTopics, database_url: str, tmp_path: Path
) -> None:
    """A client cannot dodge the per-address limit by writing X-Forwarded-For itself."""
    import httpx

    limits = {"login_max_failures": 0, "login_max_failures_per_address": 2,
              "login_lockout_s": 60.0, "consume": False}  # fmt: skip
    with (
        running_review(
            database_url, kafka_broker.bootstrap, _topics(make_topics), tmp_path, **limits
        ) as review,  # fmt: skip
        httpx.Client(base_url=review.url, timeout=15) as guest,
    ):
        token = csrf_of(guest.get("/login").text)
        for i in range(2):
            form = {"csrf": token, "username": USER, "password": "wrong-password"}
            headers = {"X-Forwarded-For": f"192.0.2.{i}"}
            assert guest.post("/login", data=form, headers=headers).status_code == 401
        form = {"csrf": token, "username": USER, "password": PASSWORD}
        headers = {"X-Forwarded-For": "192.0.2.99"}
        assert guest.post("/login", data=form, headers=headers).status_code == 429
