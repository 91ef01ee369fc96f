"""Parse and validate wire messages into the typed contract; serialise them back."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any, Final

import orjson

from events.contract import (
    EVENT_TYPES,
    LABELS,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    OPTIONAL_FIELDS,
    OTHER_TYPE,
    Alert,
    Event,
    Label,
)
from events.exceptions import InvalidEvent, InvalidLabel
from events.timeutil import format_ts_ms, parse_ts_ms

__all__ = [
    "MAX_COUNT",
    "MAX_FUTURE_MS",
    "alert_to_dict",
    "dumps_event",
    "event_to_dict",
    "label_to_dict",
    "parse_event",
    "parse_label",
]

#: An event stamped further ahead of the receiver's clock than this is refused.
MAX_FUTURE_MS: Final = 24 * 3600 * 1000
_KNOWN_TYPES: Final = frozenset(EVENT_TYPES)
_CHECKS: Final = OPTIONAL_FIELDS
#: The largest count field (a signed 64-bit integer, what orjson and Parquet can hold).
MAX_COUNT: Final = 2**63 - 1


def _required_str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent(name, "is required")
    if type(value) is not str:
        raise InvalidEvent(name, f"must be a string, got {_json_type(value)}")
    if not value:
        raise InvalidEvent(name, "must not be empty")
    return value


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer"}
    return names.get(type(value), "number" if isinstance(value, float) else "null")


def parse_event(raw: bytes, *, now_ms: int | None = None) -> Event:
    """Validate one wire message and return the normalised `Event`.

    Raises `InvalidEvent` naming the field and the rule. `now_ms` is the receiver's clock
    (defaults to the wall clock), used to refuse events stamped more than 24 h in the future.

    >>> e = parse_event(b'{"event_id":"e1","user_id":"u1","ts":"2026-11-02T10:00:00+01:00",'
    ...                 b'"type":"click","price":9.5}')
    >>> (e.ts_ms, e.type, e.price)
    (1793610000000, 'click', 9.5)
    >>> parse_event(b'{"event_id":"e1","user_id":"u1","ts":1794042000000,"type":"bogus"}').raw_type
    'bogus'
    >>> parse_event(b'{"event_id":"e1","ts":1794042000000,"type":"click"}')
    Traceback (most recent call last):
    ...
    events.exceptions.InvalidEvent: user_id: is required
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("message", f"is {len(raw)} bytes, over the {MAX_EVENT_BYTES} limit")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("message", f"is not valid UTF-8 JSON ({exc})") from None
    if type(obj) is not dict:
        raise InvalidEvent("message", f"must be a JSON object, got {_json_type(obj)}")

    event_id = _required_str(obj, "event_id")
    user_id = _required_str(obj, "user_id")
    if len(event_id) > MAX_ID_CHARS:
        raise InvalidEvent("event_id", f"is longer than {MAX_ID_CHARS} characters")
    if len(user_id) > MAX_ID_CHARS:
        raise InvalidEvent("user_id", f"is longer than {MAX_ID_CHARS} characters")
    etype = _required_str(obj, "type")
    raw_type = None
    if etype not in _KNOWN_TYPES:
        raw_type, etype = etype[:MAX_ID_CHARS], OTHER_TYPE

    ts = obj.get("ts")
    if ts is None:
        raise InvalidEvent("ts", "is required")
    try:
        ts_ms = parse_ts_ms(ts)
    except ValueError as exc:
        raise InvalidEvent("ts", str(exc)) from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ts_ms > now + MAX_FUTURE_MS:
        raise InvalidEvent("ts", "is more than 24 h in the future")

    fields: dict[str, Any] = {}
    # Walk the fields that are present (usually a handful), not the whole contract.
    for name, value in obj.items():
        check = _CHECKS.get(name)
        if check is None or value is None:
            continue  # required fields (done above) and unknown extras (ignored)
        kind, max_chars = check
        if kind == "str":
            if type(value) is not str:
                raise InvalidEvent(name, f"must be a string, got {_json_type(value)}")
            if len(value) > max_chars:
                raise InvalidEvent(name, f"is longer than {max_chars} characters")
        elif kind == "amount":
            if type(value) is not float and type(value) is not int:
                raise InvalidEvent(name, f"must be a number, got {_json_type(value)}")
            if value < 0:
                raise InvalidEvent(name, "must be >= 0")
            if not math.isfinite(value):
                raise InvalidEvent(name, "must be finite")
            value = float(value)
        elif kind == "count":
            if type(value) is float and value.is_integer():
                value = int(value)
            elif type(value) is not int:
                raise InvalidEvent(name, f"must be an integer, got {_json_type(value)}")
            if value < 0:
                raise InvalidEvent(name, "must be >= 0")
            if value > MAX_COUNT:  # 1e300 is an integer too, which orjson cannot write back
                raise InvalidEvent(name, f"must be <= {MAX_COUNT}")
        else:  # country
            if type(value) is not str or len(value) != 2 or not value.isascii():
                raise InvalidEvent(name, "must be an ISO 3166-1 alpha-2 code such as 'DE'")
            value = value.upper()
            if not value.isalpha():
                raise InvalidEvent(name, "must be an ISO 3166-1 alpha-2 code such as 'DE'")
        fields[name] = value
    return Event(event_id, user_id, ts_ms, etype, raw_type, **fields)


