"""The GBDT baseline: hand-made window aggregates + one HistGradientBoostingClassifier per head.

It sees exactly the model's input (`events.features.windows_to_inputs`), summarised the way a
risk analyst would: counts and shares per event type, timing regularity, novelty of devices /
addresses / payment methods, money, flags and the scored event itself. It is meant to be a
strong, honest baseline: the BERT has to earn its place against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.special import expit  # type: ignore[import-untyped]
from sklearn.ensemble import HistGradientBoostingClassifier

from events.encoding import FLAGS, EncodingSpec
from events.features import CHANNELS, CODE_SHIFT, RECENT_WINDOWS_MS, age_code_below

__all__ = [
    "AGGREGATE_NAMES",
    "BASELINE_FORMAT",
    "Baseline",
    "StoredBaseline",
    "fit_baseline",
    "window_aggregates",
]

_SPEC: Final = EncodingSpec()
_TYPES: Final = _SPEC.event_types
_NOVELTY: Final = ("device", "ip", "country", "payment", "item")
_GAP_BANDS: Final = ("subsecond", "1s_10s", "10s_5min", "over_5min")
_CHUNK: Final = 8192
_KEY_TYPES: Final = ("purchase", "payment_failed", "login_failed", "coupon_apply")

AGGREGATE_NAMES: Final[tuple[str, ...]] = (
    "length",
    *(f"count_{t}" for t in _TYPES),
    *(f"share_{t}" for t in _TYPES),
    *(f"gap_count_{b}" for b in _GAP_BANDS),
    *(f"gap_share_{b}" for b in _GAP_BANDS),
    "gap_mean",
    "gap_std",
    "gap_min",
    "gap_max",
    "span_bucket",
    *(f"events_last_{name}" for name, _ in RECENT_WINDOWS_MS),
    "repeat_type_share",
    *(f"distinct_{n}" for n in _NOVELTY),
    *(f"new_{n}" for n in _NOVELTY),
    "distinct_category",
    "price_max",
    "price_mean",
    "amount_max",
    "amount_mean",
    "quantity_max",
    "purchases_per_browse",
    "payment_failed_ratio",
    *(f"flag_share_{f}" for f in FLAGS),
    "night_share",
    "last_type",
    "last_price",
    "last_amount",
    *(f"last_{n}_novelty" for n in _NOVELTY),
    "last_gap",
    "last_hour",
    "last_flags",
)
_LAST_TYPE: Final = AGGREGATE_NAMES.index("last_type")  # a categorical feature for the GBDT

_IntArray = npt.NDArray[np.int32]
_FloatArray = npt.NDArray[np.float64]


def _safe_div(num: _FloatArray, den: _FloatArray) -> _FloatArray:
    """num / den, NaN where den == 0 (HistGradientBoosting treats NaN as missing)."""
    out: _FloatArray = np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
    return out


def window_aggregates(
    features: npt.NDArray[np.int64],
    attention_mask: npt.NDArray[np.int64],
    spec: EncodingSpec | None = None,
) -> npt.NDArray[np.float32]:
    """Per-window aggregates [B, len(AGGREGATE_NAMES)] float32 (NaN = undefined).

    `features` [B, L, C] and `attention_mask` [B, L] as `windows_to_inputs` returns them (right
    padded, the scored event last). `spec` gives the bucket edges (default `EncodingSpec()`).
    """
    b, width = attention_mask.shape
    if features.shape[:2] != (b, width) or features.shape[2] != len(CHANNELS):
        raise ValueError(f"features: shape {features.shape} does not match the mask {(b, width)}")
    out = np.empty((b, len(AGGREGATE_NAMES)), dtype=np.float32)
    # chunks bound the temporaries (a few [chunk, L] arrays) on big batches
    for lo in range(0, b, _CHUNK):
        hi = min(lo + _CHUNK, b)
        out[lo:hi] = _aggregates(features[lo:hi], attention_mask[lo:hi], spec or _SPEC)
    return out


def _aggregates(
    features: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64], spec: EncodingSpec
) -> npt.NDArray[np.float32]:
    """`window_aggregates` of one chunk, vectorised over its windows."""
    b, width = attention_mask.shape
    m = attention_mask.astype(bool)
    mf = m.astype(np.float64)
    length = mf.sum(axis=1)
    raw: dict[str, _IntArray] = {
        name: np.where(m, features[:, :, i] - CODE_SHIFT, -1).astype(np.int32)
        for i, name in enumerate(CHANNELS)
    }
    pos = np.arange(width)[None, :]
    rows = np.arange(b)
    last = np.maximum(length.astype(np.int64) - 1, 0)
    cols: list[_FloatArray] = [length]

    # event types: bincount over (row, type) pairs instead of a [B, L, T] one-hot
    n_types = len(spec.event_types)
    t = raw["type"]
    flat = (np.broadcast_to(rows[:, None], t.shape) * n_types + t)[m]
    type_counts = np.bincount(flat, minlength=b * n_types).reshape(b, n_types).astype(float)
    cols += list(type_counts.T)
    cols += list(_safe_div(type_counts, length[:, None]).T)

    # timing: gap bands and regularity over non-first positions (bots are fast and regular)
    gap = raw["gap"].astype(np.float64)
    later = m & (pos > 0)
    n_later = later.sum(axis=1).astype(np.float64)
    cuts = [1 + int(np.searchsorted(spec.gap_edges_ms, x, side="right")) for x in (1e3, 1e4, 3e5)]
    band = np.searchsorted(np.array(cuts), raw["gap"], side="right")  # 0..3
    band_counts = [(later & (band == k)).sum(axis=1).astype(float) for k in range(4)]
    cols += band_counts
    cols += [_safe_div(c, n_later) for c in band_counts]
    gap_mean = _safe_div(np.where(later, gap, 0.0).sum(axis=1), n_later)
    sq = np.where(later, (gap - np.nan_to_num(gap_mean)[:, None]) ** 2, 0.0).sum(axis=1)
    cols += [gap_mean, np.sqrt(_safe_div(sq, n_later))]
    any_later = n_later > 0
    cols.append(np.where(any_later, np.where(later, gap, np.inf).min(axis=1), np.nan))
    cols.append(np.where(any_later, np.where(later, gap, -np.inf).max(axis=1), np.nan))
    cols.append(np.where(length > 0, raw["age"][:, 0], np.nan).astype(float))  # window span
    for _, ms in RECENT_WINDOWS_MS:  # velocity: events within the last minute / 10 min / hour
        cut = age_code_below(spec, ms) - CODE_SHIFT  # `raw` codes are unshifted
        cols.append((m & (raw["age"] < cut)).sum(axis=1).astype(float))
    same = m[:, 1:] & (t[:, 1:] == t[:, :-1])
    cols.append(_safe_div(same.sum(axis=1).astype(float), n_later))

    # novelty: 0 absent, 1 first in window, 2 seen earlier, 3 new → distinct ≈ first + new
    nov = {n: raw[f"{n}_novelty"] for n in _NOVELTY}
    cols += [((v == 1) | (v == 3)).sum(axis=1).astype(float) for v in nov.values()]
    cols += [(v == 3).sum(axis=1).astype(float) for v in nov.values()]
    cat = np.sort(np.where(m & (raw["category"] > 0), raw["category"], -1), axis=1)
    changes = (cat[:, 1:] != cat[:, :-1]) & (cat[:, 1:] >= 0)
    cols.append(changes.sum(axis=1) + (cat[:, :1] >= 0).sum(axis=1).astype(float))

    # money: bucket codes, 0 = absent
    for name in ("price", "amount"):
        v = raw[name]
        present = v > 0
        cols.append(np.where(present.any(axis=1), v.max(axis=1), np.nan).astype(float))
        cols.append(_safe_div(np.where(present, v, 0).sum(axis=1), present.sum(axis=1)))
    q = raw["quantity"]
    cols.append(np.where((q > 0).any(axis=1), q.max(axis=1), np.nan).astype(float))
    idx = {name: spec.event_types.index(name) for name in (*_KEY_TYPES, "click", "page_view")}
    browse = type_counts[:, idx["click"]] + type_counts[:, idx["page_view"]]
    browse += type_counts[:, spec.event_types.index("search")]
    cols.append(type_counts[:, idx["purchase"]] / (browse + 1.0))
    pf = type_counts[:, idx["payment_failed"]]
    cols.append(_safe_div(pf, pf + type_counts[:, idx["purchase"]]))

    # flags bitfield: share of events carrying each optional field
    for bit in range(len(FLAGS)):
        cols.append(_safe_div((m & (((raw["flags"] >> bit) & 1) == 1)).sum(axis=1), length))
    cols.append(_safe_div((m & (raw["hour"] >= 0) & (raw["hour"] < 6)).sum(axis=1), length))

    # the scored (last) event itself
    def at_last(name: str) -> _FloatArray:
        return np.where(length > 0, raw[name][rows, last], np.nan).astype(np.float64)

    cols += [at_last("type"), at_last("price"), at_last("amount")]
    cols += [at_last(f"{n}_novelty") for n in _NOVELTY]
    cols += [at_last("gap"), at_last("hour"), at_last("flags")]

    out = np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1).astype(np.float32)
    assert out.shape[1] == len(AGGREGATE_NAMES), (out.shape, len(AGGREGATE_NAMES))
    return out


class _Constant:
    """Stand-in classifier for a head whose training labels hold one class only."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, X: npt.NDArray[Any]) -> _FloatArray:  # noqa: N803 (sklearn's name)
        return np.tile([1.0 - self.p, self.p], (len(X), 1))


