"""`riskstream bench soak`: the real worker for minutes under open-loop load, with faults.

A local stack — Tansu on its `s3://` engine (a moto S3 server, so records and committed
offsets outlive a broker restart), an embedded Valkey on a fixed port (so it can be restarted
where the worker expects it) — the real `riskstream worker` (its supervisor, one process), and a
simulated world replayed at `rate` events/s on a token bucket (open loop: the offer does not
slow down with the worker). At set fractions of the run: Redis stopped and started 3 s later,
the worker process sent SIGTERM, the worker process sent SIGKILL (the supervisor restarts
both), the broker SIGKILLed and started 3 s later.

Sampled every `sample_s`: the RSS of the worker process(es) and of the supervisor, the consumer
lag (produced, as the producer's acknowledgements give each partition's end, minus the group's
committed offsets), events processed. Latency is end to end, as a subscriber sees it: from the
moment the benchmark sent an event to the moment its alert reached the benchmark's consumer
(the worker runs with cooldown 0, so every event over the threshold is alerted: a dense
sample). p99 is taken over the events sent in each `bin_s` bin.

At the end the offer stops, the worker drains, and the run checks: nothing uncommitted, no
stall (no exit 76 in the supervisor's log), RSS growth after minute 5 of the first worker
process (the one that lives until the first worker fault) and of the last, and after each
fault the time until p99 is back at its pre-fault level (`recovered_within`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from riskstream.bench.core import machine_info
from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.localstack import RedisService, TansuBroker, create_topics, find_free_ports
from riskstream.localstack.broker import read_log_tail
from riskstream.tools.replay import TokenBucket
from stream.kafka_clients import kafka_config, plaintext
from stream.prometheus import metric_total, scrape

__all__ = [
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "SoakOptions",
    "faults_for",
    "recovery_s",
    "render_soak_markdown",
    "rss_growth",
    "run_soak",
    "write_soak_report",
]

#: Which faults, at which fraction of the run. The worker faults come last so that the first
#: worker process lives through the Redis and broker restarts and long enough past minute 5 for
#: its RSS growth to mean something.
DEFAULT_FAULTS: Final[tuple[tuple[str, float], ...]] = (
    ("redis_restart", 0.25),
    ("broker_restart", 0.45),
    ("worker_sigterm", 0.65),
    ("worker_sigkill", 0.80),
)
FAULT_KINDS: Final = frozenset(kind for kind, _ in DEFAULT_FAULTS)
_DOWN_S: Final = 3.0  # Redis and the broker stay down this long
_PARTITIONS: Final = 8
_DRAIN_TIMEOUT_S: Final = 240.0
#: A bin's p99 is "back at the pre-fault level" when ≤ max(factor × pre-fault p99, pre-fault
#: p99 + slack): p99 over a 10 s bin of a few hundred alerts moves by tens of ms bin to bin.
RECOVERY_FACTOR: Final = 1.5
RECOVERY_SLACK_S: Final = 0.25
_MIN_BIN_ALERTS: Final = 5


@dataclass(frozen=True)
class SoakOptions:
    """What `riskstream bench soak` is told."""

    bundle: Path
    minutes: float = 30.0
    rate: float = 400.0
    out: Path = Path("docs/bench/soak")
    # The memory engine's set (no broker restart): `faults_for(storage)`.
    faults: tuple[tuple[str, float], ...] = tuple(
        f for f in DEFAULT_FAULTS if f[0] != "broker_restart"
    )
    rules: Path | None = Path("config/rules.yaml")
    sample_s: float = 5.0
    bin_s: float = 10.0
    seed: int = 7
    workdir: Path | None = None  # default: a temporary folder
    #: The broker's storage: "memory" (fast; a broker restart would lose every record and
    #: offset, so the broker_restart fault needs "s3") or "s3" (a moto S3 server: records and
    #: offsets outlive a restart, but moto, in Python, holds Tansu to ~15-30 events/s here).
    storage: str = "memory"
    #: The load generator's `linger.ms`: how long librdkafka gathers a partition's events into
    #: one record batch, as an event collector would. Tansu's cost per fetch grows with the
    #: batches a partition holds (docs/operations.md), so a long run on Tansu wants batches of
    #: several events; Apache Kafka's does not.
    linger_ms: float = 5.0


def faults_for(storage: str) -> tuple[tuple[str, float], ...]:
    """The default faults a broker with `storage` allows (a broker restart needs "s3")."""
    return tuple(f for f in DEFAULT_FAULTS if storage == "s3" or f[0] != "broker_restart")


# -- the stack ---------------------------------------------------------------------------------


@contextmanager
def _moto(log: Path, bucket: str) -> Iterator[dict[str, str]]:
    """A moto S3 server (its own process) with `bucket`; yields the AWS_* env for Tansu."""
    port = find_free_ports(1)[0]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise PipelineBenchError(f"moto exited: {read_log_tail(log)}")
            try:
                req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
                with urllib.request.urlopen(req, timeout=2.0):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise PipelineBenchError("moto's S3 did not answer in 30 s") from None
                time.sleep(0.2)
        yield {
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true",
        }  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class _Supervised:
    """`riskstream worker --processes 1` (the supervisor and its child) and its metrics port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = int(env["RISKSTREAM_METRICS_PORT"])
        self.log = log
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "riskstream", "worker", "--processes", "1",
                 "--log-level", "warn"],
                env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def children(self) -> list[Any]:
        import psutil  # type: ignore[import-untyped]

        try:
            return list(psutil.Process(self.proc.pid).children())
        except psutil.Error:
            return []

    def rss_mb(self) -> tuple[float, float, list[int]]:
        """(the worker processes' RSS, the supervisor's RSS, the worker pids)."""
        import psutil

        kids = self.children()
        total = 0.0
        for kid in kids:
            try:
                total += kid.memory_info().rss / 1e6
            except psutil.Error:
                continue
        try:
            own = psutil.Process(self.proc.pid).memory_info().rss / 1e6
        except psutil.Error:
            own = 0.0
        return total, own, [k.pid for k in kids]

    def events(self) -> float | None:
        try:
            return metric_total(scrape(self.port, timeout_s=1.0), "events_total")
        except (urllib.error.URLError, OSError):
            return None

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PipelineBenchError(
                    f"worker exited with {self.proc.returncode}: {read_log_tail(self.log, 3000)}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.3)
        raise PipelineBenchError(f"worker not ready after {timeout_s:.0f} s; log {self.log}")

    def signal_child(self, sig: int) -> int:
        kids = self.children()
        if not kids:
            raise PipelineBenchError("no worker process to signal")
        os.kill(kids[0].pid, sig)
        return int(kids[0].pid)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


# -- the load and the clocks -------------------------------------------------------------------


class _Offer:
    """Offers the world's lines at `rate` on a thread (librdkafka, acks=all); records each
    event's send time and each partition's end offset (highest acknowledged + 1)."""

    def __init__(self, bootstrap: str, topic: str, lines: list[bytes], keys: list[bytes],
                 rate: float, count: int, linger_ms: float) -> None:  # fmt: skip
        from confluent_kafka import Producer

        self.topic = topic
        self.lines, self.keys, self.rate, self.count = lines, keys, rate, count
        self.sent_at: list[float] = []
        self.acked = 0
        self.failed = 0
        self.ends: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer = Producer(kafka_config(
            bootstrap, plaintext(), "confluent",
            **{"acks": "all", "linger.ms": linger_ms, "queue.buffering.max.messages": 2_000_000,
               "partitioner": "murmur2_random", "message.timeout.ms": 600_000},
        ))  # fmt: skip
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="soak-offer", daemon=True)

    def _delivered(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is not None:
                self.failed += 1
                return
            self.acked += 1
            part, off = msg.partition(), msg.offset()
            if off + 1 > self.ends.get(part, 0):
                self.ends[part] = off + 1

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            bucket = TokenBucket(self.rate)
            for i in range(self.count):
                if self._stop.is_set():
                    break
                bucket.acquire()
                self.sent_at.append(time.monotonic())
                while True:
                    try:
                        self._producer.produce(self.topic, value=self.lines[i], key=self.keys[i],
                                               on_delivery=self._delivered)  # fmt: skip
                        break
                    except BufferError:
                        self._producer.poll(0.01)
                self._producer.poll(0)
        except Exception as exc:  # reported by `finish`
            self.error = exc

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    def finish(self, timeout_s: float = 300.0) -> None:
        """Stop offering and wait for every delivery."""
        self._stop.set()
        self._thread.join()
        left = self._producer.flush(timeout_s)
        if self.error is not None:
            raise self.error
        if left or self.failed:
            raise PipelineBenchError(f"the load generator lost events: {self.failed} failed, "
                                     f"{left} undelivered")  # fmt: skip

    def snapshot(self) -> tuple[int, dict[int, int]]:
        self._producer.poll(0)
        with self._lock:
            return self.acked, dict(self.ends)


class _AlertClock:
    """Reads the alerts topic (librdkafka: it reconnects through a broker restart) on a thread;
    records when each alerted event's first alert arrived."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer(kafka_config(
            bootstrap, plaintext(), "confluent",
            **{"group.id": f"soak-clock-{os.getpid()}", "enable.auto.commit": False,
               "fetch.wait.max.ms": 10, "auto.offset.reset": "earliest"},
        ))  # fmt: skip
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.received: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(num_messages=500, timeout=0.05):
                if msg.error() is not None:
                    continue
                now = time.monotonic()
                value = msg.value()
                if value is None:
                    continue
                try:
                    event_id = orjson.loads(value).get("event_id")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event_id, str):
                    self.received.setdefault(event_id, now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


class _Committed:
    """The group's committed offsets (OffsetFetch through librdkafka, without joining)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer(kafka_config(
            bootstrap, plaintext(), "confluent",
            **{"group.id": group, "enable.auto.commit": False},
        ))  # fmt: skip
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def get(self) -> dict[int, int] | None:
        """`{partition: committed}` (0 for none yet); None while the broker does not answer."""
        try:
            got = self._consumer.committed(self._tps, timeout=5.0)
        except Exception:  # the broker is down or restarting
            return None
        return {tp.partition: max(tp.offset, 0) for tp in got}

    def close(self) -> None:
        self._consumer.close()


