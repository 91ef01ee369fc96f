"""Replay a JSON-lines event file into Kafka, keyed by `user_id`, as fast or as paced as asked.

Each non-blank line goes out as its raw bytes (nothing is re-encoded), with key = its
`user_id`; a line without one (or not JSON at all) still goes out with no key, so the worker
dead-letters it as it would in production. Pacing:

- as fast as possible (the default);
- `rate`: R events/s, open loop: a token bucket on the monotonic clock decides when each
  event may go, so sleep overshoot and send time do not add up to drift;
- `speedup`: the events' own `ts` gaps divided by X, measured from the first event's `ts`
  against one monotonic start (an event without a usable `ts` goes at once).

`compression` (`none` by default, `gzip`, `snappy`, `lz4`, `zstd`): the producer compresses
its record batches as production producers do, so that benchmarks can measure compressed
input; the worker decodes every one of them (see stream/codecs.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from tqdm import tqdm

from events.terminal import bars_wanted
from events.timeutil import parse_ts_ms
from riskstream.tools.common import (
    CONNECT_TIMEOUT_S,
    bootstrap_servers,
    kafka_security,
    partition_count,
)
from riskstream.tools.exceptions import ToolError
from stream.kafka_clients import kafka_config

__all__ = ["COMPRESSIONS", "ReplaySummary", "TokenBucket", "replay_file"]

log = logging.getLogger(__name__)

Mode = Literal["max", "rate", "speedup"]
#: What `--compression` accepts: Kafka's codecs.
COMPRESSIONS: Final = ("none", "gzip", "snappy", "lz4", "zstd")
_BURST_S: Final = 0.02  # the bucket holds 20 ms of events: absorbs sleep overshoot, no more
_FLUSH_TIMEOUT_S: Final = 60.0
_MAX_ERRORS_KEPT: Final = 5


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked; `acquire()` takes one, waiting if none.

    It starts with one token, so the first event goes at once and no initial burst inflates
    the achieved rate. `clock` and `sleep` are injectable for tests.

    >>> now = [0.0]
    >>> def fake_sleep(s): now[0] += s
    >>> bucket = TokenBucket(10.0, clock=lambda: now[0], sleep=fake_sleep)
    >>> for _ in range(11):
    ...     bucket.acquire()
    >>> round(now[0], 6)
    1.0
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * _BURST_S)
        self._clock = clock
        self._sleep = sleep
        self._tokens = 1.0
        self._last = clock()

    def acquire(self) -> None:
        """Take one token, sleeping until one has accrued."""
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            # The tolerance: accrual in float steps can stop a hair short of a whole token.
            if self._tokens >= 1.0 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1.0)
                return
            self._sleep((1.0 - self._tokens) / self.rate)


class _TsPacer:
    """Sleeps until `start + (ts - first ts) / speedup` on the monotonic clock."""

    def __init__(self, speedup: float, clock: Callable[[], float]) -> None:
        self.speedup = speedup
        self._clock = clock
        self._base_ts: int | None = None
        self._t0 = 0.0

    def wait(self, ts_ms: int | None) -> None:
        if ts_ms is None:
            return
        if self._base_ts is None:
            self._base_ts, self._t0 = ts_ms, self._clock()
            return
        delay = self._t0 + (ts_ms - self._base_ts) / 1000 / self.speedup - self._clock()
        if delay > 0:  # an event earlier than the schedule (out of order, or behind) goes now
            time.sleep(delay)


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did. `sent` counts records the broker acknowledged."""

    path: Path
    topic: str
    bootstrap: str
    mode: Mode
    sent: int
    failed: int
    keyless: int  # lines sent without a key (no string user_id): the worker dead-letters them
    skipped_blank: int
    wall_s: float  # first send to the last acknowledgement
    target_rate: float | None = None
    speedup: float | None = None
    partitions: dict[int, int] = field(default_factory=dict)  # acknowledged per partition
    errors: tuple[str, ...] = ()  # the first few delivery errors
    compression: str = "none"

    @property
    def events_per_s(self) -> float:
        """Achieved rate: acknowledged records over the wall time."""
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0

    def describe(self) -> str:
        """One line for logs and the CLI."""
        if self.mode == "rate" and self.target_rate is not None:
            pace = f"asked {self.target_rate:,.0f}/s"
        elif self.mode == "speedup" and self.speedup is not None:
            pace = f"{self.speedup:g}x the events' own time"
        else:
            pace = "as fast as possible"
        text = (
            f"sent {self.sent:,} events to {self.topic} in {self.wall_s:.2f} s: "
            f"{self.events_per_s:,.0f} events/s ({pace})"
        )
        if self.compression != "none":
            text += f", {self.compression}-compressed"
        if self.keyless:
            text += f", {self.keyless:,} without user_id (key None)"
        if self.failed:
            text += f", {self.failed:,} FAILED"
        return text


def _key_and_ts(line: bytes, want_ts: bool) -> tuple[bytes | None, int | None]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    uid = obj.get("user_id")
    key = uid.encode() if isinstance(uid, str) and uid else None
    ts: int | None = None
    if want_ts and obj.get("ts") is not None:
        try:
            ts = parse_ts_ms(obj["ts"])
        except ValueError:
            ts = None
    return key, ts


def _count_lines(path: Path, limit: int | None) -> int:
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                n += 1
                if limit is not None and n >= limit:
                    break
    return n


