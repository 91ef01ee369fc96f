"""Evaluation of per-event risk scores: event-, episode- and user-level metrics, thresholds.

Everything is computed from plain numpy arrays (no torch), so the same code scores the BERT and
the GBDT baseline. Event-level rates use `weight` as sample weight: where negatives were
subsampled, a kept negative stands for 1/keep-probability events, so the rates are those of the
full data. Every returned number is a plain Python float/int (NaN becomes None): JSON-ready.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    average_precision_score,
    classification_report,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from events.contract import LABELS

__all__ = [
    "EvalInput",
    "choose_threshold",
    "evaluate",
    "head_metrics",
    "normal_user_mask",
    "normal_users_alerted_per_1000_per_day",
    "pr_curve",
    "user_day_pairs",
]


_DAY_MS: Final = 86_400_000
_MIN_DAYS: Final = 1.0 / 24.0  # a set shorter than an hour still counts as an hour
_FloatArray = npt.NDArray[np.float64]
_BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class EvalInput:
    """Scored events of one split (N events) and the label episodes they belong to.

    `scores` [N, 2] probabilities and `y` [N, 2] 0/1 in `LABELS` order; `weight` [N] (1 /
    keep-probability of subsampled negatives, else 1); `user_ids` [N]; `ts_ms` [N] int64;
    `episode` [N, 2] index into `episodes` of the covering episode per head, else -1.
    `first_purchase_ms` maps an episode index to the ts of its first purchase (None: none).
    Arrays are coerced to float64/int64 on construction; swap `scores` with
    `dataclasses.replace` to evaluate another scorer on the same events.
    """

    scores: _FloatArray
    y: _FloatArray
    weight: _FloatArray
    user_ids: npt.NDArray[Any]
    ts_ms: npt.NDArray[np.int64]
    episode: npt.NDArray[np.int64]
    episodes: Sequence[Any]
    first_purchase_ms: Mapping[int, int | None]
    # distinct users and each event's index into them: computed once, reused by every metric
    _users: npt.NDArray[Any] = field(init=False, repr=False)
    _user_code: npt.NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        coerced = {
            "scores": np.asarray(self.scores, dtype=np.float64),
            "y": np.asarray(self.y, dtype=np.float64),
            "weight": np.asarray(self.weight, dtype=np.float64),
            "user_ids": np.asarray(self.user_ids),
            "ts_ms": np.asarray(self.ts_ms, dtype=np.int64),
            "episode": np.asarray(self.episode, dtype=np.int64),
        }
        n = len(coerced["ts_ms"])
        shapes = {"scores": (n, 2), "y": (n, 2), "weight": (n,), "user_ids": (n,)}
        shapes["episode"] = (n, 2)
        for name, shape in shapes.items():
            if coerced[name].shape != shape:
                raise ValueError(f"{name}: shape {coerced[name].shape}, expected {shape}")
        for name, value in coerced.items():
            object.__setattr__(self, name, value)
        users, code = np.unique(coerced["user_ids"], return_inverse=True)
        object.__setattr__(self, "_users", users)
        object.__setattr__(self, "_user_code", code.reshape(-1).astype(np.int64))


def _num(value: Any) -> float | None:
    """A plain float, or None where the value is undefined (NaN/inf/None)."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _plain(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays into JSON-able Python values (NaN → None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _num(value)
    return value


def _just_above(value: float) -> float:
    """The smallest float32 strictly above `value`.

    Thresholds are kept float32-representable so that storing one as float32 (ONNX, a bundle)
    and comparing float32 scores against it alerts exactly the same events.
    """
    v32 = np.float32(value)
    if float(v32) <= value:
        v32 = np.nextafter(v32, np.float32(np.inf))
    return float(v32)


