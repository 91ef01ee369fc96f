"""The stacked ensemble: the sequence model and the GBDT on the window aggregates, blended per
head by a logistic regression fitted on validation windows (`events.trees.Blend`).

Both learn from the same training examples; the blend's three numbers per head come from the
validation users, like the thresholds, so the test split stays untouched. Whether it ships is
decided on validation too (`choose_blend`).
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

#: The blend ships only when it beats the model alone on validation by more than this (mean
#: PR-AUC of the heads): below it, the simpler bundle wins.
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


def _mean_pr_auc(y: npt.NDArray[Any], scores: npt.NDArray[Any], weight: npt.NDArray[Any]) -> float:
    values = [
        float(average_precision_score(y[:, h] > 0.5, scores[:, h], sample_weight=weight))
        for h in range(y.shape[1])
        if (y[:, h] > 0.5).any()
    ]
    return float(np.mean(values)) if values else 0.0


def choose_blend(
    mode: str,
    blended: npt.NDArray[Any],
    model_probs: npt.NDArray[Any],
    y: npt.NDArray[Any],
    weight: npt.NDArray[Any],
) -> tuple[bool, dict[str, float]]:
    """Ship the blend? `mode` "on" / "off" decide; "auto" compares validation PR-AUC (mean of
    heads). Returns the decision and both validation figures."""
    figures = {
        "model_validation_pr_auc": round(_mean_pr_auc(y, model_probs, weight), 5),
        "blend_validation_pr_auc": round(_mean_pr_auc(y, blended, weight), 5),
    }
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"ensemble: {mode!r} is not one of auto, on, off")
    if mode != "auto":
        return mode == "on", figures
    gain = figures["blend_validation_pr_auc"] - figures["model_validation_pr_auc"]
    return gain > MIN_GAIN, figures
