"""`riskstream dev up | down | status`: a local broker and Redis that outlive the command that
started them.

`dev_up` starts what is not running (broker, then Redis) and records it in the state file
(`riskstream.stackstate`), so a later `up` reuses it, `status` checks it and `down` stops exactly
that. The services run detached (`riskstream.dev.processes`); starting and waiting on each one is
in `riskstream.dev.services`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from riskstream.dev.exceptions import DevStackError
from riskstream.dev.processes import HOST, accepts_tcp, process_matches
from riskstream.dev.services import (
    start_postgres,
    start_review,
    start_tansu,
    start_valkey,
    stop_service,
    wait_kafka,
)
from riskstream.localstack.exceptions import PostgresStartError, RedisStartError
from riskstream.localstack.postgres_server import ping_postgres
from riskstream.localstack.redis_server import REDIS_URL_ENV, ping_redis
from riskstream.localstack.topics import create_topics
from riskstream.stackstate import (
    DATABASE_URL_ENV,
    DEV_STATE_ENV,
    DevState,
    ServiceRecord,
    dev_addresses,
    load_state,
    locked,
    resolve_state_path,
    run_dir_for,
    save_state,
    utc_now,
)

__all__ = [
    "BROKER_BASE_PORT",
    "DEV_STATE_ENV",
    "HOST",
    "POSTGRES_BASE_PORT",
    "REDIS_BASE_PORT",
    "REVIEW_BASE_PORT",
    "DevState",
    "DownResult",
    "PartStatus",
    "ServiceRecord",
    "UpResult",
    "dev_addresses",
    "dev_down",
    "dev_status",
    "dev_topics",
    "dev_up",
    "load_state",
    "process_matches",
    "resolve_state_path",
]

BROKER_BASE_PORT: Final = 9092
REDIS_BASE_PORT: Final = 6379
POSTGRES_BASE_PORT: Final = 5432
REVIEW_BASE_PORT: Final = 8470  # riskstream.review.settings.DEFAULT_PORT
#: The review service's topics (riskstream.review.settings has the same defaults).
REVIEW_TOPICS: Final = {"decisions": 4, "alerts.dlq": 1}

Part = Literal["broker", "redis", "postgres", "review"]


def dev_topics() -> dict[str, int]:
    """The worker's topics and their partition counts (names from `RISKSTREAM_*_TOPIC`)."""
    from pydantic import ValidationError

    from stream.settings import WorkerSettings

    try:
        s = WorkerSettings()
    except ValidationError:  # a bad unrelated RISKSTREAM_* variable: the defaults
        s = WorkerSettings.model_construct()
    return {
        s.events_topic: 8,
        s.alerts_topic: 4,
        s.dlq_topic: 1,
        s.scores_topic: 8,
        s.shadow_alerts_topic: 4,  # `worker --shadow-bundle` (stream/shadow.py)
        s.shadow_scores_topic: 8,
        s.control_topic: 1,
        **REVIEW_TOPICS,
    }


@dataclass
class UpResult:
    """What `dev_up` found or did: `actions[part]` is started, restarted, running or external."""

    state: DevState
    actions: dict[str, str]
    state_path: Path

    @property
    def started_anything(self) -> bool:
        return any(a in ("started", "restarted") for a in self.actions.values())