def normal_user_mask(inp: EvalInput) -> _BoolArray:
    """Events of normal users: users with no episode (any label) within this set.

    A user is not normal if any of their events here is positive or inside an episode, or if an
    episode of theirs in `inp.episodes` overlaps the time span of the set's events.
    """
    n = len(inp.ts_ms)
    if n == 0:
        return np.zeros(0, dtype=bool)
    lo, hi = int(inp.ts_ms.min()), int(inp.ts_ms.max())
    flagged = {e.user_id for e in inp.episodes if int(e.start_ms) <= hi and int(e.end_ms) >= lo}
    bad_rows = (inp.y > 0).any(axis=1) | (inp.episode >= 0).any(axis=1)
    flagged.update(inp.user_ids[bad_rows].tolist())
    if not flagged:
        return np.ones(n, dtype=bool)
    # set lookups over the distinct users only, then broadcast back to the events
    users = inp._users.tolist()
    bad = np.fromiter((u in flagged for u in users), dtype=bool, count=len(users))
    mask: _BoolArray = ~bad[inp._user_code]
    return mask


def user_day_pairs(
    inp: EvalInput, head: int
) -> tuple[_FloatArray, npt.NDArray[np.int64], int, float] | None:
    """Per (normal user, UTC day) pair: its max score and its user (0..U-1); U, and the days
    spanned by the set's events (≥ 1/24): the alert rate's parts. None without normal users."""
    normal = normal_user_mask(inp)
    if not normal.any():
        return None
    span_days = (int(inp.ts_ms.max()) - int(inp.ts_ms.min())) / _DAY_MS
    users, user_idx = np.unique(inp._user_code[normal], return_inverse=True)
    user_idx = user_idx.reshape(-1).astype(np.int64)
    day = inp.ts_ms[normal] // _DAY_MS
    day -= day.min()
    key = user_idx * (int(day.max()) + 1) + day
    order = np.argsort(key, kind="stable")
    key, score = key[order], inp.scores[normal, head][order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    # reduceat over sorted keys: one max per pair without a Python loop
    pair_user = user_idx[order][starts]
    return np.maximum.reduceat(score, starts), pair_user, len(users), max(span_days, _MIN_DAYS)


def _user_day_max(inp: EvalInput, head: int) -> tuple[_FloatArray, float]:
    """Per (normal user, UTC day) max score, and the denominator users × days of the rate."""
    pairs = user_day_pairs(inp, head)
    if pairs is None:
        return np.zeros(0), 0.0
    pair_max, _, n_users, span_days = pairs
    return pair_max, n_users * span_days


def _alert_rate(pair_max: _FloatArray, user_days: float, threshold: float) -> float | None:
    if user_days <= 0:
        return None
    return float(np.count_nonzero(pair_max >= threshold)) / user_days * 1000.0


def normal_users_alerted_per_1000_per_day(
    inp: EvalInput, head: int, threshold: float
) -> float | None:
    """Alerted (normal user, UTC day) pairs per 1000 normal users per day at `threshold`.

    A pair is alerted when any of that user's events that day scores ≥ threshold; the
    denominator is normal users in the set × days spanned by the set's events (≥ 1/24).
    None when the set has no normal users.
    """
    pair_max, user_days = _user_day_max(inp, head)
    return _alert_rate(pair_max, user_days, threshold)


def _lowest_where(values_desc: _FloatArray, ok: _BoolArray) -> float:
    """Lowest threshold alerting exactly the events ≥ the lowest `values_desc[i]` with ok[i].

    `values_desc` are the distinct scores, descending; ok[i] says the alert set {s ≥ values[i]}
    meets the target. The threshold is just above the next lower distinct score, so lowering
    it any further alerts more. None ok → just above the top score (nothing alerts).
    """
    hits = np.flatnonzero(ok)
    if len(hits) == 0:
        return _just_above(float(values_desc[0])) if len(values_desc) else 1.0
    i = int(hits[-1])
    if i + 1 >= len(values_desc):
        return float(values_desc[i])  # every event may alert
    return min(_just_above(float(values_desc[i + 1])), float(values_desc[i]))


def _weighted_cum(inp: EvalInput, head: int) -> tuple[_FloatArray, _FloatArray, _FloatArray]:
    """Distinct scores (descending) and weighted TP / FP counts at threshold = each of them."""
    s = inp.scores[:, head]
    pos = inp.y[:, head] > 0.5
    order = np.argsort(-s, kind="stable")
    s, pos, w = s[order], pos[order], inp.weight[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each distinct score
    tp = np.cumsum(w * pos)[last]
    fp = np.cumsum(w * ~pos)[last]
    return s[last], tp, fp


def choose_threshold(
    inp: EvalInput,
    head: int,
    *,
    max_alerted_per_1000_per_day: float = 5.0,
    target_precision: float | None = None,
    target_fpr: float | None = None,
) -> float:
    """The lowest threshold meeting one target for head `head`.

    Default: at most `max_alerted_per_1000_per_day` alerted (normal user, day) pairs per 1000
    normal users per day (see `normal_users_alerted_per_1000_per_day`). `target_precision`:
    weighted event precision ≥ target. `target_fpr`: weighted event FPR ≤ target.
    Thresholds are float32-representable; an unreachable target gives a threshold above
    every score (nothing alerts). An empty set gives 0.5; the default target raises
    ValueError on a set without normal users.
    """
    if target_precision is not None and target_fpr is not None:
        raise ValueError("choose_threshold: give target_precision or target_fpr, not both")
    if len(inp.ts_ms) == 0:
        return 0.5
    if target_precision is not None or target_fpr is not None:
        values, tp, fp = _weighted_cum(inp, head)
        if target_precision is not None:
            ok = tp >= target_precision * (tp + fp)  # no division: exact at equality
        else:
            neg = float(fp[-1])
            ok = fp <= float(target_fpr or 0.0) * neg if neg > 0 else np.ones(len(fp), bool)
        return _lowest_where(values, ok)

    pair_max, user_days = _user_day_max(inp, head)
    if user_days <= 0:
        raise ValueError("choose_threshold: no normal users in this set to budget alerts on")
    budget = max_alerted_per_1000_per_day
    allowed = max(math.floor(budget * user_days / 1000.0), 0)
    # settle rounding with the very expression `_alert_rate` uses, so the two always agree
    while (allowed + 1) / user_days * 1000.0 <= budget:
        allowed += 1
    while allowed > 0 and allowed / user_days * 1000.0 > budget:
        allowed -= 1
    if len(pair_max) <= allowed:  # the budget covers every normal user-day: alert all
        return float(inp.scores[:, head].min())
    # k-th largest pair max is the first one that must stay silent: quantile-style search
    kth = float(np.partition(pair_max, len(pair_max) - allowed - 1)[len(pair_max) - allowed - 1])
    return _just_above(kth)


def _episode_stats(inp: EvalInput, head: int, alerted: _BoolArray) -> dict[str, Any]:
    """Episode recall, recall by kind, detection delays and caught-before-purchase."""
    ep = inp.episode[:, head]
    rows = np.flatnonzero(ep >= 0)
    out: dict[str, Any] = {
        "episode_recall": None,
        "episode_recall_by_kind": {},
        "median_detection_delay_events": None,
        "median_detection_delay_s": None,
    }
    if LABELS[head] == "fraud":
        out["caught_before_purchase"] = None
    if len(rows) == 0:
        return out
    rows = rows[np.lexsort((inp.ts_ms[rows], ep[rows]))]  # by episode, then time
    ids, starts, counts = np.unique(ep[rows], return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(ids)), counts)
    position = np.arange(len(rows)) - starts[group]
    big = np.iinfo(np.int64).max
    first_pos = np.full(len(ids), big, dtype=np.int64)
    np.minimum.at(first_pos, group, np.where(alerted[rows], position, big))
    caught = first_pos < big
    ts = inp.ts_ms[rows]
    first_alert_ts = np.where(caught, ts[starts + np.where(caught, first_pos, 0)], 0)

    out["episode_recall"] = float(caught.mean())
    by_kind: dict[str, list[int]] = {}
    for idx, hit in zip(ids.tolist(), caught.tolist(), strict=True):
        kind = getattr(inp.episodes[idx], "kind", None)
        entry = by_kind.setdefault("unknown" if kind is None else str(kind), [0, 0])
        entry[0] += int(hit)
        entry[1] += 1
    out["episode_recall_by_kind"] = dict(sorted(by_kind.items()))
    if caught.any():
        out["median_detection_delay_events"] = float(np.median(first_pos[caught]))
        delay_ms = first_alert_ts[caught] - ts[starts][caught]
        out["median_detection_delay_s"] = float(np.median(delay_ms)) / 1000.0
    if LABELS[head] == "fraud":
        with_purchase = before = 0
        for j, idx in enumerate(ids.tolist()):
            purchase_ms = inp.first_purchase_ms.get(idx)
            if purchase_ms is None:
                continue
            with_purchase += 1
            before += int(caught[j] and first_alert_ts[j] <= purchase_ms)
        out["caught_before_purchase"] = before / with_purchase if with_purchase else None
    return out


def _recall_at_fpr(y: _BoolArray, s: _FloatArray, w: _FloatArray, fpr_max: float) -> float:
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    return float(tpr[fpr <= fpr_max].max())


def head_metrics(inp: EvalInput, head: int, threshold: float) -> dict[str, Any]:
    """All metrics of head `head` at `threshold` (see the module doc; JSON-ready)."""
    s = inp.scores[:, head]
    y = inp.y[:, head] > 0.5
    w = inp.weight
    alerted = s >= threshold
    pos_w = float(w[y].sum())
    neg_w = float(w[~y].sum())
    both = pos_w > 0 and neg_w > 0  # ranking metrics need both classes (else sklearn warns)
    tp = float(w[alerted & y].sum())
    alerted_w = float(w[alerted].sum())
    out: dict[str, Any] = {
        "pr_auc": _num(average_precision_score(y, s, sample_weight=w)) if both else None,
        "roc_auc": _num(roc_auc_score(y, s, sample_weight=w)) if both else None,
        "recall_at_fpr_0.001": _recall_at_fpr(y, s, w, 0.001) if both else None,
        "recall_at_fpr_0.01": _recall_at_fpr(y, s, w, 0.01) if both else None,
        "threshold": float(threshold),
        "precision": tp / alerted_w if alerted_w > 0 else None,
        "recall": tp / pos_w if pos_w > 0 else None,
    }
    out.update(_episode_stats(inp, head, alerted))
    out["normal_users_alerted_per_1000_per_day"] = normal_users_alerted_per_1000_per_day(
        inp, head, threshold
    )
    out["positives"] = pos_w
    out["events"] = pos_w + neg_w
    report: Any = {}
    if len(s):
        report = classification_report(
            y.astype(int),
            alerted.astype(int),
            labels=[0, 1],
            target_names=["negative", LABELS[head]],
            sample_weight=w,
            output_dict=True,
            zero_division=0,
        )
    out["classification_report"] = _plain(report)
    return {k: _plain(v) for k, v in out.items()}


def evaluate(inp: EvalInput, thresholds: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """`head_metrics` of every head at its threshold: {"fraud": {...}, "abnormal_click": {...}}."""
    return {name: head_metrics(inp, i, thresholds[name]) for i, name in enumerate(LABELS)}


def pr_curve(inp: EvalInput, head: int) -> tuple[_FloatArray, _FloatArray]:
    """Weighted precision-recall curve (precision, recall), as sklearn orders them.

    With no positive (or no event) the curve is the single point precision 1, recall 0.
    """
    y = inp.y[:, head] > 0.5
    if not y.any():
        return np.array([1.0]), np.array([0.0])
    precision, recall, _ = precision_recall_curve(y, inp.scores[:, head], sample_weight=inp.weight)
    return np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