@dataclass
class Baseline:
    """One fitted classifier per head (`training.metrics.HEADS` order)."""

    models: list[Any]
    feature_names: tuple[str, ...] = field(default=AGGREGATE_NAMES)

    def predict(self, X: npt.NDArray[Any]) -> _FloatArray:  # noqa: N803
        """Positive-class scores [B, n_heads] float64.

        Trained with class-balanced weights, so scores rank well but are not calibrated
        probabilities: choose thresholds on these scores, not the model's.
        """
        cols = [np.asarray(m.predict_proba(X))[:, 1] for m in self.models]
        return np.stack(cols, axis=1).astype(np.float64) if cols else np.zeros((len(X), 0))

    @property
    def iterations(self) -> list[int]:
        """Boosting iterations per head (early stopping's choice; 0 for a constant head)."""
        return [int(getattr(m, "n_iter_", 0)) for m in self.models]

    def to_json(self) -> dict[str, Any]:
        """The fitted trees as plain JSON (no pickle); `StoredBaseline` predicts from it."""
        return {
            "format": BASELINE_FORMAT,
            "feature_names": list(self.feature_names),
            "heads": [_head_to_json(m) for m in self.models],
        }


#: The stored baseline's JSON format (`Baseline.to_json`, `StoredBaseline`).
BASELINE_FORMAT: Final = "riskstream-gbdt/1"
_NODE_FIELDS: Final = (
    "value",
    "feature_idx",
    "num_threshold",
    "missing_go_to_left",
    "left",
    "right",
    "is_leaf",
    "is_categorical",
    "bitset_idx",
)


