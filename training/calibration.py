"""Measure what a score means on the validation users: severity cuts and the shortest window that
may alert (the definitions are in events/calibration.py; the bundle carries the result).

Precision is counted in alerts as an analyst meets them, not in events: every validation event
scoring at or above a cut belongs to one *case* — the label episode it lies in (true), or else
its user's UTC day (false) — and a case is alerted when any of its events reaches the cut. So a
bot whose 500 events all score high counts once, like the normal user whose one page view did
(the worker's cooldown, too, turns a run of high scores into one alert).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from events import LABELS
from events.calibration import (
    CRITICAL_PRECISION,
    HIGH_PRECISION,
    MIN_SUPPORT,
    SHORT_WINDOW_EVENTS,
    HeadCalibration,
)
from training.metrics import EvalInput

__all__ = ["calibrate", "calibrate_head", "lowest_precise_cut"]

_Array = npt.NDArray[Any]
_DAY_MS: Final = 86_400_000


def lowest_precise_cut(
    scores: _Array, true: _Array, target: float, min_support: int = MIN_SUPPORT
) -> float | None:
    """The lowest score x such that at least `target` of the cases scoring ≥ x are true, over
    at least `min_support` of them; None when no x is. One score per case (its highest).

    >>> s = np.array([0.9, 0.8, 0.7, 0.6]); t = np.array([True, True, False, True])
    >>> lowest_precise_cut(s, t, 0.75, min_support=1)
    0.6
    >>> lowest_precise_cut(s, t, 0.9, min_support=1)
    0.8
    >>> lowest_precise_cut(s, t, 0.9, min_support=3) is None
    True
    """
    if len(scores) == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], true[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # the last index of each distinct score
    tp = np.cumsum(t)[last]
    count = last + 1
    ok = (tp >= target * count) & (count >= min_support)
    hits = np.flatnonzero(ok)
    return float(s[last[hits[-1]]]) if len(hits) else None


def _cases(scores: _Array, true: _Array, case: _Array, sel: _Array) -> tuple[_Array, _Array]:
    """Per case among the events `sel`: its highest score and whether it is true."""
    if not sel.any():
        return np.zeros(0), np.zeros(0, dtype=bool)
    ids, inverse = np.unique(case[sel], return_inverse=True)
    best = np.full(len(ids), -np.inf)
    np.maximum.at(best, inverse, scores[sel])
    truth = np.zeros(len(ids), dtype=bool)
    truth[inverse[true[sel]]] = True
    return best, truth


def _precision(scores: _Array, true: _Array, case: _Array, sel: _Array) -> dict[str, Any]:
    _, truth = _cases(scores, true, case, sel)
    return {
        "alerts": len(truth),
        "precision": float(truth.mean()) if len(truth) else None,
    }


def calibrate_head(
    scores: _Array, true: _Array, case: _Array, lengths: _Array, threshold: float
) -> HeadCalibration:
    """One head's calibration from its validation events: scores, truth, the case each event
    belongs to (an int id: its episode, else its user-day) and its window length."""
    alerted = scores >= threshold
    longer = alerted & (lengths > SHORT_WINDOW_EVENTS)
    reference = _precision(scores, true, case, longer)
    measured: dict[str, Any] = {
        "unit": "cases: an episode, or a user's day outside any",
        "all": _precision(scores, true, case, alerted),
        "longer_windows": reference,
    }
    allowed = []
    for n in range(1, SHORT_WINDOW_EVENTS + 1):
        short = _precision(scores, true, case, alerted & (lengths == n))
        measured[f"windows_of_{n}"] = short
        allowed.append(
            reference["precision"] is not None
            and short["precision"] is not None
            and short["alerts"] >= MIN_SUPPORT
            and short["precision"] >= reference["precision"]
        )
    # The shortest length from which every length up to the long windows is allowed.
    min_events = SHORT_WINDOW_EVENTS + 1
    for n in range(SHORT_WINDOW_EVENTS, 0, -1):
        if not allowed[n - 1]:
            break
        min_events = n
    best, truth = _cases(scores, true, case, alerted & (lengths >= min_events))
    return HeadCalibration(
        critical_from=lowest_precise_cut(best, truth, CRITICAL_PRECISION),
        high_from=lowest_precise_cut(best, truth, HIGH_PRECISION),
        min_events=min_events,
        measured=measured,
    )


def _case_ids(inp: EvalInput, head: int) -> tuple[_Array, _Array]:
    """Truth per event and its case id: episodes are 0..E-1, user-days follow."""
    true = inp.y[:, head] > 0.5
    episode = inp.episode[:, head]
    _, user = np.unique(inp.user_ids, return_inverse=True)
    day = inp.ts_ms // _DAY_MS
    day = day - (day.min() if len(day) else 0)
    n_episodes = int(episode.max()) + 1 if len(episode) else 0
    user_day = n_episodes + user.reshape(-1).astype(np.int64) * (int(day.max(initial=0)) + 1) + day
    # A positive event outside any known episode is its own user-day case, still true.
    case = np.where(episode >= 0, episode, user_day)
    return true, case


def calibrate(
    inp: EvalInput, scores: _Array, lengths: _Array, thresholds: Mapping[str, float]
) -> dict[str, HeadCalibration]:
    """Every head's calibration on the validation events of `inp`, scored by what ships
    (`scores` [N, 2]: the model's or the blend's), with their window `lengths` [N]."""
    lengths = np.asarray(lengths)
    out: dict[str, HeadCalibration] = {}
    for h, head in enumerate(LABELS):
        true, case = _case_ids(inp, h)
        out[head] = calibrate_head(
            np.asarray(scores[:, h], dtype=np.float64), true, case, lengths,
            float(thresholds[head]),
        )  # fmt: skip
    return out
