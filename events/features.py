"""Windows of records → model inputs. The one copy that training and the stream both call."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from events.encoding import FLAGS, EncodingSpec, records_flags
from events.window import Records, concat_records, records_ts_ms

__all__ = [
    "CHANNELS",
    "CODE_SHIFT",
    "MASK_ID",
    "PAD_ID",
    "RECENT_WINDOWS_MS",
    "ModelInputs",
    "age_code_below",
    "channel_vocab_sizes",
    "windows_to_inputs",
]

#: Every channel reserves 0 for padding and 1 for the masked-event token of pretraining;
#: real codes start at 2.
PAD_ID: Final = 0
MASK_ID: Final = 1
CODE_SHIFT: Final = MASK_ID + 1  # real codes start after the pad and mask ids

#: Model input channels, in order (the last axis of `ModelInputs.features`).
CHANNELS: Final[tuple[str, ...]] = (
    "type",
    "category",
    "price",
    "amount",
    "quantity",
    "flags",
    "gap",  # bucket of the time since the previous event in the window (0: first)
    "age",  # bucket of the time from this event to the scored (last) event
    "hour",  # hour of day, UTC (no weekday: a model trained on days that do not cover every
    # weekday meets unseen codes when it serves; v1 had one and failed on exactly that)
    "device_novelty",  # 0 absent, 1 first in window, 2 seen earlier in window, 3 new
    "ip_novelty",
    "country_novelty",
    "payment_novelty",
    "item_novelty",
    # 0 no category, 1 no categorised event earlier in the window, 2 the same category as the
    # last one, 3 another: an ad click off the page's topic inside real browsing shows here
    "category_context",
)
_NOVELTY: Final = (
    ("device_novelty", "device"),
    ("ip_novelty", "ip"),
    ("country_novelty", "country"),
    ("payment_novelty", "payment"),
    ("item_novelty", "item"),
)


#: Velocity windows over the scored event's recent past: the baseline's `events_last_*` and the
#: model's per-type counts in its window bag.
RECENT_WINDOWS_MS: Final = (("1m", 60_000), ("10m", 600_000), ("1h", 3_600_000))


def age_code_below(spec: EncodingSpec, age_ms: int) -> int:
    """The `age` channel code that events younger than `age_ms` stay below.

    >>> spec = EncodingSpec()
    >>> age_code_below(spec, 1_000) < age_code_below(spec, 60_000) < age_code_below(spec, 3_600_000)
    True
    """
    return CODE_SHIFT + bisect.bisect_right(spec.age_edges_ms, age_ms)


def channel_vocab_sizes(spec: EncodingSpec) -> dict[str, int]:
    """Embedding size per channel (codes + pad + mask): what the model builds its tables from.

    >>> channel_vocab_sizes(EncodingSpec())["type"]
    19
    """
    raw = {
        "type": len(spec.event_types),
        "category": 1 + len(spec.categories) + spec.category_buckets,
        "price": len(spec.price_edges) + 2,
        "amount": len(spec.amount_edges) + 2,
        "quantity": len(spec.quantity_edges) + 2,
        "flags": 1 << len(FLAGS),
        "gap": len(spec.gap_edges_ms) + 2,
        "age": len(spec.age_edges_ms) + 1,
        "hour": 24,
    }
    raw.update({name: 4 for name, _ in _NOVELTY})
    raw["category_context"] = 4
    return {name: raw[name] + CODE_SHIFT for name in CHANNELS}


@dataclass(frozen=True)
class ModelInputs:
    """A right-padded batch: `features` [B, L, C] int64, `attention_mask` [B, L] int64."""

    features: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """Real events per window [B]."""
        lengths: npt.NDArray[np.int64] = self.attention_mask.sum(axis=1)
        return lengths


def _first_occurrence(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _category_context(
    category: npt.NDArray[np.int64], starts: npt.NDArray[np.int64], row: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Per record (windows concatenated, `starts` of each window, `row` of each record): the
    `category_context` code, from the last categorised record before it in its window.

    >>> _category_context(np.array([5, 0, 5, 7, 7]), np.array([0, 3]), np.array([0, 0, 0, 1, 1]))
    array([1, 0, 2, 1, 2])
    """
    n = len(category)
    seen = np.where(category != 0, np.arange(n), -1)
    last = np.full(n, -1, dtype=np.int64)
    last[1:] = np.maximum.accumulate(seen)[:-1]
    earlier = last >= starts[row]
    same = earlier & (category[np.maximum(last, 0)] == category)
    code = np.where(same, 2, np.where(earlier, 3, 1))
    out: npt.NDArray[np.int64] = np.where(category == 0, 0, code)
    return out


def windows_to_inputs(
    windows: Sequence[Records], spec: EncodingSpec, pad_to: int | None = None
) -> ModelInputs:
    """Model inputs for a batch of windows (each oldest first, the scored event last).

    Pads to the longest window in the batch (or `pad_to`, which must not be shorter).

    >>> from events.contract import Event
    >>> from events.encoding import RECORD_DTYPE, encode_event
    >>> import numpy as np
    >>> spec = EncodingSpec()
    >>> w = np.frombuffer(b"".join(encode_event(Event(f"e{i}", "u", 1793577600000 + 500 * i,
    ...                   "click", device_id="d1"), spec) for i in range(3)), RECORD_DTYPE)
    >>> x = windows_to_inputs([w, w[:1]], spec)
    >>> x.features.shape, x.lengths.tolist()
    ((2, 3, 15), [3, 1])
    >>> x.features[0, :, CHANNELS.index("device_novelty")].tolist()  # first, then seen
    [3, 4, 4]
    """
    lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
    batch = len(windows)
    width = int(lengths.max(initial=0))
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to: {pad_to} is shorter than the longest window ({width})")
        width = pad_to
    features = np.zeros((batch, width, len(CHANNELS)), dtype=np.int64)
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    if batch == 0 or width == 0:
        return ModelInputs(features, mask)

    rec = concat_records(windows)
    row = np.repeat(np.arange(batch), lengths)
    ends = np.cumsum(lengths)
    pos = np.arange(len(rec)) - np.repeat(ends - lengths, lengths)
    ts = records_ts_ms(rec)

    cols: dict[str, npt.NDArray[np.int64]] = {
        name: rec[name].astype(np.int64)
        for name in ("type", "category", "price", "amount", "quantity")
    }
    cols["flags"] = records_flags(rec)
    gap = np.zeros(len(rec), dtype=np.int64)
    gap[1:] = ts[1:] - ts[:-1]
    gap_code = 1 + np.searchsorted(spec.gap_edges_ms, np.maximum(gap, 0), side="right")
    cols["gap"] = np.where(pos == 0, 0, gap_code)
    last_ts = np.repeat(ts[ends - 1], lengths)
    cols["age"] = np.searchsorted(spec.age_edges_ms, np.maximum(last_ts - ts, 0), side="right")
    cols["hour"] = (ts // 3_600_000) % 24
    row_key = row.astype(np.uint64) << np.uint64(16)
    for channel, fieldname in _NOVELTY:
        value = rec[fieldname].astype(np.uint64)
        first = _first_occurrence(row_key | value)
        code = np.where(pos == 0, 1, np.where(first, 3, 2))
        cols[channel] = np.where(value == 0, 0, code)
    cols["category_context"] = _category_context(cols["category"], ends - lengths, row)

    for c, name in enumerate(CHANNELS):
        features[row, pos, c] = cols[name] + CODE_SHIFT
    return ModelInputs(features, mask)
