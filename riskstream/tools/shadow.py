"""`riskstream shadow report`: the live model against its shadow over a period.

Reads the alerts topic (`alerts`) and the shadow's (`alerts.shadow`, `stream.shadow`), keeps
the alerts detected in [since, until), and compares them per head (alert type):

- alerts: how many each raised (alert ids counted once: delivery is at-least-once);
- agreement: the (user, head) pairs both alerted, those only the live model alerted, those
  only the shadow alerted. Pairs, not alert ids: the two may alert one user on different events
  (one crosses its threshold earlier), and cooldowns make a user's later alerts depend on the
  earlier ones; a pair is the question an analyst asks: was this user flagged for this?
- precision where decided: with a review database, the analysts' final verdicts on live alerts
  (the `alert_verdicts` view). A pair counts as decided when any of its live alerts has a final
  verdict, as confirmed when any of them was confirmed. The shadow's alerts never reach
  analysts, so its precision rests on the pairs it shares with the live model, and its
  only-shadow pairs stay undecided: the report says on how many pairs each figure rests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from rich.table import Table

from events import parse_ts_ms
from riskstream.tools.alerts import ALERT_TYPES, AlertReader, iter_alert_batches
from riskstream.tools.exceptions import ToolError

__all__ = [
    "CONFIRMED",
    "HeadComparison",
    "ShadowReport",
    "compare",
    "parse_when",
    "read_topic",
    "read_verdicts",
    "report_table",
]

#: Final verdicts that confirm an alert (the review store's precision counts these).
CONFIRMED: Final = frozenset({"confirmed_fraud", "confirmed_abnormal_click"})
FALSE_POSITIVE: Final = "false_positive"
_DURATION: Final = re.compile(r"(\d+)([smhdw])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")

Alert = dict[str, Any]


def parse_when(value: str, flag: str, now_ms: int | None = None) -> int:
    """Epoch ms of an RFC 3339 time, a date (midnight UTC), epoch milliseconds, or a duration
    before now (`90m`, `24h`, `7d`); a `ToolError` naming the flag otherwise.

    >>> parse_when("2026-12-01", "--since")
    1796083200000
    >>> parse_when("2d", "--since", now_ms=1_000_000_000_000)
    999827200000
    >>> parse_when("yesterday", "--since")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    riskstream.tools.exceptions.ToolError: --since: 'yesterday' is not a time ...
    """
    text = value.strip()
    duration = _DURATION.fullmatch(text)
    if duration is not None:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return now - int(duration.group(1)) * _UNIT_S[duration.group(2)] * 1000
    if _DATE.fullmatch(text):
        text += "T00:00:00Z"
    try:
        return parse_ts_ms(int(text) if text.isdigit() else text)
    except (ValueError, TypeError):
        raise ToolError(
            f"{flag}: {value!r} is not a time (RFC 3339, a date, epoch ms, or a duration such "
            "as 24h or 7d)"
        ) from None


@dataclass(frozen=True)
class HeadComparison:
    """One head (alert type): the live model against the shadow."""

    head: str
    live_alerts: int
    shadow_alerts: int
    both: int  # (user, head) pairs both alerted
    only_live: int
    only_shadow: int
    live_decided: int  # live pairs with a final verdict
    live_confirmed: int
    shadow_decided: int  # shadow pairs with a final verdict (on a live alert of the pair)
    shadow_confirmed: int

    @property
    def agreement(self) -> float | None:
        """Pairs both alerted over pairs either alerted (None: neither alerted)."""
        either = self.both + self.only_live + self.only_shadow
        return self.both / either if either else None

    @property
    def live_precision(self) -> float | None:
        return self.live_confirmed / self.live_decided if self.live_decided else None

    @property
    def shadow_precision(self) -> float | None:
        return self.shadow_confirmed / self.shadow_decided if self.shadow_decided else None


@dataclass
class ShadowReport:
    """The comparison over [since, until), per head, and what it was read from."""

    since_ms: int
    until_ms: int | None
    live_versions: list[str]
    shadow_versions: list[str]
    heads: list[HeadComparison]
    decisions: bool  # whether analysts' verdicts were read
    ignored: dict[str, int] = field(default_factory=dict)  # records out of the period, etc.

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form: every count, and the ratios (null where undefined)."""
        heads = []
        for h in self.heads:
            row: dict[str, Any] = asdict(h)
            row["agreement"] = h.agreement
            row["live_precision"] = h.live_precision
            row["shadow_precision"] = h.shadow_precision
            heads.append(row)
        return {
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "live_versions": self.live_versions,
            "shadow_versions": self.shadow_versions,
            "decisions": self.decisions,
            "heads": heads,
            "ignored": self.ignored,
        }


def _detected_ms(alert: Alert) -> int | None:
    try:
        return parse_ts_ms(alert["detected_at"])
    except (KeyError, TypeError, ValueError):
        return None


def _in_period(
    alerts: Iterable[Alert], since_ms: int, until_ms: int | None, ignored: dict[str, int], side: str
) -> dict[str, Alert]:
    """The alerts detected in [since, until), one per alert id (a redelivery repeats one)."""
    kept: dict[str, Alert] = {}
    for alert in alerts:
        ms = _detected_ms(alert)
        aid = alert.get("alert_id")
        if ms is None or not isinstance(aid, str) or alert.get("type") not in ALERT_TYPES:
            ignored[f"{side}_malformed"] = ignored.get(f"{side}_malformed", 0) + 1
            continue
        if ms < since_ms or (until_ms is not None and ms >= until_ms):
            ignored[f"{side}_outside"] = ignored.get(f"{side}_outside", 0) + 1
            continue
        kept[aid] = alert
    return kept