# -- the run -----------------------------------------------------------------------------------


def _world(opts: SoakOptions, workdir: Path, needed: int) -> tuple[list[bytes], list[bytes],
                                                                   list[str]]:  # fmt: skip
    """A simulated world of at least `needed` events (more users until it has them)."""
    from simulator import WorldConfig, simulate_world

    users = max(200, needed // 60)
    for attempt in range(4):
        root = workdir / f"world{attempt}"
        simulate_world(WorldConfig(users=users, days=1.0, seed=opts.seed, attack_share=0.12),
                       root, progress=False)  # fmt: skip
        lines = root.joinpath("events.jsonl").read_bytes().splitlines()
        if len(lines) >= needed:
            break
        users = int(users * needed / max(len(lines), 1) * 1.15) + 50
    else:
        raise PipelineBenchError(f"the world has {len(lines):,} events, {needed:,} wanted")
    lines = lines[:needed]
    parsed = [orjson.loads(line) for line in lines]
    return lines, [p["user_id"].encode() for p in parsed], [p["event_id"] for p in parsed]


def run_soak(opts: SoakOptions, progress: bool = True) -> dict[str, Any]:
    """Run the soak; returns the result (also written under `opts.out`)."""
    for kind, at in opts.faults:
        if kind not in FAULT_KINDS or not 0.0 < at < 1.0:
            raise PipelineBenchError(f"fault {kind!r} at {at}: one of {sorted(FAULT_KINDS)} "
                                     "at a fraction of the run in (0, 1)")  # fmt: skip
    if opts.storage not in ("memory", "s3"):
        raise PipelineBenchError(f"storage {opts.storage!r}: memory or s3")
    if opts.storage != "s3" and any(kind == "broker_restart" for kind, _ in opts.faults):
        raise PipelineBenchError("a broker restart needs storage s3: the memory engine would "
                                 "lose every record and committed offset")  # fmt: skip
    duration = opts.minutes * 60.0
    count = int(opts.rate * duration) + 1
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
        return _run(opts, opts.workdir, duration, count, progress)
    with tempfile.TemporaryDirectory(prefix="rs-soak-") as tmp:
        return _run(opts, Path(tmp), duration, count, progress)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)