def dev_up(
    state_path: str | os.PathLike[str] | None = None,
    *,
    broker_port: int = BROKER_BASE_PORT,
    redis_port: int = REDIS_BASE_PORT,
    postgres_port: int = POSTGRES_BASE_PORT,
    review_port: int = REVIEW_BASE_PORT,
    review: bool = True,
    timeout_s: float = 60.0,
) -> UpResult:
    """Start what is not running (broker, Redis, PostgreSQL, then the review service unless
    `review` is False), record it, create the topics.

    Idempotent: parts alive as recorded are reused; a recorded part that died is restarted
    (on its old port when that is still free). With `$REDIS_URL` set, that Redis is used
    (checked with PING, never started or stopped); with `$RISKSTREAM_DATABASE_URL`, that
    PostgreSQL.
    """
    path = resolve_state_path(state_path)
    run_dir = run_dir_for(path)
    with locked(path):
        state = load_state(path) or DevState()
        state.run_dir = str(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        actions: dict[str, str] = {}

        prev = state.broker
        if prev is not None and process_matches(prev):
            prev_log = Path(prev.log or os.devnull)
            offset = prev_log.stat().st_size if prev_log.is_file() else 0  # only new lines count
            wait_kafka(prev, prev_log, offset, time.monotonic() + timeout_s)
            broker = prev
            actions["broker"] = "running"
        else:
            hint = prev.port if prev is not None and prev.port else broker_port
            broker = state.broker = start_tansu(run_dir, hint, timeout_s)
            actions["broker"] = "restarted" if prev is not None else "started"
            save_state(path, state)

        actions["redis"] = _up_redis(state, run_dir, redis_port, timeout_s)
        save_state(path, state)
        actions["postgres"] = _up_postgres(state, run_dir, postgres_port, timeout_s)
        save_state(path, state)

        topics = dev_topics()
        create_topics(broker.bootstrap, topics, timeout_s=timeout_s)
        state.topics = topics
        save_state(path, state)
        if review:  # last: it needs the broker, the database and the topics
            actions["review"] = _up_review(state, run_dir, review_port, timeout_s)
            save_state(path, state)
    return UpResult(state, actions, path)


def review_users_file() -> Path:
    """The users file `riskstream review add-user` writes by default (absolute)."""
    from riskstream.review.settings import ReviewSettings

    return ReviewSettings(database_url="", bootstrap="").users_file.absolute()


def _up_review(state: DevState, run_dir: Path, port: int, timeout_s: float) -> str:
    from riskstream.review.auth import ensure_users_file

    prev = state.review
    if prev is not None and process_matches(prev):
        return "running"
    broker, postgres = state.broker, state.postgres
    if broker is None or postgres is None:  # pragma: no cover - started just before
        raise DevStackError("the review service needs the broker and PostgreSQL")
    users = review_users_file()
    ensure_users_file(users)  # may hold no user yet: `review add-user` adds one, read at once
    hint = prev.port if prev is not None and prev.port else port
    state.review = start_review(run_dir, hint, broker.url, postgres.url, users, timeout_s)
    return "restarted" if prev is not None else "started"


def _up_redis(state: DevState, run_dir: Path, redis_port: int, timeout_s: float) -> str:
    env_url = os.environ.get(REDIS_URL_ENV, "").strip()
    prev = state.redis
    prev_alive = prev is not None and prev.kind == "valkey" and process_matches(prev)
    if env_url:
        if prev is not None and prev_alive:
            raise DevStackError(
                f"REDIS_URL is set, but this dev stack runs an embedded Valkey on "
                f"{prev.host}:{prev.port} (pid {prev.pid}): run `riskstream dev down` first"
            )
        ping_redis(env_url, timeout_s=min(timeout_s, 10.0))
        state.redis = ServiceRecord(kind="external", url=env_url, started_at=utc_now())
        return "external"
    if prev is not None and prev.kind == "external":  # the state remembers which one
        ping_redis(prev.url, timeout_s=min(timeout_s, 10.0))
        return "external"
    if prev is not None and prev_alive:
        ping_redis(prev.url, timeout_s=min(timeout_s, 10.0))
        return "running"
    hint = prev.port if prev is not None and prev.port else redis_port
    state.redis = start_valkey(run_dir, hint, timeout_s)
    return "restarted" if prev is not None else "started"


def _up_postgres(state: DevState, run_dir: Path, port: int, timeout_s: float) -> str:
    env_url = os.environ.get(DATABASE_URL_ENV, "").strip()
    prev = state.postgres
    prev_alive = prev is not None and prev.kind == "postgres" and process_matches(prev)
    if env_url:
        if prev is not None and prev_alive:
            raise DevStackError(
                f"{DATABASE_URL_ENV} is set, but this dev stack runs an embedded PostgreSQL on "
                f"{prev.host}:{prev.port} (pid {prev.pid}): run `riskstream dev down` first"
            )
        ping_postgres(env_url, timeout_s=min(timeout_s, 10.0))
        state.postgres = ServiceRecord(kind="external", url=env_url, started_at=utc_now())
        return "external"
    if prev is not None and prev.kind == "external":
        ping_postgres(prev.url, timeout_s=min(timeout_s, 10.0))
        return "external"
    if prev is not None and prev_alive:
        ping_postgres(prev.url, timeout_s=min(timeout_s, 10.0))
        return "running"
    hint = prev.port if prev is not None and prev.port else port
    state.postgres = start_postgres(run_dir, hint, timeout_s)
    return "restarted" if prev is not None else "started"


@dataclass
class DownResult:
    """What `dev_down` did per part (stopped, killed, not running, left running); empty when
    there was no state file."""

    actions: dict[str, str]
    state_path: Path
    records: dict[str, ServiceRecord]


def dev_down(
    state_path: str | os.PathLike[str] | None = None, *, timeout_s: float = 10.0
) -> DownResult:
    """Stop what `dev_up` started (never an external Redis) and remove the state file."""
    path = resolve_state_path(state_path)
    with locked(path):
        state = load_state(path)
        if state is None:
            return DownResult({}, path, {})
        actions: dict[str, str] = {}
        records: dict[str, ServiceRecord] = {}
        parts = (("review", state.review), ("postgres", state.postgres), ("redis", state.redis),
                 ("broker", state.broker))  # fmt: skip
        for part, record in parts:
            if record is None:
                continue
            records[part] = record
            if record.started_by_us:
                actions[part] = stop_service(record, timeout_s)
            else:
                actions[part] = "left running"
        run_dir = Path(state.run_dir) if state.run_dir else run_dir_for(path)
        shutil.rmtree(run_dir / "valkey-data", ignore_errors=True)
        shutil.rmtree(run_dir / "postgres-data", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "valkey.conf").unlink()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return DownResult(actions, path, records)


@dataclass(frozen=True)
class PartStatus:
    """One part's health: `alive` is the process (or PING) check, `listening` the port."""

    part: Part
    record: ServiceRecord | None
    alive: bool
    listening: bool

    @property
    def up(self) -> bool:
        return self.alive and self.listening


def dev_status(state_path: str | os.PathLike[str] | None = None) -> list[PartStatus] | None:
    """Each part's health, or None when no stack is recorded."""
    state = load_state(state_path)
    if state is None:
        return None
    out: list[PartStatus] = []
    parts: tuple[tuple[Part, ServiceRecord | None], ...] = (
        ("broker", state.broker),
        ("redis", state.redis),
        ("postgres", state.postgres),
    )
    if state.review is not None:  # absent: a stack started with --no-review (or before it)
        parts += (("review", state.review),)
    for part, record in parts:
        if record is None:
            out.append(PartStatus(part, None, False, False))
        elif record.kind == "external" and part == "postgres":
            try:
                ping_postgres(record.url, timeout_s=1.0)
                ok = True
            except PostgresStartError:
                ok = False
            out.append(PartStatus(part, record, ok, ok))
        elif record.kind == "external":
            try:
                ping_redis(record.url, timeout_s=1.0)
                ok = True
            except RedisStartError:
                ok = False
            out.append(PartStatus(part, record, ok, ok))
        else:
            alive = process_matches(record)
            listening = alive and accepts_tcp(record.host, record.port)
            out.append(PartStatus(part, record, alive, listening))
    return out
