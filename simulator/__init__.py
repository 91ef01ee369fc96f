"""The labelled world simulator: normal shoppers and twelve attack kinds (seven classic, five
hard ones that hide in customer-like aggregates), written as event, label and delayed-feedback
JSON lines. Pure Python (stdlib, orjson, tqdm): no numpy, no torch.

>>> from simulator import ATTACK_KINDS, HARD_KINDS
>>> len(ATTACK_KINDS), len(HARD_KINDS)
(12, 5)
"""

from __future__ import annotations

from simulator.config import (
    ATTACK_KINDS,
    ATTACK_PRESETS,
    CLASSIC_KINDS,
    FRAUD_KINDS,
    HARD_KINDS,
    KIND_LABEL,
    KINDS_BY_LABEL,
    WorldConfig,
    WorldSummary,
)
from simulator.simulate import EVENTS_FILE, FEEDBACK_FILE, LABELS_FILE, simulate_world

__all__ = [
    "ATTACK_KINDS",
    "ATTACK_PRESETS",
    "CLASSIC_KINDS",
    "EVENTS_FILE",
    "FEEDBACK_FILE",
    "FRAUD_KINDS",
    "HARD_KINDS",
    "KINDS_BY_LABEL",
    "KIND_LABEL",
    "LABELS_FILE",
    "WorldConfig",
    "WorldSummary",
    "simulate_world",
]