def _head_to_json(model: Any) -> dict[str, Any]:
    """One head: the constant, or sklearn's trees as columns of node fields.

    sklearn (1.4+) runs categorical features through an OrdinalEncoder placed first
    (`_preprocessor`), so the trees index the reordered columns: `columns` gives the input
    column of each, `categories` the encoder's known values per categorical column.
    """
    if isinstance(model, _Constant):
        return {"constant": model.p}
    cat = model.is_categorical_
    if cat is None:
        columns = list(range(model.n_features_in_))
        categories: list[list[float]] = []
    else:
        columns = [*np.flatnonzero(cat).tolist(), *np.flatnonzero(~cat).tolist()]
        encoder = model._preprocessor.named_transformers_["encoder"]
        categories = [[float(v) for v in c] for c in encoder.categories_]
    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    trees = []
    for per_iteration in model._predictors:
        (tree,) = per_iteration  # binary: one tree per iteration
        nodes = tree.nodes
        trees.append(
            {
                **{name: nodes[name].tolist() for name in _NODE_FIELDS},
                "raw_left_cat_bitsets": tree.raw_left_cat_bitsets.tolist(),
            }
        )
    return {
        "baseline": float(model._baseline_prediction.reshape(-1)[0]),
        "columns": columns,
        "categories": categories,
        "known_cat_bitsets": known.tolist(),
        "f_idx_map": f_idx_map.tolist(),
        "trees": trees,
    }


