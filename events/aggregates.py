"""Window aggregates: what a risk analyst would compute over a window, from exactly the model's
input (`windows_to_inputs`): counts and shares per event type, timing regularity, novelty of
devices / addresses / payment methods, money, flags and the scored event itself.

The GBDT baseline learns from them (`training.baseline`), and a bundle that carries a GBDT
computes them here too, so offline and online see the same numbers.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from events.encoding import FLAGS, EncodingSpec
from events.features import CHANNELS, CODE_SHIFT, RECENT_WINDOWS_MS, age_code_below

__all__ = ["AGGREGATE_NAMES", "LAST_TYPE", "window_aggregates"]

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
LAST_TYPE: Final = AGGREGATE_NAMES.index("last_type")  # categorical for a GBDT

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
