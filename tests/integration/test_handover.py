"""Hand-over and self-healing with real processes: a worker stopped with SIGTERM mid-stream, a
worker whose partitions stall.

Real `riskstream worker` processes (each its supervisor and one worker process) against a real
Tansu broker and a real Redis, with the product's group timeouts (session 6 s, heartbeat 1 s,
rebalance 20 s). The measured times are printed (`pytest -s`) and
go to the fault report (`RISKSTREAM_FAULT_REPORT`, see `fault_support.say`).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from export import load_bundle
from riskstream.localstack import TansuBroker
from tests.conftest import MakeTopics
from tests.integration.fault_support import (
    Offsets,
    Stack,
    World,
    alerts_by_pair,
    assert_windows_equal,
    health_code,
    make_world,
    produce,
    read_all,
    say,
    wait_until,
    workers,
)
from tests.integration.test_services_smoke import _producer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.fault]

TOPICS = {"events": 8, "alerts": 2, "dlq": 1, "scores": 1}
HANDOVER_LIMIT_S = 10.0
#: The product's defaults, spelled out (the fault helpers set the session to 6 s anyway).
PRODUCT_GROUP = {
    "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6",
    "RISKSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "1",
    "RISKSTREAM_BROKER_REBALANCE_TIMEOUT_S": "20",
}


def _group() -> str:
    return f"rs-handover-{uuid.uuid4().hex[:10]}"


class SteadyProducer:
    """Sends the world's events in file order, `per_tick` every `tick_s`, from a thread; counts
    what each partition took (from the broker's acknowledgements)."""

    def __init__(self, bootstrap: str, topic: str, world: World, per_tick: int, tick_s: float):
        self._producer = _producer(bootstrap)
        self._topic, self._world = topic, world
        self._per_tick, self._tick_s = per_tick, tick_s
        self.counts: Counter[int] = Counter()
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        lines, events = self._world.lines, self._world.events
        try:
            while self.sent < len(lines):
                began = time.monotonic()
                chunk = range(self.sent, min(self.sent + self._per_tick, len(lines)))
                futures = [
                    self._producer.send(self._topic, key=events[i].user_id.encode(), value=lines[i])
                    for i in chunk
                ]
                self._producer.flush(timeout=30)
                self.counts.update(f.get(timeout=10).partition for f in futures)
                self.sent = chunk.stop
                time.sleep(max(0.0, self._tick_s - (time.monotonic() - began)))
        except BaseException as exc:  # seen by the test through `done()`
            self.error = exc

    def done(self) -> bool:
        assert self.error is None, f"the producer failed: {self.error!r}"
        return not self._thread.is_alive()

    def close(self) -> None:
        self._thread.join(timeout=120)
        self._producer.close()


async def _leave_with_a_peer(bootstrap: str, topic: str, session_s: float) -> tuple[int, float]:
    """Two aiokafka consumers join a new group together (its first generation), one stops:
    (that generation, seconds until the other owns every partition)."""
    from aiokafka import AIOKafkaConsumer

    group = f"rs-leave-{uuid.uuid4().hex[:10]}"
    members = [
        AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         session_timeout_ms=int(session_s * 1000), heartbeat_interval_ms=1000,
                         enable_auto_commit=False)
        for _ in range(2)
    ]  # fmt: skip
    await asyncio.gather(*(m.start() for m in members))
    polls = [asyncio.ensure_future(_poll(m)) for m in members]
    try:
        while not all(m.assignment() for m in members):
            await asyncio.sleep(0.05)
        generation = members[1]._coordinator.generation
        polls[0].cancel()
        began = time.monotonic()
        await members[0].stop()
        while len(members[1].assignment()) < TOPICS["events"]:
            assert time.monotonic() - began < 60, "the partitions never moved"
            await asyncio.sleep(0.05)
        return generation, time.monotonic() - began
    finally:
        for task in polls:
            task.cancel()
        for m in members:
            await m.stop()


async def _poll(consumer: Any) -> None:
    while True:
        await consumer.getmany(timeout_ms=200)


