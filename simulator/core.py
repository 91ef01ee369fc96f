"""Shared machinery: stable seeds and ids, timestamp text, the per-account event emitter.

Everything here is deterministic: seeds come from integer mixing (never `hash()` of a str),
ids from a bijection of (domain, account, counter), so ids are unique by construction.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import orjson

from events.contract import EVENT_TYPES

__all__ = [
    "Actor",
    "Episode",
    "Stats",
    "derive_seed",
    "local_suffix",
    "mix64",
    "poisson",
    "rng_for",
    "utc_text",
]

MASK64: Final = (1 << 64) - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS: Final = 86_400_000

# Id domains, so that event, session and order ids never collide with one another.
_EVENT, _SESSION, _ORDER = 0, 1, 2


def mix64(x: int) -> int:
    """The splitmix64 finaliser: a bijection on 64-bit integers with good avalanche."""
    x &= MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, *parts: int) -> int:
    """A 64-bit seed from the world seed and integer parts (stable across runs and platforms)."""
    h = mix64(seed ^ 0x9E3779B97F4A7C15)
    for part in parts:
        h = mix64(h + 0x9E3779B97F4A7C15 + mix64(part))
    return h


def rng_for(seed: int, *parts: int) -> random.Random:
    """A private `random.Random` for one part of the world (an account, a group, the planner)."""
    return random.Random(derive_seed(seed, *parts))


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if lam <= 0.0:
        return 0
    if lam > 30.0:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


_DATES: dict[int, str] = {}


def _date(day: int) -> str:
    text = _DATES.get(day)
    if text is None:
        text = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
        _DATES[day] = text
    return text


def _clock(ts_ms: int, suffix: str) -> str:
    day, rem = divmod(ts_ms, DAY_MS)
    sec, ms = divmod(rem, 1000)
    minute, sec = divmod(sec, 60)
    hour, minute = divmod(minute, 60)
    return f"{_date(day)}T{hour:02d}:{minute:02d}:{sec:02d}.{ms:03d}{suffix}"


def utc_text(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. '2026-11-02T10:15:03.120Z'."""
    return _clock(ts_ms, "Z")


def local_suffix(offset_min: int) -> str:
    """The RFC 3339 offset for a UTC offset in minutes, e.g. 330 -> '+05:30'."""
    sign = "-" if offset_min < 0 else "+"
    hours, minutes = divmod(abs(offset_min), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


@dataclass(slots=True)
class Episode:
    """One label episode: `user_id` misbehaved between its first and last event (UTC ms)."""

    user_id: str
    label: str
    kind: str
    start_ms: int
    end_ms: int


@dataclass(slots=True)
class Stats:
    """Counters and side outputs collected while the world is generated."""

    type_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    sessions: int = 0  # sessions of normal users only
    purchase_sessions: int = 0
    episodes: list[Episode] = field(default_factory=list)
    fraud_orders: list[tuple[str, int]] = field(default_factory=list)  # (order_id, ts_ms)


class Actor:
    """Writes the events of one account into the sink, in that account's timestamp format.

    `ctx` holds the per-session fields (session, device, ip, country, user agent) that go on
    every event; `lo`/`hi` track the first and last event time since `reset_span()`, which is
    how label episodes get exact boundaries.
    """

    __slots__ = (
        "_append",
        "_counts",
        "_key",
        "_off_ms",
        "_seq",
        "_suffix",
        "ctx",
        "epoch",
        "hi",
        "lo",
        "unit",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        unit: int,
        offset_min: int,
        epoch: bool,
        id_key: int,
        sink: list[bytes],
        stats: Stats,
    ) -> None:
        self.user_id = user_id
        self.unit = unit
        self.epoch = epoch
        self.ctx: dict[str, object] = {}
        self.lo = 0
        self.hi = 0
        self._off_ms = offset_min * 60_000
        self._suffix = local_suffix(offset_min)
        self._key = id_key
        self._seq = 0
        self._append = sink.append
        self._counts = stats.type_counts
        self.reset_span()

    def _id(self, domain: int) -> int:
        self._seq += 1
        return mix64((domain << 62) | (self.unit << 28) | self._seq) ^ self._key

    def new_session(self) -> str:
        """A fresh, unique session id."""
        return f"s{self._id(_SESSION):016x}"

    def new_order(self) -> str:
        """A fresh, unique order id."""
        return f"o{self._id(_ORDER):016x}"

    def reset_span(self) -> None:
        """Start tracking the first and last event time anew."""
        self.lo = 1 << 62
        self.hi = -1

    def emit(self, t: int, etype: str, extra: dict[str, object] | None = None) -> None:
        """Append one event at epoch milliseconds `t` (the hot path: keep it lean)."""
        eid = f"{self._id(_EVENT):016x}"
        ts: object = t if self.epoch else _clock(t + self._off_ms, self._suffix)
        event = {"event_id": eid, "user_id": self.user_id, "ts": ts, "type": etype, **self.ctx}
        if extra:
            event.update(extra)
        # Fixed-width key prefix: sorting the raw lines sorts by (ts_ms, event_id).
        self._append(
            f"{t:015d}{eid}".encode() + orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        )
        self._counts[etype] += 1
        if t < self.lo:
            self.lo = t
        if t > self.hi:
            self.hi = t


#: Length of the sort-key prefix that `Actor.emit` puts before each line.
KEY_CHARS: Final = 15 + 16
