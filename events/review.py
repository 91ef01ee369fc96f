"""Alerts and decisions at the review edge: validate an alert message against the alert contract
(what `events/schemas/alert.json` says, checked in pure Python) and parse, validate and serialise
the analyst's `Decision` (`events/schemas/decision.json`).

>>> d = parse_decision(dumps_decision(Decision("d1", "7", ("a1",), ("fraud",), "u1",
...     "false_positive", 1793577600000, 1793577660000, "alice", 1793578000000, "ok")))
>>> d.verdict, d.label, d.window_end_ms
('false_positive', None, 1793577660000)
"""

from __future__ import annotations

import math
import re
from typing import Any, Final, cast

import orjson

from events.contract import (
    ALERT_TYPES,
    SEVERITIES,
    VERDICTS,
    Alert,
    AlertType,
    Decision,
    Reason,
    Severity,
    Verdict,
    WindowSummary,
)
from events.exceptions import InvalidAlert, InvalidDecision
from events.timeutil import format_ts_ms, parse_ts_ms

__all__ = [
    "MAX_ALERT_BYTES",
    "MAX_NOTE_CHARS",
    "decision_to_dict",
    "dumps_decision",
    "parse_alert",
    "parse_decision",
]

#: Larger alert messages are refused (a real one is a few KiB).
MAX_ALERT_BYTES: Final = 256 * 1024
#: An analyst's note, at most.
MAX_NOTE_CHARS: Final = 4000
_RFC3339: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_ALERT_FIELDS: Final = frozenset(
    (
        "alert_id",
        "type",
        "user_id",
        "event_id",
        "event_ts",
        "detected_at",
        "score",
        "threshold",
        "severity",
        "model_version",
        "window",
        "reasons",
    )
)
_WINDOW_INTS: Final = ("first_ts_ms", "last_ts_ms")
_WINDOW_COUNTS: Final = ("events", "distinct_devices", "distinct_ips", "distinct_countries")
_REASON_FIELDS: Final = frozenset(("code", "detail", "rule_id", "event_ids"))
_DECISION_FIELDS: Final = frozenset(
    (
        "decision_id",
        "case_id",
        "alert_ids",
        "alert_types",
        "user_id",
        "verdict",
        "window_start",
        "window_end",
        "analyst",
        "decided_at",
        "note",
        "model_versions",
    )
)


