"""The demo's picture, `timeline.png`: read at a glance which attack episodes were caught and how
fast, and when alerts fell on users with no episode.

Top: one row per episode of the replayed part, grouped by label and kind. Its bar is the
episode's span from its first replayed moment, on a log scale of event time (episodes last from
seconds to hours); a diamond marks the first alert of its type, and the row says how long that
took, or that it was missed. Bottom: every alert at its event time over the replayed part, one
row per type, inside an episode or on a user with none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import orjson

from events import parse_ts_ms
from riskstream.demo.summary import EpisodeOutcome, match_episodes, replayed_users

__all__ = ["MAX_ROWS", "write_timeline"]

MAX_ROWS: Final = 80  # episodes drawn; the rest are counted in the title
_COLORS: Final = {"fraud": "#c0392b", "abnormal_click": "#2471a3"}
_NAMES: Final = {"fraud": "fraud", "abnormal_click": "abnormal clicking"}
_FLOOR_S: Final = 1.0  # the log axis starts at 1 s: an alert on the episode's first event sits here
_TICKS: Final = ((1, "≤ 1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"),
                 (36000, "10 h"))  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _below(ax: Any, fig: Any) -> Any:
    """The axes' coordinates moved down past its tick labels and x label (in points, so the
    legend keeps clear of them whatever the figure's height)."""
    from matplotlib.transforms import offset_copy

    return offset_copy(ax.transAxes, fig=fig, y=-36, units="points")


def _hours(alerts: list[dict[str, Any]], from_ms: int, keep: Any) -> list[float]:
    """Event time, in hours since `from_ms`, of the alerts `keep` accepts."""
    return [(parse_ts_ms(a["event_ts"]) - from_ms) / 3_600_000 for a in alerts if keep(a)]


def _order(episodes: list[EpisodeOutcome]) -> list[EpisodeOutcome]:
    labels = list(_COLORS)
    return sorted(
        episodes,
        key=lambda e: (labels.index(e.label) if e.label in labels else 9, e.kind, e.start_ms),
    )


