"""The Redis window store against a real Redis: parity of `append_batch` with
`InMemoryWindowStore`, idempotence, TTL, one round trip per batch, keys and memory (the store
contract every WindowStore passes runs over it in tests/unit/test_window.py)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.crc import key_slot
from redis.retry import Retry

from events import (
    RECORD_SIZE,
    AppendResult,
    EncodingSpec,
    Event,
    InMemoryWindowStore,
    WindowPolicy,
    encode_event,
)
from stream.exceptions import StreamError, WindowStoreError
from stream.keys import cooldown_key, window_key
from stream.redis_windows import RedisWindowStore

pytestmark = pytest.mark.integration

SPEC = EncodingSpec()
T0 = 1_793_577_600_000
POLICIES = [WindowPolicy(1, 60), WindowPolicy(4, 3600), WindowPolicy(64, 7 * 86400)]
# Ids that would break or collide in a key if they were put in it raw.
ODD_USERS = ["alice", "x:{tag}", "a b*?[", "ünïcødé", "", "rs:w:{0000000000000000}"]

MakeStore = Callable[[WindowPolicy], RedisWindowStore]


def _record(i: int, ts_ms: int, user: str = "u") -> bytes:
    return encode_event(Event(f"{user}-e{i}", user or "u", ts_ms, "click"), SPEC)


@pytest.fixture
def make_store(redis_client: redis.Redis, key_prefix: str) -> MakeStore:
    """Stores on the test's client and key prefix (so the fixture deletes their keys)."""

    def make(policy: WindowPolicy) -> RedisWindowStore:
        return RedisWindowStore(redis_client, policy, prefix=key_prefix)

    return make


# --- (a) append_batch == InMemoryWindowStore.append, item by item -----------------------------


def _random_stream(rng: np.random.Generator, n_items: int, n: int) -> list[tuple[str, bytes]]:
    """Appends of few users (so a batch holds a user many times), with redeliveries of events
    still stored and of events already evicted (older than a full window: ignored too)."""
    users = [f"user-{k}" for k in range(5)] + ODD_USERS[:3]
    sent: dict[str, list[int]] = defaultdict(list)
    items: list[tuple[str, bytes]] = []
    for next_id in range(n_items):
        user = users[int(rng.integers(len(users)))]
        past, roll = sent[user], rng.random()
        if past and roll < 0.25:  # a recent event again: a duplicate while it is in the window
            i = past[-1 - int(rng.integers(min(len(past), n + 1)))]
        elif past and roll < 0.35:  # any earlier event again
            i = past[int(rng.integers(len(past)))]
        else:
            i = next_id
            past.append(i)
        items.append((user, _record(i, T0 + 1000 * i, user)))
    return items


