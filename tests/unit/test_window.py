"""Windows: the store contract (run over every implementation), the time bound, and the offline
slicer's parity with append + select."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from events import (
    RECORD_SIZE,
    EncodingSpec,
    Event,
    IncompatibleSpec,
    InMemoryWindowStore,
    WindowPolicy,
    WindowStore,
    encode_event,
    select_window,
    window_slices,
)
from events.window import records_ts_ms, select_windows

SPEC = EncodingSpec()
T0 = 1_793_577_600_000

# Every WindowStore implementation runs the contract below. The Redis one takes the real Redis
# fixtures, once on one server and once on a local three-primary cluster (its batch path, TTL and
# memory are tested in tests/integration/test_redis_windows.py and test_redis_cluster.py).
STORES = [
    pytest.param("memory", id="InMemoryWindowStore"),
    pytest.param("redis", id="RedisWindowStore", marks=pytest.mark.integration),
    pytest.param("redis-cluster", id="RedisWindowStore-cluster", marks=pytest.mark.integration),
]
POLICIES = [WindowPolicy(1, 60), WindowPolicy(4, 3600), WindowPolicy(64, 7 * 86400)]


def _record(i: int, ts_ms: int, user: str = "u") -> bytes:
    return encode_event(Event(f"{user}-e{i}", user, ts_ms, "click"), SPEC)


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest) -> Callable[..., WindowStore]:
    if request.param == "memory":
        return InMemoryWindowStore
    from stream.redis_windows import RedisWindowStore

    # Their keys are deleted after the test.
    fixture = "redis_cluster_client" if request.param == "redis-cluster" else "redis_client"
    client = request.getfixturevalue(fixture)
    prefix = request.getfixturevalue("key_prefix")
    return lambda policy, **kw: RedisWindowStore(client, policy, prefix=prefix, **kw)


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_store_caps_at_n_and_keeps_arrival_order(
    make_store: Callable[[WindowPolicy], WindowStore], policy: WindowPolicy
) -> None:
    store = make_store(policy)
    assert isinstance(store, WindowStore)
    records = [_record(i, T0 + 1000 * i) for i in range(100)]
    for rec in records:
        result = store.append("u", rec)
        assert not result.duplicate
    assert store.get("u") == b"".join(records[-policy.max_events :])
    assert store.get("nobody") == b""


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_store_is_idempotent_by_event_id(
    make_store: Callable[[WindowPolicy], WindowStore], policy: WindowPolicy
) -> None:
    store = make_store(policy)
    recs = [_record(i, T0 + i) for i in range(policy.max_events)]
    for rec in recs:
        store.append("u", rec)
    before = store.get("u")
    for rec in recs:  # a full redelivery of everything still stored
        result = store.append("u", rec)
        assert result.duplicate
        assert result.stored == before
    assert store.get("u") == before


def test_store_keeps_users_apart(make_store: Callable[[WindowPolicy], WindowStore]) -> None:
    store = make_store(WindowPolicy(8, 3600))
    store.append("a", _record(1, T0, "a"))
    store.append("b", _record(1, T0, "b"))
    store.append("a", _record(2, T0 + 1, "a"))
    assert len(store.get("a")) == 2 * RECORD_SIZE
    assert len(store.get("b")) == RECORD_SIZE


def test_select_window_applies_the_time_bound_to_the_last_event() -> None:
    policy = WindowPolicy(max_events=64, max_age_s=60)
    stored = b"".join(_record(i, T0 + s * 1000) for i, s in enumerate([0, 10, 50, 69, 70, 130]))
    window = select_window(stored, policy)
    assert records_ts_ms(window).tolist() == [T0 + 70_000, T0 + 130_000]
    # The bound is inclusive: an event exactly T before the last one stays.
    stored = b"".join(_record(i, T0 + s * 1000) for i, s in enumerate([10, 70]))
    assert len(select_window(stored, policy)) == 2
    assert len(select_window(b"", policy)) == 0


@pytest.mark.parametrize("policy", [*POLICIES, WindowPolicy(3, 1)])
def test_select_windows_of_a_batch_equal_select_window_of_each(policy: WindowPolicy) -> None:
    rng = np.random.default_rng(5)
    stored = []
    for user in range(60):  # lengths 1..80, gaps from ms to hours: the T bound cuts some
        n = int(rng.integers(1, 81))
        ts = T0 + np.cumsum(rng.choice([1, 400, 90_000, 4_000_000], size=n))
        stored.append(b"".join(_record(i, int(t), f"u{user}") for i, t in enumerate(ts)))
    got = select_windows(stored, policy)
    assert len(got) == len(stored)
    cut = 0
    for window, one in zip(got, stored, strict=True):
        expected = select_window(one, policy)
        assert window.tobytes() == expected.tobytes()
        cut += len(expected) < min(len(one) // RECORD_SIZE, policy.max_events)
    if policy == WindowPolicy(3, 1):  # gaps over a second: the time bound cuts windows
        assert cut > 0
    assert select_windows([], policy) == []
    with pytest.raises(ValueError, match="stored"):
        select_windows([stored[0], b""], policy)


def test_select_window_refuses_torn_bytes() -> None:
    with pytest.raises(ValueError, match="whole number of records"):
        select_window(b"x" * (RECORD_SIZE + 1), WindowPolicy())


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_offline_slices_equal_streaming_append_and_select(policy: WindowPolicy) -> None:
    rng = np.random.default_rng(3)
    gaps = rng.choice([0, 200, 5_000, 40_000, 4_000_000], size=300)
    ts = T0 + np.cumsum(gaps)
    records = [_record(i, int(t)) for i, t in enumerate(ts)]
    all_records = np.frombuffer(b"".join(records), dtype=select_window(records[0], policy).dtype)
    store = InMemoryWindowStore(policy)
    for rec, sl in zip(records, window_slices(records_ts_ms(all_records), policy), strict=True):
        online = select_window(store.append("u", rec).stored, policy)
        assert online.tobytes() == all_records[sl].tobytes()


@pytest.mark.parametrize(
    ("data", "field"),
    [({"max_events": 0}, "max_events"), ({"max_age_s": "1"}, "max_age_s"), ({"n": 1}, "n")],
)
def test_policy_refuses_bad_settings(data: dict[str, object], field: str) -> None:
    with pytest.raises(IncompatibleSpec, match=f"^{field}: "):
        WindowPolicy.from_dict(data)


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_full_window_ignores_an_older_event(
    make_store: Callable[[WindowPolicy], WindowStore], policy: WindowPolicy
) -> None:
    # A history longer than N redelivered in full changes nothing, evicted events included.
    store = make_store(policy)
    history = [_record(i, T0 + 1000 * i) for i in range(policy.max_events + 5)]
    for rec in history:
        store.append("u", rec)
    before = store.get("u")
    assert all(store.append("u", rec).duplicate for rec in history)
    assert store.get("u") == before
    late = _record(999, T0 + 1000 * 4 + 1)  # new id, but older than the oldest stored record
    assert store.append("u", late).duplicate is True
    newer = _record(1000, T0 + 10_000_000)
    assert store.append("u", newer).duplicate is False


def test_store_places_a_late_event_by_its_time_and_refuses_one_later_than_the_bound(
    make_store: Callable[..., WindowStore],
) -> None:
    store = make_store(WindowPolicy(5, 86400), lateness_s=60)
    a, b, c = _record(1, T0), _record(2, T0 + 20_000), _record(3, T0 + 40_000)
    for rec in (a, c):
        store.append("u", rec)
    placed = store.append("u", b)  # 20 s late: between a and c
    assert (placed.duplicate, placed.late) == (False, False)
    assert store.get("u") == a + b + c
    same_ms = _record(4, T0 + 40_000)  # ties keep arrival order
    store.append("u", same_ms)
    assert store.get("u") == a + b + c + same_ms
    late = store.append("u", _record(5, T0 + 40_000 - 60_001))  # 1 ms past the bound
    assert (late.duplicate, late.late) == (False, True)
    assert late.stored == store.get("u") == a + b + c + same_ms
    store.append("u", _record(6, T0 + 50_000))  # the window is full now
    full = store.append("u", _record(7, T0 - 1))  # within the bound, older than the oldest
    assert (full.duplicate, full.late) == (True, False)
    unbounded = make_store(WindowPolicy(4, 86400))  # lateness 0: no bound
    unbounded.append("v", _record(8, T0 + 86_400_000, "v"))
    assert not unbounded.append("v", _record(9, T0, "v")).late
    assert len(unbounded.get("v")) == 2 * RECORD_SIZE
