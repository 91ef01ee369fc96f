"""Helpers of the review tests: alerts as the worker writes them, the review service running in a
thread of the test process (real database, real broker), and a signed-in HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from events import parse_ts_ms
from riskstream.localstack import find_free_port
from riskstream.review.auth import set_user
from riskstream.review.service import ReviewService
from riskstream.review.settings import ReviewSettings

USER, PASSWORD = "alice", "correct-horse-battery"
T0_MS = parse_ts_ms("2026-11-02T19:13:35Z")


def make_alert(
    user_id: str,
    *,
    alert_id: str | None = None,
    type: str = "fraud",
    severity: str = "high",
    score: float = 0.93,
    threshold: float = 0.8,
    model_version: str = "20261102T090000Z-3f9a0c1d2e4b",
    rule_id: str | None = None,
    at_ms: int = T0_MS,
    detail: str = "5 failed payments in 8.5 min",
) -> dict[str, Any]:
    """An alert as `alert.json` has it."""
    reasons: list[dict[str, Any]] = [{"code": "payment_failures", "detail": detail}]
    if rule_id is not None:
        reasons.insert(0, {"code": "rule", "detail": f"rule {rule_id}: fired", "rule_id": rule_id})
    reasons.append(
        {
            "code": "driving_events",
            "detail": "masking these lowers the score most: payment_failed at "
            "2026-11-02T19:13:30.000Z (−0.212); login at 2026-11-02T19:05:00.000Z (−0.051)",
            "event_ids": ["e-7", "e-3"],
        }
    )
    return {
        "alert_id": alert_id or str(uuid.uuid4()),
        "type": type,
        "user_id": user_id,
        "event_id": "e-9",
        "event_ts": "2026-11-02T19:13:35.000Z",
        "detected_at": "2026-11-02T19:13:35.120Z",
        "score": score,
        "threshold": threshold,
        "severity": severity,
        "model_version": model_version + (f"+rules-{'0' * 12}" if rule_id else ""),
        "window": {
            "events": 12,
            "span_s": 515.0,
            "first_ts_ms": at_ms - 515_000,
            "last_ts_ms": at_ms,
            "type_counts": {"login": 1, "payment_failed": 5, "page_view": 6},
            "distinct_devices": 2,
            "distinct_ips": 3,
            "distinct_countries": 1,
        },
        "reasons": reasons,
    }


@dataclass
class RunningReview:
    settings: ReviewSettings
    service: ReviewService

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"


@contextlib.contextmanager
def running_review(
    database_url: str, bootstrap: str, topics: dict[str, str], tmp_path: Path, **more: Any
) -> Iterator[RunningReview]:
    """The review service (consumer, publisher, console) in a thread, until the block ends;
    `more`: other `ReviewSettings` fields."""
    users = tmp_path / "users"
    set_user(users, USER, PASSWORD)
    settings = ReviewSettings(
        database_url=database_url,
        bootstrap=bootstrap,
        port=find_free_port(),
        users_file=users,
        alerts_topic=topics["alerts"],
        decisions_topic=topics["decisions"],
        dlq_topic=topics["dlq"],
        shadow_alerts_topic=more.pop("shadow_alerts_topic", topics.get("shadow", "")),
        group=f"review-{uuid.uuid4().hex[:8]}",
        secret="test-secret-" + uuid.uuid4().hex,
        **more,
    )
    service = ReviewService(settings)
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(service.run())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="review-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not service.started.is_set():
        assert not failure, f"the review service failed: {failure[0]!r}"
        assert thread.is_alive(), "the review service stopped"
        assert time.monotonic() < deadline, "the review service did not start in 60 s"
        time.sleep(0.05)
    try:
        yield RunningReview(settings, service)
    finally:
        loop.call_soon_threadsafe(service.stop)
        thread.join(timeout=30)
        loop.close()
    assert not failure, f"the review service failed: {failure[0]!r}"


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def signed_in(base_url: str) -> httpx.Client:
    """An HTTP client signed in as `USER`."""
    client = httpx.Client(base_url=base_url, timeout=15)
    page = client.get("/login")
    answer = client.post(
        "/login", data={"csrf": csrf_of(page.text), "username": USER, "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text
    return client


def wait_for(predicate: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Poll `predicate()` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