def _batches(rng: np.random.Generator, items: list[tuple[str, bytes]]) -> Iterator[list[Any]]:
    start = 0
    while start < len(items):
        size = int(rng.choice([1, 2, 7, 50, 300]))
        yield items[start : start + size]
        start += size


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [1, 4, 64])
def test_append_batch_equals_in_memory_append_one_by_one(
    make_store: MakeStore, n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    policy = WindowPolicy(n, 3600)
    items = _random_stream(rng, 2000, n)
    reference = InMemoryWindowStore(policy)
    store = make_store(policy)
    expected: list[AppendResult] = []
    got: list[AppendResult] = []
    batches = list(_batches(rng, items))
    for batch in batches:
        # Sometimes a whole batch twice, as after a consumer restart; all duplicates only
        # when none of its events was pushed out of the window by a later one.
        for _ in range(1 + (rng.random() < 0.2)):
            expected.extend(reference.append(user, rec) for user, rec in batch)
            got.extend(store.append_batch(batch))

    assert len(batches) > 10
    assert sum(r.duplicate for r in expected) > 100
    assert got == expected
    for user in {user for user, _ in items}:
        assert store.get(user) == reference.get(user)


def test_append_batch_of_nothing_sends_nothing(make_store: MakeStore) -> None:
    assert make_store(WindowPolicy(4, 60)).append_batch([]) == []


# --- (b) a redelivered batch --------------------------------------------------------------------


def test_redelivered_batch_changes_nothing(
    make_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_store(WindowPolicy(4, 3600))
    users = ["a", "b", "c"]
    batch = [(u, _record(i, T0 + i, u)) for i in range(3) for u in users]
    first = store.append_batch(batch)
    assert not any(r.duplicate for r in first)
    before = {u: store.get(u) for u in users}
    for u in users:  # a rewrite would reset this
        redis_client.pexpire(store.key(u), 50_000)

    again = store.append_batch(batch)

    assert all(r.duplicate for r in again)
    assert [r.stored for r in again] == [before[u] for u, _ in batch]
    for u in users:
        assert store.get(u) == before[u]
        assert 0 < redis_client.pttl(store.key(u)) <= 50_000


# --- (c) TTL ---------------------------------------------------------------------------------


def test_ttl_defaults_to_the_window_age(make_store: MakeStore, redis_client: redis.Redis) -> None:
    store = make_store(WindowPolicy(4, 3600))
    assert store.ttl_s == 3600
    store.append("u", _record(1, T0))
    assert 3590 <= redis_client.ttl(store.key("u")) <= 3600


def test_idle_window_expires(redis_client: redis.Redis, key_prefix: str) -> None:
    store = RedisWindowStore(redis_client, WindowPolicy(4, 3600), prefix=key_prefix, ttl_s=1)
    first = _record(1, T0)
    store.append("u", first)
    assert redis_client.ttl(store.key("u")) == 1
    time.sleep(1.5)
    assert store.get("u") == b""
    # Forgotten, so the same event is new again.
    assert store.append("u", first) == AppendResult(first, duplicate=False)


# --- (d) one round trip per batch -------------------------------------------------------------


class CountingConnection(Connection):
    """A real connection that notes what it sends: round trips and command names."""

    sent: list[str]
    writes: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent, self.writes = [], 0

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append(str(args[0]).upper())
        super().send_command(*args, **kwargs)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.writes += 1
        super().send_packed_command(command, check_health)


def test_one_round_trip_per_batch(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(
        redis_url, connection_class=CountingConnection, single_connection_client=True
    )
    try:
        store = RedisWindowStore(client, WindowPolicy(64, 3600), prefix=key_prefix)
        store.append("warm-up", _record(0, T0))  # connects and loads the script
        stats_before = client.info("commandstats")
        conn = client.connection
        assert isinstance(conn, CountingConnection)
        conn.sent.clear()
        conn.writes = 0

        for b in range(5):
            batch = [(f"user-{u % 40}", _record(u, T0 + u, f"user-{u % 40}")) for u in range(200)]
            results = store.append_batch(batch)
            assert len(results) == 200
            assert all(r.duplicate for r in results) == (b > 0)

        assert conn.sent == ["EVALSHA"] * 5
        assert conn.writes == 5
        stats_after = client.info("commandstats")
        calls = stats_after["cmdstat_evalsha"]["calls"] - stats_before["cmdstat_evalsha"]["calls"]
        assert calls >= 5  # the server saw them (more when others share it)
    finally:
        for key in client.scan_iter(match=f"{key_prefix}*"):
            client.delete(key)
        client.close()


# --- (e) keys -----------------------------------------------------------------------------------


def test_keys_hide_user_ids_and_share_a_slot(
    make_store: MakeStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    store = make_store(WindowPolicy(4, 60))
    users = [*ODD_USERS, "user-1", "user-2"]
    store.append_batch([(u, _record(1, T0, u)) for u in users])
    stored = {k.decode() for k in redis_client.scan_iter(match=f"{key_prefix}*")}
    assert stored == {window_key(key_prefix, u) for u in users}
    for key in stored:
        suffix = key.removeprefix(key_prefix)
        assert not any(u in suffix for u in users if len(u) > 2), key
    for u in users:
        slot = key_slot(store.key(u).encode())
        assert slot == key_slot(cooldown_key(key_prefix, u, "fraud").encode())
        assert slot == key_slot(cooldown_key(key_prefix, u, "abnormal_click").encode())
    assert len({key_slot(store.key(u).encode()) for u in users}) > 1


# --- (f) memory ---------------------------------------------------------------------------------


def test_full_window_costs_at_most_2_kib(make_store: MakeStore) -> None:
    store = make_store(WindowPolicy(64, 7 * 86400))
    for u in ("a", "b"):
        store.append_batch([(u, _record(i, T0 + i, u)) for i in range(70)])
        assert len(store.get(u)) == 64 * RECORD_SIZE
        assert 64 * RECORD_SIZE < store.memory_usage(u) <= 2048
    assert store.memory_usage("nobody") == 0


# --- errors and housekeeping --------------------------------------------------------------------


def test_bad_record_is_refused_before_anything_is_sent(make_store: MakeStore) -> None:
    store = make_store(WindowPolicy(4, 60))
    with pytest.raises(ValueError, match=r"^record: 26 bytes, expected 27"):
        store.append_batch([("u", _record(1, T0)), ("u", _record(2, T0)[:-1])])
    assert store.get("u") == b""


def test_redis_failures_are_window_store_errors(
    make_store: MakeStore, redis_client: redis.Redis
) -> None:
    store = make_store(WindowPolicy(4, 60))
    redis_client.rpush(store.key("u"), b"not a string")
    with pytest.raises(WindowStoreError) as raised:
        store.append_batch([("v", _record(1, T0, "v")), ("u", _record(1, T0))])
    assert isinstance(raised.value, StreamError)
    assert isinstance(raised.value.__cause__, redis.ResponseError)
    assert store.get("v") == b""  # all reads come before any write: nothing was applied

    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    store = RedisWindowStore(down, WindowPolicy(4, 60))
    for call in (lambda: store.append("u", _record(1, T0)), lambda: store.get("u")):
        with pytest.raises(WindowStoreError) as raised:
            call()
        assert isinstance(raised.value.__cause__, redis.ConnectionError)
    down.close()


def test_delete_forgets_a_window(make_store: MakeStore) -> None:
    store = make_store(WindowPolicy(4, 60))
    store.append("u", _record(1, T0))
    assert store.delete("u")
    assert store.get("u") == b""
    assert not store.delete("u")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"prefix": "rs:{x}:"}, "prefix"), ({"ttl_s": 0}, "ttl_s"), ({"ttl_s": 1.5}, "ttl_s")],
)
def test_bad_settings_are_refused(
    redis_client: redis.Redis, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        RedisWindowStore(redis_client, WindowPolicy(), **kwargs)


def test_decoding_client_is_refused(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match=r"^client: "):
        RedisWindowStore(client, WindowPolicy())
    client.close()


def test_cluster_batches_split_by_slot_in_input_order() -> None:
    keys = [window_key("rs:", u) for u in ["a", "b", "a", "c", "b", "a"]]
    groups = RedisWindowStore._slot_groups(keys)
    assert sorted(i for g in groups for i in g) == list(range(len(keys)))
    for group in groups:
        assert group == sorted(group)
        assert len({key_slot(keys[i].encode()) for i in group}) == 1
    assert [0, 2, 5] in groups


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_full_window_ignores_an_older_event(make_store: MakeStore, policy: WindowPolicy) -> None:
    store = make_store(policy)
    history = [_record(i, T0 + 1000 * i) for i in range(policy.max_events + 5)]
    store.append_batch([("u", rec) for rec in history])
    before = store.get("u")
    assert all(r.duplicate for r in store.append_batch([("u", rec) for rec in history]))
    assert store.get("u") == before
    late, newer = _record(999, T0 + 4001), _record(1000, T0 + 10_000_000)
    assert [r.duplicate for r in store.append_batch([("u", late), ("u", newer)])] == [True, False]
