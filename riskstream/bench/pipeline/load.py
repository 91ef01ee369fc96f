"""The worker under load: a backlog drained at full speed, and open-loop offered load.

Open loop: events go out on a token bucket at the offered rate whatever the worker does (a
closed loop would slow the offer down with the worker and hide queueing). Latency is measured
end to end, as a subscriber sees it: from the moment the benchmark sent an event to the moment
its consumer received the alert that event triggered. The worker's `event_lag_seconds`
histogram (broker timestamp → end of the event's batch) covers every event, in bucket bounds.

The load generator (a thread of the benchmark's process, and the alert clock's consumer) is not
pinned: on a 2-core host there is no core to give it alone, and pinning it would take one from
the worker. It is made cheap and accounted instead: it produces through librdkafka
(confluent-kafka, a dev dependency), which batches and sends from C threads — kafka-python's
pure-Python producer took 0.83 cores to offer 5,000 events/s to Tansu, librdkafka 0.21
(measured on this 2-core machine) — and `CpuMeter` reports the cores it, the broker, Redis and
each worker process used while each load was offered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from riskstream.bench.pipeline.cpu import CpuMeter
from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.bench.pipeline.profile import Sampler
from riskstream.bench.pipeline.stack import Topics, WorkerProcess
from riskstream.tools.replay import TokenBucket
from stream.kafka_clients import kafka_config, plaintext
from stream.prometheus import histogram_buckets, metric_total

__all__ = ["AlertClock", "Drain", "Level", "drain_backlog", "offer_load", "produce"]

_SAMPLE_S: Final = 0.25
_CATCH_UP_S: Final = 90.0


class _Producer:
    """librdkafka's producer (acks=all, 5 ms linger); `send` waits while its queue is full."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        try:
            from confluent_kafka import Producer
        except ImportError as exc:  # a dev dependency, as the broker and psutil are
            raise PipelineBenchError(
                "the load generator needs confluent-kafka: pip install -e '.[dev]'"
            ) from exc
        self.topic = topic
        self.failed = 0
        # The bench's own embedded broker (plaintext); keys to partitions as Java clients and
        # kafka-python do (murmur2).
        self._producer = Producer(kafka_config(
            bootstrap, plaintext(), "confluent",
            **{"acks": "all", "linger.ms": 5, "queue.buffering.max.messages": 500_000,
               "partitioner": "murmur2_random"},
        ))  # fmt: skip

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def send(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key,
                                       on_delivery=self._delivered)  # fmt: skip
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.01)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait for every send's delivery; a send that failed or never went is an error."""
        left = self._producer.flush(timeout_s)
        if left or self.failed:
            raise PipelineBenchError(
                f"the load generator lost events: {self.failed} failed, {left} undelivered "
                f"after {timeout_s:.0f} s (topic {self.topic})"
            )


def produce(bootstrap: str, topic: str, lines: list[bytes], keys: list[bytes]) -> float:
    """Send every line (keyed) as fast as possible; events/s until the broker has them all."""
    producer = _Producer(bootstrap, topic)
    began = time.perf_counter()
    for value, key in zip(lines, keys, strict=True):
        producer.send(key, value)
    producer.flush()
    return len(lines) / (time.perf_counter() - began)


@dataclass(frozen=True)
class Drain:
    """A backlog drained at full speed: the worker's capacity."""

    events: int
    wall_s: float
    events_per_s: float
    mean_batch: float
    redis_ms_per_batch: float
    inference_ms_per_batch: float
    processes: int = 1
    cpu: dict[str, float] = field(default_factory=dict)  # cores busy per process (CpuMeter)
    profile: dict[str, Any] = field(default_factory=dict)  # py-spy's summaries (--profile)


def drain_backlog(
    worker: WorkerProcess,
    count: int,
    meter: CpuMeter | None = None,
    timeout_s: float = 600,
    sampler: Sampler | None = None,
) -> Drain:
    """Time the worker (started on a topic already holding `count` events) from its first
    finished batch to its last; the first batch's events are not counted. `meter`: the CPU
    of the run's processes over the same span; `sampler`: py-spy over it too."""
    deadline = time.monotonic() + timeout_s
    first_t, first_n = 0.0, 0.0
    while time.monotonic() < deadline:
        n = worker.events_done()
        if n > 0:
            first_t, first_n = time.monotonic(), n
            if meter is not None:
                meter.start()
            if sampler is not None:
                sampler.start()
            break
        worker.check_alive()
        time.sleep(0.02)
    else:
        raise PipelineBenchError(f"the worker finished no batch within {timeout_s:.0f} s")
    end = worker.wait_done(count, max(1.0, deadline - time.monotonic()))
    cpu = meter.stop() if meter is not None else {}
    profile = sampler.stop() if sampler is not None else {}
    text = worker.metrics()
    batches = max(metric_total(text, "batch_size_count"), 1.0)
    wall = max(end - first_t, 1e-6)
    return Drain(
        events=count,
        wall_s=wall,
        events_per_s=(count - first_n) / wall,
        mean_batch=count / batches,
        redis_ms_per_batch=metric_total(text, "redis_seconds_sum") / batches * 1000,
        inference_ms_per_batch=metric_total(text, "inference_seconds_sum") / batches * 1000,
        processes=len(worker.ports),
        cpu=cpu,
        profile=profile,
    )


