"""`riskstream shadow report` on the real broker and a real review database (PostgreSQL).

Live alerts are published to `alerts` and stored as the review service stores them (cases),
analysts decide some cases (the review store's own `decide`), and the shadow's alerts are
published to `alerts.shadow`; the report's counts and precisions must be what was published and
decided, computed here by hand.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest

from events.review import parse_alert
from riskstream.cli import main
from riskstream.localstack import TansuBroker
from riskstream.review.migrate import migrate
from riskstream.review.store import decide, ingest_alert
from tests.conftest import MakeTopics
from tests.integration.review_support import make_alert
from tests.integration.test_services_smoke import _producer

pytestmark = [pytest.mark.integration]

LIVE, SHADOW = "20261102T090000Z-3f9a0c1d2e4b", "20261130T120000Z-0badc0ffee00"


async def _store_and_decide(url: str, live: list[dict[str, Any]], verdicts: dict[str, str]) -> None:
    """Ingest `live` alerts (cases per user) and decide each user's case as `verdicts` says."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cases: dict[str, int] = {}
        for alert in live:
            case = await ingest_alert(conn, parse_alert(orjson.dumps(alert)), alert)
            assert case is not None
            cases[alert["user_id"]] = case
        for user, verdict in verdicts.items():
            await decide(conn, cases[user], verdict, "alice", "checked")  # type: ignore[arg-type]


def test_report_counts_what_was_published_and_decided(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = make_topics({"alerts": 2, "alerts.shadow": 2})
    live = [
        make_alert("u1", model_version=LIVE),  # both flag u1 (fraud): confirmed
        make_alert("u2", model_version=LIVE),  # only live: a false positive
        make_alert("u3", model_version=LIVE),  # both: a false positive
        make_alert("u4", model_version=LIVE, type="abnormal_click"),  # both: undecided
        make_alert("u5", model_version=LIVE, rule_id="burst"),  # only live, a rule: confirmed
    ]
    shadow = [
        make_alert("u1", model_version=SHADOW),
        make_alert("u3", model_version=SHADOW),
        make_alert("u6", model_version=SHADOW),  # only the shadow: no analyst saw it
        make_alert("u4", model_version=SHADOW, type="abnormal_click"),
        make_alert("u7", model_version=SHADOW, type="abnormal_click"),
    ]
    late = make_alert("u8", model_version=LIVE)
    late["detected_at"] = "2026-11-03T00:00:00.000Z"  # at --until: outside the period
    migrate(database_url)
    verdicts = {"u1": "confirmed_fraud", "u2": "false_positive", "u3": "false_positive",
                "u5": "confirmed_fraud"}  # fmt: skip
    asyncio.run(_store_and_decide(database_url, live, verdicts))
    producer = _producer(kafka_broker.bootstrap)
    for alert in [*live, late]:
        producer.send(topics["alerts"], key=alert["user_id"].encode(), value=orjson.dumps(alert))
    for alert in [*shadow, shadow[0]]:  # one redelivered: the same alert id twice
        producer.send(topics["alerts.shadow"], key=alert["user_id"].encode(),
                      value=orjson.dumps(alert))  # fmt: skip
    producer.flush()
    producer.close()

    monkeypatch.setenv("RISKSTREAM_DATABASE_URL", database_url)
    argv = ["shadow", "report", "--since", "2026-11-02", "--until", "2026-11-03",
            "--broker", kafka_broker.url, "--alerts-topic", topics["alerts"],
            "--shadow-topic", topics["alerts.shadow"]]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["decisions"] is True
    assert data["live_versions"] == [LIVE]
    assert data["shadow_versions"] == [SHADOW]
    assert data["ignored"] == {"live_outside": 1}
    heads = {row["head"]: row for row in data["heads"]}
    fraud, clicks = heads["fraud"], heads["abnormal_click"]
    assert (fraud["live_alerts"], fraud["shadow_alerts"]) == (4, 3)
    assert (fraud["both"], fraud["only_live"], fraud["only_shadow"]) == (2, 2, 1)
    assert fraud["agreement"] == pytest.approx(2 / 5)
    # Live: u1 ✓, u2 ✗, u3 ✗, u5 ✓. Shadow: u1 ✓, u3 ✗ (u6 never decided).
    assert (fraud["live_decided"], fraud["live_confirmed"]) == (4, 2)
    assert (fraud["shadow_decided"], fraud["shadow_confirmed"]) == (2, 1)
    assert (clicks["live_alerts"], clicks["shadow_alerts"], clicks["both"]) == (1, 2, 1)
    assert (clicks["only_live"], clicks["only_shadow"]) == (0, 1)
    assert clicks["live_precision"] is None  # u4 undecided

    # The table: the same figures for a person.
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "40.0%" in table  # fraud agreement
    assert "50.0% (4)" in table  # live precision on 4 decided pairs
    assert "50.0% (2)" in table  # the shadow's, on 2

    # --no-decisions: no database is read, no precision shown.
    assert main([*argv, "--json", "--no-decisions"]) == 0
    assert json.loads(capsys.readouterr().out)["heads"][0]["live_precision"] is None
