"""The event/label/alert contracts: round trips, every refusal rule, and schema agreement."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    EVENT_TYPES,
    Alert,
    Event,
    InvalidEvent,
    InvalidLabel,
    ParseStats,
    Reason,
    WindowSummary,
    alert_to_dict,
    dumps_event,
    event_to_dict,
    load_schema,
    parse_event,
    parse_label,
)
from events.contract import MAX_EVENT_BYTES, OPTIONAL_FIELDS, REQUIRED_FIELDS
from events.parse import label_to_dict

NOW_MS = 1_793_577_600_000  # 2026-11-02T00:00:00Z
BASE: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "ts": NOW_MS, "type": "click"}
EVENT_VALIDATOR = jsonschema.Draft202012Validator(
    load_schema("event"), format_checker=jsonschema.FormatChecker()
)


def _raw(**changes: Any) -> bytes:
    obj = {**BASE, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not _DROP})


_DROP = object()

_text = st.text(min_size=1, max_size=40)
_money = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
_events = st.builds(
    Event,
    event_id=st.text(min_size=1, max_size=128),
    user_id=st.text(min_size=1, max_size=128),
    ts_ms=st.integers(min_value=946_684_800_000, max_value=NOW_MS),
    type=st.sampled_from(EVENT_TYPES),
    session_id=st.none() | _text,
    item_id=st.none() | _text,
    category=st.none() | _text,
    price=st.none() | _money,
    quantity=st.none() | st.integers(min_value=0, max_value=10_000),
    amount=st.none() | _money,
    currency=st.none() | st.sampled_from(["EUR", "USD", "JPY"]),
    device_id=st.none() | _text,
    ip=st.none() | st.ip_addresses().map(str),
    country=st.none() | st.sampled_from(["DE", "US", "JP", "BR"]),
    query=st.none() | _text,
    text=st.none() | st.text(max_size=200),
)


@settings(max_examples=300, deadline=None)
@given(_events)
def test_event_round_trip_and_schema(event: Event) -> None:
    raw = dumps_event(event)
    assert parse_event(raw, now_ms=NOW_MS) == event
    EVENT_VALIDATOR.validate(orjson.loads(raw))


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        ("2026-11-02T09:00:00.250+09:00", NOW_MS + 250),
        ("2026-11-02T00:00:00Z", NOW_MS),
        ("2026-11-01t19:00:00.5-05:00", NOW_MS + 500),
        (NOW_MS + 7, NOW_MS + 7),
        (float(NOW_MS), NOW_MS),
    ],
)
def test_ts_is_normalised_to_epoch_ms_utc(ts: object, expected_ms: int) -> None:
    assert parse_event(_raw(ts=ts), now_ms=NOW_MS).ts_ms == expected_ms


def test_unknown_type_becomes_other_and_keeps_raw_type() -> None:
    event = parse_event(_raw(type="wishlist_add"), now_ms=NOW_MS)
    assert (event.type, event.raw_type) == ("other", "wishlist_add")
    assert parse_event(dumps_event(event), now_ms=NOW_MS) == event


def test_null_optional_fields_are_absent_and_unknown_extras_ignored() -> None:
    event = parse_event(_raw(price=None, device_id=None, extra={"x": 1}), now_ms=NOW_MS)
    assert event.price is None
    assert event.device_id is None
    assert event_to_dict(event) == BASE


def test_country_is_upper_cased() -> None:
    assert parse_event(_raw(country="de"), now_ms=NOW_MS).country == "DE"


INVALID = [
    ("missing event_id", _raw(event_id=_DROP), "event_id", "is required"),
    ("missing user_id", _raw(user_id=_DROP), "user_id", "is required"),
    ("missing ts", _raw(ts=_DROP), "ts", "is required"),
    ("missing type", _raw(type=_DROP), "type", "is required"),
    ("event_id int", _raw(event_id=7), "event_id", "must be a string"),
    ("user_id list", _raw(user_id=["u"]), "user_id", "must be a string"),
    ("type null-ish", _raw(type=3), "type", "must be a string"),
    ("empty user_id", _raw(user_id=""), "user_id", "must not be empty"),
    ("ts bool", _raw(ts=True), "ts", "integer of epoch milliseconds"),
    ("ts object", _raw(ts={"s": 1}), "ts", "integer of epoch milliseconds"),
    ("ts fraction", _raw(ts=1.5e12 + 0.5), "ts", "integer of epoch milliseconds"),
    ("ts no offset", _raw(ts="2026-11-02T09:00:00"), "ts", "RFC 3339 with an offset"),
    ("ts bad date", _raw(ts="2026-13-40T09:00:00Z"), "ts", "not a valid date-time"),
    ("ts seconds", _raw(ts=1_793_577_600), "ts", "not seconds"),
    ("ts future", _raw(ts=NOW_MS + 24 * 3600 * 1000 + 1), "ts", "24 h in the future"),
    ("long user_id", _raw(user_id="u" * 129), "user_id", "longer than 128"),
    ("long event_id", _raw(event_id="e" * 129), "event_id", "longer than 128"),
    ("negative price", _raw(price=-0.01), "price", ">= 0"),
    ("negative amount", _raw(amount=-5), "amount", ">= 0"),
    ("negative quantity", _raw(quantity=-1), "quantity", ">= 0"),
    ("quantity float", _raw(quantity=1.5), "quantity", "must be an integer"),
    ("price string", _raw(price="9.99"), "price", "must be a number"),
    ("price bool", _raw(price=True), "price", "must be a number"),
    ("device_id int", _raw(device_id=42), "device_id", "must be a string"),
    ("long page", _raw(page="/" * 2049), "page", "longer than 2048"),
    ("country 3 letters", _raw(country="DEU"), "country", "alpha-2"),
    ("country digits", _raw(country="D1"), "country", "alpha-2"),
    ("not json", b'{"event_id": "e1",', "message", "not valid UTF-8 JSON"),
    ("bad utf-8", b'{"event_id": "\xff\xfe"}', "message", "not valid UTF-8 JSON"),
    ("array", b"[1, 2]", "message", "must be a JSON object"),
    ("too big", _raw(text="x" * MAX_EVENT_BYTES), "message", "over the 65536 limit"),
    ("deep nesting", b'{"a":' * 2000 + b"1" + b"}" * 2000, "message", "not valid"),
]


@pytest.mark.parametrize(
    ("raw", "field", "rule"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_event_names_field_and_rule(raw: bytes, field: str, rule: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw, now_ms=NOW_MS)
    assert info.value.field == field
    assert rule in info.value.rule
    assert str(info.value).startswith(f"{field}: ")


def test_nan_amount_is_refused() -> None:
    # orjson refuses NaN literals outright; a huge exponent overflows to inf instead.
    with pytest.raises(InvalidEvent) as info:
        parse_event(
            b'{"event_id":"e","user_id":"u","ts":1793577600000,"type":"purchase","amount":1e400}',
            now_ms=NOW_MS,
        )
    assert info.value.field in {"amount", "message"}


def test_schema_and_typed_code_list_the_same_fields() -> None:
    schema = load_schema("event")
    assert schema["required"] == list(REQUIRED_FIELDS)
    assert set(schema["properties"]) == set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
    assert schema["properties"]["type"]["x-known-values"] == list(EVENT_TYPES)
    assert set(Event.__dataclass_fields__) - {"ts_ms", "raw_type"} == set(schema["properties"]) - {
        "ts"
    }
    for name, (kind, limit) in OPTIONAL_FIELDS.items():
        prop = schema["properties"][name]
        if kind == "str":
            assert prop["maxLength"] == limit, name
        elif kind in {"amount", "count"}:
            assert prop["minimum"] == 0, name


@pytest.mark.parametrize(
    "case",
    [c for c in INVALID if c[2] not in {"message"} and "future" not in c[0]],
    ids=lambda c: c[0],
)
def test_schema_also_refuses_what_the_code_refuses(case: tuple[str, bytes, str, str]) -> None:
    # The 24 h future bound depends on the receiver's clock, which a schema cannot express.
    _, raw, field, _ = case
    errors = list(EVENT_VALIDATOR.iter_errors(orjson.loads(raw)))
    assert errors, f"schema accepted an event the code refuses on {field}"


def test_label_round_trip_and_refusals() -> None:
    validator = jsonschema.Draft202012Validator(load_schema("label"))
    line = (
        '{"user_id":"u1","label":"abnormal_click","start":"2026-11-02T00:00:00Z",'
        '"end":"2026-11-02T01:00:00+01:00","kind":"click_bot","source":"simulator"}'
    )
    label = parse_label(line)
    assert label.start_ms == label.end_ms == NOW_MS
    assert label.covers(NOW_MS)
    assert not label.covers(NOW_MS + 1)
    wire = label_to_dict(label)
    validator.validate(wire)
    assert parse_label(orjson.dumps(wire)) == label
    for bad, field in [
        ('{"label":"fraud","start":1793577600000,"end":1793577600000}', "user_id"),
        ('{"user_id":"u","label":"spam","start":1793577600000,"end":1793577600000}', "label"),
        ('{"user_id":"u","label":"fraud","start":"yesterday","end":1793577600000}', "start"),
        ('{"user_id":"u","label":"fraud","start":1793577600001,"end":1793577600000}', "end"),
    ]:
        with pytest.raises(InvalidLabel, match=f"^{field}: "):
            parse_label(bad)


def test_alert_wire_form_validates_against_schema() -> None:
    alert = Alert(
        alert_id="a1",
        type="fraud",
        user_id="u1",
        event_id="e9",
        event_ts_ms=NOW_MS,
        detected_at_ms=NOW_MS + 40,
        score=0.97,
        threshold=0.8,
        severity="high",
        model_version="m-1234",
        window=WindowSummary(12, 60.5, NOW_MS - 60_500, NOW_MS, {"payment_failed": 9}, 2, 1, 1),
        reasons=(
            Reason("payment_failures", "9 failed payments in 60 s", rule_id="fraud-pf"),
            Reason("top_events", "events that drove the score", event_ids=("e7", "e8", "e9")),
        ),
    )
    wire = alert_to_dict(alert)
    validator = jsonschema.Draft202012Validator(
        load_schema("alert"), format_checker=jsonschema.FormatChecker()
    )
    validator.validate(wire)
    assert wire["event_ts"] == "2026-11-02T00:00:00.000Z"
    wire["score"] = 1.5
    assert list(validator.iter_errors(wire)), "a score over 1 must break the schema"


def test_parse_stats_count_unknown_types_and_refusals_with_bounded_memory() -> None:
    stats = ParseStats()
    for i in range(250):
        stats.accepted(parse_event(_raw(type=f"junk-{i}"), now_ms=NOW_MS))
    stats.accepted(parse_event(_raw(type="junk-0"), now_ms=NOW_MS))
    stats.accepted(parse_event(_raw(), now_ms=NOW_MS))
    for raw in (_raw(price=-1), _raw(price=-2), _raw(user_id=_DROP)):
        with pytest.raises(InvalidEvent) as info:
            parse_event(raw, now_ms=NOW_MS)
        stats.refused_event(info.value)
    assert stats.events == 252
    assert stats.other_type_events == 251
    assert stats.unknown_types["junk-0"] == 2
    assert len(stats.unknown_types) == 101  # 100 names + one bucket for the rest
    assert stats.refused == 3
    assert stats.refused_by_field == {"price": 2, "user_id": 1}