class AlertClock:
    """Reads the alerts topic on a thread; records when each alert's event arrived here."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        # fetch_max_wait_ms: a broker that holds fetches for the whole wait (Tansu does)
        # would otherwise add up to the default 500 ms to what is measured.
        self._consumer = KafkaConsumer(**kafka_config(bootstrap, plaintext(), fetch_max_wait_ms=10,
                                                      enable_auto_commit=False))  # fmt: skip
        parts = self._consumer.partitions_for_topic(topic) or {0}
        self._consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        self._consumer.seek_to_beginning()
        self.received: dict[str, float] = {}  # event_id → monotonic time of arrival
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=50).values():
                now = time.monotonic()
                for record in records:
                    event_id = orjson.loads(record.value).get("event_id")
                    if isinstance(event_id, str):
                        self.received.setdefault(event_id, now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


@dataclass
class Level:
    """One offered load: what was offered, what the worker sustained, lag and latency."""

    percent: int
    offered_per_s: float
    duration_s: float
    sent: int = 0
    offered_s: float = 0.0  # how long the offer took (≥ duration_s when the sender lagged)
    sustained_per_s: float = 0.0
    caught_up_s: float | None = None  # after the offer stopped; None: not within the limit
    lag: list[tuple[float, float]] = field(default_factory=list)  # (s since start, messages)
    alert_latencies_ms: list[float] = field(default_factory=list)
    lag_buckets: list[tuple[float, float]] = field(default_factory=list)  # histogram delta
    cpu: dict[str, float] = field(default_factory=dict)  # cores busy per process, during the offer
    profile: dict[str, Any] = field(default_factory=dict)  # py-spy, during the offer (--profile)


def _lag_buckets(text: str) -> dict[float, float]:
    """The lag histogram summed over the worker's processes (their texts one after another)."""
    summed: dict[float, float] = {}
    for le, count in histogram_buckets(text, "event_lag_seconds"):
        summed[le] = summed.get(le, 0.0) + count
    return summed


def offer_load(
    bootstrap: str,
    topics: Topics,
    worker: WorkerProcess,
    clock: AlertClock,
    lines: list[bytes],
    keys: list[bytes],
    ids: list[str],
    level: Level,
    meter: CpuMeter | None = None,
    sampler: Sampler | None = None,
    catch_up_s: float = _CATCH_UP_S,
) -> Level:
    """Offer `lines` at `level.offered_per_s` for `level.duration_s` (open loop), sampling the
    consumer lag; then wait (up to `catch_up_s`) for the worker to catch up and collect the
    alerts' latencies. `meter`: the CPU of the run's processes while the load is offered;
    `sampler`: py-spy over the same span."""
    count = min(len(lines), int(level.offered_per_s * level.duration_s))
    before_done = worker.events_done()
    before_buckets = _lag_buckets(worker.metrics())
    sent_at: dict[str, float] = {}
    progress = {"sent": 0}
    producer = _Producer(bootstrap, topics.events)
    bucket = TokenBucket(level.offered_per_s)
    failure: list[Exception] = []

    def offer() -> None:
        try:
            for i in range(count):
                bucket.acquire()
                sent_at[ids[i]] = time.monotonic()
                producer.send(keys[i], lines[i])
                progress["sent"] = i + 1
            producer.flush()
        except Exception as exc:  # re-raised on the caller's thread
            failure.append(exc)

    sender = threading.Thread(target=offer, name="offer", daemon=True)
    began = time.monotonic()
    if sampler is not None:
        sampler.start()
    if meter is not None:
        meter.start()
    sender.start()
    while sender.is_alive():
        time.sleep(_SAMPLE_S)
        done = worker.events_done() - before_done
        level.lag.append((time.monotonic() - began, max(0.0, progress["sent"] - done)))
        worker.check_alive()
    offered_s = time.monotonic() - began
    level.offered_s = offered_s
    if meter is not None:
        level.cpu = meter.stop()
    if sampler is not None:
        level.profile = sampler.stop()
    if failure:
        raise failure[0]
    done_in_offer = worker.events_done() - before_done
    level.sent = count
    level.sustained_per_s = done_in_offer / offered_s
    target = before_done + count
    stop = time.monotonic()
    while time.monotonic() - stop < catch_up_s:
        done = worker.events_done()
        level.lag.append((time.monotonic() - began, max(0.0, target - done)))
        if done >= target:
            level.caught_up_s = time.monotonic() - stop
            break
        worker.check_alive()
        time.sleep(_SAMPLE_S)
    time.sleep(0.5)  # the last alerts' way to the clock's consumer
    level.alert_latencies_ms = sorted(
        (clock.received[eid] - t) * 1000 for eid, t in sent_at.items() if eid in clock.received
    )
    after = _lag_buckets(worker.metrics())
    level.lag_buckets = [(le, after[le] - before_buckets.get(le, 0.0)) for le in sorted(after)]
    return level
