"""`/health` and `/ready` from the worker's state, the private Faust data folder, and a rules
file of the wrong type refused (the processes behind them: tests/integration/test_health.py)."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from events import EncodingSpec
from riskstream.localstack import find_free_port
from stream.app import private_datadir
from stream.prometheus import Health, Metrics, serve
from stream.rules import RulesFile
from stream.watch import CommitWatch, StallWatchdog


def _ready() -> Health:
    h = Health(stall_timeout_s=30, model_version="m1")
    h.redis_ok()
    h.consumer_checked(broker=True, broker_error="", assigned=2, stalled=[])
    return h


def test_ready_only_once_redis_answered_and_partitions_are_assigned() -> None:
    h = Health(model_version="m1")
    assert h.not_ready() == ["Redis: no call answered yet"]
    h.redis_ok()
    assert h.not_ready() == []
    h.consumer_checked(broker=True, broker_error="", assigned=0, stalled=[])
    assert h.not_ready() == ["no partition assigned"]
    assert _ready().not_ready() == []
    assert Health(redis_required=False).not_ready() == ["no model loaded"]


def test_redis_or_broker_down_is_not_ready_but_alive() -> None:
    h = _ready()
    h.redis_failed("ConnectionError: refused")
    h.consumer_checked(broker=False, broker_error="no answer", assigned=2, stalled=[])
    assert h.not_ready() == ["Redis: ConnectionError: refused", "broker: no answer"]
    assert h.not_alive() == []
    h.redis_ok()
    h.consumer_checked(broker=True, broker_error="", assigned=2, stalled=[])
    assert h.not_ready() == []


def test_a_stalled_partition_is_dead_only_while_redis_and_the_broker_answer() -> None:
    h = _ready()
    h.consumer_checked(broker=True, broker_error="", assigned=2, stalled=["events[1]"])
    assert h.not_ready() == ["commits stalled with lag on events[1]"]
    assert h.not_alive() == [
        "commits stalled with lag on events[1] while Redis and the broker answer"
    ]
    h.redis_failed("TimeoutError")  # the stall has an outside cause: a restart would not help
    assert h.not_alive() == []


def test_checks_that_stopped_running_are_not_alive() -> None:
    h = _ready()
    h.last_check = time.monotonic() - 31
    assert h.not_alive() == ["no consumer check for 31 s (event loop stuck)"]


def test_commit_watch_forgets_revoked_partitions_and_restarts_its_clock() -> None:
    w = CommitWatch[int](stall_timeout_s=5)
    assert w.update(0, {0: None}, {0: 3}) == []  # nothing committed yet, lag 3
    assert w.update(6, {0: None}, {0: 3}) == [0]
    assert w.update(7, {}, {}) == []  # revoked
    assert w.update(8, {0: None}, {0: 3}) == []  # assigned again: a new clock
    assert w.update(12, {0: None}, {0: 3}) == []
    assert w.update(13, {0: None}, {0: 3}) == [0]


def test_the_endpoints_answer_with_their_reasons() -> None:
    h = Health(model_version="m1")
    port = find_free_port()
    server = serve(Metrics(), h, "127.0.0.1", port)
    try:

        def get(path: str) -> tuple[int, dict[str, object]]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                with exc:
                    return exc.code, json.loads(exc.read())

        code, body = get("/ready")
        assert (code, body["ready"], body["reasons"]) == (
            503,
            False,
            ["Redis: no call answered yet"],
        )
        assert get("/health")[0] == 200
        h.redis_ok()
        assert get("/ready")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_faust_data_folder_is_private_to_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    path = private_datadir(None)
    assert path.parent == tmp_path
    assert str(os.getuid()) in path.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert private_datadir(None) == path  # again: the same folder
    path.chmod(0o777)  # opened up by someone: refused, not used
    with pytest.raises(PermissionError, match="not a private folder"):
        private_datadir(None)
    assert private_datadir(tmp_path / "given") == tmp_path / "given"


_GOOD = "rules:\n  - id: r1\n    alert: fraud\n    all:\n      - {types: [click], at_least: 3}\n"


@pytest.mark.parametrize(
    "bad",
    [
        "rules:\n  - id: r1\n    alert: fraud\n    all:\n      - {types: 5, at_least: 3}\n",
        "rules:\n  - id: r1\n    alert: fraud\n    all:\n      - {types: click, at_least: 3}\n",
        "rules:\n  - id: r1\n    alert: fraud\n    all:\n      - {types: [[click]], at_least: 3}\n",
        "rules:\n  - id: r1\n    alert: fraud\n    all:\n"
        "      - {types: [click], at_least: 3, within_s: .inf}\n",
        "rules:\n  - id: r1\n    alert: fraud\n    all:\n"
        "      - {types: [click], at_least: 3, within_s: true}\n",
        "rules: [oops",
        "rules: {a: 1}",
    ],
)
def test_a_rules_file_of_any_wrong_kind_is_refused_once_and_the_old_rules_keep_running(
    bad: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(_GOOD)
    rules = RulesFile(path, EncodingSpec())
    version = rules.current().version
    path.write_bytes(bad.encode("latin-1"))
    with caplog.at_level(logging.ERROR, logger="stream.rules"):
        for _ in range(3):
            assert rules.current().version == version
    assert rules.failures == 1
    assert len(caplog.records) == 1
    assert "refused" in caplog.text


def test_the_watchdog_counts_only_time_while_redis_and_the_broker_answer() -> None:
    watch = CommitWatch[int](stall_timeout_s=5)
    dog = StallWatchdog[int](exit_after_s=10)

    def check(now: float, committed: int, end: int, ok: bool = True) -> list[int]:
        watch.update(now, {0: committed, 1: 7}, {0: end, 1: 7})  # partition 1: no lag
        return dog.update(now, watch.lagging_for(now), dependencies_ok=ok)

    assert check(0, 5, 9) == []  # lag: the clock starts
    assert check(6, 5, 9, ok=False) == []  # Redis down: excused
    assert check(12, 5, 9) == []  # 12 s of lag, but only 6 s since both answered
    assert check(16, 5, 9) == [0]
    assert check(17, 9, 9) == []  # committed: caught up
    assert check(20, 9, 12) == []  # new lag: a new clock
    assert check(28, 9, 12) == [0]
    assert StallWatchdog[int](exit_after_s=0).update(99, {0: 99.0}, dependencies_ok=True) == []
