"""What the case page shows, built from stored alert payloads: reasons, driving events and the
user's window as a timeline. Pure functions (no database, no web), so they are easy to test.

>>> parse_driving("masking these lowers the score most: payment_failed at "
...               "2026-11-02T18:41:55.120Z (−0.212); login at 2026-11-02T18:40:00.000Z (−0.05)",
...               ["e7", "e3"])[0]
{'event_id': 'e7', 'type': 'payment_failed', 'ts': '2026-11-02T18:41:55.120Z', 'drop': 0.212}
"""

from __future__ import annotations

import re
from typing import Any, Final

from events import format_ts_ms, parse_ts_ms

__all__ = ["case_view", "human_offset", "parse_driving"]

_DRIVER: Final = re.compile(r"(?P<type>[A-Za-z_]+) at (?P<ts>\S+) \([−-](?P<drop>[0-9.]+)\)")


def human_offset(seconds: float) -> str:
    """A signed duration a person reads at a glance.

    >>> human_offset(1.5), human_offset(754), human_offset(2472333.5)
    ('+1.5 s', '+12.6 min', '+28.6 d')
    """
    sign = "+" if seconds >= 0 else "−"
    s = abs(seconds)
    if s < 120:
        return f"{sign}{s:.1f} s"
    if s < 7200:
        return f"{sign}{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{sign}{s / 3600:.1f} h"
    return f"{sign}{s / 86400:.1f} d"


def parse_driving(detail: str, event_ids: list[str]) -> list[dict[str, Any]]:
    """The driving events of a `driving_events` reason: id, type, time, score drop."""
    found = []
    for i, m in enumerate(_DRIVER.finditer(detail)):
        found.append(
            {
                "event_id": event_ids[i] if i < len(event_ids) else "",
                "type": m["type"],
                "ts": m["ts"],
                "drop": float(m["drop"]),
            }
        )
    return found


def _ms(value: Any) -> int | None:
    try:
        return parse_ts_ms(value)
    except ValueError:
        return None


def _alert_view(payload: dict[str, Any], verdict: str | None) -> dict[str, Any]:
    window = payload.get("window") or {}
    counts = window.get("type_counts") or {}
    top = max(counts.values(), default=0) or 1
    bars = [
        {"type": t, "count": c, "width": round(100 * c / top)}
        for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    drivers: list[dict[str, Any]] = []
    for reason in payload.get("reasons") or []:
        if reason.get("code") == "driving_events":
            drivers = parse_driving(
                str(reason.get("detail", "")), list(reason.get("event_ids", []))
            )
    timeline: list[dict[str, Any]] = []
    first = window.get("first_ts_ms")
    if isinstance(first, int):
        timeline.append(
            {
                "ms": first,
                "what": "window opens",
                "detail": f"first of {window.get('events', '?')} events in the scored window",
            }
        )
    for d in drivers:
        ms = _ms(d["ts"])
        if ms is not None:
            timeline.append(
                {
                    "ms": ms,
                    "what": f"driving event: {d['type']}",
                    "detail": f"{d['event_id']} — masking it lowers the score by {d['drop']:.3f}",
                    "driver": True,
                }
            )
    scored = _ms(payload.get("event_ts"))
    if scored is not None:
        timeline.append(
            {"ms": scored, "what": "scored event", "detail": str(payload.get("event_id", ""))}
        )
    timeline.sort(key=lambda e: e["ms"])
    t0 = timeline[0]["ms"] if timeline else 0
    for entry in timeline:
        entry["at"] = format_ts_ms(entry["ms"])
        entry["offset"] = human_offset((entry["ms"] - t0) / 1000)
        entry["clock"] = "event time"
    # The alert is stamped by the worker's clock, the events by the world's: a replayed day or
    # a backlog puts them days apart, so the alert goes last with its own label, no offset.
    detected = _ms(payload.get("detected_at"))
    if detected is not None:
        timeline.append(
            {
                "ms": detected,
                "at": format_ts_ms(detected),
                "offset": "",
                "clock": "detection time",
                "what": f"alert raised: {payload.get('type')} ({payload.get('severity')})",
                "detail": f"score {payload.get('score', 0):.3f}, threshold "
                f"{payload.get('threshold', 0):.3f}",
                "alert": True,
            }
        )
    return {
        "payload": payload,
        "verdict": verdict,
        "reasons": [r for r in payload.get("reasons") or [] if r.get("code") != "driving_events"],
        "drivers": drivers,
        "bars": bars,
        "timeline": timeline,
        "window": window,
    }


def case_view(detail: dict[str, Any]) -> dict[str, Any]:
    """The case page's model: the case, each alert's view, the decisions."""
    alerts = [_alert_view(dict(a["payload"]), a.get("verdict")) for a in detail["alerts"]]
    return {
        "case": detail["case"],
        "alerts": alerts,
        "decisions": detail["decisions"],
        "user_id": detail["case"]["user_id"],
    }
