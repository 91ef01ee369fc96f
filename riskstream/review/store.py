"""Cases, alerts and decisions in PostgreSQL (schema: `migrations/`), through psycopg 3 (async).

- `ingest_alert`: idempotent on `alert_id` (a redelivered alert changes nothing); a user's alert
  joins their open (or escalated) case, else opens one. One transaction, serialised per user by
  an advisory lock, so two consumers never open two cases for one user.
- `ingest_shadow_alert`: a shadow model's would-be alert (`alerts.shadow`) into `shadow_alerts`,
  idempotent on `alert_id`; it opens no case. `shadow_comparison` sets them beside the live
  alerts of the same period (the Precision page).
- `decide`: the analyst's verdict on a case, stored with the alerts it covers; a final verdict
  closes the case. The decision row is the outbox: `pending_decisions` / `mark_published` let
  the publisher put each one on the decisions topic at least once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from events import VERDICTS, Alert, Decision, decision_to_dict, format_ts_ms
from events.contract import ALERT_TYPES, SEVERITIES, Verdict
from riskstream.review.exceptions import ReviewError
from riskstream.tools.shadow import HeadComparison

__all__ = [
    "ACTIVE",
    "CaseClosed",
    "CaseFilters",
    "CaseNotFound",
    "PrecisionRow",
    "ShadowHead",
    "ShadowPeriod",
    "case_detail",
    "decide",
    "decisions_between",
    "filter_options",
    "ingest_alert",
    "ingest_shadow_alert",
    "mark_published",
    "pending_decisions",
    "precision_table",
    "queue",
    "shadow_comparison",
]

ACTIVE: Final = "active"  # the queue's default status filter: open or escalated
STATUSES: Final = (ACTIVE, "open", "escalated", "closed", "all")
SEVERITY_RANK: Final = {name: i for i, name in enumerate(SEVERITIES)}
FINAL_VERDICTS: Final = frozenset(v for v in VERDICTS if v != "escalated")
CONFIRMED: Final = ("confirmed_fraud", "confirmed_abnormal_click")
NO_RULE: Final = "(model only)"


class CaseNotFound(ReviewError):  # noqa: N818
    """No case has that id."""


class CaseClosed(ReviewError):  # noqa: N818
    """The case already has a final verdict."""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


async def ingest_alert(
    conn: AsyncConnection[Any],
    alert: Alert,
    payload: dict[str, Any],
    *,
    partition: int | None = None,
    offset: int | None = None,
) -> int | None:
    """Store `alert` in its user's open case; the case id, or None when the alert was stored
    before (nothing is changed then)."""
    rule_ids = sorted({r.rule_id for r in alert.reasons if r.rule_id})
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (alert.user_id,))
        cur = await conn.execute("SELECT 1 FROM alerts WHERE alert_id = %s", (alert.alert_id,))
        if await cur.fetchone() is not None:
            return None
        cur = await conn.execute(
            "SELECT case_id FROM cases WHERE user_id = %s AND status <> 'closed'",
            (alert.user_id,),
        )
        row = await cur.fetchone()
        if row is None:
            cur = await conn.execute(
                "INSERT INTO cases (user_id) VALUES (%s) RETURNING case_id", (alert.user_id,)
            )
            row = await cur.fetchone()
            assert row is not None
        else:
            await conn.execute("UPDATE cases SET updated_at = now() WHERE case_id = %s", row)
        case_id = int(row[0])
        await conn.execute(
            "INSERT INTO alerts (alert_id, case_id, user_id, type, severity, severity_rank, score,"
            " threshold, model_version, rule_ids, event_id, event_ts, window_start, detected_at,"
            " payload, source_partition, source_offset)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                alert.alert_id,
                case_id,
                alert.user_id,
                alert.type,
                alert.severity,
                SEVERITY_RANK[alert.severity],
                alert.score,
                alert.threshold,
                alert.model_version,
                rule_ids,
                alert.event_id,
                _dt(alert.event_ts_ms),
                _dt(min(alert.window.first_ts_ms, alert.event_ts_ms)),
                _dt(alert.detected_at_ms),
                Jsonb(payload),
                partition,
                offset,
            ),
        )
    return case_id


async def ingest_shadow_alert(
    conn: AsyncConnection[Any],
    alert: Alert,
    payload: dict[str, Any],
    *,
    partition: int | None = None,
    offset: int | None = None,
) -> bool:
    """Store a shadow model's would-be alert (no case: analysts never see it); False when it
    was stored before (a redelivery changes nothing)."""
    rule_ids = sorted({r.rule_id for r in alert.reasons if r.rule_id})
    cur = await conn.execute(
        "INSERT INTO shadow_alerts (alert_id, user_id, type, severity, score, threshold,"
        " model_version, rule_ids, event_id, event_ts, detected_at, payload, source_partition,"
        " source_offset) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (alert_id) DO NOTHING",
        (
            alert.alert_id,
            alert.user_id,
            alert.type,
            alert.severity,
            alert.score,
            alert.threshold,
            alert.model_version,
            rule_ids,
            alert.event_id,
            _dt(alert.event_ts_ms),
            _dt(alert.detected_at_ms),
            Jsonb(payload),
            partition,
            offset,
        ),
    )
    return cur.rowcount == 1


@dataclass(frozen=True)
class CaseFilters:
    """The queue's filters; None or "" means any."""

    type: str | None = None
    severity: str | None = None
    status: str = ACTIVE
    model_version: str | None = None
    rule: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """SQL conditions on cases `c` (alert conditions: the case has a matching alert)."""
        conds: list[str] = []
        args: list[Any] = []
        status = self.status or ACTIVE
        if status not in STATUSES:
            raise ReviewError(f"status: must be one of {', '.join(STATUSES)}")
        if status == ACTIVE:
            conds.append("c.status <> 'closed'")
        elif status != "all":
            conds.append("c.status = %s")
            args.append(status)
        alert_conds: list[str] = []
        if self.type:
            alert_conds.append("a.type = %s")
            args.append(self.type)
        if self.severity:
            alert_conds.append("a.severity = %s")
            args.append(self.severity)
        if self.model_version:
            alert_conds.append("a.model_version = %s")
            args.append(self.model_version)
        if self.rule:
            if self.rule == NO_RULE:
                alert_conds.append("cardinality(a.rule_ids) = 0")
            else:
                alert_conds.append("%s = ANY (a.rule_ids)")
                args.append(self.rule)
        if alert_conds:
            conds.append(
                "EXISTS (SELECT 1 FROM alerts a WHERE a.case_id = c.case_id AND "
                + " AND ".join(alert_conds)
                + ")"
            )
        return (" WHERE " + " AND ".join(conds)) if conds else "", args


