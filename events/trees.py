"""Gradient-boosted trees as plain arrays: stored as JSON (never pickle) and evaluated with numpy,
so a torch-free and sklearn-free worker scores exactly what training fitted.

`TreeModel.from_sklearn` reads a fitted `HistGradientBoostingClassifier` (binary); `predict_raw`
returns its decision function (log-odds) and `predict` its positive-class probability, equal to
sklearn's to float64 rounding. Numeric splits go left when `x <= threshold`; categorical ones
when the category is in the node's bitset; a missing value (NaN, or a negative category) goes
where the node's `missing_left` says, as sklearn does.

>>> m = TreeModel(baseline=0.5, feature=[[0, 0, 0]], threshold=[[1.0, 0.0, 0.0]],
...               left=[[1, 0, 0]], right=[[2, 0, 0]], missing_left=[[1, 0, 0]],
...               leaf=[[0, 1, 1]], value=[[0.0, -2.0, 3.0]], categorical=[[0, 0, 0]],
...               bitset=[])
>>> m.predict_raw(np.array([[0.5], [2.0], [np.nan]], dtype=np.float32)).tolist()
[-1.5, 3.5, -1.5]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "PROB_CLIP",
    "Blend",
    "TreeModel",
    "prob_logit",
    "tree_models_from_json",
    "tree_models_to_json",
]

_F64 = npt.NDArray[np.float64]

#: Probabilities are clipped to [PROB_CLIP, 1 - PROB_CLIP] before their logit. A wider clip
#: (1e-3 was tried) ties every score above 0.999 and leaves the threshold nothing to rank.
PROB_CLIP = 1e-7


def prob_logit(p: npt.NDArray[Any]) -> _F64:
    """The logit of probabilities, clipped by `PROB_CLIP`: the blend's input, in training and
    in the worker alike.

    >>> prob_logit(np.array([0.5, 1.0])).round(2).tolist()
    [0.0, 16.12]
    """
    q = np.clip(np.asarray(p, dtype=np.float64), PROB_CLIP, 1 - PROB_CLIP)
    out: _F64 = np.log(q) - np.log1p(-q)
    return out


@dataclass(frozen=True)
class TreeModel:
    """One binary classifier: `baseline` log-odds plus the leaf values of every tree. Node
    arrays are [trees, nodes] (padded; node 0 is each tree's root). The trees read features
    `x[:, columns]` (all of `x` when empty), and the first `len(categories)` of those are
    categorical: a value's index in its list is its code (unknown: missing), and `bitset` rows
    `[tree, node, w0..w7]` give the codes that go left as 256 bits."""

    baseline: float
    feature: list[list[int]]
    threshold: list[list[float]]
    left: list[list[int]]
    right: list[list[int]]
    missing_left: list[list[int]]
    leaf: list[list[int]]
    value: list[list[float]]
    categorical: list[list[int]]
    bitset: list[list[int]]  # [tree, node, 8 words] for categorical nodes only
    columns: list[int] = field(default_factory=list)  # input column of each tree feature
    categories: list[list[float]] = field(default_factory=list)  # of the first features
    _arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        a = self._arrays
        shape = (len(self.feature), max((len(f) for f in self.feature), default=0))
        a["feature"] = np.asarray(self.feature, dtype=np.int64).reshape(shape)
        a["threshold"] = np.asarray(self.threshold, dtype=np.float64).reshape(a["feature"].shape)
        for name in ("left", "right"):
            a[name] = np.asarray(getattr(self, name), dtype=np.int64).reshape(a["feature"].shape)
        for name in ("missing_left", "leaf", "categorical"):
            a[name] = np.asarray(getattr(self, name), dtype=bool).reshape(a["feature"].shape)
        a["value"] = np.asarray(self.value, dtype=np.float64).reshape(a["feature"].shape)
        bits = np.zeros((*a["feature"].shape, 8), dtype=np.uint32)
        for t, n, *words in self.bitset:
            bits[t, n] = words
        a["bitset"] = bits

    @classmethod
    def from_sklearn(cls, clf: Any) -> TreeModel:
        """From a fitted binary `HistGradientBoostingClassifier`."""
        predictors = [p[0] for p in clf._predictors]  # one tree per iteration (binary)
        width = max((len(p.nodes) for p in predictors), default=1)

        def pad(rows: list[Any], fill: Any) -> list[Any]:
            return [list(r) + [fill] * (width - len(r)) for r in rows]

        bitsets: list[list[int]] = []
        for t, p in enumerate(predictors):
            words = np.asarray(p.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8)
            for n, node in enumerate(p.nodes):
                if node["is_categorical"] and not node["is_leaf"]:
                    bitsets.append([t, n, *words[int(node["bitset_idx"])].tolist()])
        # sklearn puts categorical columns first, each ordinal-encoded by its known categories.
        columns: list[int] = []
        categories: list[list[float]] = []
        pre = getattr(clf, "_preprocessor", None)
        if pre is not None:
            for name, _, mask in pre.transformers_:
                if name == "remainder":
                    continue
                columns += np.flatnonzero(mask).tolist()
            encoder = pre.named_transformers_["encoder"]
            categories = [np.asarray(c, dtype=np.float64).tolist() for c in encoder.categories_]
        nodes = [p.nodes for p in predictors]
        return cls(
            baseline=float(np.asarray(clf._baseline_prediction).ravel()[0]),
            feature=pad([n["feature_idx"].tolist() for n in nodes], 0),
            threshold=pad([n["num_threshold"].tolist() for n in nodes], 0.0),
            left=pad([n["left"].tolist() for n in nodes], 0),
            right=pad([n["right"].tolist() for n in nodes], 0),
            missing_left=pad([n["missing_go_to_left"].astype(int).tolist() for n in nodes], 0),
            leaf=pad([n["is_leaf"].astype(int).tolist() for n in nodes], 1),
            value=pad([n["value"].tolist() for n in nodes], 0.0),
            categorical=pad([n["is_categorical"].astype(int).tolist() for n in nodes], 0),
            bitset=bitsets,
            columns=columns,
            categories=categories,
        )

    @classmethod
    def constant(cls, p: float) -> TreeModel:
        """A head whose training labels had one class only: always `p`."""
        p = min(max(p, 1e-12), 1 - 1e-12)
        return cls(float(np.log(p / (1 - p))), [], [], [], [], [], [], [], [], [])

    def _features(self, x: npt.NDArray[Any]) -> _F64:
        rows = np.asarray(x, dtype=np.float64)
        if self.columns:
            rows = rows[:, self.columns]
        for i, known in enumerate(self.categories):
            values = np.asarray(known, dtype=np.float64)
            pos = np.searchsorted(values, rows[:, i])
            hit = (pos < len(values)) & (values[np.minimum(pos, len(values) - 1)] == rows[:, i])
            rows[:, i] = np.where(hit, pos, np.nan)
        return rows

    def predict_raw(self, x: npt.NDArray[Any]) -> _F64:
        """Log-odds per row of `x` [B, features] (NaN = missing). Each tree sends the rows at a
        node to its children as index arrays (parents come before children in sklearn's node
        order): work grows with rows × depth, numpy calls with nodes only."""
        a = self._arrays
        rows = self._features(x)
        out = np.full(len(rows), self.baseline, dtype=np.float64)
        for t in range(a["feature"].shape[0]):
            reach = {0: np.arange(len(rows))}
            for n in range(a["feature"].shape[1]):
                idx = reach.pop(n, None)
                if idx is None or len(idx) == 0:
                    continue
                if a["leaf"][t, n]:
                    out[idx] += a["value"][t, n]
                    continue
                v = rows[idx, a["feature"][t, n]]
                if a["categorical"][t, n]:
                    code = np.clip(np.nan_to_num(v, nan=0.0), 0, 255).astype(np.int64)
                    word = a["bitset"][t, n][code // 32]
                    left = ((word >> (code % 32).astype(np.uint32)) & 1) == 1
                else:
                    left = v <= a["threshold"][t, n]
                missing = np.isnan(v)
                if missing.any():
                    left = np.where(missing, a["missing_left"][t, n], left)
                reach[int(a["left"][t, n])] = idx[left]
                reach[int(a["right"][t, n])] = idx[~left]
        return out

    def predict(self, x: npt.NDArray[Any]) -> _F64:
        """Positive-class probability per row."""
        out: _F64 = 1.0 / (1.0 + np.exp(-self.predict_raw(x)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def tree_models_to_json(models: dict[str, TreeModel]) -> str:
    """Several heads' models as one JSON document."""
    return json.dumps({head: m.to_dict() for head, m in models.items()}, separators=(",", ":"))


def tree_models_from_json(text: str) -> dict[str, TreeModel]:
    """The inverse of `tree_models_to_json`; a malformed document raises ValueError/TypeError."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("trees: expected an object of heads")
    return {str(head): TreeModel(**fields) for head, fields in data.items()}


@dataclass(frozen=True)
class Blend:
    """A stacked score per head: sigmoid(a · logit(model) + b · gbdt_log_odds + c), with
    (a, b, c) fitted on validation windows. Heads are in `weights`' order.

    >>> blend = Blend({"fraud": (1.0, 1.0, 0.0)})
    >>> blend.combine(np.array([[0.5]]), np.array([[0.0]])).round(3).tolist()
    [[0.5]]
    """

    weights: dict[str, tuple[float, float, float]]

    def combine(self, model_probs: npt.NDArray[Any], gbdt_raw: npt.NDArray[Any]) -> _F64:
        """model_probs [B, H] probabilities, gbdt_raw [B, H] log-odds → blended [B, H]."""
        logit = prob_logit(model_probs)
        coef = np.asarray(list(self.weights.values()), dtype=np.float64)  # [H, 3]
        z = coef[:, 0] * logit + coef[:, 1] * np.asarray(gbdt_raw, np.float64) + coef[:, 2]
        out: _F64 = 1.0 / (1.0 + np.exp(-z))
        return out

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready weights."""
        return {head: list(w) for head, w in self.weights.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Blend:
        """The inverse of `to_dict`; a malformed entry raises ValueError."""
        weights: dict[str, tuple[float, float, float]] = {}
        for head, w in data.items():
            if not isinstance(w, list | tuple) or len(w) != 3:
                raise ValueError(f"blend.{head}: expected three numbers, got {w!r}")
            a, b, c = (float(v) for v in w)
            weights[str(head)] = (a, b, c)
        return cls(weights)
