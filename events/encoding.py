"""Turn an event into a compact fixed-width record (27 bytes) of small integer fields.

A record holds only facts of the event itself (type, category, bucketed money, hashed device,
IP prefix, item and payment method, country, time, event id hash), so appending it to a window
needs no per-user state and a redelivered event is recognised by its id hash. Everything that
depends on the neighbours (gaps, novelty, repeats) is derived from the window in `features.py`.

27 bytes, not more: 64 of them (1,728 bytes) stay in Redis's 1,792-byte allocation class, so a
user's window costs under 2 KB of Redis memory with its key (30-byte records cost 2.2 KB).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from events.contract import EVENT_TYPES, OTHER_TYPE, Event
from events.exceptions import IncompatibleSpec

__all__ = [
    "EID_SLICE",
    "ENCODING_VERSION",
    "RECORD_DTYPE",
    "RECORD_SIZE",
    "EncodingSpec",
    "decode_record",
    "encode_event",
    "event_id_hash",
    "records_eid",
    "records_flags",
]

#: Bump when the record layout or the meaning of a code changes; models refuse other versions.
ENCODING_VERSION: Final = 3

# Little-endian, packed. Hash fields use 0 for "absent".
_RECORD: Final = struct.Struct("<IHIHBBBBBHHHHH")
RECORD_DTYPE: Final = np.dtype(
    [
        ("ts_s", "<u4"),  # epoch seconds (UTC)
        ("ms_flags", "<u2"),  # milliseconds 0..999 (low 10 bits) | FLAGS bits << 10
        ("eid_lo", "<u4"),  # 48-bit hash of event_id, the idempotence key: bytes 6..11
        ("eid_hi", "<u2"),
        ("type", "u1"),  # index into spec.event_types
        ("category", "u1"),  # 0 absent, 1..V vocabulary, V+1.. hashed buckets
        ("price", "u1"),  # 0 absent, 1.. bucket of price_edges
        ("amount", "u1"),
        ("quantity", "u1"),
        ("device", "<u2"),  # hashes, 0 absent
        ("ip", "<u2"),  # of the /24 (IPv4) or /48 (IPv6) prefix
        ("country", "<u2"),  # 1 + 26*letter0 + letter1, 0 absent
        ("item", "<u2"),
        ("payment", "<u2"),
    ]
)
RECORD_SIZE: Final = _RECORD.size
assert RECORD_DTYPE.itemsize == RECORD_SIZE == 27
#: Where the event id hash sits in a record (stores compare these bytes to deduplicate).
EID_SLICE: Final = slice(6, 12)
_MS_BITS: Final = 10

#: Presence flags packed into the `flags` field.
FLAGS: Final[tuple[str, ...]] = (
    "session_id",
    "order_id",
    "coupon_code",
    "query",
    "referrer",
    "text",
)

# Log-spaced bucket edges (a value v falls in bucket 1 + bisect_right(edges, v)).
_MONEY_EDGES: Final = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500,
    2000, 3000, 5000, 10000,
)  # fmt: skip
_QUANTITY_EDGES: Final = (1, 2, 3, 4, 6, 10, 20, 50, 100)
_S: Final = 1000
_TIME_EDGES_MS: Final = (
    100, 250, 500, _S, 2 * _S, 3 * _S, 5 * _S, 10 * _S, 20 * _S, 30 * _S, 60 * _S, 120 * _S,
    300 * _S, 600 * _S, 1800 * _S, 3600 * _S, 3 * 3600 * _S, 6 * 3600 * _S, 12 * 3600 * _S,
    24 * 3600 * _S, 48 * 3600 * _S, 96 * 3600 * _S,
)  # fmt: skip


def _hash16(value: str) -> int:
    """Stable 16-bit hash in 1..65535 (0 means absent)."""
    return 1 + zlib.crc32(value.encode()) % 65535


def event_id_hash(event_id: str) -> int:
    """Stable 48-bit hash of an event id (the window's idempotence key; two ids of one
    window collide with odds of 64 / 2**48 per append).

    >>> event_id_hash("e1") == event_id_hash("e1") != event_id_hash("e2")
    True
    """
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=6).digest(), "little")


def _ip_prefix(ip: str) -> str:
    if ":" in ip:  # IPv6: the /48
        return ":".join(ip.split(":")[:3])
    return ip.rsplit(".", 1)[0]  # IPv4: the /24


@dataclass(frozen=True)
class EncodingSpec:
    """Vocabularies and bucket edges: deterministic, serialisable, saved with every model.

    >>> spec = EncodingSpec(categories=("books", "toys"))
    >>> EncodingSpec.from_json(spec.to_json()) == spec
    True
    >>> spec.category_code("toys"), spec.category_code(None)
    (2, 0)
    """

    version: int = ENCODING_VERSION
    event_types: tuple[str, ...] = (*EVENT_TYPES, OTHER_TYPE)
    categories: tuple[str, ...] = ()
    category_buckets: int = 32
    price_edges: tuple[float, ...] = _MONEY_EDGES
    amount_edges: tuple[float, ...] = _MONEY_EDGES
    quantity_edges: tuple[float, ...] = _QUANTITY_EDGES
    gap_edges_ms: tuple[int, ...] = _TIME_EDGES_MS
    age_edges_ms: tuple[int, ...] = _TIME_EDGES_MS
    _type_codes: dict[str, int] = field(init=False, repr=False, compare=False)
    _category_codes: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if 1 + len(self.categories) + self.category_buckets > 255:
            raise IncompatibleSpec("categories: vocabulary plus buckets must fit in 255 codes")
        for name in ("price_edges", "amount_edges", "quantity_edges", "gap_edges_ms"):
            edges = getattr(self, name)
            if list(edges) != sorted(set(edges)) or len(edges) > 250:
                raise IncompatibleSpec(f"{name}: must be strictly increasing, at most 250")
        object.__setattr__(self, "_type_codes", {t: i for i, t in enumerate(self.event_types)})
        object.__setattr__(
            self, "_category_codes", {c: i + 1 for i, c in enumerate(self.categories)}
        )

    @classmethod
    def fit(cls, categories: Iterable[str | None], max_categories: int = 200) -> EncodingSpec:
        """A spec whose category vocabulary is the most frequent categories (ties by name)."""
        counts = Counter(c for c in categories if c is not None)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
        return cls(categories=tuple(sorted(c for c, _ in top)))

    def category_code(self, category: str | None) -> int:
        """0 absent, 1..V in the vocabulary, V+1.. a hashed bucket for the rest."""
        if category is None:
            return 0
        code = self._category_codes.get(category)
        if code is not None:
            return code
        return 1 + len(self.categories) + zlib.crc32(category.encode()) % self.category_buckets

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        out = asdict(self)
        for private in ("_type_codes", "_category_codes"):
            out.pop(private, None)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal specs give equal text and equal `spec_hash`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def spec_hash(self) -> str:
        """sha256 of the canonical JSON, recorded in model bundles."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncodingSpec:
        """Load a saved spec, refusing one this code cannot reproduce (`IncompatibleSpec`)."""
        version = data.get("version")
        if version != ENCODING_VERSION:
            raise IncompatibleSpec(
                f"version: the model was encoded with version {version}, "
                f"this code encodes version {ENCODING_VERSION}"
            )
        if tuple(data.get("event_types", ())) != (*EVENT_TYPES, OTHER_TYPE):
            raise IncompatibleSpec("event_types: the model's event types differ from this code's")
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = set(data) - known
        if unknown:
            raise IncompatibleSpec(f"{sorted(unknown)[0]}: unknown encoding setting")
        try:
            kwargs: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
            }
            return cls(**kwargs)
        except TypeError as exc:
            raise IncompatibleSpec(f"spec: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> EncodingSpec:
        """`from_dict` of JSON text."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise IncompatibleSpec(f"spec: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise IncompatibleSpec("spec: must be a JSON object")
        return cls.from_dict(data)

    def bucket_range(self, name: str, code: int) -> tuple[float, float]:
        """The [low, high) range of values that bucket `code` of a money/quantity field holds."""
        edges = getattr(self, f"{name}_edges")
        if not 1 <= code <= len(edges) + 1:
            raise ValueError(f"{name}: code {code} is not a bucket")
        low = 0.0 if code == 1 else float(edges[code - 2])
        high = float(edges[code - 1]) if code - 1 < len(edges) else float("inf")
        return low, high


def _bucket(edges: tuple[float, ...], value: float | None) -> int:
    return 0 if value is None else 1 + bisect.bisect_right(edges, value)


def encode_event(event: Event, spec: EncodingSpec) -> bytes:
    """The event's 27-byte record.

    >>> spec = EncodingSpec()
    >>> rec = encode_event(Event("e1", "u1", 1793577600250, "click", price=12.0), spec)
    >>> len(rec), decode_record(rec, spec)["type"], decode_record(rec, spec)["ts_ms"]
    (27, 'click', 1793577600250)
    """
    flags = 0
    for bit, name in enumerate(FLAGS):
        if getattr(event, name) is not None:
            flags |= 1 << bit
    country = event.country
    eid = event_id_hash(event.event_id)
    return _RECORD.pack(
        event.ts_ms // 1000,
        event.ts_ms % 1000 | flags << _MS_BITS,
        eid & 0xFFFFFFFF,
        eid >> 32,
        spec._type_codes[event.type],
        spec.category_code(event.category),
        _bucket(spec.price_edges, event.price),
        _bucket(spec.amount_edges, event.amount),
        _bucket(spec.quantity_edges, event.quantity),
        0 if event.device_id is None else _hash16(event.device_id),
        0 if event.ip is None else _hash16(_ip_prefix(event.ip)),
        0 if country is None else 1 + 26 * (ord(country[0]) - 65) + ord(country[1]) - 65,
        0 if event.item_id is None else _hash16(event.item_id),
        0 if event.payment_method is None else _hash16(event.payment_method),
    )


def decode_record(record: bytes, spec: EncodingSpec) -> dict[str, Any]:
    """A record's fields with names resolved where they can be (type, country, flags)."""
    if len(record) != RECORD_SIZE:
        raise ValueError(f"record: {len(record)} bytes, expected {RECORD_SIZE}")
    names = RECORD_DTYPE.names
    assert names is not None
    raw = dict(zip(names, _RECORD.unpack(record), strict=True))
    country = raw.pop("country")
    ms_flags, eid_lo, eid_hi = raw.pop("ms_flags"), raw.pop("eid_lo"), raw.pop("eid_hi")
    flags = ms_flags >> _MS_BITS
    return {
        **raw,
        "ts_ms": raw["ts_s"] * 1000 + (ms_flags & 0x3FF),
        "eid": eid_lo | eid_hi << 32,
        "type": spec.event_types[raw["type"]],
        "country": None
        if country == 0
        else chr(65 + (country - 1) // 26) + chr(65 + (country - 1) % 26),
        "flags": frozenset(n for bit, n in enumerate(FLAGS) if flags >> bit & 1),
    }


def records_flags(records: npt.NDArray[np.void]) -> npt.NDArray[np.int64]:
    """The FLAGS bits of each record."""
    flags: npt.NDArray[np.int64] = records["ms_flags"].astype(np.int64) >> _MS_BITS
    return flags


def records_eid(records: npt.NDArray[np.void]) -> npt.NDArray[np.int64]:
    """The event id hash of each record (as `event_id_hash` returns it)."""
    eid: npt.NDArray[np.int64] = records["eid_lo"].astype(np.int64)
    eid |= records["eid_hi"].astype(np.int64) << 32
    return eid