def _check_compression(compression: str) -> None:
    """`ToolError` unless `compression` is a codec kafka-python can compress with here."""
    if compression not in COMPRESSIONS:
        raise ToolError(f"--compression: expected one of {', '.join(COMPRESSIONS)}, "
                        f"got {compression!r}")  # fmt: skip
    if compression == "none":
        return
    from kafka import codec

    if not getattr(codec, f"has_{compression}")():
        raise ToolError(
            f"--compression {compression}: kafka-python cannot compress with it here "
            f"(pip install 'kafka-python[{compression}]')"
        )


def replay_file(
    path: str | Path,
    bootstrap: str,
    *,
    topic: str = "events",
    rate: float | None = None,
    speedup: float | None = None,
    limit: int | None = None,
    progress: bool = False,
    linger_ms: int = 5,
    producer_config: dict[str, Any] | None = None,
    compression: str = "none",
) -> ReplaySummary:
    """Produce every non-blank line of `path` to `topic` (key `user_id`); see the module doc.

    `bootstrap` is `host:port` or `kafka://host:port`. The topic must exist (it is checked
    first, so that a typo does not auto-create a topic with the wrong partition count).
    """
    if rate is not None and speedup is not None:
        raise ToolError("--rate and --speedup exclude each other")
    if rate is not None and not rate > 0:
        raise ToolError(f"--rate: must be > 0, got {rate}")
    if speedup is not None and not speedup > 0:
        raise ToolError(f"--speedup: must be > 0, got {speedup}")
    if limit is not None and limit < 1:
        raise ToolError(f"--limit: must be >= 1, got {limit}")
    _check_compression(compression)
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"--events {path}: no such file")
    servers = bootstrap_servers(bootstrap)
    security = kafka_security()  # the worker's SSL/SASL settings
    partition_count(servers, topic, security=security)  # exists (and the broker answers)
    mode: Mode = "rate" if rate is not None else "speedup" if speedup is not None else "max"

    from kafka import KafkaProducer
    from kafka.errors import KafkaError, KafkaTimeoutError

    config = kafka_config(
        servers, security, "kafka-python",
        client_id="riskstream-replay", acks="all", linger_ms=linger_ms,
        bootstrap_timeout_ms=int(CONNECT_TIMEOUT_S * 1000), max_block_ms=10_000,
        compression_type=None if compression == "none" else compression,
        **(producer_config or {}),
    )  # fmt: skip
    try:
        producer = KafkaProducer(**config)
    except (KafkaError, OSError) as exc:
        raise ToolError(f"cannot reach the broker at {servers} ({exc})") from None

    lock = threading.Lock()
    partitions: Counter[int] = Counter()
    errors: list[str] = []
    failed = [0]

    def on_ok(metadata: Any) -> None:
        with lock:
            partitions[metadata.partition] += 1

    def on_error(exc: BaseException) -> None:
        with lock:
            failed[0] += 1
            if len(errors) < _MAX_ERRORS_KEPT:
                errors.append(repr(exc))

    clock = time.monotonic
    bucket = TokenBucket(rate, clock=clock) if rate is not None else None
    pacer = _TsPacer(speedup, clock) if speedup is not None else None
    progress = bars_wanted(progress)  # a bar's \r frames only on a terminal, not in logs
    total = _count_lines(path, limit) if progress else None
    attempted = keyless = blank = 0
    try:
        with (
            path.open("rb") as fh,
            tqdm(
                total=total,
                unit="ev",
                desc=f"replay → {topic}",
                disable=not progress,
                mininterval=0.25,
                dynamic_ncols=True,
            ) as bar,
        ):
            t0 = clock()
            for raw in fh:
                line = raw.rstrip(b"\r\n")
                if not line.strip():
                    blank += 1
                    continue
                if limit is not None and attempted >= limit:
                    break
                key, ts = _key_and_ts(line, want_ts=pacer is not None)
                if bucket is not None:
                    bucket.acquire()
                elif pacer is not None:
                    pacer.wait(ts)
                keyless += key is None
                attempted += 1
                try:
                    future = producer.send(topic, value=line, key=key)
                except KafkaTimeoutError as exc:
                    raise ToolError(f"the broker at {servers} stopped answering ({exc})") from None
                except KafkaError as exc:  # this record only (e.g. over the size limit)
                    on_error(exc)
                else:
                    future.add_callback(on_ok)
                    future.add_errback(on_error)
                bar.update(1)
            try:
                producer.flush(timeout=_FLUSH_TIMEOUT_S)
            except KafkaTimeoutError:
                raise ToolError(
                    f"records still unacknowledged after {_FLUSH_TIMEOUT_S:.0f} s by {servers}"
                ) from None
            wall_s = clock() - t0
    finally:
        producer.close(timeout=10)

    with lock:
        summary = ReplaySummary(
            path=path,
            topic=topic,
            bootstrap=servers,
            mode=mode,
            sent=sum(partitions.values()),
            failed=failed[0],
            keyless=keyless,
            skipped_blank=blank,
            wall_s=wall_s,
            target_rate=rate,
            speedup=speedup,
            partitions=dict(sorted(partitions.items())),
            errors=tuple(errors),
            compression=compression,
        )
    log.info("replay %s: %s", path, summary.describe())
    return summary
