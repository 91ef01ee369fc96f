"""The demo's scorecard: alerts matched to the replayed part's label episodes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from events import parse_ts_ms

__all__ = [
    "FEW_TO_LEARN",
    "EpisodeOutcome",
    "Scorecard",
    "match_episodes",
    "replayed_users",
    "score_alerts",
]

#: A kind with fewer episodes than this before the cut is too rare to learn here: may be missed.
FEW_TO_LEARN: Final = 5
GRACE_MS: Final = 3_600_000  # an alert up to an hour after an episode's end still counts as caught


@dataclass(frozen=True)
class EpisodeOutcome:
    """One label episode of the replayed part and the first alert of its type on it."""

    label: str
    kind: str
    user_id: str
    start_ms: int  # the episode's first moment the worker saw: its start, or the replay's
    end_ms: int
    first_alert_ms: int | None  # event time of the first alert of its type; None: missed

    @property
    def caught(self) -> bool:
        return self.first_alert_ms is not None

    @property
    def time_to_alert_s(self) -> float | None:
        """Event time from the episode's first replayed moment to its first alert."""
        if self.first_alert_ms is None:
            return None
        return max(0.0, (self.first_alert_ms - self.start_ms) / 1000)


@dataclass
class Scorecard:
    """How the stream did on the replayed events."""

    alerts_by_type: Counter[str] = field(default_factory=Counter)
    caught_by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)
    normal_users: int = 0
    normal_users_alerted: int = 0
    # episodes per kind that started before the trainer's cut: what the model could learn from
    learnt_from: dict[str, int] = field(default_factory=dict)

    @property
    def rare_kinds(self) -> list[str]:
        """Kinds of the replayed part with fewer than `FEW_TO_LEARN` episodes to learn from."""
        return [k for k, n in self.learnt_from.items() if n < FEW_TO_LEARN]

    @property
    def episodes(self) -> tuple[int, int]:
        """(caught, total) over every kind."""
        return (
            sum(c for c, _ in self.caught_by_kind.values()),
            sum(t for _, t in self.caught_by_kind.values()),
        )


def replayed_users(events: Path) -> set[str]:
    """The users with an event in the replayed file."""
    return {orjson.loads(line)["user_id"] for line in events.read_bytes().splitlines()}


def _labels(labels: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in labels.read_bytes().splitlines() if x.strip()]


def match_episodes(
    alerts: list[dict[str, Any]], users: set[str], labels: Path, from_ms: int
) -> list[EpisodeOutcome]:
    """Every episode overlapping the replayed part (ends at or after `from_ms`, user replayed),
    with the first alert of its type between its start and an hour after its end."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_user.setdefault(alert["user_id"], []).append(alert)
    out = []
    for ep in _labels(labels):
        start, end = parse_ts_ms(ep["start"]), parse_ts_ms(ep["end"])
        if end < from_ms or ep["user_id"] not in users:
            continue
        hits = [
            parse_ts_ms(a["event_ts"])
            for a in by_user.get(ep["user_id"], [])
            if a["type"] == ep["label"] and start <= parse_ts_ms(a["event_ts"]) <= end + GRACE_MS
        ]
        out.append(
            EpisodeOutcome(
                ep["label"],
                ep.get("kind") or ep["label"],
                ep["user_id"],
                max(start, from_ms),
                end,
                min(hits) if hits else None,
            )
        )
    return out


def score_alerts(
    alerts: list[dict[str, Any]], events: Path, labels: Path, from_ms: int
) -> Scorecard:
    """Match alerts to the episodes that overlap the replayed events (ts ≥ `from_ms`)."""
    users = replayed_users(events)
    card = Scorecard()
    for alert in alerts:
        card.alerts_by_type[alert["type"]] += 1
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for ep in match_episodes(alerts, users, labels, from_ms):
        total[ep.kind] += 1
        caught[ep.kind] += int(ep.caught)
    card.caught_by_kind = {k: (caught[k], total[k]) for k in sorted(total)}
    every = _labels(labels)
    before = Counter(ep.get("kind") or ep["label"] for ep in every
                     if parse_ts_ms(ep["start"]) < from_ms)  # fmt: skip
    card.learnt_from = {k: before[k] for k in card.caught_by_kind}
    all_labelled = {ep["user_id"] for ep in every}
    normal = users - all_labelled
    card.normal_users = len(normal)
    card.normal_users_alerted = len(normal & {a["user_id"] for a in alerts})
    return card
