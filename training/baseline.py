"""The GBDT baseline: one HistGradientBoostingClassifier per head on the window aggregates
(`events.aggregates`: exactly the model's input, summarised the way a risk analyst would). It is
meant to be a strong, honest baseline: the BERT has to earn its place against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier

from events.aggregates import AGGREGATE_NAMES, LAST_TYPE
from events.trees import TreeModel

__all__ = ["Baseline", "fit_baseline"]

_FloatArray = npt.NDArray[np.float64]


class _Constant:
    """Stand-in classifier for a head whose training labels hold one class only."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, X: npt.NDArray[Any]) -> _FloatArray:  # noqa: N803 (sklearn's name)
        return np.tile([1.0 - self.p, self.p], (len(X), 1))


@dataclass
class Baseline:
    """One fitted classifier per head (`events.LABELS` order)."""

    models: list[Any]
    feature_names: tuple[str, ...] = field(default=AGGREGATE_NAMES)

    def predict(self, X: npt.NDArray[Any]) -> _FloatArray:  # noqa: N803
        """Positive-class scores [B, n_heads] float64.

        Trained with class-balanced weights, so scores rank well but are not calibrated
        probabilities: choose thresholds on these scores, not the model's.
        """
        cols = [np.asarray(m.predict_proba(X))[:, 1] for m in self.models]
        return np.stack(cols, axis=1).astype(np.float64) if cols else np.zeros((len(X), 0))

    def raw(self, X: npt.NDArray[Any]) -> _FloatArray:  # noqa: N803
        """Log-odds [B, n_heads]: what the blend reads (equal to `trees()`' `predict_raw`)."""
        cols = [
            # A one-class head's p is 0 or 1: the served constant's clipped log-odds, not ±inf.
            np.full(len(X), TreeModel.constant(m.p).baseline)
            if isinstance(m, _Constant)
            else np.asarray(m.decision_function(X), dtype=np.float64)
            for m in self.models
        ]
        return np.stack(cols, axis=1) if cols else np.zeros((len(X), 0))

    def trees(self) -> list[TreeModel]:
        """Each head's classifier as plain arrays (JSON, no pickle; scored without sklearn)."""
        return [
            TreeModel.constant(m.p) if isinstance(m, _Constant) else TreeModel.from_sklearn(m)
            for m in self.models
        ]

    @property
    def iterations(self) -> list[int]:
        """Boosting iterations per head (early stopping's choice; 0 for a constant head)."""
        return [int(getattr(m, "n_iter_", 0)) for m in self.models]


def _balanced(y: npt.NDArray[np.bool_], weight: _FloatArray) -> _FloatArray:
    """Subsampling weight × class balance: both classes carry half the total weight."""
    pos, total = float(weight[y].sum()), float(weight.sum())
    neg = total - pos
    scale = np.where(y, total / (2 * pos) if pos else 0.0, total / (2 * neg) if neg else 0.0)
    out: _FloatArray = weight * scale
    return out


def _fill_empty_columns(
    X: npt.NDArray[np.floating[Any]],  # noqa: N803
    overwrite: bool = False,
) -> npt.NDArray[np.floating[Any]]:
    """Zero the columns that are NaN throughout (sklearn 1.9's binning crashes on them).

    Such a column is constant in training, so no tree splits on it and predict is unaffected.
    With `overwrite`, in `X` itself (the caller's own matrix: no second copy).
    """
    empty = np.isnan(X).all(axis=0)
    if not empty.any():
        return X
    out = X if overwrite else X.copy()
    out[:, empty] = 0.0
    return out


def _as_float(X: npt.NDArray[Any]) -> npt.NDArray[np.floating[Any]]:  # noqa: N803
    """float64 stays (what sklearn fits on: no copy there), anything else becomes float32."""
    X = np.asarray(X)  # noqa: N806
    return X if X.dtype == np.float64 else np.asarray(X, dtype=np.float32)


def fit_baseline(
    X: npt.NDArray[Any],  # noqa: N803
    y: npt.NDArray[Any],
    weight: npt.NDArray[Any],
    *,
    seed: int,
    X_val: npt.NDArray[Any] | None = None,  # noqa: N803
    y_val: npt.NDArray[Any] | None = None,
    weight_val: npt.NDArray[Any] | None = None,
    max_iter: int = 500,
    iterations: Sequence[int] | None = None,
    overwrite_x: bool = False,
) -> Baseline:
    """Fit one HistGradientBoostingClassifier per label column of `y` [B, n_heads].

    Sample weights combine `weight` (subsampling) and class balance. With `X_val`/`y_val`
    (and optionally `weight_val`), boosting stops early on that validation set's weighted loss;
    without them sklearn's own early stopping applies on large sets (10 % held out). With
    `iterations` (per head, e.g. a selection fit's `Baseline.iterations`), exactly that many
    boosting rounds and no early stopping: the refit on train + validation.

    `X` in float64 is fitted on as it is (sklearn copies anything else to float64, per head);
    with `overwrite_x` its all-NaN columns are zeroed in place instead of in a copy.
    """
    X = _fill_empty_columns(_as_float(X), overwrite_x)  # noqa: N806
    y2 = np.asarray(y).reshape(len(X), -1) > 0.5
    w = np.asarray(weight, dtype=np.float64).reshape(len(X))
    if (X_val is None) != (y_val is None):
        raise ValueError("fit_baseline: give both X_val and y_val, or neither")
    models: list[Any] = []
    for head in range(y2.shape[1]):
        yh = y2[:, head]
        if yh.all() or not yh.any():
            models.append(_Constant(float(yh.mean()) if len(yh) else 0.0))
            continue
        clf = HistGradientBoostingClassifier(
            learning_rate=0.1,
            max_iter=max_iter,
            max_leaf_nodes=31,
            min_samples_leaf=20,
            l2_regularization=1.0,
            categorical_features=[LAST_TYPE] if X.shape[1] == len(AGGREGATE_NAMES) else None,
            early_stopping=True if X_val is not None else "auto",
            n_iter_no_change=20,
            random_state=seed + head,
        )
        fit_kw: dict[str, Any] = {}
        if iterations is not None:
            clf.set_params(max_iter=max(1, int(iterations[head])), early_stopping=False)
        elif X_val is not None and y_val is not None:
            yv = np.asarray(y_val).reshape(len(X_val), -1)[:, head] > 0.5
            wv = np.ones(len(yv)) if weight_val is None else np.asarray(weight_val, float)
            if yv.any() and not yv.all():  # a one-class validation set cannot score the loss
                fit_kw = {
                    "X_val": _fill_empty_columns(_as_float(X_val)),
                    "y_val": yv.astype(int),
                    "sample_weight_val": _balanced(yv, wv),
                }
            else:
                clf.set_params(early_stopping="auto")
        clf.fit(X, yh.astype(int), sample_weight=_balanced(yh, w), **fit_kw)
        models.append(clf)
    return Baseline(models)
