"""The stacked ensemble: the sequence model and the GBDT on the window aggregates, blended per
head by a logistic regression fitted on validation windows (`events.trees.Blend`).

Both learn from the same training examples; the blend's three numbers per head come from the
validation users, like the thresholds, so the test split stays untouched. What ships is
decided per head on validation too (`choose_blend`): the model alone, the GBDT alone or the
blend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from events.trees import Blend

__all__ = ["MIN_GAIN", "choose_blend", "fit_blend"]

#: Per head, the GBDT or the blend ships only when it beats the simpler choice on validation
#: by more than this PR-AUC: below it, the simpler scorer wins.
MIN_GAIN: Final = 0.0005


def _logit(p: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    out: npt.NDArray[np.float64] = np.log(q) - np.log1p(-q)
    return out


def fit_blend(
    heads: Sequence[str],
    model_probs: npt.NDArray[Any],
    gbdt_raw: npt.NDArray[Any],
    y: npt.NDArray[Any],
    weight: npt.NDArray[Any],
) -> Blend:
    """Per head, a logistic regression on (logit of the model, log-odds of the GBDT) over the
    validation windows; a head with one class only keeps the model alone."""
    weights: dict[str, tuple[float, float, float]] = {}
    for h, head in enumerate(heads):
        yh = np.asarray(y)[:, h] > 0.5
        if yh.all() or not yh.any():
            weights[head] = (1.0, 0.0, 0.0)
            continue
        x = np.stack([_logit(model_probs[:, h]), np.asarray(gbdt_raw[:, h], np.float64)], 1)
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(x, yh, sample_weight=weight)
        a, b = (float(v) for v in lr.coef_[0])
        weights[head] = (a, b, float(lr.intercept_[0]))
    return Blend(weights)


def _pr_auc(y: npt.NDArray[Any], scores: npt.NDArray[Any], weight: npt.NDArray[Any]) -> float:
    return float(average_precision_score(y > 0.5, scores, sample_weight=weight))


def choose_blend(
    mode: str,
    blend: Blend,
    model_probs: npt.NDArray[Any],
    gbdt_raw: npt.NDArray[Any],
    y: npt.NDArray[Any],
    weight: npt.NDArray[Any],
) -> tuple[Blend | None, dict[str, Any]]:
    """What ships, per head, chosen on validation PR-AUC: the model alone, the GBDT alone or
    the blend — the simpler one unless another wins by more than `MIN_GAIN`. Returns None
    when every head keeps the model alone (no trees in the bundle), and the figures.

    `mode` "on" ships the fitted blend as it is, "off" the model alone, "auto" chooses.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"ensemble: {mode!r} is not one of auto, on, off")
    blended = blend.combine(model_probs, gbdt_raw)
    figures: dict[str, Any] = {}
    chosen: dict[str, tuple[float, float, float]] = {}
    for h, head in enumerate(blend.weights):
        yh = np.asarray(y)[:, h]
        if not (yh > 0.5).any():
            chosen[head] = (1.0, 0.0, 0.0)
            continue
        pr = {
            "model": _pr_auc(yh, model_probs[:, h], weight),
            "gbdt": _pr_auc(yh, gbdt_raw[:, h], weight),
            "blend": _pr_auc(yh, blended[:, h], weight),
        }
        options = {"model": (1.0, 0.0, 0.0), "gbdt": (0.0, 1.0, 0.0), "blend": blend.weights[head]}
        pick = "model"
        for name in ("gbdt", "blend"):  # simpler first: a later one must win by MIN_GAIN
            if pr[name] > pr[pick] + MIN_GAIN:
                pick = name
        if mode != "auto":
            pick = "blend" if mode == "on" else "model"
        chosen[head] = options[pick]
        figures[head] = {"validation_pr_auc": {k: round(v, 5) for k, v in pr.items()},
                         "ships": pick}  # fmt: skip
    if all(w == (1.0, 0.0, 0.0) for w in chosen.values()):
        return None, figures
    return Blend(chosen), figures
