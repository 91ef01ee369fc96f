"""Why an alert fired: the window's facts that stand out, and the events that drove the score.

Facts are read from the window's records (the same bytes the model saw). The driving events come
from occlusion: the window is re-scored once per event with that event masked (every channel set
to the pretraining mask id), and the events whose masking lowers the score most are named.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from events import (
    EID_SLICE,
    EncodingSpec,
    ModelInputs,
    Reason,
    WindowSummary,
    format_ts_ms,
    windows_to_inputs,
)
from events.encoding import records_eid
from events.features import MASK_ID
from events.window import Records, records_ts_ms

__all__ = ["RecentEventIds", "occlusion", "window_facts", "window_summary"]

_REGULAR_MIN_EVENTS: Final = 10
_REGULAR_MAX_CV: Final = 0.1  # gaps' coefficient of variation: people are never this even


class RecentEventIds:
    """Event id hash → event id for the last `capacity` events this worker saw.

    Windows hold hashes only (27-byte records); alerts name events by id where it is known.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._ids: OrderedDict[int, str] = OrderedDict()
        self._capacity = capacity

    def add(self, record: bytes, event_id: str) -> None:
        """Remember the id of the event a record encodes."""
        self._ids[int.from_bytes(record[EID_SLICE], "little")] = event_id
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def name(self, eid_hash: int) -> str:
        """The event id, or `#<hash>` when it is older than what this worker remembers."""
        return self._ids.get(eid_hash, f"#{eid_hash:012x}")


def window_summary(window: Records, spec: EncodingSpec) -> WindowSummary:
    """Counts a reviewer can check at a glance."""
    ts = records_ts_ms(window)
    types, counts = np.unique(window["type"], return_counts=True)
    return WindowSummary(
        events=len(window),
        span_s=float(ts[-1] - ts[0]) / 1000 if len(ts) else 0.0,
        first_ts_ms=int(ts[0]) if len(ts) else 0,
        last_ts_ms=int(ts[-1]) if len(ts) else 0,
        type_counts={spec.event_types[t]: int(c) for t, c in zip(types, counts, strict=True)},
        distinct_devices=int(np.unique(window["device"][window["device"] > 0]).size),
        distinct_ips=int(np.unique(window["ip"][window["ip"] > 0]).size),
        distinct_countries=int(np.unique(window["country"][window["country"] > 0]).size),
    )


def _count(window: Records, spec: EncodingSpec, name: str) -> int:
    return int((window["type"] == spec.event_types.index(name)).sum())


def window_facts(window: Records, spec: EncodingSpec) -> list[Reason]:
    """The window's facts that stand out, most telling first (may be empty)."""
    facts: list[Reason] = []
    ts = records_ts_ms(window)
    span_min = max(float(ts[-1] - ts[0]) / 60_000, 1 / 60) if len(ts) else 0.0
    failed = _count(window, spec, "payment_failed")
    if failed >= 2:
        facts.append(Reason("payment_failures", f"{failed} failed payments in {span_min:.1f} min"))
    last = window[-1] if len(window) else None
    earlier = window[:-1]
    for field, code, what in (
        ("device", "new_device", "a device not seen earlier in the window"),
        ("country", "new_country", "a country not seen earlier in the window"),
        ("payment", "new_payment_method", "a payment method not seen earlier in the window"),
    ):
        if last is not None and len(earlier) and last[field] and last[field] not in earlier[field]:
            facts.append(Reason(code, f"the scored event comes from {what}"))
    clicks = _count(window, spec, "click") + _count(window, spec, "page_view")
    purchases = _count(window, spec, "purchase")
    if clicks >= 20 and purchases == 0:
        facts.append(
            Reason("clicks_without_purchase", f"{clicks} clicks/views, no purchase in the window")
        )
    if len(ts) >= _REGULAR_MIN_EVENTS:
        gaps = np.diff(ts[-_REGULAR_MIN_EVENTS * 2 :]).astype(np.float64)
        if gaps.mean() > 0 and gaps.std() / gaps.mean() < _REGULAR_MAX_CV:
            facts.append(
                Reason(
                    "regular_gaps",
                    f"inhumanly regular timing: {len(gaps)} gaps of {gaps.mean() / 1000:.2f} s "
                    f"± {gaps.std() / 1000:.3f} s",
                )
            )
    rate = len(window) / span_min if span_min else 0.0
    if len(window) >= 20 and rate >= 30:
        facts.append(Reason("high_rate", f"{len(window)} events at {rate:.0f} per minute"))
    if len(earlier) and len(np.unique(window["ip"][window["ip"] > 0])) >= 4:
        facts.append(Reason("many_ips", "4 or more IP prefixes in the window"))
    return facts


def _masked_inputs(window: Records, spec: EncodingSpec) -> ModelInputs:
    """Row 0: the window as is; row 1 + i: event i masked."""
    n = len(window)
    base = windows_to_inputs([window], spec)
    features = np.repeat(base.features, n + 1, axis=0)  # [n + 1, n, C]
    idx = np.arange(n)
    features[idx + 1, idx, :] = MASK_ID
    return ModelInputs(features, np.repeat(base.attention_mask, n + 1, axis=0))


def occlusion(
    window: Records,
    spec: EncodingSpec,
    predict: Callable[[ModelInputs], npt.NDArray[np.float32]],
    head: int,
    top: int,
    names: RecentEventIds,
) -> Reason | None:
    """The `top` events whose masking lowers head `head`'s score most (one model call)."""
    if top <= 0 or len(window) == 0:
        return None
    probs = predict(_masked_inputs(window, spec))[:, head]  # [n + 1]
    drop = probs[0] - probs[1:]
    order = [int(i) for i in np.argsort(-drop, kind="stable")[:top] if drop[i] > 0]
    if not order:
        return None
    eids = records_eid(window)
    ts = records_ts_ms(window)
    parts = [
        f"{spec.event_types[int(window['type'][i])]} at {format_ts_ms(int(ts[i]))} (−{drop[i]:.3f})"
        for i in order
    ]
    return Reason(
        "driving_events",
        "masking these lowers the score most: " + "; ".join(parts),
        event_ids=tuple(names.name(int(eids[i])) for i in order),
    )