def _run(opts: SoakOptions, workdir: Path, duration: float, count: int,
         progress: bool) -> dict[str, Any]:  # fmt: skip
    _say(progress, f"simulating a world of {count:,} events")
    lines, keys, ids = _world(opts, workdir, count)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "load_before": os.getloadavg(),
        "options": json.loads(json.dumps(asdict(opts), default=str)),
        "faults": [],
        "samples": [],
    }
    redis_port, metrics_port = find_free_ports(2)
    storage: AbstractContextManager[dict[str, str]] = (
        _moto(workdir / "moto.log", "tansu") if opts.storage == "s3" else nullcontext({})
    )
    with storage as aws_env:
        broker = TansuBroker(
            port=find_free_ports(1)[0],
            env=aws_env or None,
            log_path=workdir / "tansu.log",
            **({"storage_url": "s3://tansu/"} if opts.storage == "s3" else {}),
        )
        redis_svc: RedisService | None = None
        worker: _Supervised | None = None
        try:
            broker.start(timeout_s=30.0)
            redis_svc = RedisService(use_env=False, port=redis_port).start(timeout_s=15.0)
            topics = {"events": "soak.events", "alerts": "soak.alerts", "dlq": "soak.dlq",
                      "scores": "soak.scores"}  # fmt: skip
            create_topics(broker.bootstrap, {topics["events"]: _PARTITIONS,
                                             topics["alerts"]: 4, topics["dlq"]: 1,
                                             topics["scores"]: 1}, timeout_s=30.0)  # fmt: skip
            group = "soak-group"
            env = {
                **os.environ,
                "RISKSTREAM_BROKER_URL": broker.url,
                "RISKSTREAM_REDIS_URL": redis_svc.url,
                "RISKSTREAM_EVENTS_TOPIC": topics["events"],
                "RISKSTREAM_ALERTS_TOPIC": topics["alerts"],
                "RISKSTREAM_DLQ_TOPIC": topics["dlq"],
                "RISKSTREAM_SCORES_TOPIC": topics["scores"],
                "RISKSTREAM_CONSUMER_GROUP": group,
                "RISKSTREAM_REDIS_PREFIX": "soak:",
                "RISKSTREAM_BUNDLE": str(opts.bundle),
                "RISKSTREAM_METRICS_PORT": str(metrics_port),
                "RISKSTREAM_FAUST_DATADIR": str(workdir / "faust"),
                "RISKSTREAM_DEVICE": "cpu",
                "RISKSTREAM_COOLDOWN_S": "0",
                "RISKSTREAM_RETRY_MAX_BACKOFF_S": "2",
            }
            if opts.rules is not None:
                env["RISKSTREAM_RULES"] = str(opts.rules)
            worker = _Supervised(env, workdir / "worker.log")
            worker.wait_ready()
            _say(progress, f"worker ready; offering {opts.rate:g} events/s for "
                           f"{opts.minutes:g} min")  # fmt: skip
            clock = _AlertClock(broker.bootstrap, topics["alerts"], 4)
            committed = _Committed(broker.bootstrap, group, topics["events"], _PARTITIONS)
            offer = _Offer(
                broker.bootstrap, topics["events"], lines, keys, opts.rate, count, opts.linger_ms
            )
            try:
                began = time.monotonic()
                offer.start()
                pending = sorted(opts.faults, key=lambda f: f[1])
                next_sample = began
                while time.monotonic() - began < duration:
                    now = time.monotonic()
                    if pending and now - began >= pending[0][1] * duration:
                        kind, _ = pending.pop(0)
                        fault = _inject(kind, broker, redis_svc, worker)
                        fault["at_s"] = round(now - began, 2)
                        result["faults"].append(fault)
                        _say(progress, f"{kind} at {fault['at_s']:.0f} s")
                    if now >= next_sample:
                        result["samples"].append(_sample(began, worker, offer, committed))
                        next_sample += opts.sample_s
                        last = result["samples"][-1]
                        if progress and len(result["samples"]) % 12 == 0:
                            _say(progress, f"t={last['t_s']:.0f} s rss={last['rss_mb']:.0f} MB "
                                           f"lag={last['lag']} sent={last['sent']:,}")  # fmt: skip
                    time.sleep(0.2)
                offered_s = time.monotonic() - began
                offer.finish()
                _say(progress, f"offer done ({offer.sent:,} events); draining")
                drain_began = time.monotonic()
                uncommitted: int | None = None
                while time.monotonic() - drain_began < _DRAIN_TIMEOUT_S:
                    sample = _sample(began, worker, offer, committed)
                    result["samples"].append(sample)
                    uncommitted = sample["lag"]
                    if uncommitted == 0:
                        break
                    time.sleep(opts.sample_s)
                drain_s = time.monotonic() - drain_began
                time.sleep(1.0)  # the last alerts' way to the clock
                acked, ends = offer.snapshot()
                result["produced"] = acked
                result["ends"] = ends
                result["committed"] = committed.get()
                result["uncommitted"] = uncommitted
                result["drain_s"] = round(drain_s, 1)
                result["offered_s"] = round(offered_s, 1)
                result["sent"] = offer.sent
                latencies = [
                    (t - began, clock.received[ids[i]] - t)
                    for i, t in enumerate(offer.sent_at)
                    if ids[i] in clock.received
                ]
                result["alerts_timed"] = len(latencies)
            finally:
                clock.close()
                committed.close()
            result["worker_exit"] = worker.stop()
            log_text = worker.log.read_text(errors="replace")
            result["stalls"] = log_text.count("(exit 76)")
            result["restarts_logged"] = log_text.count("restarting it in")
        finally:
            if worker is not None:
                worker.stop()
            if redis_svc is not None:
                redis_svc.stop()
            broker.stop()
    result["load_after"] = os.getloadavg()
    _summarise(result, latencies, opts)
    write_soak_report(result, opts.out)
    return result


