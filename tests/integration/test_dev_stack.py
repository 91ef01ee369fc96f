"""`riskstream dev up | down | status` against the real binaries (Tansu, Valkey), through main()."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from riskstream.command import main
from riskstream.dev import DEV_STATE_ENV, dev_addresses, load_state
from riskstream.dev.stack import DevState
from riskstream.localstack import find_free_port

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (PID 1 here does not always reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _state(path: Path) -> DevState:
    state = load_state(path)
    assert state is not None, f"no state file at {path}"
    return state


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _ppid_and_sid(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])  # ppid, session id


@pytest.fixture
def dev_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A temp state path (also in $RISKSTREAM_DEV_STATE) and `up` arguments on free ports."""
    state = tmp_path / "dev" / "dev.json"
    monkeypatch.setenv(DEV_STATE_ENV, str(state))
    monkeypatch.setenv("COLUMNS", "200")
    # Port hints from the OS, not 9092/6379: a developer's own stack may be running.
    args = ["--broker-port", str(find_free_port()), "--redis-port", str(find_free_port())]
    args += ["--postgres-port", str(find_free_port()), "--review-port", str(find_free_port())]
    monkeypatch.delenv("RISKSTREAM_DATABASE_URL", raising=False)
    monkeypatch.setenv("RISKSTREAM_REVIEW_USERS_FILE", str(tmp_path / "review-users"))
    return state, ["--state", str(state), *args]