@pytest.mark.timeout(180)
def test_a_member_of_the_first_generation_leaves_its_group_at_once(
    kafka_broker: TansuBroker, make_topics: MakeTopics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka sends LeaveGroup on close only from generation 1 on; Tansu's first generation
    is 0. Unpatched, the remaining member waits for the session timeout (and Tansu's half
    session of rebalance) before it owns the partitions; with
    `stream.transport.leave_group_from_generation_zero` it rebalances at its next heartbeat."""
    from aiokafka.consumer import group_coordinator as gc

    from stream.transport import leave_group_from_generation_zero

    topic = make_topics(TOPICS)["events"]
    session_s = 6.0
    leave_group_from_generation_zero()
    patched = gc.GroupCoordinator._maybe_leave_group
    monkeypatch.setattr(gc.GroupCoordinator, "_maybe_leave_group", patched.riskstream_original)
    generation, silent_s = asyncio.run(_leave_with_a_peer(kafka_broker.bootstrap, topic,
                                                          session_s))  # fmt: skip
    assert generation == 0, "Tansu numbered this first generation otherwise: nothing to patch"
    monkeypatch.setattr(gc.GroupCoordinator, "_maybe_leave_group", patched)
    generation, left_s = asyncio.run(_leave_with_a_peer(kafka_broker.bootstrap, topic,
                                                        session_s))  # fmt: skip
    say(f"leave: generation {generation}; the other member owned every partition "
        f"{silent_s:.1f} s after the stop unpatched, {left_s:.1f} s patched (session "
        f"{session_s:g} s)")  # fmt: skip
    assert silent_s >= session_s
    assert left_s < session_s


def _moved_past(offsets: Offsets, before: dict[int, int], produced: Counter[int]) -> bool:
    """Every partition committed past `before`, or everything produced to it so far."""
    return all(c > before[p] or c >= produced[p] for p, c in offsets.committed().items())


@pytest.mark.timeout(480)
def test_a_worker_stopped_mid_stream_hands_its_partitions_over_within_10_s(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """Two workers share 8 partitions while events arrive steadily (~400/s); one gets SIGTERM.

    It finishes its batch, commits and leaves the group (LeaveGroup), so the other takes its
    partitions at its next heartbeat instead of after a session timeout: within 10 s of the
    SIGTERM every partition's committed offset has moved past where it was when the stopped
    worker had exited (measured; Faust's eager rebalance pauses the survivor's own partitions
    too). Then a third worker joins the running group and
    gets partitions within 10 s of its endpoint coming up (its process start and model load are
    not the group's doing). Nothing lost, nothing counted twice (the windows equal the
    in-memory reference), no alert id published twice, everything committed in the end.
    """
    world = make_world(tmp_path / "world", users=360, seed=31, limit=16_000)
    topics = make_topics(TOPICS)
    stack = Stack(kafka_broker.url, redis_url, topics, key_prefix, tiny_bundle, _group(), tmp_path,
                  env=PRODUCT_GROUP)  # fmt: skip
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], TOPICS["events"])
    producer = SteadyProducer(kafka_broker.bootstrap, topics["events"], world, 100, 0.25)
    try:
        with workers() as spawn:
            a, b = spawn(stack, "a"), spawn(stack, "b")
            producer.start()
            wait_until("both consume", lambda: a.events() > 0 and b.events() > 0, 120, [a, b])
            time.sleep(3.0)  # steady state
            assert not producer.done(), "the stream ended before the stop: produce more"
            a.proc.terminate()  # SIGTERM to its supervisor, which forwards it
            stopped = time.monotonic()
            a_exit = a.proc.wait(timeout=30)
            a_stop_s = time.monotonic() - stopped
            assert a_exit == 0, f"a exited with {a_exit}"
            # Past what is committed once a is gone (its own final commit included): only b
            # moves them now. An upper bound of the gap: b may have moved some already.
            at_exit = offsets.committed()
            gap_s = a_stop_s + wait_until(
                "every partition moves again",
                lambda: _moved_past(offsets, at_exit, producer.counts), 60, [b],
            )  # fmt: skip
            c = spawn(stack, "c")
            wait_until("c's endpoint", lambda: health_code(c.metrics_port) is not None, 120, [c])
            join_s = wait_until("c consumes", lambda: c.events() > 0, 60, [b, c])
            wait_until("the stream ends", producer.done, 120, [b, c])
            wait_until("every offset committed", lambda: offsets.caught_up(producer.counts),
                       180, [b, c])  # fmt: skip
            redelivered = sum(w.metric("events_redelivered_total") or 0.0 for w in (b, c))
    finally:
        producer.close()
        offsets.close()
    say(f"hand-over: a stopped (SIGTERM, exit {a_exit}) in {a_stop_s:.1f} s; every partition "
        f"committed past its offset at a's exit {gap_s:.1f} s after the SIGTERM; a new worker "
        f"consumed {join_s:.1f} s after its endpoint came up; {redelivered:.0f} events "
        f"redelivered")  # fmt: skip
    assert gap_s <= HANDOVER_LIMIT_S
    assert join_s <= HANDOVER_LIMIT_S
    assert_windows_equal(redis_client, key_prefix, world, load_bundle(tiny_bundle, "cpu"))
    records = read_all(kafka_broker.bootstrap, topics["alerts"], TOPICS["alerts"])
    ids = Counter(orjson.loads(r.value)["alert_id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == []
    assert all(len(alerts) == 1 for alerts in alerts_by_pair(records).values())


@pytest.mark.timeout(480)
def test_a_stalled_partition_ends_the_worker_and_its_supervisor_restarts_it(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """`riskstream worker --processes 1` with `stall_exit_s` 5 s; mid-stream the worker stops
    fetching (the test-only `fault_stall_file`: its partitions paused in the consumer, the way
    the faust-streaming reports describe a stall: no error, idle, lag growing).

    The worker logs one line naming the stalled partitions and exits 76; its supervisor logs
    the reason and starts another process, which reports `worker_restarts_total` 1 and the
    reason (`/metrics`, `/health`), gets the partitions and finishes the stream: every offset
    committed, the windows equal the in-memory reference."""
    world = make_world(tmp_path / "world", users=360, seed=37, limit=12_000)
    topics = make_topics({**TOPICS, "events": 4})
    trigger = tmp_path / "stall-now"
    stack = Stack(kafka_broker.url, redis_url, topics, key_prefix, tiny_bundle, _group(), tmp_path,
                  env={**PRODUCT_GROUP, "RISKSTREAM_STALL_EXIT_S": "5",
                       "RISKSTREAM_FAULT_STALL_FILE": str(trigger)})  # fmt: skip
    cut = 4_000
    counts = produce(kafka_broker.bootstrap, topics["events"], world.lines[:cut],
                     world.events[:cut])  # fmt: skip
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], 4)
    try:
        with workers() as spawn:
            w = spawn(stack, "worker")
            wait_until("consuming", lambda: w.events() > 0, 120, [w])
            first = w.children()
            trigger.touch()
            wait_until("the fault injected", lambda: not trigger.exists(), 30, [w])
            injected = time.monotonic()
            counts += produce(kafka_broker.bootstrap, topics["events"], world.lines[cut:],
                              world.events[cut:])  # fmt: skip
            wait_until("the process ends", lambda: w.children() != first, 60, [w])
            ended = time.monotonic()
            wait_until("the restarted process reports", lambda: w.metric("events_total") is not
                       None, 60, [w])  # fmt: skip
            resumed_s = wait_until("it consumes", lambda: w.events() > 0, 60, [w])
            restart_s = time.monotonic() - ended
            wait_until("every offset committed", lambda: offsets.caught_up(counts), 180, [w])
            restarts = w.metric("worker_restarts_total")
            health = _health(w.metrics_port)
            assert w.proc.poll() is None  # the supervisor never stopped
    finally:
        offsets.close()
    log = w.log.read_text(errors="replace")
    exits = re.findall(r"partition (\S+(?:, \S+)*): lag and no commit .* exiting with code 76", log)
    assert len(exits) == 1, log[-4000:]
    assert "stalled (exit 76); restarting it" in log
    assert restarts == 1
    assert health["restarts"] == 1
    assert health["last_restart_reason"] == "stalled (exit 76)"
    say(f"stall: the worker exited 76 {ended - injected:.1f} s after its partitions stopped "
        f"(stall_exit_s 5 s, checks every 2 s; it named {exits[0]}); the restarted process "
        f"consumed {restart_s:.1f} s after the exit, {resumed_s:.1f} s after its endpoint came "
        f"up")  # fmt: skip
    assert_windows_equal(redis_client, key_prefix, world, load_bundle(tiny_bundle, "cpu"))


def _health(port: int) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            body: dict[str, Any] = orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            body = orjson.loads(exc.read())
    return body
