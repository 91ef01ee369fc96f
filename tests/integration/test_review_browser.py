"""The review loop as a person uses it: the real stream worker raises alerts on attackers' events,
`riskstream review` (a process, its user added with `riskstream review add-user` on stdin) puts
them in PostgreSQL, and headless Chromium (Debian's, driven by Playwright) signs in, sees the
queue, opens a case and confirms it; the decision is then in the database and on the topic.

Screenshots of the queue and the case page land in the test's tmp folder, and in
`$RISKSTREAM_SCREENSHOTS_DIR` when set (docs/img/ is made that way).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import psycopg
import pytest

from events import load_schema, parse_event
from riskstream.localstack import TansuBroker, find_free_port
from riskstream.localstack.broker import read_log_tail
from tests.conftest import MakeTopics
from tests.integration.review_support import PASSWORD, USER, wait_for
from tests.integration.test_services_smoke import _consumer_on, _producer, _stop_worker

# Long: the session's tiny model is trained first when no other test has (a few minutes on 2 cores).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOW_MS = 1_900_000_000_000


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "riskstream", *args], cwd=REPO_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.encode()).fetchone()
    return int(row[0]) if row else 0


def _attack_events(world: Path, n_attackers: int) -> list[bytes]:
    labels = [json.loads(x) for x in world.joinpath("labels.jsonl").read_text().splitlines()]
    attackers = sorted({ep["user_id"] for ep in labels})[:n_attackers]
    lines = world.joinpath("events.jsonl").read_bytes().splitlines()
    keep = set(attackers)
    return [v for v in lines if parse_event(v, now_ms=NOW_MS).user_id in keep]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (setup.sh)")
def test_sign_in_see_the_queue_open_a_case_confirm_it(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    key_prefix: str,
    tiny_bundle: Path,
    tiny_world: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    topics = make_topics(
        {"events": 4, "alerts": 2, "events_dlq": 1, "scores": 4, "decisions": 2, "alerts_dlq": 1}
    )
    # The worker raises alerts on some attackers' events.
    producer = _producer(kafka_broker.bootstrap)
    for value in _attack_events(tiny_world, 25):
        producer.send(topics["events"], key=parse_event(value, now_ms=NOW_MS).user_id.encode(),
                      value=value)  # fmt: skip
    producer.flush()
    producer.close()
    env = {
        **os.environ,
        "RISKSTREAM_EVENTS_TOPIC": topics["events"],
        "RISKSTREAM_ALERTS_TOPIC": topics["alerts"],
        "RISKSTREAM_DLQ_TOPIC": topics["events_dlq"],
        "RISKSTREAM_SCORES_TOPIC": topics["scores"],
        "RISKSTREAM_REDIS_PREFIX": key_prefix,
        "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6",
        "RISKSTREAM_FAUST_DATADIR": str(tmp_path / "faust"),
        "RISKSTREAM_DEVICE": "cpu",
        "RISKSTREAM_DATABASE_URL": database_url,
        "RISKSTREAM_REVIEW_ALERTS_TOPIC": topics["alerts"],
        "RISKSTREAM_REVIEW_DECISIONS_TOPIC": topics["decisions"],
        "RISKSTREAM_REVIEW_DLQ_TOPIC": topics["alerts_dlq"],
        "RISKSTREAM_REVIEW_SECRET": uuid.uuid4().hex,
        "RISKSTREAM_REVIEW_LISTS_FILE": str(tmp_path / "lists.txt"),
    }
    # The analyst's account: the password on stdin, never in argv.
    users = tmp_path / "users"
    argv = [sys.executable, "-m", "riskstream", "review", "add-user", USER, "--users-file"]
    added = subprocess.run(
        [*argv, str(users)],
        input=f"{PASSWORD}\n".encode(), cwd=REPO_ROOT, env=env, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr.decode()
    assert PASSWORD not in users.read_text()
    port = find_free_port()
    worker = _spawn(
        ["worker", "--bundle", str(tiny_bundle), "--broker", kafka_broker.url, "--redis",
         redis_url, "--group", f"rs-{uuid.uuid4().hex[:8]}", "--log-level", "warn"],
        env, tmp_path / "worker.log",
    )  # fmt: skip
    review = _spawn(
        ["review", "--broker", kafka_broker.url, "--port", str(port), "--users-file", str(users),
         "--group", f"review-{uuid.uuid4().hex[:8]}"],
        env, tmp_path / "review.log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    shots = tmp_path / "shots"
    shots.mkdir()
    try:

        def console_up() -> bool:  # migrations run before the console listens
            assert review.poll() is None, read_log_tail(tmp_path / "review.log")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for(console_up, "the review console", timeout_s=120)

        def cases_in() -> bool:
            assert worker.poll() is None, read_log_tail(tmp_path / "worker.log")
            assert review.poll() is None, read_log_tail(tmp_path / "review.log")
            return _count(database_url, "SELECT count(*) FROM cases") >= 3

        wait_for(cases_in, "cases from the worker's alerts", timeout_s=300)
        time.sleep(3)  # let the first burst of alerts settle, for a fuller screenshot
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(base + "/")
            assert page.url.startswith(base + "/login")  # signed out: the sign-in page
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            rows = page.locator("tbody tr")
            assert rows.count() >= 3
            first_user = rows.nth(0).locator("td").nth(4).inner_text()
            page.screenshot(path=str(shots / "review-queue.png"), full_page=False)
            rows.nth(0).locator("a").first.click()
            page.wait_for_url(f"{base}/cases/*")
            case_id = int(page.url.rsplit("/", 1)[1])
            assert first_user in page.locator("h1").inner_text()
            assert page.locator("text=The user's window: timeline").count() >= 1
            page.screenshot(path=str(shots / "review-case.png"), full_page=False)
            page.fill("textarea[name=note]", "card testing from a fresh device")
            page.select_option("select[name=list_action]", "deny")  # and on the deny list
            page.select_option("select[name=list_days]", "30")
            page.click("button[value=confirmed_fraud]")
            page.wait_for_url(f"{base}/cases/{case_id}")
            assert "closed" in page.locator("h1").inner_text()
            assert page.locator("text=confirmed_fraud by alice").count() == 1
            browser.close()
    except BaseException:
        print(f"--- review log ---\n{read_log_tail(tmp_path / 'review.log', 20_000)}")
        raise
    finally:
        _stop_worker(review)
        _stop_worker(worker)
    target = os.environ.get("RISKSTREAM_SCREENSHOTS_DIR")
    if target:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(target) / shot.name)

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT d.verdict, d.analyst, d.note, d.user_id, c.status, d.published_at IS NOT NULL"
            " FROM decisions d JOIN cases c USING (case_id) WHERE d.case_id = %s",
            (case_id,),
        ).fetchone()
        change = conn.execute(
            "SELECT l.actor, l.operation, l.action, l.kind, l.value, l.source, l.case_id,"
            " l.decision_id = d.decision_id, l.expires_at > now() + interval '29 days',"
            " l.expires_at < now() + interval '31 days'"
            " FROM list_changes l JOIN decisions d USING (case_id)"
        ).fetchall()
    verdict, analyst, note, *rest = row
    assert (verdict, analyst, *rest) == ("confirmed_fraud", USER, first_user, "closed", True)
    assert note.startswith("card testing from a fresh device [user added to the deny list, until")
    # the console's list action: in the file the worker reads, and audited with the decision
    assert change == [(USER, "add", "deny", "user", first_user, "console", case_id, True, True,
                       True)]  # fmt: skip
    [line] = [x for x in (tmp_path / "lists.txt").read_text().splitlines() if x.strip()]
    assert line.split("\t")[:3] == ["deny", "user", first_user]
    assert f"case {case_id}, confirmed_fraud by {USER}: card testing" in line
    consumer = _consumer_on(kafka_broker.bootstrap, topics["decisions"], 2)
    got: list[Any] = []
    try:

        def on_topic() -> bool:
            for records in consumer.poll(timeout_ms=250).values():
                got.extend(records)
            return bool(got)

        wait_for(on_topic, "the decision on the topic")
    finally:
        consumer.close()
    [record] = got
    decision = orjson.loads(record.value)
    checker = jsonschema.FormatChecker()
    jsonschema.validate(decision, load_schema("decision"), format_checker=checker)
    assert (decision["case_id"], decision["verdict"]) == (str(case_id), "confirmed_fraud")
    assert record.key.decode() == first_user == decision["user_id"]
