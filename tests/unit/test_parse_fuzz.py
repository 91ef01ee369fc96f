"""Property tests of `parse_event` on hostile input: whatever the bytes, it returns a valid
`Event` or raises the contract's own `InvalidEvent` naming a field, never anything else.

The worker's dead-letter path relies on it (`Processor.parse` catches `InvalidEvent`; anything
else would be a parser bug, which it also dead-letters, but loudly).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events import (
    EVENT_TYPES,
    RECORD_SIZE,
    EncodingSpec,
    Event,
    InvalidEvent,
    dumps_event,
    encode_event,
    load_schema,
    parse_event,
)
from events.contract import MAX_EVENT_BYTES, MAX_ID_CHARS, OPTIONAL_FIELDS, REQUIRED_FIELDS
from events.parse import MAX_COUNT, MAX_FUTURE_MS
from events.timeutil import MIN_TS_MS
from tests.integration.bad_input import CATEGORIES, bad_messages

NOW_MS = 1_800_000_000_000
FIELDS = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
NAMES = frozenset({"message", *FIELDS})
SPEC = EncodingSpec()
FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip

# Any JSON value (NaN and infinities included: json.dumps writes them, orjson refuses them),
# text with any code point (lone surrogates too), integers beyond 64 bits.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40)
)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)  # fmt: skip
# Values that get past the first checks, so the later ones are reached too.
_ts = st.one_of(
    st.integers(min_value=MIN_TS_MS - 10, max_value=NOW_MS + MAX_FUTURE_MS + 10),
    st.integers(min_value=MIN_TS_MS, max_value=NOW_MS).map(float),
    st.sampled_from(["2026-11-02T10:00:00+01:00", "2026-11-02 10:00:00.123456789z",
                     "2026-02-30T10:00:00Z", "2026-11-02T10:00:00+24:00", "1999-12-31T23:59:59Z",
                     "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"]),
)  # fmt: skip
_plausible: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.text(min_size=0, max_size=MAX_ID_CHARS + 2),
    "user_id": st.text(min_size=0, max_size=MAX_ID_CHARS + 2),
    "type": st.sampled_from(EVENT_TYPES) | st.text(max_size=200),
    "ts": _ts,
    "price": st.floats() | st.integers(min_value=-5, max_value=2**64),
    "amount": st.floats(min_value=-1, max_value=1e308),
    "quantity": st.integers(min_value=-3, max_value=2**65) | st.floats(max_value=1e300),
    "country": st.text(min_size=1, max_size=3),
}
_BASE: dict[str, Any] = {
    "event_id": "e1", "user_id": "u1", "ts": 1_793_577_600_000, "type": "click",
}  # fmt: skip


@st.composite
def _objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some fields replaced (by plausible or arbitrary values), removed,
    or joined by unknown extras."""
    obj = dict(_BASE)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        plausible = _plausible.get(name)
        use_plausible = plausible is not None and draw(st.booleans())
        obj[name] = draw(plausible if plausible is not None and use_plausible else _json)
    for name in draw(st.sets(st.sampled_from(REQUIRED_FIELDS), max_size=1)):
        del obj[name]
    obj.update(draw(st.dictionaries(st.text(max_size=6), _json, max_size=2)))
    return obj


def _dumps(value: Any, ascii_only: bool) -> bytes:
    # ensure_ascii escapes lone surrogates as \udXXX; without it they become raw surrogate
    # bytes (invalid UTF-8). Both must be refused as "message".
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _outcome(raw: bytes) -> Event | InvalidEvent:
    """The event, or the contract's refusal; any other exception propagates (and fails)."""
    try:
        return parse_event(raw, now_ms=NOW_MS)
    except InvalidEvent as exc:
        return exc


def _check(raw: bytes) -> None:
    """Assert `raw` parses to a valid event or is refused naming a field of the contract."""
    event = _outcome(raw)
    if isinstance(event, InvalidEvent):
        assert event.field in NAMES, event
        assert str(event) == event.reason == f"{event.field}: {event.rule}"
        assert event.rule
        assert len(event.reason) < 300  # bounded, whatever the input
        return
    assert 0 < len(event.event_id) <= MAX_ID_CHARS
    assert 0 < len(event.user_id) <= MAX_ID_CHARS
    assert MIN_TS_MS <= event.ts_ms <= NOW_MS + MAX_FUTURE_MS
    assert parse_event(dumps_event(event), now_ms=NOW_MS) == event
    assert len(encode_event(event, SPEC)) == RECORD_SIZE  # what the worker does next


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_or_parsed(raw: bytes) -> None:
    _check(raw)


@FUZZ
@given(_json, st.booleans())
def test_any_json_value_is_refused_or_parsed(value: Any, ascii_only: bool) -> None:
    _check(_dumps(value, ascii_only))


@FUZZ
@given(_objects(), st.booleans())
@example({**_BASE, "quantity": 1.8446744073709552e19}, True)  # found by this test: parsed to
@example({**_BASE, "quantity": 2**63}, True)  # an int that dumps_event could not write
def test_mutated_events_are_refused_naming_the_field_or_parsed(
    obj: dict[str, Any], ascii_only: bool
) -> None:
    _check(_dumps(obj, ascii_only))


@FUZZ
@given(_objects(), st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=4))
def test_cut_or_spliced_events_are_refused_or_parsed(
    obj: dict[str, Any], at: int, junk: bytes
) -> None:
    raw = _dumps(obj, True)
    cut = at % (len(raw) + 1)
    _check(raw[:cut])
    _check(raw[:cut] + junk + raw[cut:])


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=1025, max_value=200_000),
    st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]),
)
def test_deep_nesting_is_refused_quickly(depth: int, brackets: tuple[bytes, bytes]) -> None:
    opener, closer = brackets
    for raw in (opener * depth, opener * depth + b"1" + closer * depth):
        refused = _outcome(raw)
        assert isinstance(refused, InvalidEvent), "a nested array or object is not an event"
        assert refused.field == "message"
        assert ("bytes, over the" in refused.rule) == (len(raw) > MAX_EVENT_BYTES)


def test_counts_stop_at_int64_in_the_code_and_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(load_schema("event"))
    for quantity, ok in ((MAX_COUNT, True), (MAX_COUNT + 1, False), (1e300, False)):
        raw = _dumps({**_BASE, "quantity": quantity}, True)
        assert isinstance(_outcome(raw), Event) is ok
        assert validator.is_valid(orjson.loads(raw)) is ok


def test_the_volume_generator_declares_what_the_parser_says() -> None:
    """Every category of `tests/integration/bad_input.py` is refused with its declared field and
    rule (the integration test then checks the worker's dead letters against them)."""
    seen: set[str] = set()
    for bad in bad_messages(6000, seed=3, now_ms=NOW_MS, big_every=1000):
        seen.add(bad.category)
        if bad.value is None:  # a tombstone: the worker refuses it before parsing
            assert (bad.field, bad.rule.pattern) == ("message", r"^is empty \(a tombstone\)$")
            continue
        refused = _outcome(bad.value)
        assert isinstance(refused, InvalidEvent), f"{bad.category}: {bad.value[:200]!r} accepted"
        assert (refused.field, bad.category) == (bad.field, bad.category), (bad, refused)
        assert bad.rule.search(refused.rule), (bad, refused)
    assert seen == set(CATEGORIES)