async def queue(
    conn: AsyncConnection[Any], filters: CaseFilters, limit: int = 200
) -> list[dict[str, Any]]:
    """Cases matching `filters`, most severe first, then highest score, then newest."""
    where, args = filters.where()
    sql = (
        "SELECT c.case_id, c.user_id, c.status, c.verdict, c.opened_at, c.updated_at,"
        " s.alerts, s.max_rank, s.max_score, s.types, s.model_versions, s.rules,"
        " s.reason_codes, s.last_event, s.last_detected, s.threshold"
        " FROM cases c JOIN LATERAL ("
        "  SELECT count(*) AS alerts, max(severity_rank) AS max_rank, max(score) AS max_score,"
        "   array_agg(DISTINCT type) AS types, array_agg(DISTINCT model_version) AS model_versions,"
        "   (SELECT array_agg(DISTINCT r) FROM alerts a2, unnest(a2.rule_ids) r"
        "     WHERE a2.case_id = c.case_id) AS rules,"
        "   (SELECT array_agg(DISTINCT r->>'code' ORDER BY r->>'code')"
        "     FROM alerts a3, jsonb_array_elements(a3.payload->'reasons') r"
        "     WHERE a3.case_id = c.case_id AND r->>'code' NOT IN ('rule', 'driving_events'))"
        "   AS reason_codes,"
        "   max(event_ts) AS last_event, max(detected_at) AS last_detected,"
        "   min(threshold) AS threshold"
        "  FROM alerts a WHERE a.case_id = c.case_id) s ON true"
        f"{where} ORDER BY s.max_rank DESC, s.max_score DESC, s.last_detected DESC LIMIT %s"
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.encode(), [*args, limit])
        rows = await cur.fetchall()
    for row in rows:
        row["severity"] = SEVERITIES[int(row.pop("max_rank"))]
        row["rules"] = row["rules"] or []
        row["reason_codes"] = row["reason_codes"] or []  # the window's facts, beside the rules
    return rows