@dataclass
class _StoredTree:
    value: _FloatArray
    feature: npt.NDArray[np.intp]
    threshold: _FloatArray
    missing_left: npt.NDArray[np.bool_]
    left: npt.NDArray[np.intp]
    right: npt.NDArray[np.intp]
    leaf: npt.NDArray[np.bool_]
    categorical: npt.NDArray[np.bool_]
    bitset_idx: npt.NDArray[np.intp]
    raw_left: npt.NDArray[np.uint32]


class StoredBaseline:
    """A baseline read back from `Baseline.to_json`: numpy predicts what sklearn's
    `predict_proba` did (the same tree walk, sums in the same order, the same sigmoid)."""

    def __init__(self, data: dict[str, Any]) -> None:
        if data.get("format") != BASELINE_FORMAT:
            raise ValueError(f"stored baseline: format is not {BASELINE_FORMAT}")
        self.feature_names = tuple(data["feature_names"])
        self.heads = data["heads"]
        self._trees = [[self._tree(t) for t in head.get("trees", [])] for head in self.heads]

    @staticmethod
    def _tree(t: dict[str, Any]) -> _StoredTree:
        bitsets = np.asarray(t["raw_left_cat_bitsets"], dtype=np.uint32).reshape(-1, 8)
        return _StoredTree(
            np.asarray(t["value"], dtype=np.float64),
            np.asarray(t["feature_idx"], dtype=np.intp),
            np.asarray(t["num_threshold"], dtype=np.float64),
            np.asarray(t["missing_go_to_left"], dtype=bool),
            np.asarray(t["left"], dtype=np.intp),
            np.asarray(t["right"], dtype=np.intp),
            np.asarray(t["is_leaf"], dtype=bool),
            np.asarray(t["is_categorical"], dtype=bool),
            np.asarray(t["bitset_idx"], dtype=np.intp),
            bitsets,
        )

    def predict(self, X: npt.NDArray[Any]) -> _FloatArray:  # noqa: N803
        """Positive-class scores [B, n_heads] float64, as `Baseline.predict` gave them."""
        X = np.asarray(X)  # noqa: N806
        cols = [
            self._predict_head(h, trees, X)
            for h, trees in zip(self.heads, self._trees, strict=True)
        ]
        return np.stack(cols, axis=1) if cols else np.zeros((len(X), 0))

    @staticmethod
    def _predict_head(
        head: dict[str, Any], trees: list[_StoredTree], x: npt.NDArray[Any]
    ) -> _FloatArray:
        if "constant" in head:
            return np.full(len(x), float(head["constant"]))
        data = x[:, head["columns"]].astype(np.float64)
        for j, known in enumerate(head["categories"]):  # OrdinalEncoder: unknown → NaN
            values = np.asarray(known, dtype=np.float64)
            found = values[~np.isnan(values)]
            pos = np.searchsorted(found, data[:, j])
            hit = (pos < len(found)) & (found[np.minimum(pos, len(found) - 1)] == data[:, j])
            data[:, j] = np.where(hit, pos, np.nan)
        known_bits = np.asarray(head["known_cat_bitsets"], dtype=np.uint32).reshape(-1, 8)
        f_idx_map = np.asarray(head["f_idx_map"], dtype=np.intp)
        raw = np.full(len(x), float(head["baseline"]))
        rows = np.arange(len(x))
        for tree in trees:
            raw += _walk(tree, data, rows, known_bits, f_idx_map)
        out: _FloatArray = expit(raw)
        return out