def _load(raw: bytes | str, err: type[InvalidAlert], limit: int) -> dict[str, Any]:
    if len(raw) > limit:
        raise err("message", f"is larger than {limit} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise err("message", f"is not valid JSON ({exc})") from None
    if type(obj) is not dict:
        raise err("message", "must be a JSON object")
    return cast(dict[str, Any], obj)


def _str(obj: dict[str, Any], name: str, err: type[InvalidAlert], *, empty: bool = False) -> str:
    value = obj.get(name)
    if value is None and name not in obj:
        raise err(name, "is required")
    if type(value) is not str:
        raise err(name, "must be a string")
    if not value and not empty:
        raise err(name, "must not be empty")
    return value


def _is_int(value: object) -> bool:
    return type(value) is int


def _number(obj: dict[str, Any], name: str, lo: float, hi: float, where: str) -> float:
    value: Any = obj.get(name)
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidAlert(f"{where}{name}", f"must be a number in [{lo:g}, {hi:g}]")
    return float(value)


def _time(obj: dict[str, Any], name: str, err: type[InvalidAlert]) -> int:
    value = _str(obj, name, err)
    if not _RFC3339.match(value):
        raise err(name, "must be an RFC 3339 date-time with an offset")
    try:
        return parse_ts_ms(value)
    except ValueError as exc:
        raise err(name, str(exc)) from None


def _extra(
    obj: dict[str, Any], allowed: frozenset[str], where: str, err: type[InvalidAlert]
) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise err(f"{where}{unknown[0]}", "is not a field of the contract")


def _window(value: object) -> WindowSummary:
    if type(value) is not dict:
        raise InvalidAlert("window", "must be an object")
    w = cast(dict[str, Any], value)
    _extra(
        w,
        frozenset((*_WINDOW_INTS, *_WINDOW_COUNTS, "span_s", "type_counts")),
        "window.",
        InvalidAlert,
    )
    for name in (*_WINDOW_INTS, *_WINDOW_COUNTS):
        if not _is_int(w.get(name)):
            raise InvalidAlert(f"window.{name}", "is required and must be an integer")
        if name in _WINDOW_COUNTS and w[name] < (1 if name == "events" else 0):
            raise InvalidAlert(f"window.{name}", "is out of range")
    span = _number(w, "span_s", 0.0, math.inf, "window.")
    counts = w.get("type_counts")
    if type(counts) is not dict or not all(
        _is_int(c) and c >= 0 for c in cast(dict[str, Any], counts).values()
    ):
        raise InvalidAlert("window.type_counts", "must map event types to counts >= 0")
    return WindowSummary(
        w["events"],
        span,
        w["first_ts_ms"],
        w["last_ts_ms"],
        dict(cast(dict[str, int], counts)),
        w["distinct_devices"],
        w["distinct_ips"],
        w["distinct_countries"],
    )


def _reasons(value: object) -> tuple[Reason, ...]:
    if type(value) is not list:
        raise InvalidAlert("reasons", "must be an array")
    out = []
    for i, item in enumerate(value):
        where = f"reasons[{i}]."
        if type(item) is not dict:
            raise InvalidAlert(f"reasons[{i}]", "must be an object")
        r = cast(dict[str, Any], item)
        _extra(r, _REASON_FIELDS, where, InvalidAlert)
        code = r.get("code")
        if type(code) is not str or not code:
            raise InvalidAlert(f"{where}code", "is required and must be a non-empty string")
        if type(r.get("detail")) is not str:
            raise InvalidAlert(f"{where}detail", "is required and must be a string")
        rule_id = r.get("rule_id")
        if "rule_id" in r and type(rule_id) is not str:
            raise InvalidAlert(f"{where}rule_id", "must be a string")
        ids = r.get("event_ids", [])
        if type(ids) is not list or not all(type(x) is str for x in ids):
            raise InvalidAlert(f"{where}event_ids", "must be an array of strings")
        out.append(Reason(code, r["detail"], rule_id, tuple(ids)))
    return tuple(out)


def parse_alert(raw: bytes | str) -> Alert:
    """Validate one alert message (JSON) against the alert contract; `InvalidAlert` names the
    field and the broken rule. Accepts exactly what `alert.json` accepts."""
    obj = _load(raw, InvalidAlert, MAX_ALERT_BYTES)
    _extra(obj, _ALERT_FIELDS, "", InvalidAlert)
    alert_id, user_id, event_id, model_version = (
        _str(obj, name, InvalidAlert)
        for name in ("alert_id", "user_id", "event_id", "model_version")
    )
    alert_type = obj.get("type")
    if alert_type not in ALERT_TYPES:
        raise InvalidAlert("type", f"must be one of {', '.join(ALERT_TYPES)}")
    severity = obj.get("severity")
    if severity not in SEVERITIES:
        raise InvalidAlert("severity", f"must be one of {', '.join(SEVERITIES)}")
    event_ts = _time(obj, "event_ts", InvalidAlert)
    detected_at = _time(obj, "detected_at", InvalidAlert)
    score = _number(obj, "score", 0.0, 1.0, "")
    threshold = _number(obj, "threshold", 0.0, 1.0, "")
    if "window" not in obj:
        raise InvalidAlert("window", "is required")
    if "reasons" not in obj:
        raise InvalidAlert("reasons", "is required")
    return Alert(
        alert_id,
        cast(AlertType, alert_type),
        user_id,
        event_id,
        event_ts,
        detected_at,
        score,
        threshold,
        cast(Severity, severity),
        model_version,
        _window(obj["window"]),
        _reasons(obj["reasons"]),
    )


def _str_list(obj: dict[str, Any], name: str, *, choices: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = obj.get(name)
    if type(value) is not list or not value:
        raise InvalidDecision(name, "must be a non-empty array of strings")
    items: list[Any] = value
    if not all(type(x) is str and x for x in items):
        raise InvalidDecision(name, "must be a non-empty array of strings")
    if choices and not all(x in choices for x in items):
        raise InvalidDecision(name, f"items must be one of {', '.join(choices)}")
    return tuple(items)


def parse_decision(raw: bytes | str) -> Decision:
    """Validate one decision message (JSON) against the decision contract."""
    obj = _load(raw, InvalidDecision, MAX_ALERT_BYTES)
    _extra(obj, _DECISION_FIELDS, "", InvalidDecision)
    ids = {
        n: _str(obj, n, InvalidDecision) for n in ("decision_id", "case_id", "user_id", "analyst")
    }
    verdict = obj.get("verdict")
    if verdict not in VERDICTS:
        raise InvalidDecision("verdict", f"must be one of {', '.join(VERDICTS)}")
    note = _str(obj, "note", InvalidDecision, empty=True) if "note" in obj else ""
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidDecision("note", f"must be at most {MAX_NOTE_CHARS} characters")
    start = _time(obj, "window_start", InvalidDecision)
    end = _time(obj, "window_end", InvalidDecision)
    if end < start:
        raise InvalidDecision("window_end", "must not be before window_start")
    versions = _str_list(obj, "model_versions") if "model_versions" in obj else ()
    return Decision(
        ids["decision_id"],
        ids["case_id"],
        _str_list(obj, "alert_ids"),
        cast(tuple[AlertType, ...], _str_list(obj, "alert_types", choices=ALERT_TYPES)),
        ids["user_id"],
        cast(Verdict, verdict),
        start,
        end,
        ids["analyst"],
        _time(obj, "decided_at", InvalidDecision),
        note,
        versions,
    )


def decision_to_dict(decision: Decision) -> dict[str, Any]:
    """The wire form of a decision (timestamps as RFC 3339 UTC)."""
    out: dict[str, Any] = {
        "decision_id": decision.decision_id,
        "case_id": decision.case_id,
        "alert_ids": list(decision.alert_ids),
        "alert_types": list(decision.alert_types),
        "user_id": decision.user_id,
        "verdict": decision.verdict,
        "window_start": format_ts_ms(decision.window_start_ms),
        "window_end": format_ts_ms(decision.window_end_ms),
        "analyst": decision.analyst,
        "decided_at": format_ts_ms(decision.decided_at_ms),
        "note": decision.note,
    }
    if decision.model_versions:
        out["model_versions"] = list(decision.model_versions)
    return out


def dumps_decision(decision: Decision) -> bytes:
    """`decision_to_dict` as JSON bytes (what goes on the decisions topic)."""
    return orjson.dumps(decision_to_dict(decision))
