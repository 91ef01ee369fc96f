"""The dev stack's state file: what `riskstream dev up` started, and where; and the addresses
the product's commands take from it when they are given none (`dev_addresses`,
`dev_database_url`).

What was started is remembered in a JSON state file (pids, ports, URLs, log paths), so a later
`up` reuses it, `status` checks it and `down` stops exactly that. `up` and `down` hold a lock
beside the file, so only one of them runs at a time per state file.

Here, below both, so that the product (`worker`, `review`, `replay`, `alerts`) can find a running
dev stack without importing the workshop (`riskstream.dev`, which writes the file and starts the
processes): only reading the file and recognising a recorded process live here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from events.exceptions import RiskstreamError
from stream.settings import ENV_PREFIX

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_STATE",
    "DEV_STATE_ENV",
    "STATE_VERSION",
    "DevState",
    "Kind",
    "ServiceRecord",
    "StackStateError",
    "dev_addresses",
    "dev_database_url",
    "dev_stack_defaults",
    "load_state",
    "locked",
    "proc_stat",
    "process_matches",
    "resolve_state_path",
    "run_dir_for",
    "save_state",
    "utc_now",
]

DEV_STATE_ENV: Final = "RISKSTREAM_DEV_STATE"
#: The review service's database (and the dev stack's, when set: it then runs no PostgreSQL).
DATABASE_URL_ENV: Final = "RISKSTREAM_DATABASE_URL"
DEFAULT_STATE: Final = Path(".riskstream") / "dev.json"
STATE_VERSION: Final = 1

Kind = Literal["tansu", "valkey", "postgres", "review", "external"]


class StackStateError(RiskstreamError):
    """The dev stack's state file cannot be read (one line naming it)."""


@dataclass
class ServiceRecord:
    """One part of the stack as the state file remembers it."""

    kind: Kind
    url: str  # kafka://, redis://, postgresql://user@host:port/db, or the console's http://
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
        if self.kind == "external" and self.url.startswith("postgres"):
            return "PostgreSQL (RISKSTREAM_DATABASE_URL)"
        return {
            "tansu": "Tansu (Kafka API, memory)",
            "valkey": "Valkey (embedded)",
            "postgres": "PostgreSQL (embedded)",
            "review": "review service + console",
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
    postgres: ServiceRecord | None = None
    review: ServiceRecord | None = None
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
            "postgres": asdict(self.postgres) if self.postgres else None,
            "review": asdict(self.review) if self.review else None,
            "topics": dict(self.topics),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DevState:
        broker, redis_, pg = data.get("broker"), data.get("redis"), data.get("postgres")
        review = data.get("review")
        return cls(
            broker=ServiceRecord.from_json(broker) if broker else None,
            redis=ServiceRecord.from_json(redis_) if redis_ else None,
            postgres=ServiceRecord.from_json(pg) if pg else None,
            review=ServiceRecord.from_json(review) if review else None,
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


def run_dir_for(path: Path) -> Path:
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
        raise StackStateError(f"cannot read the dev state file {path}: {exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return DevState.from_json(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise StackStateError(
            f"the dev state file {path} is unreadable ({exc}); stop what it started by hand "
            "and remove it"
        ) from None


def save_state(path: Path, state: DevState) -> None:
    """Write `state` to `path` atomically (mode 0600), stamping `updated_at`."""
    state.updated_at = utc_now()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # 0600: an external REDIS_URL may carry a password.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state.to_json(), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def utc_now() -> str:
    """The current UTC time, to the second, as the state file records it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def proc_stat(pid: int) -> tuple[str, int] | None:
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
        stat = proc_stat(pid)
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


def dev_addresses(
    state_path: str | os.PathLike[str] | None = None,
) -> tuple[str, str] | None:
    """`(broker_url, redis_url)` of the running dev stack, for commands given neither; None
    when no stack is recorded or a process it started is gone (no network round trip)."""
    try:
        state = load_state(state_path)
    except StackStateError:
        return None
    if state is None or state.broker is None or state.redis is None:
        return None
    for record in (state.broker, state.redis):
        if record.started_by_us and not process_matches(record):
            return None
    return state.broker.url, state.redis.url


def dev_stack_defaults(
    given: Mapping[str, str], names: tuple[str, ...] = ("BROKER_URL", "REDIS_URL")
) -> dict[str, str]:
    """The running dev stack's broker and Redis, as worker settings (`RISKSTREAM_BROKER_URL`,
    ...), for those of `names` that neither `given` (settings from flags, in that form) nor the
    environment names: `riskstream dev up` may have taken other ports than the defaults."""
    wanted = [k for k in names if f"{ENV_PREFIX}{k}" not in given]
    wanted = [k for k in wanted if f"{ENV_PREFIX}{k}" not in os.environ]
    if f"{ENV_PREFIX}REDIS_URL_FILE" in {**os.environ, **given}:  # the file names the Redis
        wanted = [k for k in wanted if k != "REDIS_URL"]
    if not wanted:
        return {}
    found = dev_addresses()
    if found is None:
        return {}
    urls = dict(zip(("BROKER_URL", "REDIS_URL"), found, strict=True))
    return {f"{ENV_PREFIX}{k}": urls[k] for k in wanted}


def dev_database_url(state_path: str | os.PathLike[str] | None = None) -> str | None:
    """The running dev stack's PostgreSQL URL, or None (no stack, or its PostgreSQL is gone)."""
    state = load_state(state_path)
    record = state.postgres if state is not None else None
    if record is not None and process_matches(record):
        return record.url
    return None