def _in_bitset(
    bitsets: npt.NDArray[np.uint32], row: npt.NDArray[np.intp], val: npt.NDArray[np.intp]
) -> npt.NDArray[np.bool_]:
    word = bitsets[row, val // 32].astype(np.int64)
    out: npt.NDArray[np.bool_] = ((word >> (val % 32)) & 1).astype(bool)
    return out


def _walk(
    tree: _StoredTree,
    data: _FloatArray,
    rows: npt.NDArray[np.intp],
    known_bits: npt.NDArray[np.uint32],
    f_idx_map: npt.NDArray[np.intp],
) -> _FloatArray:
    """Every row down the tree at once (sklearn's `_predict_one_from_raw_data`)."""
    node = np.zeros(len(rows), dtype=np.intp)
    active = ~tree.leaf[node]
    while active.any():
        r, n = rows[active], node[active]
        val = data[r, tree.feature[n]]
        missing = np.isnan(val)
        go_left = val <= tree.threshold[n]
        cat = tree.categorical[n] & ~missing
        if cat.any():
            cv = val[cat]
            code = np.where(cv >= 0, cv, 0).astype(np.intp) & 0xFF  # sklearn casts to uint8
            in_left = _in_bitset(tree.raw_left, tree.bitset_idx[n[cat]], code)
            known = _in_bitset(known_bits, f_idx_map[tree.feature[n[cat]]], code)
            as_missing = (cv < 0) | (~in_left & ~known)
            go_left[cat] = np.where(as_missing, tree.missing_left[n[cat]], in_left)
        go_left = np.where(missing, tree.missing_left[n], go_left)
        node[active] = np.where(go_left, tree.left[n], tree.right[n])
        active = ~tree.leaf[node]
    return tree.value[node]


def _balanced(y: npt.NDArray[np.bool_], weight: _FloatArray) -> _FloatArray:
    """Subsampling weight × class balance: both classes carry half the total weight."""
    pos, total = float(weight[y].sum()), float(weight.sum())
    neg = total - pos
    scale = np.where(y, total / (2 * pos) if pos else 0.0, total / (2 * neg) if neg else 0.0)
    out: _FloatArray = weight * scale
    return out


def _fill_empty_columns(X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:  # noqa: N803
    """Zero the columns that are NaN throughout (sklearn 1.9's binning crashes on them).

    Such a column is constant in training, so no tree splits on it and predict is unaffected.
    """
    empty = np.isnan(X).all(axis=0)
    if not empty.any():
        return X
    out = X.copy()
    out[:, empty] = 0.0
    return out


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
) -> Baseline:
    """Fit one HistGradientBoostingClassifier per label column of `y` [B, n_heads].

    Sample weights combine `weight` (subsampling) and class balance. With `X_val`/`y_val`
    (and optionally `weight_val`), boosting stops early on that validation set's weighted loss;
    without them sklearn's own early stopping applies on large sets (10 % held out). With
    `iterations` (per head, e.g. a selection fit's `Baseline.iterations`), exactly that many
    boosting rounds and no early stopping: the refit on train + validation.
    """
    X = _fill_empty_columns(np.asarray(X, dtype=np.float32))  # noqa: N806
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
            categorical_features=[_LAST_TYPE] if X.shape[1] == len(AGGREGATE_NAMES) else None,
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
                    "X_val": _fill_empty_columns(np.asarray(X_val, dtype=np.float32)),
                    "y_val": yv.astype(int),
                    "sample_weight_val": _balanced(yv, wv),
                }
            else:
                clf.set_params(early_stopping="auto")
        clf.fit(X, yh.astype(int), sample_weight=_balanced(yh, w), **fit_kw)
        models.append(clf)
    return Baseline(models)
