"""What validation data says a score means: severity cuts and the shortest window that may alert.

Training measures it (training/calibration.py) on the validation users, export copies it into the
bundle's manifest (`calibration`), and the stream applies it when it builds an alert. Shared here,
pure Python, so that both sides read one definition.

Per head:

- `critical_from`, `high_from`: the lowest scores at which at least `CRITICAL_PRECISION` (95 %) and
  `HIGH_PRECISION` (80 %) of the validation alerts at or above that score were true, each over at
  least `MIN_SUPPORT` alerts; None when no score reaches it. A model alert is `critical` at or
  above `critical_from`, `high` at or above `high_from`, else `medium`.
- `min_events`: 1, 2 or 3. A window of fewer events never raises a model alert: windows of one
  or two events alert only where validation showed their alerts at least as precise as those on
  longer windows (and at least `MIN_SUPPORT` of them).
- `measured`: the figures behind the choice (for people; the stream ignores it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from events.contract import LABELS, Severity

__all__ = [
    "CRITICAL_PRECISION",
    "HIGH_PRECISION",
    "MIN_SUPPORT",
    "SHORT_WINDOW_EVENTS",
    "HeadCalibration",
    "margin_severity",
    "parse_calibration",
]

CRITICAL_PRECISION: Final = 0.95
HIGH_PRECISION: Final = 0.80
#: Validation alerts a precision must rest on before it counts (else: not shown, not used).
MIN_SUPPORT: Final = 10
#: Windows of at most this many events are "short": they alert only where validation allows.
SHORT_WINDOW_EVENTS: Final = 2

_MARGINS: Final[tuple[tuple[float, Severity], ...]] = ((0.5, "critical"), (0.25, "high"))


def margin_severity(score: float, threshold: float) -> Severity:
    """Severity of bundles without calibration: the score's margin over the threshold, as a
    share of the room above it (critical ≥ 0.5, high ≥ 0.25, else medium).

    >>> margin_severity(0.95, 0.8), margin_severity(0.86, 0.8), margin_severity(0.81, 0.8)
    ('critical', 'high', 'medium')
    """
    margin = (score - threshold) / max(1.0 - threshold, 1e-6)
    for cut, name in _MARGINS:
        if margin >= cut:
            return name
    return "medium"


@dataclass(frozen=True)
class HeadCalibration:
    """One head's severity cuts and shortest alerting window (see the module doc)."""

    critical_from: float | None = None
    high_from: float | None = None
    min_events: int = SHORT_WINDOW_EVENTS + 1
    measured: dict[str, Any] = field(default_factory=dict)

    def severity(self, score: float) -> Severity:
        """The severity of a model alert at `score` (already at or above the threshold).

        >>> HeadCalibration(critical_from=0.9, high_from=0.7).severity(0.8)
        'high'
        >>> HeadCalibration(critical_from=None, high_from=None).severity(0.999)
        'medium'
        """
        if self.critical_from is not None and score >= self.critical_from:
            return "critical"
        if self.high_from is not None and score >= self.high_from:
            return "high"
        return "medium"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the manifest's and the checkpoint's form)."""
        return {
            "critical_from": self.critical_from,
            "high_from": self.high_from,
            "min_events": self.min_events,
            "measured": self.measured,
        }


def _cut(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{where}.{key}: must be a score in [0, 1] or null")
    return float(value)


def parse_calibration(raw: Any, where: str = "calibration") -> dict[str, HeadCalibration]:
    """Check and load a calibration mapping {head: {...}}; `{}` (older bundles) gives `{}`.
    Errors are `ValueError`s naming the key.

    >>> parse_calibration({"fraud": {"critical_from": 0.9, "high_from": 0.5, "min_events": 2},
    ...                    "abnormal_click": {"min_events": 3}})["fraud"].min_events
    2
    >>> parse_calibration({"fraud": {"min_events": 5}})
    Traceback (most recent call last):
    ...
    ValueError: calibration.fraud.min_events: must be 1, 2 or 3
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping of head to calibration")
    out: dict[str, HeadCalibration] = {}
    for head, entry in raw.items():
        at = f"{where}.{head}"
        if head not in LABELS:
            raise ValueError(f"{at}: unknown head (heads: {', '.join(LABELS)})")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{at}: must be a mapping")
        min_events = entry.get("min_events", SHORT_WINDOW_EVENTS + 1)
        if type(min_events) is not int or not 1 <= min_events <= SHORT_WINDOW_EVENTS + 1:
            raise ValueError(f"{at}.min_events: must be 1, 2 or 3")
        measured = entry.get("measured", {})
        if not isinstance(measured, Mapping):
            raise ValueError(f"{at}.measured: must be a mapping")
        out[str(head)] = HeadCalibration(
            _cut(entry, "critical_from", at), _cut(entry, "high_from", at), min_events,
            dict(measured),
        )  # fmt: skip
    return out