async def filter_options(conn: AsyncConnection[Any]) -> dict[str, list[str]]:
    """The values the queue's model-version and rule filters offer."""
    cur = await conn.execute("SELECT DISTINCT model_version FROM alerts ORDER BY 1")
    versions = [str(r[0]) for r in await cur.fetchall()]
    cur = await conn.execute("SELECT DISTINCT unnest(rule_ids) FROM alerts ORDER BY 1")
    rules = [str(r[0]) for r in await cur.fetchall()]
    return {"model_versions": versions, "rules": [*rules, NO_RULE]}


async def case_detail(conn: AsyncConnection[Any], case_id: int) -> dict[str, Any]:
    """The case, its alerts (payloads, oldest first) and its decisions (newest first)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM cases WHERE case_id = %s", (case_id,))
        case = await cur.fetchone()
        if case is None:
            raise CaseNotFound(f"no case {case_id}")
        await cur.execute(
            "SELECT alert_id, payload, verdict FROM alert_verdicts WHERE case_id = %s"
            " ORDER BY detected_at, alert_id",
            (case_id,),
        )
        alerts = await cur.fetchall()
        await cur.execute(
            "SELECT * FROM decisions WHERE case_id = %s ORDER BY decided_at DESC", (case_id,)
        )
        decisions = await cur.fetchall()
    return {"case": case, "alerts": alerts, "decisions": decisions}


async def decide(
    conn: AsyncConnection[Any],
    case_id: int,
    verdict: Verdict,
    analyst: str,
    note: str,
    *,
    now_ms: int | None = None,
) -> Decision:
    """Record `verdict` on every alert of the case; a final verdict closes it. `CaseClosed`
    when the case already has one."""
    if verdict not in VERDICTS:
        raise ReviewError(f"verdict: must be one of {', '.join(VERDICTS)}")
    decided_ms = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT user_id, status FROM cases WHERE case_id = %s FOR UPDATE", (case_id,)
        )
        row = await cur.fetchone()
        if row is None:
            raise CaseNotFound(f"no case {case_id}")
        user_id, status = str(row[0]), str(row[1])
        if status == "closed":
            raise CaseClosed(f"case {case_id} already has a final verdict")
        cur = await conn.execute(
            "SELECT array_agg(alert_id ORDER BY detected_at, alert_id),"
            " array_agg(DISTINCT type), array_agg(DISTINCT model_version),"
            " min(window_start), max(event_ts) FROM alerts WHERE case_id = %s",
            (case_id,),
        )
        agg = await cur.fetchone()
        if agg is None or not agg[0]:
            raise ReviewError(f"case {case_id} has no alerts")
        decision = Decision(
            decision_id=str(uuid.uuid4()),
            case_id=str(case_id),
            alert_ids=tuple(agg[0]),
            alert_types=tuple(sorted(agg[1])),
            user_id=user_id,
            verdict=verdict,
            window_start_ms=_ms(agg[3]),
            window_end_ms=_ms(agg[4]),
            analyst=analyst,
            decided_at_ms=decided_ms,
            note=note,
            model_versions=tuple(sorted(agg[2])),
        )
        await conn.execute(
            "INSERT INTO decisions (decision_id, case_id, user_id, verdict, alert_ids,"
            " alert_types, model_versions, window_start, window_end, analyst, note, decided_at,"
            " payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                decision.decision_id,
                case_id,
                user_id,
                verdict,
                list(decision.alert_ids),
                list(decision.alert_types),
                list(decision.model_versions),
                _dt(decision.window_start_ms),
                _dt(decision.window_end_ms),
                analyst,
                note,
                _dt(decided_ms),
                Jsonb(decision_to_dict(decision)),
            ),
        )
        if verdict in FINAL_VERDICTS:
            await conn.execute(
                "UPDATE cases SET status = 'closed', verdict = %s, closed_at = %s,"
                " updated_at = %s WHERE case_id = %s",
                (verdict, _dt(decided_ms), _dt(decided_ms), case_id),
            )
        else:
            await conn.execute(
                "UPDATE cases SET status = 'escalated', verdict = %s, updated_at = %s"
                " WHERE case_id = %s",
                (verdict, _dt(decided_ms), case_id),
            )
    return decision


async def pending_decisions(conn: AsyncConnection[Any], limit: int = 100) -> list[bytes]:
    """Wire forms (JSON) of decisions not yet published, oldest first."""
    cur = await conn.execute(
        "SELECT payload FROM decisions WHERE published_at IS NULL ORDER BY decided_at LIMIT %s",
        (limit,),
    )
    return [orjson.dumps(r[0]) for r in await cur.fetchall()]


async def mark_published(conn: AsyncConnection[Any], decision_ids: Sequence[str]) -> None:
    """Note that these decisions are on the topic."""
    if decision_ids:
        await conn.execute(
            "UPDATE decisions SET published_at = now() WHERE decision_id = ANY (%s::uuid[])",
            (list(decision_ids),),
        )


async def decisions_between(
    conn: AsyncConnection[Any], since_ms: int | None, until_ms: int | None
) -> list[dict[str, Any]]:
    """Decisions' wire forms known in [since, until), oldest first."""
    cur = await conn.execute(
        "SELECT payload FROM decisions WHERE (%s::timestamptz IS NULL OR decided_at >= %s)"
        " AND (%s::timestamptz IS NULL OR decided_at < %s) ORDER BY decided_at, decision_id",
        (
            *((_dt(since_ms),) * 2 if since_ms is not None else (None, None)),
            *((_dt(until_ms),) * 2 if until_ms is not None else (None, None)),
        ),
    )
    return [dict(r[0]) for r in await cur.fetchall()]