def write_timeline(
    events: Path, alerts: list[dict[str, Any]], labels: Path, from_ms: int, out: Path
) -> None:
    """Draw the picture for the replayed `events` (ts ≥ `from_ms`) and write it to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    users = replayed_users(events)
    last_ms = max(
        (parse_ts_ms(orjson.loads(line)["ts"]) for line in events.read_bytes().splitlines()),
        default=from_ms,
    )
    outcomes = _order(match_episodes(alerts, users, labels, from_ms))
    shown = outcomes[:MAX_ROWS]
    caught = sum(e.caught for e in outcomes)
    in_episode = {(e.user_id, e.label) for e in outcomes}
    labelled = {e.user_id for e in outcomes}

    # Fixed room in inches for titles, tick labels, axis labels and legends; the episode rows
    # take 0.24 in each, so neither panel's legend runs into the other whatever the count.
    top_h, bottom_h = 0.3 + 0.24 * max(len(shown), 1), 0.9
    gaps = (0.4, 1.25, 1.0)  # above the top panel, between the panels, below the bottom one
    height = gaps[0] + top_h + gaps[1] + bottom_h + gaps[2]
    fig = plt.figure(figsize=(11, height))
    top = fig.add_axes((0.17, (gaps[2] + bottom_h + gaps[1]) / height, 0.68, top_h / height))
    bottom = fig.add_axes((0.17, gaps[2] / height, 0.68, bottom_h / height))

    # -- top: one row per episode -------------------------------------------------------------
    top_s = _FLOOR_S
    for y, ep in enumerate(shown):
        color = _COLORS.get(ep.label, "0.5")
        span = max((ep.end_ms - ep.start_ms) / 1000, _FLOOR_S * 1.5)
        top_s = max(top_s, span)
        if ep.caught:
            top.barh(y, span - _FLOOR_S, left=_FLOOR_S, height=0.62, color=color, alpha=0.35,
                     lw=0)  # fmt: skip
            t = max(ep.time_to_alert_s or 0.0, _FLOOR_S)
            top_s = max(top_s, t)
            top.plot([t], [y], marker="D", ms=6, color=color, mec="black", mew=0.8, ls="none")
            wait = ep.time_to_alert_s or 0.0
            note = f"alerted after {_duration(wait)}" if wait >= 1 else "alerted at once"
            note_color = "black"
        else:
            top.barh(y, span - _FLOOR_S, left=_FLOOR_S, height=0.62, facecolor="none",
                     edgecolor=color, hatch="////", lw=0.8)  # fmt: skip
            note, note_color = "MISSED", "#b03a2e"
        top.annotate(note, (1.0, y), xycoords=("axes fraction", "data"), xytext=(6, 0),
                     textcoords="offset points", va="center", fontsize=8,
                     color=note_color)  # fmt: skip
    top.set_xscale("log")
    top.set_xlim(_FLOOR_S * 0.8, max(top_s * 1.6, 120))
    ticks = [(v, name) for v, name in _TICKS if v <= max(top_s * 1.6, 120)]
    top.set_xticks([v for v, _ in ticks], [name for _, name in ticks])
    top.minorticks_off()
    top.set_yticks(range(len(shown)), [f"{e.kind} · {e.user_id}" for e in shown], fontsize=7)
    top.set_ylim(len(shown) - 0.4, -0.6)  # first row at the top
    top.grid(axis="x", color="0.9", lw=0.6)
    top.set_axisbelow(True)
    top.set_xlabel("event time since the episode's first replayed event (log scale)")
    more = f" (first {MAX_ROWS} drawn)" if len(outcomes) > MAX_ROWS else ""
    top.set_title(
        f"Attack episodes in the replayed part: {caught} of {len(outcomes)} caught{more}",
        loc="left", fontsize=11, fontweight="bold",
    )  # fmt: skip
    handles = [
        Patch(facecolor=_COLORS["fraud"], alpha=0.35, label="fraud episode: its span"),
        Patch(
            facecolor=_COLORS["abnormal_click"],
            alpha=0.35,
            label="abnormal-clicking episode: its span",
        ),
        Line2D(
            [],
            [],
            marker="D",
            color="0.6",
            mec="black",
            ls="none",
            label="first alert of the episode's type",
        ),
        Patch(
            facecolor="none", edgecolor="0.4", hatch="////", label="missed: no alert of its type"
        ),
    ]
    top.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0),
               bbox_transform=_below(top, fig), ncol=4, fontsize=8, frameon=False)  # fmt: skip

    # -- bottom: every alert at its event time ------------------------------------------------
    hours = (last_ms - from_ms) / 3_600_000
    kinds = list(_COLORS)
    for y, kind in enumerate(kinds):
        mine = [a for a in alerts if a["type"] == kind]

        xs_true = _hours(mine, from_ms, lambda a, k=kind: (a["user_id"], k) in in_episode)
        xs_false = _hours(mine, from_ms, lambda a: a["user_id"] not in labelled)
        xs_other = _hours(
            mine,
            from_ms,
            lambda a, k=kind: a["user_id"] in labelled and (a["user_id"], k) not in in_episode,
        )
        bottom.plot(xs_true, [y + 0.12] * len(xs_true), "|", ms=14, mew=1.6,
                    color=_COLORS[kind])  # fmt: skip
        bottom.plot(xs_other, [y + 0.12] * len(xs_other), "|", ms=14, mew=1.6, color="0.55")
        bottom.plot(xs_false, [y - 0.22] * len(xs_false), "x", ms=7, mew=1.6, color="black")
    bottom.set_yticks(range(len(kinds)), [f"{_NAMES[k]} alerts" for k in kinds], fontsize=8)
    bottom.set_ylim(len(kinds) - 0.4, -0.6)
    bottom.set_xlim(0, max(hours, 0.1))
    bottom.set_xlabel("event time (hours since the start of the replayed part)")
    bottom.grid(axis="x", color="0.9", lw=0.6)
    bottom.set_axisbelow(True)
    false_users = {a["user_id"] for a in alerts if a["user_id"] not in labelled}
    bottom.set_title(
        f"All {len(alerts)} alerts; users without any episode alerted: {len(false_users)}",
        loc="left", fontsize=10, fontweight="bold",
    )  # fmt: skip
    bottom.legend(
        handles=[
            Line2D([], [], marker="|", ms=10, mew=1.6, color="0.3", ls="none",
                   label="alert inside an episode of its type (colour: type)"),
            Line2D([], [], marker="|", ms=10, mew=1.6, color="0.55", ls="none",
                   label="alert on an attacker, other type"),
            Line2D([], [], marker="x", ms=7, mew=1.6, color="black", ls="none",
                   label="alert on a user with no episode (false)"),
        ],
        loc="upper left", bbox_to_anchor=(0.0, 0.0), bbox_transform=_below(bottom, fig), ncol=3,
        fontsize=8, frameon=False,
    )  # fmt: skip
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
