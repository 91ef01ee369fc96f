"""The demo's scorecard: alerts matched to the replayed part's label episodes, and a timeline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from events import parse_ts_ms

__all__ = ["Scorecard", "score_alerts", "write_timeline"]

_GRACE_MS = 3_600_000  # an alert up to an hour after an episode's end still counts as caught


@dataclass
class Scorecard:
    """How the stream did on the replayed events."""

    alerts_by_type: Counter[str] = field(default_factory=Counter)
    caught_by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)
    normal_users: int = 0
    normal_users_alerted: int = 0

    @property
    def episodes(self) -> tuple[int, int]:
        """(caught, total) over every kind."""
        return (
            sum(c for c, _ in self.caught_by_kind.values()),
            sum(t for _, t in self.caught_by_kind.values()),
        )


def score_alerts(
    alerts: list[dict[str, Any]], events: Path, labels: Path, from_ms: int
) -> Scorecard:
    """Match alerts to the episodes that overlap the replayed events (ts ≥ `from_ms`)."""
    users: set[str] = set()
    for line in events.read_bytes().splitlines():
        users.add(orjson.loads(line)["user_id"])
    episodes = [orjson.loads(x) for x in labels.read_bytes().splitlines() if x.strip()]
    episodes = [
        ep for ep in episodes if parse_ts_ms(ep["end"]) >= from_ms and ep["user_id"] in users
    ]
    by_user: dict[str, list[dict[str, Any]]] = {}
    card = Scorecard()
    for alert in alerts:
        by_user.setdefault(alert["user_id"], []).append(alert)
        card.alerts_by_type[alert["type"]] += 1
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for ep in episodes:
        kind = ep.get("kind") or ep["label"]
        total[kind] += 1
        start, end = parse_ts_ms(ep["start"]), parse_ts_ms(ep["end"]) + _GRACE_MS
        if any(
            a["type"] == ep["label"] and start <= parse_ts_ms(a["event_ts"]) <= end
            for a in by_user.get(ep["user_id"], [])
        ):
            caught[kind] += 1
    card.caught_by_kind = {k: (caught[k], total[k]) for k in sorted(total)}
    all_labelled = {
        orjson.loads(x)["user_id"] for x in labels.read_bytes().splitlines() if x.strip()
    }
    normal = users - all_labelled
    card.normal_users = len(normal)
    card.normal_users_alerted = len(normal & set(by_user))
    return card


def write_timeline(
    events: Path, alerts: list[dict[str, Any]], labels: Path, from_ms: int, out: Path
) -> None:
    """PNG: events per minute (event time), alerts marked by type, episodes shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_min: Counter[int] = Counter()
    for line in events.read_bytes().splitlines():
        per_min[parse_ts_ms(orjson.loads(line)["ts"]) // 60_000] += 1
    fig, ax = plt.subplots(figsize=(12, 4.5))
    minutes = sorted(per_min)
    t0 = from_ms / 3_600_000  # hours are counted from the start of the replayed part
    ax.plot([m / 60 - t0 for m in minutes], [per_min[m] / 60 for m in minutes], lw=0.8,
             color="0.35", label="events/s (per minute)")  # fmt: skip
    colors = {"fraud": "tab:red", "abnormal_click": "tab:blue"}
    for line in labels.read_bytes().splitlines():
        ep = orjson.loads(line)
        start, end = parse_ts_ms(ep["start"]), parse_ts_ms(ep["end"])
        if end >= from_ms:
            start = max(start, from_ms)
            ax.axvspan(start / 3_600_000 - t0, max(end, start + 60_000) / 3_600_000 - t0,
                       color=colors.get(ep["label"], "0.8"), alpha=0.12, lw=0)  # fmt: skip
    top = max(per_min.values(), default=1) / 60
    for kind, color in colors.items():
        xs = [parse_ts_ms(a["event_ts"]) / 3_600_000 - t0 for a in alerts if a["type"] == kind]
        ax.scatter(xs, [top * 1.05] * len(xs), marker="v", color=color, s=30,
                   label=f"{kind} alerts ({len(xs)})")  # fmt: skip
    ax.set_xlabel("event time (hours since the start of the replayed part)")
    ax.set_ylabel("events per second")
    ax.set_title("riskstream demo: replayed events, alerts (▼) and label episodes (shaded)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