@dataclass(frozen=True)
class PrecisionRow:
    """Alerts of one model version (or rule): volume, how many were reviewed, how many held."""

    key: str
    alerts: int
    days: float
    reviewed: int
    confirmed: int
    false_positive: int

    @property
    def per_day(self) -> float:
        return self.alerts / self.days if self.days > 0 else float(self.alerts)

    @property
    def reviewed_share(self) -> float:
        return self.reviewed / self.alerts if self.alerts else 0.0

    @property
    def precision(self) -> float | None:
        """Confirmed / (confirmed + false positive); None before any final verdict."""
        judged = self.confirmed + self.false_positive
        return self.confirmed / judged if judged else None


async def precision_table(
    conn: AsyncConnection[Any], by: Literal["model_version", "rule"]
) -> list[PrecisionRow]:
    """Per model version or per rule: alerts, alerts per day (over the days between its first
    and last alert, at least one), reviewed (a final verdict), confirmed, false positives."""
    key = (
        "model_version"
        if by == "model_version"
        else f"unnest(CASE WHEN cardinality(rule_ids) = 0 THEN ARRAY['{NO_RULE}'] "
        "ELSE rule_ids END)"
    )
    sql = (
        f"SELECT k, count(*), greatest(1.0, extract(epoch FROM max(detected_at) -"
        " min(detected_at)) / 86400.0), count(verdict),"
        " count(*) FILTER (WHERE verdict IN ('confirmed_fraud', 'confirmed_abnormal_click')),"
        " count(*) FILTER (WHERE verdict = 'false_positive')"
        f" FROM (SELECT {key} AS k, detected_at, verdict FROM alert_verdicts) v"
        " GROUP BY k ORDER BY count(*) DESC, k"
    )
    cur = await conn.execute(sql.encode())
    return [
        PrecisionRow(str(k), int(n), float(days), int(rev), int(ok), int(fp))
        for k, n, days, rev, ok, fp in await cur.fetchall()
    ]


#: One head's live-vs-shadow counts: the same record `riskstream shadow report` prints.
ShadowHead = HeadComparison


