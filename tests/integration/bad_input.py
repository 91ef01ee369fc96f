"""Bad input at volume: a deterministic (by seed) generator of messages the worker must refuse,
each with the field and the rule it must be refused for, and a mixer that interleaves them,
plus re-sent copies of good events, into a good stream.

Categories (`CATEGORIES`): random bytes, cut-off events, JSON that is not an object,
tombstones and empty values, payloads of 1 MiB and more (`big_every`), deeply nested JSON
(up to 100,000 levels), wrong types for every field of the contract, missing required fields,
odd unicode (escaped lone surrogates, raw surrogate and overlong UTF-8, NUL and other control
bytes, a BOM, RTL marks, non-ASCII digits, overlong ids), far-future and negative timestamps.
Their Kafka keys are missing, empty, random, or (rarely) huge. Duplicate event ids are not dead
letters: `interleave` re-sends copies of good events, which the window must ignore.

Pure (no Kafka): the integration test produces what `interleave` returns; a unit test checks
every category against `parse_event`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from events.contract import EVENT_TYPES, MAX_EVENT_BYTES, OPTIONAL_FIELDS

__all__ = ["CATEGORIES", "Bad", "Slot", "bad_messages", "interleave"]

MiB: Final = 1 << 20
DAY_MS: Final = 86_400_000
#: Sizes of the big payloads, in turn: the contract's limit + 1, 1 MiB, more than a consumer
#: fetches per partition by default (1 MiB), 3 MiB.
BIG_SIZES: Final = (MAX_EVENT_BYTES + 1, MiB, MiB + 4096, 3 * MiB)


@dataclass(frozen=True, slots=True)
class Bad:
    """A message the worker must dead-letter, and the `field` and `rule` it must name."""

    category: str
    field: str
    rule: re.Pattern[str]
    key: bytes | None
    value: bytes | None  # None: a tombstone


@dataclass(frozen=True, slots=True)
class Slot:
    """One message to produce, in its partition's order."""

    kind: Literal["good", "dup", "bad"]
    key: bytes | None
    value: bytes | None
    bad: Bad | None = None


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


NOT_JSON: Final = _rx(r"^is not valid UTF-8 JSON")
NOT_OBJECT: Final = _rx(r"^must be a JSON object")
TOO_BIG: Final = _rx(rf"^is \d+ bytes, over the {MAX_EVENT_BYTES} limit$")
DEPTH: Final = _rx(r"^is not valid UTF-8 JSON \((depth limit exceeded|failed to allocate)")
REQUIRED: Final = _rx(r"^is required$")
FUTURE: Final = _rx(r"^is more than 24 h in the future$")
BEFORE_2000: Final = _rx(r"^must be on or after 2000-01-01")
NOT_RFC3339: Final = _rx(r"^must be RFC 3339|^must be an RFC 3339 string|^is not a valid date-time")
TOO_LONG: Final = _rx(r"^is longer than \d+ characters$")


def _type_rule(kind: str) -> re.Pattern[str]:
    return _rx(rf"^must be an? {kind}, got ")


def _event(rng: random.Random, i: int, now_ms: int) -> dict[str, Any]:
    """A valid event (the bad ones break it in one place only)."""
    return {
        "event_id": f"bad-{i}-{rng.getrandbits(32):08x}",
        "user_id": f"bad-user-{rng.randrange(1000)}",
        "ts": now_ms - rng.randrange(DAY_MS),
        "type": rng.choice(EVENT_TYPES),
        "session_id": f"s{rng.randrange(10**6)}",
        "price": round(rng.uniform(0, 500), 2),
        "quantity": rng.randrange(1, 5),
        "country": "DE",
    }


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# Wrong values by field kind: (value, rule).
_WRONG_REQUIRED_STR: Final[tuple[tuple[Any, re.Pattern[str]], ...]] = (
    (123, _type_rule("string")), (1.5, _type_rule("string")), (True, _type_rule("string")),
    ([], _type_rule("string")), ({}, _type_rule("string")), (None, REQUIRED),
    ("", _rx("^must not be empty$")),
)  # fmt: skip
_WRONG_TS: Final[tuple[tuple[Any, re.Pattern[str]], ...]] = (
    ("yesterday", NOT_RFC3339), (True, NOT_RFC3339), (1.7e12 + 0.5, NOT_RFC3339),
    ([], NOT_RFC3339), ({"ms": 1}, NOT_RFC3339), ("2026-11-02T10:00:00", NOT_RFC3339),
    ("2026-13-45T10:00:00Z", NOT_RFC3339), ("2026-11-02T10:00:00+24:00", NOT_RFC3339),
    (None, REQUIRED),
)  # fmt: skip
_WRONG_AMOUNT: Final[tuple[tuple[Any, re.Pattern[str]], ...]] = (
    ("9.99", _type_rule("number")), (True, _type_rule("number")), ([1], _type_rule("number")),
    ({"eur": 1}, _type_rule("number")), (-0.01, _rx("^must be >= 0$")), (-5, _rx("^must be >= 0$")),
)  # fmt: skip
_WRONG_COUNT: Final[tuple[tuple[Any, re.Pattern[str]], ...]] = (
    (1.5, _type_rule("integer")), ("3", _type_rule("integer")), (True, _type_rule("integer")),
    ([2], _type_rule("integer")), (-2, _rx("^must be >= 0$")), (-2.0, _rx("^must be >= 0$")),
    (1.8446744073709552e19, _rx("^must be <= ")), (1e300, _rx("^must be <= ")),
)  # fmt: skip
_ISO: Final = _rx("^must be an ISO 3166-1 alpha-2 code")
_WRONG_COUNTRY: Final[tuple[tuple[Any, re.Pattern[str]], ...]] = (
    ("Germany", _ISO), ("D", _ISO), (49, _ISO), ("1A", _ISO), ("ÄÖ", _ISO), ("d_", _ISO),
    (["DE"], _ISO),
)  # fmt: skip