def _inject(kind: str, broker: TansuBroker, redis_svc: RedisService,
            worker: _Supervised) -> dict[str, Any]:  # fmt: skip
    """One fault; returns what was done (a restart's own time included in `took_s`)."""
    t0 = time.monotonic()
    out: dict[str, Any] = {"kind": kind}
    if kind == "redis_restart":
        redis_svc.stop()
        time.sleep(_DOWN_S)
        redis_svc.start(timeout_s=15.0)
    elif kind == "broker_restart":
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGKILL)
        broker.stop()
        time.sleep(_DOWN_S)
        broker.start(timeout_s=30.0)
    elif kind in ("worker_sigterm", "worker_sigkill"):
        sig = signal.SIGTERM if kind == "worker_sigterm" else signal.SIGKILL
        out["pid"] = worker.signal_child(sig)
    out["took_s"] = round(time.monotonic() - t0, 2)
    return out


def _sample(began: float, worker: _Supervised, offer: _Offer,
            committed: _Committed) -> dict[str, Any]:  # fmt: skip
    acked, ends = offer.snapshot()
    got = committed.get()
    lag = None if got is None else sum(max(0, e - got.get(p, 0)) for p, e in ends.items())
    rss, own, pids = worker.rss_mb()
    return {
        "t_s": round(time.monotonic() - began, 2),
        "rss_mb": round(rss, 1),
        "supervisor_rss_mb": round(own, 1),
        "pids": pids,
        "sent": offer.sent,
        "produced": acked,
        "committed": None if got is None else sum(got.values()),
        "lag": lag,
        "events": worker.events(),
    }


