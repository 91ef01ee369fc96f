"""A user's rolling window: the last N events within T seconds, up to and including an event.

Stores keep records in time order (an event that arrives after a newer one of its user is
placed by its time), capped at N, idempotent by event id. The time bound T is applied when the
window is read (`select_window`), by the same code offline and online. An event older than the
user's newest record by more than the store's allowed lateness (if it has one) changes nothing
and is reported `late`: the stream dead-letters it rather than rewrite history.

Idempotence reaches further back than the N stored ids: a full window also ignores an event
older than its oldest record. Redelivering a long history (a crash with many uncommitted
offsets, a file replayed twice) therefore changes nothing, instead of re-appending the
evicted events; the price is that an event arriving after N newer ones of its user is dropped,
which it would also be from any window read afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from events.encoding import EID_SLICE, RECORD_DTYPE, RECORD_SIZE
from events.exceptions import IncompatibleSpec

__all__ = [
    "AppendResult",
    "InMemoryWindowStore",
    "WindowPolicy",
    "WindowStore",
    "concat_records",
    "record_ts_ms",
    "records_ts_ms",
    "select_window",
    "select_windows",
    "window_slices",
]

Records = npt.NDArray[np.void]  # structured array of RECORD_DTYPE


@dataclass(frozen=True)
class WindowPolicy:
    """N and T of the window; saved with every model.

    >>> WindowPolicy.from_dict(WindowPolicy(max_events=8).to_dict())
    WindowPolicy(max_events=8, max_age_s=604800)
    """

    max_events: int = 64
    max_age_s: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= 4096:
            raise IncompatibleSpec("max_events: must be between 1 and 4096")
        if self.max_age_s <= 0:
            raise IncompatibleSpec("max_age_s: must be > 0")

    def to_dict(self) -> dict[str, int]:
        """Plain JSON-able form."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowPolicy:
        """Load a saved policy; unknown or ill-typed settings raise `IncompatibleSpec`."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise IncompatibleSpec(f"{sorted(unknown)[0]}: unknown window setting")
        for key, value in data.items():
            if type(value) is not int:
                raise IncompatibleSpec(f"{key}: must be an integer")
        return cls(**data)


def records_ts_ms(records: Records) -> npt.NDArray[np.int64]:
    """Epoch milliseconds of each record."""
    ts: npt.NDArray[np.int64] = records["ts_s"].astype(np.int64) * 1000
    ts += records["ms_flags"] & 0x3FF
    return ts


def concat_records(windows: Sequence[Records]) -> Records:
    """The windows' records end to end, one array (byte joins: `np.concatenate` of structured
    arrays promotes their fields array by array, measured at 35 µs a window).

    >>> w = np.zeros(2, dtype=RECORD_DTYPE)
    >>> len(concat_records([w, w[:1], w[:0]])), len(concat_records([]))
    (3, 0)
    """
    joined = b"".join(np.ascontiguousarray(w, dtype=RECORD_DTYPE).tobytes() for w in windows)
    return np.frombuffer(joined, dtype=RECORD_DTYPE)


def record_ts_ms(record: bytes) -> int:
    """Epoch milliseconds of the (first) record in `record`."""
    ms_flags = int.from_bytes(record[4:6], "little")
    return int.from_bytes(record[0:4], "little") * 1000 + (ms_flags & 0x3FF)


def _as_records(window: bytes | Records) -> Records:
    if isinstance(window, bytes | bytearray | memoryview):
        if len(window) % RECORD_SIZE:
            raise ValueError(f"window: {len(window)} bytes is not a whole number of records")
        return np.frombuffer(window, dtype=RECORD_DTYPE)
    return window


def select_window(stored: bytes | Records, policy: WindowPolicy) -> Records:
    """The window at the last stored record: the last N records within T of it.

    `stored` is what a store holds for the user, oldest first, the scored event last.

    >>> from events.contract import Event
    >>> from events.encoding import EncodingSpec, encode_event
    >>> spec, day_ms = EncodingSpec(), 86_400_000
    >>> stored = b"".join(encode_event(Event(f"e{i}", "u", 1793577600000 + i * day_ms, "click"),
    ...                                spec) for i in range(10))
    >>> len(select_window(stored, WindowPolicy(max_events=64, max_age_s=3 * 86400)))
    4
    """
    records = _as_records(stored)
    if len(records) == 0:
        return records
    records = records[-policy.max_events :]
    ts = records_ts_ms(records)
    keep = ts >= ts[-1] - policy.max_age_s * 1000
    return records if bool(keep.all()) else records[keep]


def select_windows(stored: Sequence[bytes], policy: WindowPolicy) -> list[Records]:
    """`select_window` of each of `stored` (none empty), in one numpy pass over them all: the
    worker selects a batch's windows at once (a call per window was ~10 µs of numpy overhead).

    >>> from events.contract import Event
    >>> from events.encoding import EncodingSpec, encode_event
    >>> spec, day_ms = EncodingSpec(), 86_400_000
    >>> rec = [encode_event(Event(f"e{i}", "u", 1793577600000 + i * day_ms, "click"), spec)
    ...        for i in range(10)]
    >>> policy = WindowPolicy(max_events=64, max_age_s=3 * 86400)
    >>> [len(w) for w in select_windows([b"".join(rec), rec[0], b"".join(rec[:2])], policy)]
    [4, 1, 2]
    """
    if not stored:
        return []
    lengths = np.fromiter((len(s) for s in stored), np.int64, len(stored))
    if (lengths == 0).any() or (lengths % RECORD_SIZE).any():
        raise ValueError("stored: each must be a non-empty whole number of records")
    lengths //= RECORD_SIZE
    records = np.frombuffer(b"".join(stored), dtype=RECORD_DTYPE)
    ends = np.cumsum(lengths)
    starts = np.maximum(ends - lengths, ends - policy.max_events)  # the last N of each
    ts = records_ts_ms(records)
    keep = ts >= np.repeat(ts[ends - 1] - policy.max_age_s * 1000, lengths)
    # records outside T among each window's last N: usually none (the window is a plain slice)
    outside = np.concatenate(([0], np.cumsum(~keep)))
    dropped = outside[ends] - outside[starts]
    out: list[Records] = []
    for start, end, drop in zip(starts.tolist(), ends.tolist(), dropped.tolist(), strict=True):
        window = records[start:end]
        out.append(window if drop == 0 else window[keep[start:end]])
    return out


def window_slices(ts_ms: npt.NDArray[np.int64], policy: WindowPolicy) -> Iterator[slice]:
    """For one user's records in arrival order, the slice of the window ending at each record.

    Offline twin of appending each record to a store and calling `select_window`; only valid
    when timestamps do not decrease (the trainer sorts each user's events by time).
    """
    n_ms = policy.max_age_s * 1000
    starts = np.searchsorted(ts_ms, ts_ms - n_ms, side="left")
    for end, start in enumerate(starts.tolist(), start=1):
        yield slice(max(start, end - policy.max_events), end)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a store holds for the user after an append, whether the event was already there
    (`duplicate`), and whether it was refused as later than the allowed lateness (`late`)."""

    stored: bytes
    duplicate: bool
    late: bool = False


@runtime_checkable
class WindowStore(Protocol):
    """Where users' windows live: in memory (offline, tests) or Redis (the stream)."""

    @property
    def policy(self) -> WindowPolicy:
        """The N and T this store keeps."""
        ...

    def append(self, user_id: str, record: bytes) -> AppendResult:
        """Place a record by its time, unless its event id is already stored or the window is
        full and the record is older than its oldest one (an evicted event redelivered, or one
        too late to belong): then change nothing and say `duplicate`; or it is older than the
        newest record by more than the store's allowed lateness: change nothing, say `late`."""
        ...

    def get(self, user_id: str) -> bytes:
        """The user's stored records, oldest first (empty when unknown or expired)."""
        ...


class InMemoryWindowStore:
    """A dict of users' records, capped at N, idempotent by event id.

    >>> from events.contract import Event
    >>> from events.encoding import EncodingSpec, encode_event
    >>> store = InMemoryWindowStore(WindowPolicy(max_events=2))
    >>> spec = EncodingSpec()
    >>> rec = lambda i: encode_event(Event(f"e{i}", "u", 1793577600000 + i, "click"), spec)
    >>> [store.append("u", rec(i)).duplicate for i in (1, 2, 2, 3)]
    [False, False, True, False]
    >>> len(store.get("u")) // RECORD_SIZE
    2
    """

    def __init__(self, policy: WindowPolicy, *, lateness_s: float = 0.0) -> None:
        if lateness_s < 0:
            raise ValueError(f"lateness_s: must be >= 0 (0: no bound), got {lateness_s!r}")
        self._policy = policy
        self._lateness_ms = int(lateness_s * 1000)
        self._users: dict[str, bytes] = {}

    @property
    def policy(self) -> WindowPolicy:
        return self._policy

    def append(self, user_id: str, record: bytes) -> AppendResult:
        if len(record) != RECORD_SIZE:
            raise ValueError(f"record: {len(record)} bytes, expected {RECORD_SIZE}")
        stored = self._users.get(user_id, b"")
        eid = record[EID_SLICE]
        for offset in range(0, len(stored), RECORD_SIZE):
            if stored[offset + EID_SLICE.start : offset + EID_SLICE.stop] == eid:
                return AppendResult(stored, duplicate=True)
        keep = self._policy.max_events * RECORD_SIZE
        t = record_ts_ms(record)
        if len(stored) >= keep and t < record_ts_ms(stored):
            return AppendResult(stored, duplicate=True)  # evicted redelivery, or too late
        if (
            self._lateness_ms
            and stored
            and t < record_ts_ms(stored[-RECORD_SIZE:]) - (self._lateness_ms)
        ):
            return AppendResult(stored, duplicate=False, late=True)
        at = len(stored)  # after every record not newer than it (as the Redis script does)
        while at > 0 and record_ts_ms(stored[at - RECORD_SIZE : at]) > t:
            at -= RECORD_SIZE
        stored = (stored[:at] + record + stored[at:])[-keep:]
        self._users[user_id] = stored
        return AppendResult(stored, duplicate=False)

    def get(self, user_id: str) -> bytes:
        return self._users.get(user_id, b"")