def _wrong_values(name: str) -> tuple[tuple[Any, re.Pattern[str]], ...]:
    if name in ("event_id", "user_id", "type"):
        return _WRONG_REQUIRED_STR
    if name == "ts":
        return _WRONG_TS
    kind, max_chars = OPTIONAL_FIELDS[name]
    if kind == "amount":
        return _WRONG_AMOUNT
    if kind == "count":
        return _WRONG_COUNT
    if kind == "country":
        return _WRONG_COUNTRY
    string = _type_rule("string")
    return ((1, string), (True, string), (["x"], string), ({}, string), (2.5, string),
            ("x" * (max_chars + 1), TOO_LONG))  # fmt: skip


_FIELDS: Final = ("event_id", "user_id", "type", "ts", *OPTIONAL_FIELDS)

Made = tuple[str, re.Pattern[str], bytes | None]  # field, rule, value
Maker = Callable[[random.Random, int, int], Made]


def _random_bytes(rng: random.Random, i: int, now_ms: int) -> Made:
    raw = rng.randbytes(rng.randrange(0, 300))
    try:
        if isinstance(orjson.loads(raw), dict):  # a JSON object by chance: make it an array
            raw = b"[" + raw + b"]"
    except orjson.JSONDecodeError:
        pass
    return "message", _rx(f"{NOT_JSON.pattern}|{NOT_OBJECT.pattern}"), raw


def _truncated(rng: random.Random, i: int, now_ms: int) -> Made:
    raw = _dumps(_event(rng, i, now_ms))
    return "message", NOT_JSON, raw[: rng.randrange(len(raw))]


def _not_object(rng: random.Random, i: int, now_ms: int) -> Made:
    listed = b"[" + _dumps(_event(rng, i, now_ms)) + b"]"
    values = (b"[]", b"null", b"1", b'"event"', b"true", b"-0.5e3", listed)
    return "message", NOT_OBJECT, rng.choice(values)


def _tombstone(rng: random.Random, i: int, now_ms: int) -> Made:
    if rng.random() < 0.5:
        return "message", _rx(r"^is empty \(a tombstone\)$"), None
    return "message", NOT_JSON, rng.choice((b"", b" ", b"\n"))


