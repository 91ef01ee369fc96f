"""The stacked ensemble: the sequence model and the GBDT on the window aggregates, blended per
head by a logistic regression fitted on validation windows (`events.trees.Blend`).

Both learn from the same training examples; the blend's three numbers per head come from the
validation users, like the thresholds, so the test split stays untouched. The two weights are
held non-negative: a free fit can lean on one scorer's negative (a click head once shipped
−0.37·model + 0.88·GBDT) and such a sign, right on validation, reverses on another world. What
ships is decided per head on validation too (`choose_blend`): the model alone, the GBDT alone or
the blend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from sklearn.metrics import average_precision_score

from events.trees import Blend, prob_logit

__all__ = ["MIN_GAIN", "choose_blend", "fit_blend"]

#: Per head, the GBDT or the blend ships only when it beats the simpler choice on validation
#: by more than this PR-AUC: below it, the simpler scorer wins.
MIN_GAIN: Final = 0.0005


def _fit_non_negative(
    x: npt.NDArray[Any], y: npt.NDArray[Any], weight: npt.NDArray[Any], c: float = 1.0
) -> tuple[float, float, float]:
    """A weighted logistic regression with coefficients ≥ 0 (the intercept free): minimises
    Σ wᵢ·logloss + ‖coef‖² / 2c, sklearn's `LogisticRegression(C=c)` objective, by bounded
    L-BFGS-B. Where the free optimum is non-negative both agree.

    >>> x = np.array([[-2.0, 1.0], [-1.0, 0.5], [1.0, -0.5], [2.0, -1.0], [0.5, 0.2]])
    >>> y = np.array([0, 0, 1, 1, 1])
    >>> a, b, _ = _fit_non_negative(x, y, np.ones(5))
    >>> a > 0, b == 0.0
    (True, True)
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    ws = np.asarray(weight, dtype=np.float64)

    def loss(theta: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        z = xs @ theta[:2] + theta[2]
        # log(1 + e^z) - y·z, stable for large |z|
        value = float(np.sum(ws * (np.logaddexp(0.0, z) - ys * z)))
        value += float(theta[:2] @ theta[:2]) / (2 * c)
        r = ws * (1.0 / (1.0 + np.exp(-z)) - ys)
        grad = np.concatenate([xs.T @ r + theta[:2] / c, [r.sum()]])
        return value, grad

    bounds = [(0.0, None), (0.0, None), (None, None)]
    res = minimize(loss, np.array([1.0, 1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 1000})  # fmt: skip
    a, b, icpt = (float(v) for v in res.x)
    return a, b, icpt


def fit_blend(
    heads: Sequence[str],
    model_probs: npt.NDArray[Any],
    gbdt_raw: npt.NDArray[Any],
    y: npt.NDArray[Any],
    weight: npt.NDArray[Any],
) -> Blend:
    """Per head, a logistic regression with non-negative weights on (logit of the model,
    log-odds of the GBDT) over the validation windows; a head with one class only keeps the
    model alone."""
    weights: dict[str, tuple[float, float, float]] = {}
    for h, head in enumerate(heads):
        yh = np.asarray(y)[:, h] > 0.5
        if yh.all() or not yh.any():
            weights[head] = (1.0, 0.0, 0.0)
            continue
        x = np.stack([prob_logit(model_probs[:, h]), np.asarray(gbdt_raw[:, h], np.float64)], 1)
        weights[head] = _fit_non_negative(x, yh, weight)
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