def event_to_dict(event: Event) -> dict[str, Any]:
    """The wire form of an event (ts as epoch ms; absent fields left out; `other` keeps its
    original type), so that `parse_event(dumps_event(e)) == e`."""
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "ts": event.ts_ms,
        "type": event.raw_type if event.raw_type is not None else event.type,
    }
    for name in OPTIONAL_FIELDS:
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    return out


def dumps_event(event: Event) -> bytes:
    """`event_to_dict` as JSON bytes."""
    return orjson.dumps(event_to_dict(event))


def parse_label(line: bytes | str) -> Label:
    """Validate one label line (JSON) into a `Label`; raises `InvalidLabel` naming the field.

    >>> parse_label('{"user_id":"u1","label":"fraud","start":"2026-11-02T00:00:00Z",'
    ...             '"end":1793577660000,"kind":"card_testing"}').end_ms
    1793577660000
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidLabel(f"line: is not valid JSON ({exc})") from None
    if type(obj) is not dict:
        raise InvalidLabel("line: must be a JSON object")
    user_id = obj.get("user_id")
    if type(user_id) is not str or not user_id:
        raise InvalidLabel("user_id: is required and must be a non-empty string")
    label = obj.get("label")
    if label not in LABELS:
        raise InvalidLabel(f"label: must be one of {', '.join(LABELS)}, got {label!r}")
    bounds = []
    for name in ("start", "end"):
        try:
            bounds.append(parse_ts_ms(obj.get(name)))
        except ValueError as exc:
            raise InvalidLabel(f"{name}: {exc}") from None
    if bounds[0] > bounds[1]:
        raise InvalidLabel("end: must not be before start")
    extras = {}
    for name in ("kind", "source"):
        value = obj.get(name)
        if value is not None and type(value) is not str:
            raise InvalidLabel(f"{name}: must be a string")
        extras[name] = value
    return Label(user_id, label, bounds[0], bounds[1], **extras)


def label_to_dict(label: Label) -> dict[str, Any]:
    """The wire form of a label (timestamps as RFC 3339 UTC)."""
    out: dict[str, Any] = {
        "user_id": label.user_id,
        "label": label.label,
        "start": format_ts_ms(label.start_ms),
        "end": format_ts_ms(label.end_ms),
    }
    for name in ("kind", "source"):
        value = getattr(label, name)
        if value is not None:
            out[name] = value
    return out


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The wire form of an alert (timestamps as RFC 3339 UTC; empty optional parts left out)."""
    reasons = []
    for reason in alert.reasons:
        item: dict[str, Any] = {"code": reason.code, "detail": reason.detail}
        if reason.rule_id is not None:
            item["rule_id"] = reason.rule_id
        if reason.event_ids:
            item["event_ids"] = list(reason.event_ids)
        reasons.append(item)
    return {
        "alert_id": alert.alert_id,
        "type": alert.type,
        "user_id": alert.user_id,
        "event_id": alert.event_id,
        "event_ts": format_ts_ms(alert.event_ts_ms),
        "detected_at": format_ts_ms(alert.detected_at_ms),
        "score": alert.score,
        "threshold": alert.threshold,
        "severity": alert.severity,
        "model_version": alert.model_version,
        "window": asdict(alert.window),
        "reasons": reasons,
    }