def _deep(rng: random.Random, i: int, now_ms: int) -> Made:
    if rng.random() < 0.02:  # big ones: 60 to 200 KB
        return rng.choice((
            ("message", TOO_BIG, b"[" * 100_000),
            ("message", TOO_BIG, b"[" * 100_000 + b"]" * 100_000),
            ("message", DEPTH, b"[" * 30_000 + b"]" * 30_000),
            ("message", DEPTH, b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
        ))  # fmt: skip
    depth = rng.randrange(1025, 2048)
    event = _dumps(_event(rng, i, now_ms))
    return rng.choice((
        ("message", DEPTH, b"[" * depth + b"]" * depth),
        ("message", DEPTH, b"[" * depth),
        ("message", DEPTH, event[:-1] + b',"text":' + b"[" * depth + b"]" * depth + b"}"),
        ("price", _type_rule("number"), event[:-1] + b',"price":' + b"[" * 900 + b"]" * 900 + b"}"),
    ))  # fmt: skip


def _wrong_type(rng: random.Random, i: int, now_ms: int) -> Made:
    event = _event(rng, i, now_ms)
    name = rng.choice(_FIELDS)
    if rng.random() < 0.1:  # a duplicate JSON key: the last one counts, and it is wrong
        event["price"] = 5
        return "price", _rx("^must be >= 0$"), _dumps(event)[:-1] + b',"price":-1}'
    value, rule = rng.choice(_wrong_values(name))
    event[name] = value
    return name, rule, _dumps(event)


def _missing(rng: random.Random, i: int, now_ms: int) -> Made:
    event = _event(rng, i, now_ms)
    name = rng.choice(("event_id", "user_id", "type", "ts"))
    del event[name]
    return name, REQUIRED, _dumps(event)


def _splice(event: bytes, name: str, raw_value: bytes) -> bytes:
    return event[:-1] + b',"' + name.encode() + b'":' + raw_value + b"}"


def _odd_unicode(rng: random.Random, i: int, now_ms: int) -> Made:
    ev = _event(rng, i, now_ms)
    base = _dumps({k: v for k, v in ev.items() if k not in ("event_id", "user_id")})
    head = b'{"event_id":"' + ev["event_id"].encode() + b'","user_id":"u",'
    utf8 = _rx(f"{NOT_JSON.pattern}.*(surrogate|UTF-8|control character|BOM)")
    choices: list[Made] = [
        ("message", utf8, b'{"event_id":"\\ud800",' + base[1:]),  # lone high surrogate
        ("message", utf8, head + b'"text":"a\\udfffb",' + base[1:]),  # lone low surrogate
        ("message", utf8, b'{"event_id":"\xed\xa0\x80",' + base[1:]),  # raw surrogate bytes
        ("message", utf8, b'{"event_id":"\xc0\xaf",' + base[1:]),  # overlong "/"
        ("message", utf8, b'{"event_id":"\xff\xfe",' + base[1:]),  # not UTF-8 at all
        ("message", utf8, b'{"event_id":"a\x00b",' + base[1:]),  # raw NUL
        ("message", utf8, b'{"event_id":"a\x1fb",' + base[1:]),  # raw control byte
        ("message", utf8, b"\xef\xbb\xbf" + _dumps(ev)),  # a byte-order mark
        ("ts", NOT_RFC3339, _dumps({**ev, "ts": "\u202e2026-11-02T10:00:00Z"})),  # RTL override
        ("ts", NOT_RFC3339, _dumps({**ev, "ts": "٢٠٢٦-١١-٠٢T10:00:00Z"})),  # Arabic-Indic digits
        ("event_id", TOO_LONG, _dumps({**ev, "event_id": "🙂" * 129})),
        ("user_id", TOO_LONG, _dumps({**ev, "user_id": "\u200f" * 200})),  # right-to-left marks
        ("user_id", TOO_LONG, _dumps({**ev, "user_id": "\x00" * 129})),  # escaped NULs
        ("user_id", TOO_LONG, _dumps({**ev, "user_id": "ü" * 129})),
        ("country", _ISO, _dumps({**ev, "country": "ＤＥ"})),  # fullwidth letters
        ("currency", TOO_LONG, _dumps({**ev, "currency": "€\u200d" * 5})),
        ("quantity", _type_rule("integer"), _dumps({**ev, "quantity": "３"})),  # fullwidth 3
    ]
    if rng.random() < 0.01:  # 48 KiB of RTL overrides
        return "text", TOO_LONG, _dumps({**ev, "text": "\u202e" * 16_385})
    return rng.choice(choices)


def _far_future(rng: random.Random, i: int, now_ms: int) -> Made:
    ev = _event(rng, i, now_ms)
    raw_ts = rng.choice((
        str(now_ms + 2 * DAY_MS + rng.randrange(3650 * DAY_MS)).encode(), b"1e20",
        b"9223372036854775807", b"18446744073709551615", b"1.8446744073709552e300",
        b'"9999-12-31T23:59:59Z"', b'"2100-01-01T00:00:00+00:00"', b'"9999-12-31T23:59:59-23:59"',
    ))  # fmt: skip
    return "ts", FUTURE, _splice(_dumps({k: v for k, v in ev.items() if k != "ts"}), "ts", raw_ts)


def _negative_ts(rng: random.Random, i: int, now_ms: int) -> Made:
    ev = _event(rng, i, now_ms)
    raw_ts, rule = rng.choice((
        (b"-1", BEFORE_2000), (b"0", BEFORE_2000), (b"-1793577600000", BEFORE_2000),
        (b"1793577600", BEFORE_2000), (b"-9223372036854775808", BEFORE_2000),
        (b"-1e300", BEFORE_2000), (b"-1.5", NOT_RFC3339), (b'"1969-12-31T23:59:59Z"', BEFORE_2000),
        (b'"0001-01-01T00:00:00+23:59"', BEFORE_2000), (b'"-2026-11-02T00:00:00Z"', NOT_RFC3339),
    ))  # fmt: skip
    return "ts", rule, _splice(_dumps({k: v for k, v in ev.items() if k != "ts"}), "ts", raw_ts)


def _huge(rng: random.Random, i: int, now_ms: int, size: int) -> Made:
    if rng.random() < 0.5:
        return "message", TOO_BIG, rng.randbytes(size)
    event = _dumps(_event(rng, i, now_ms))
    pad = size - len(event) - len(b',"text":""')
    return "message", TOO_BIG, event[:-1] + b',"text":"' + b"x" * pad + b'"}'


_MAKERS: Final[dict[str, tuple[float, Maker]]] = {
    "random_bytes": (14, _random_bytes),
    "truncated": (9, _truncated),
    "not_object": (5, _not_object),
    "tombstone": (3, _tombstone),
    "deep_nesting": (4, _deep),
    "wrong_type": (26, _wrong_type),
    "missing_field": (8, _missing),
    "odd_unicode": (15, _odd_unicode),
    "far_future": (7, _far_future),
    "negative_ts": (8, _negative_ts),
}
CATEGORIES: Final = (*_MAKERS, "huge_payload")


def _key(rng: random.Random, huge: bool) -> bytes | None:
    if huge:
        return b"k" * MiB
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.25:
        return b""
    if roll < 0.45:
        return rng.randbytes(rng.randrange(1, 64))
    if roll < 0.4505:
        return rng.randbytes(100_000)
    return f"bad-user-{rng.randrange(1000)}".encode()


def bad_messages(n: int, *, seed: int, now_ms: int, big_every: int = 5000) -> Iterator[Bad]:
    """`n` bad messages, the same for the same arguments. Every `big_every`-th one is a payload
    of 64 KiB + 1 to 3 MiB (`BIG_SIZES`, in turn; every fourth of them with a 1 MiB key)."""
    rng = random.Random(seed)
    names = list(_MAKERS)
    weights = [w for w, _ in _MAKERS.values()]
    big = 0
    for i in range(n):
        if i % big_every == big_every // 2:
            size = BIG_SIZES[big % len(BIG_SIZES)]
            field, rule, value = _huge(rng, i, now_ms, size)
            yield Bad("huge_payload", field, rule, _key(rng, huge=big % 4 == 3), value)
            big += 1
            continue
        name = rng.choices(names, weights)[0]
        field, rule, value = _MAKERS[name][1](rng, i, now_ms)
        key = _key(rng, huge=False)
        if value is None and key is None:  # Kafka needs one of them
            key = b"tombstone"
        yield Bad(name, field, rule, key, value)


def interleave(
    good: Sequence[Sequence[tuple[str, bytes]]],
    bad: Iterator[Bad],
    *,
    seed: int,
    dup_share: float = 0.02,
) -> list[list[Slot]]:
    """Per partition, its good `(user_id, value)` messages in order, with re-sent copies of
    `dup_share` of them and the bad messages mixed in at random places (bad ones go to the
    partitions in turn). A copy comes after its original and before the user's next event
    (redelivered at once), so the window it is scored on is the original's."""
    rng = random.Random(seed)
    bad_by_partition: list[list[Bad]] = [[] for _ in good]
    for i, message in enumerate(bad):
        bad_by_partition[i % len(good)].append(message)
    out: list[list[Slot]] = []
    for messages, bads in zip(good, bad_by_partition, strict=True):
        ordered: list[Slot] = []
        for user, value in messages:
            ordered.append(Slot("good", user.encode(), value))
            if rng.random() < dup_share:
                ordered.append(Slot("dup", user.encode(), value))
        merged: list[Slot] = []
        g = b = 0
        while g < len(ordered) or b < len(bads):
            left_g, left_b = len(ordered) - g, len(bads) - b
            if rng.random() * (left_g + left_b) < left_g:
                merged.append(ordered[g])
                g += 1
            else:
                merged.append(Slot("bad", bads[b].key, bads[b].value, bads[b]))
                b += 1
        out.append(merged)
    return out