def test_embedded_stack_up_twice_status_restart_down(
    dev_env: tuple[Path, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    state_path, up_args = dev_env
    status_args = ["dev", "status", "--state", str(state_path)]
    pids: set[int] = set()
    try:
        assert main(["dev", "up", *up_args]) == 0
        first = _state(state_path)
        assert first.broker is not None
        assert first.redis is not None
        assert (first.broker.kind, first.redis.kind) == ("tansu", "valkey")
        assert first.broker.pid is not None
        assert first.redis.pid is not None
        pids |= {first.broker.pid, first.redis.pid}
        # The third part: an embedded PostgreSQL with the review service's database.
        pg = first.postgres
        assert pg is not None
        assert pg.kind == "postgres"
        assert pg.pid is not None
        pids.add(pg.pid)
        assert not _gone(pg.pid)
        assert _ppid_and_sid(pg.pid)[1] == pg.pid  # detached too
        assert Path(f"/proc/{pg.pid}/exe").resolve().name == "postgres"
        import psycopg

        with psycopg.connect(pg.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("riskstream",)
        assert first.topics == {
            "events": 8,
            "alerts": 4,
            "events.dlq": 1,
            "scores": 8,
            "riskstream.control": 1,
            "decisions": 4,
            "alerts.dlq": 1,
            "scores.shadow": 8,
            "alerts.shadow": 4,
        }
        # The fourth: the review service, its console answering, the first-user hint printed.
        review = first.review
        assert review is not None
        assert review.kind == "review"
        assert review.pid is not None
        pids.add(review.pid)
        assert _ppid_and_sid(review.pid)[1] == review.pid
        with urllib.request.urlopen(f"{review.url}health", timeout=5) as health:
            assert health.status == 200
        out = capsys.readouterr().out
        assert f"review: {review.url}" in out
        assert "no user yet: riskstream review add-user NAME" in out
        assert (tmp_path / "review-users").exists()  # empty: the console refuses every sign-in
        assert first.broker.url in out
        hint = next(line for line in out.splitlines() if line.startswith("worker:"))
        assert "riskstream worker --bundle" in hint
        assert "--redis" not in hint  # a Redis URL may carry a password: never on a command line
        for pid in (first.broker.pid, first.redis.pid):
            assert not _gone(pid)
            ppid, sid = _ppid_and_sid(pid)
            # Detached: not our child, in a session of its own (outlives the CLI).
            assert ppid != os.getpid()
            assert sid == pid
        assert json.loads(state_path.read_text())["broker"]["log"].endswith("tansu.log")

        # A second `up` starts nothing and reports the same addresses.
        assert main(["dev", "up", *up_args]) == 0
        second = _state(state_path)
        assert second.broker == first.broker
        assert second.redis == first.redis
        assert second.postgres == first.postgres
        out = capsys.readouterr().out
        assert "nothing started" in out
        assert first.broker.url in out

        assert second.review == first.review
        assert main(status_args) == 0
        out = capsys.readouterr().out
        assert "alive" in out
        assert f"review: {review.url}" in out
        assert dev_addresses() == (first.broker.url, first.redis.url)
        # `riskstream worker` given no broker or Redis uses the stack's; a flag still wins.
        from riskstream.stackstate import dev_stack_defaults

        for var in ("RISKSTREAM_BROKER_URL", "RISKSTREAM_REDIS_URL"):
            monkeypatch.delenv(var, raising=False)
        assert dev_stack_defaults({}) == {
            "RISKSTREAM_BROKER_URL": first.broker.url,
            "RISKSTREAM_REDIS_URL": first.redis.url,
        }
        given = {"RISKSTREAM_BROKER_URL": "kafka://elsewhere:9092"}
        assert dev_stack_defaults(given) == {"RISKSTREAM_REDIS_URL": first.redis.url}
        # `riskstream decide serve` too (its Redis only: it reads no topic); a flag still wins.
        from riskstream.decide.cli import load_decide_settings

        decide = load_decide_settings({"redis_prefix": "x:"})
        assert decide.redis_url.get_secret_value() == first.redis.url
        elsewhere = load_decide_settings({"redis_url": "redis://elsewhere:6379/0"})
        assert elsewhere.redis_url.get_secret_value() == "redis://elsewhere:6379/0"

        # Other commands find the broker through the state file when given none.
        events = tmp_path / "five.jsonl"
        events.write_text(
            "".join(
                json.dumps({"event_id": f"e{i}", "user_id": f"u{i % 2}", "ts": 1793577600000 + i})
                + "\n"
                for i in range(5)
            )
        )
        assert main(["replay", "--events", str(events), "--no-progress"]) == 0
        assert "sent 5 events to events" in capsys.readouterr().out
        assert main(["alerts", "tail", "--table"]) == 0
        assert "0 alerts" in capsys.readouterr().out

        # REDIS_URL cannot replace a running embedded Valkey behind its back.
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
        assert main(["dev", "up", *up_args]) == 1
        assert "riskstream dev down" in _one_error_line(capsys.readouterr().err)
        monkeypatch.delenv("REDIS_URL")

        # A part that died: status says so (exit 1); `up` restarts that part only.
        os.kill(first.redis.pid, signal.SIGKILL)
        assert _wait_gone(first.redis.pid)
        assert main(status_args) == 1
        assert "redis" in _one_error_line(capsys.readouterr().err)
        assert dev_addresses() is None
        assert main(["dev", "up", *up_args]) == 0
        third = _state(state_path)
        assert third.broker == first.broker
        assert third.redis is not None
        assert third.redis.pid is not None
        pids.add(third.redis.pid)
        assert third.redis.pid != first.redis.pid
        assert third.redis.port == first.redis.port  # its old port was free again
        assert "restarted" in capsys.readouterr().out
        client = redis.Redis.from_url(third.redis.url)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        rc = main(["dev", "down", "--state", str(state_path)])
    assert rc == 0
    assert not state_path.exists()
    for pid in pids:
        assert _wait_gone(pid, 1.0), f"pid {pid} still runs after `dev down`"
    capsys.readouterr()
    assert main(status_args) == 1
    assert "no dev stack recorded" in _one_error_line(capsys.readouterr().err)
    assert main(["dev", "down", "--state", str(state_path)]) == 0  # harmless when nothing runs
    assert "nothing to stop" in capsys.readouterr().out
    assert dev_addresses() is None


def test_external_redis_is_used_and_never_stopped(
    dev_env: tuple[Path, list[str]],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    state_path, up_args = dev_env
    up_args = [*up_args, "--no-review"]  # the broker and Redis are what this test is about
    broker_pid = None
    try:
        assert main(["dev", "up", *up_args]) == 0
        state = _state(state_path)
        assert state.broker is not None
        assert state.redis is not None
        assert state.review is None
        broker_pid = state.broker.pid
        assert state.redis.kind == "external"
        assert state.redis.pid is None
        assert state.redis.started_by_us is False
        assert state.redis.url == redis_url
        assert main(["dev", "up", *up_args]) == 0
        assert _state(state_path).broker == state.broker
        assert "nothing started" in capsys.readouterr().out
        assert main(["dev", "status", "--state", str(state_path)]) == 0
        assert "review: not started" in capsys.readouterr().out
        assert dev_addresses() == (state.broker.url, redis_url)
    finally:
        assert main(["dev", "down", "--state", str(state_path)]) == 0
    assert "left running" in capsys.readouterr().out
    assert not state_path.exists()
    assert broker_pid is not None
    assert _wait_gone(broker_pid, 1.0)
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping(), "dev down stopped the external Redis"
    finally:
        client.close()