# -- the figures -------------------------------------------------------------------------------


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _bins(latencies: list[tuple[float, float]], width: float) -> list[dict[str, Any]]:
    """p99 (s) of the events sent in each `width`-second bin (None: too few alerts in it)."""
    grouped: dict[int, list[float]] = {}
    for t, lat in latencies:
        grouped.setdefault(int(t // width), []).append(lat)
    last = max(grouped, default=-1)
    return [{"t_s": b * width, "alerts": len(grouped.get(b, [])),
             "p99_s": _p99(grouped[b]) if len(grouped.get(b, [])) >= _MIN_BIN_ALERTS else None}
            for b in range(last + 1)]  # fmt: skip


def recovery_s(
    bins: list[dict[str, Any]], fault_s: float, width: float, until_s: float
) -> tuple[float | None, float | None]:
    """(the pre-fault p99: over the events sent in the 60 s before `fault_s`; seconds from the
    fault to the start of the first bin from which two bins in a row have p99 back at that
    level (≤ max(1.5 ×, + 0.25 s)), looking no further than `until_s`; None if never).

    >>> bins = [{"t_s": t, "p99_s": p} for t, p in
    ...         [(0, .1), (10, .1), (20, .1), (30, 5.), (40, 2.), (50, .12), (60, .1)]]
    >>> recovery_s(bins, 30.0, 10.0, 70.0)
    (0.1, 20.0)
    """
    before = [b["p99_s"] for b in bins
              if fault_s - 60 <= b["t_s"] and b["t_s"] + width <= fault_s
              and b["p99_s"] is not None]  # fmt: skip
    if not before:
        return None, None
    base = max(before) if len(before) < 3 else sorted(before)[len(before) // 2]
    level = max(RECOVERY_FACTOR * base, base + RECOVERY_SLACK_S)
    after = [b for b in bins if b["t_s"] + width > fault_s and b["t_s"] + width <= until_s]
    for i, b in enumerate(after):
        pair = after[i : i + 2]
        if len(pair) == 2 and all(x["p99_s"] is not None and x["p99_s"] <= level for x in pair):
            return base, max(0.0, b["t_s"] - fault_s)
    return base, None


def rss_growth(samples: list[dict[str, Any]], from_s: float = 300.0) -> dict[str, Any]:
    """RSS growth of each worker process that was sampled past `from_s` of its own life (or of
    the run, for the first): (last − at `from_s`) / at `from_s`, keyed by pid."""
    lives: dict[int, list[tuple[float, float]]] = {}
    for s in samples:
        if len(s["pids"]) == 1 and s["rss_mb"] > 0:
            lives.setdefault(s["pids"][0], []).append((s["t_s"], s["rss_mb"]))
    out: dict[str, Any] = {}
    for pid, points in lives.items():
        start = points[0][0] if out else 0.0  # the first process: the run's minute 5
        at = [rss for t, rss in points if t >= start + from_s]
        if len(at) < 2:
            out[str(pid)] = {"from_t_s": None, "samples": len(points), "growth": None,
                             "first_mb": points[0][1], "last_mb": points[-1][1]}  # fmt: skip
            continue
        out[str(pid)] = {
            "from_t_s": round(start + from_s, 1), "until_t_s": points[-1][0],
            "at_from_mb": at[0], "last_mb": at[-1], "max_mb": max(at),
            "growth": round((at[-1] - at[0]) / at[0], 4),
        }  # fmt: skip
    return out


def _summarise(result: dict[str, Any], latencies: list[tuple[float, float]],
               opts: SoakOptions) -> None:  # fmt: skip
    bins = _bins(latencies, opts.bin_s)
    result["p99_bins"] = bins
    end = result["offered_s"]
    faults = result["faults"]
    for i, fault in enumerate(faults):
        until = faults[i + 1]["at_s"] if i + 1 < len(faults) else end
        base, rec = recovery_s(bins, fault["at_s"], opts.bin_s, until)
        fault["pre_fault_p99_s"] = base
        fault["recovered_s"] = rec
        fault["within_60_s"] = rec is not None and rec <= 60.0
    minutes: list[dict[str, Any]] = []
    for m in range(int(end // 60) + 1):
        lo, hi = m * 60.0, (m + 1) * 60.0
        lats = [lat for t, lat in latencies if lo <= t < hi]
        row = [s for s in result["samples"] if lo <= s["t_s"] < hi]
        if not row:
            continue
        last = row[-1]
        minutes.append({
            "minute": m + 1, "rss_mb": max(s["rss_mb"] for s in row),
            "lag_max": max((s["lag"] for s in row if s["lag"] is not None), default=None),
            "p99_s": _p99(lats), "alerts": len(lats),
            "produced": last["produced"], "committed": last["committed"],
        })  # fmt: skip
    result["minutes"] = minutes
    growth = rss_growth(result["samples"])
    result["rss_growth"] = growth
    judged = [g["growth"] for g in growth.values() if g.get("growth") is not None]
    result["targets"] = {
        "nothing_uncommitted": result["uncommitted"] == 0,
        "no_stall": result["stalls"] == 0,
        "rss_growth_max": max(judged) if judged else None,
        "rss_within_10pct": bool(judged) and max(judged) <= 0.10,
        "p99_back_within_60_s": all(f["within_60_s"] for f in faults),
    }


# -- the report --------------------------------------------------------------------------------


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def render_soak_markdown(result: dict[str, Any]) -> str:
    """The soak's tables: targets, faults, one row per minute."""
    o, t = result["options"], result["targets"]
    yes = {True: "met", False: "**missed**"}
    lines = [
        f"# Soak: {o['minutes']:g} min at {o['rate']:g} events/s",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores (shared; "
        f"load average {result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} "
        f"after). One worker process under its supervisor; Tansu ({o['storage']} storage); "
        f"embedded Valkey; the load generator's linger {o.get('linger_ms', 5):g} ms.",
        f"Sent {result['sent']:,} events in {result['offered_s']:.0f} s; produced "
        f"(acknowledged) {result['produced']:,}; drained {result['drain_s']:.0f} s after the "
        f"offer stopped; {result['alerts_timed']:,} alerts timed.",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| nothing uncommitted at the end | {result['uncommitted']} messages | "
        f"{yes[t['nothing_uncommitted']]} |",
        f"| no stall (no exit 76) | {result['stalls']} stall exits, "
        f"{result['restarts_logged']} restarts logged | {yes[t['no_stall']]} |",
        f"| RSS ≤ 10 % growth after minute 5 | {_fmt(t['rss_growth_max'], '.1%')} "
        f"(largest over the worker processes judged) | {yes[t['rss_within_10pct']]} |",
        f"| p99 back at its pre-fault level ≤ 60 s after each fault | see below | "
        f"{yes[t['p99_back_within_60_s']]} |",
        "",
        "| fault | at (s) | fault took (s) | pre-fault p99 (s) | p99 back after (s) | ≤ 60 s |",
        "|---|---|---|---|---|---|",
    ]
    for f in result["faults"]:
        lines.append(f"| {f['kind']} | {f['at_s']:.0f} | {f['took_s']:.1f} | "
                     f"{_fmt(f['pre_fault_p99_s'], '.3f')} | {_fmt(f['recovered_s'], '.0f')} | "
                     f"{yes[f['within_60_s']]} |")  # fmt: skip
    lines += ["", "RSS growth per worker process (from minute 5 of the run, or of its life):", "",
              "| pid | from (s) | RSS then (MB) | last (MB) | max (MB) | growth |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for pid, g in result["rss_growth"].items():
        if g.get("growth") is None:
            lines.append(f"| {pid} | — (lived < 5 min past its start) | {g['first_mb']:.0f} | "
                         f"{g['last_mb']:.0f} | | |")  # fmt: skip
        else:
            lines.append(
                f"| {pid} | {g['from_t_s']:.0f} | {g['at_from_mb']:.0f} | "
                f"{g['last_mb']:.0f} | {g['max_mb']:.0f} | {g['growth']:.1%} |"
            )
    lines += ["", "| minute | worker RSS (MB) | lag max (msgs) | p99 event→alert (s) | alerts | "
              "produced | committed |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in result["minutes"]:
        lines.append(f"| {m['minute']} | {m['rss_mb']:.0f} | {_fmt(m['lag_max'], ',')} | "
                     f"{_fmt(m['p99_s'], '.3f')} | {m['alerts']:,} | {m['produced']:,} | "
                     f"{_fmt(m['committed'], ',')} |")  # fmt: skip
    lines += ["", "![RSS, lag and p99 over time](soak.png)", ""]
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ts = [s["t_s"] / 60 for s in samples]
    axes[0].plot(ts, [s["rss_mb"] or None for s in samples], label="worker process(es)")
    axes[0].plot(ts, [s["supervisor_rss_mb"] or None for s in samples], label="supervisor")
    axes[0].set_ylabel("RSS (MB)")
    axes[0].legend(loc="upper left")
    axes[1].plot(ts, [s["lag"] for s in samples])
    axes[1].set_ylabel("consumer lag (messages)")
    bins = [b for b in result["p99_bins"] if b["p99_s"] is not None]
    axes[2].plot([(b["t_s"] + result["options"]["bin_s"] / 2) / 60 for b in bins],
                 [b["p99_s"] for b in bins], marker=".", linewidth=1)  # fmt: skip
    axes[2].set_yscale("log")
    axes[2].set_ylabel("p99 event→alert (s)\nby send time")
    axes[2].set_xlabel("minutes")
    for f in result["faults"]:
        for ax in axes:
            ax.axvline(f["at_s"] / 60, color="red", linestyle="--", linewidth=0.8)
        axes[0].annotate(f["kind"], (f["at_s"] / 60, 0.02), xycoords=("data", "axes fraction"),
                         rotation=90, fontsize=7, color="red")  # fmt: skip
    o = result["options"]
    fig.suptitle(f"soak: {o['minutes']:g} min at {o['rate']:g} events/s, faults dashed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_soak_report(result: dict[str, Any], out: Path) -> None:
    """soak.json, soak.md and soak.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "soak.md").write_text(render_soak_markdown(result))
    _plot(result, out / "soak.png")