def _pair(alert: Alert) -> tuple[str, str]:
    return (str(alert.get("user_id")), str(alert["type"]))


def _base_version(alert: Alert) -> str:
    """The model version (without the rules' `+rules-…` suffix)."""
    return str(alert.get("model_version", "")).split("+", 1)[0]


def compare(
    live: Iterable[Alert],
    shadow: Iterable[Alert],
    verdicts: Mapping[str, str] | None,
    since_ms: int,
    until_ms: int | None = None,
) -> ShadowReport:
    """The report on `live` and `shadow` alerts detected in [since, until); `verdicts`: final
    verdicts by alert id (None: no review database was read).

    >>> a = {"alert_id": "a1", "type": "fraud", "user_id": "u1",
    ...      "detected_at": "2026-12-01T10:00:00Z", "model_version": "v1"}
    >>> b = {**a, "alert_id": "a2", "user_id": "u2", "model_version": "v2"}
    >>> r = compare([a], [dict(a, model_version="v2"), b], {"a1": "confirmed_fraud"}, 0)
    >>> f = r.heads[0]
    >>> (f.live_alerts, f.shadow_alerts, f.both, f.only_live, f.only_shadow)
    (1, 2, 1, 0, 1)
    >>> (f.live_precision, f.shadow_precision, f.shadow_decided)
    (1.0, 1.0, 1)
    """
    ignored: dict[str, int] = {}
    live_in = _in_period(live, since_ms, until_ms, ignored, "live")
    shadow_in = _in_period(shadow, since_ms, until_ms, ignored, "shadow")
    # Per (user, head): the final verdicts on the pair's live alerts.
    pair_verdicts: dict[tuple[str, str], list[str]] = {}
    if verdicts:
        for aid, alert in live_in.items():
            verdict = verdicts.get(aid)
            if verdict is not None:
                pair_verdicts.setdefault(_pair(alert), []).append(verdict)
    heads = []
    for head in ALERT_TYPES:
        lives = [a for a in live_in.values() if a["type"] == head]
        shadows = [a for a in shadow_in.values() if a["type"] == head]
        lp, sp = {_pair(a) for a in lives}, {_pair(a) for a in shadows}

        def decided(pairs: set[tuple[str, str]]) -> tuple[int, int]:
            judged = [pair_verdicts[p] for p in pairs if p in pair_verdicts]
            return len(judged), sum(any(v in CONFIRMED for v in vs) for vs in judged)

        live_decided, live_confirmed = decided(lp)
        shadow_decided, shadow_confirmed = decided(sp)
        heads.append(HeadComparison(
            head, len(lives), len(shadows), len(lp & sp), len(lp - sp), len(sp - lp),
            live_decided, live_confirmed, shadow_decided, shadow_confirmed,
        ))  # fmt: skip
    return ShadowReport(
        since_ms,
        until_ms,
        sorted({_base_version(a) for a in live_in.values()}),
        sorted({_base_version(a) for a in shadow_in.values()}),
        heads,
        verdicts is not None,
        ignored,
    )


def read_topic(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[Alert]:
    """Every alert on `topic`, from the beginning until drained (no group, nothing committed)."""
    with AlertReader(bootstrap, topic, from_beginning=True) as reader:
        return [a for batch in iter_alert_batches(reader, timeout_s=timeout_s) for a in batch]


def read_verdicts(database_url: str, since_ms: int, until_ms: int | None) -> dict[str, str]:
    """Final verdicts by alert id on the live alerts detected in [since, until), from the review
    database (`riskstream review`'s `alert_verdicts`)."""
    try:
        import psycopg
    except ImportError:  # the review extra is not installed
        raise ToolError("--decisions: psycopg is not installed (pip install '.[review]')") from None
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(since_ms / 1000, UTC)
    until = datetime.fromtimestamp(until_ms / 1000, UTC) if until_ms is not None else None
    sql = (
        "SELECT alert_id, verdict FROM alert_verdicts WHERE verdict IS NOT NULL"
        " AND detected_at >= %s AND (%s::timestamptz IS NULL OR detected_at < %s)"
    )
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            rows = conn.execute(sql, (since, until, until)).fetchall()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolError(f"review database: {first}") from None
    return {str(aid): str(verdict) for aid, verdict in rows}


def _ratio(value: float | None, rests_on: int | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" + (f" ({rests_on:,})" if rests_on is not None else "")


def report_table(report: ShadowReport) -> Table:
    """The report as a rich table: one row per head."""
    from events import format_ts_ms

    until = format_ts_ms(report.until_ms) if report.until_ms is not None else "now"
    live = ", ".join(report.live_versions) or "no alert"
    shadow = ", ".join(report.shadow_versions) or "no alert"
    table = Table(
        title=f"live {live} vs shadow {shadow}, {format_ts_ms(report.since_ms)} → {until}",
        caption="agreement: (user, head) pairs both alerted / pairs either alerted; precision: "
        "confirmed / decided pairs (decided in brackets)"
        + ("" if report.decisions else "; no review database given (--database-url)"),
    )
    for name in ("head", "live alerts", "shadow alerts", "both", "only live", "only shadow",
                 "agreement", "live precision", "shadow precision"):  # fmt: skip
        table.add_column(name, justify="left" if name == "head" else "right", overflow="fold")
    for h in report.heads:
        table.add_row(
            h.head, f"{h.live_alerts:,}", f"{h.shadow_alerts:,}", f"{h.both:,}",
            f"{h.only_live:,}", f"{h.only_shadow:,}", _ratio(h.agreement),
            _ratio(h.live_precision, h.live_decided) if report.decisions else "–",
            _ratio(h.shadow_precision, h.shadow_decided) if report.decisions else "–",
        )  # fmt: skip
    return table