@dataclass(frozen=True)
class ShadowPeriod:
    """A shadow model version over its period (its first alert to its last): the live model
    versions that alerted then, and the comparison per head."""

    shadow_version: str
    since: datetime
    until: datetime
    live_versions: list[str]
    heads: list[ShadowHead]


_SHADOW_SQL: Final = """
WITH s AS (
    SELECT split_part(model_version, '+', 1) AS shadow_version, type, user_id, detected_at
    FROM shadow_alerts
), periods AS (
    SELECT shadow_version, min(detected_at) AS since, max(detected_at) AS until
    FROM s GROUP BY shadow_version
), l AS (
    SELECT p.shadow_version, a.type, a.user_id, a.verdict,
           split_part(a.model_version, '+', 1) AS live_version
    FROM periods p JOIN alert_verdicts a ON a.detected_at BETWEEN p.since AND p.until
), lp AS (
    SELECT shadow_version, type, user_id, count(*) AS alerts,
           bool_or(verdict IS NOT NULL) AS decided,
           bool_or(verdict IN ('confirmed_fraud', 'confirmed_abnormal_click')) AS confirmed
    FROM l GROUP BY shadow_version, type, user_id
), sp AS (
    SELECT shadow_version, type, user_id, count(*) AS alerts
    FROM s GROUP BY shadow_version, type, user_id
)
SELECT coalesce(lp.shadow_version, sp.shadow_version) AS v, coalesce(lp.type, sp.type) AS t,
       coalesce(sum(lp.alerts), 0), coalesce(sum(sp.alerts), 0),
       count(*) FILTER (WHERE lp.user_id IS NOT NULL AND sp.user_id IS NOT NULL),
       count(*) FILTER (WHERE sp.user_id IS NULL),
       count(*) FILTER (WHERE lp.user_id IS NULL),
       count(*) FILTER (WHERE lp.decided),
       count(*) FILTER (WHERE lp.confirmed),
       count(*) FILTER (WHERE lp.decided AND sp.user_id IS NOT NULL),
       count(*) FILTER (WHERE lp.confirmed AND sp.user_id IS NOT NULL)
FROM lp FULL JOIN sp ON lp.shadow_version = sp.shadow_version AND lp.type = sp.type
                     AND lp.user_id = sp.user_id
GROUP BY 1, 2
"""


async def shadow_comparison(conn: AsyncConnection[Any]) -> list[ShadowPeriod]:
    """Per shadow model version (newest period first): over its period, from its first alert
    to its last (`detected_at`, the worker's clock, which stamps live and shadow alike), the
    live alerts against the shadow's per head — alerts, the (user, head) pairs both alerted,
    only one, and precision where analysts decided. Analysts only see live alerts, so a pair
    is decided by a final verdict on one of its live alerts (confirmed when one was
    confirmed), and the shadow's precision rests on the pairs it shares with the live model."""
    cur = await conn.execute(
        "SELECT split_part(s.model_version, '+', 1) AS v, min(s.detected_at), max(s.detected_at),"
        " (SELECT array_agg(DISTINCT split_part(a.model_version, '+', 1)) FROM alerts a"
        "  WHERE a.detected_at BETWEEN min(s.detected_at) AND max(s.detected_at))"
        " FROM shadow_alerts s GROUP BY 1 ORDER BY 3 DESC, 1"
    )
    periods = await cur.fetchall()
    if not periods:
        return []
    cur = await conn.execute(_SHADOW_SQL.encode())
    counts = {(str(r[0]), str(r[1])): tuple(int(x) for x in r[2:]) for r in await cur.fetchall()}
    out = []
    for version, since, until, live_versions in periods:
        heads = [
            ShadowHead(head, *counts.get((str(version), head), (0,) * 9)) for head in ALERT_TYPES
        ]
        out.append(ShadowPeriod(str(version), since, until, sorted(live_versions or []), heads))
    return out


def when(ms: int | None) -> str:
    """RFC 3339 UTC of epoch ms, for templates ('' for None)."""
    return format_ts_ms(ms) if ms is not None else ""
