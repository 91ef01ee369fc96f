"""Offline side of riskstream: the labelled world simulator, labels, datasets and training.

Importing this package needs no torch: only the simulator and the errors are exported here.
"""

from __future__ import annotations

from simulator import ATTACK_KINDS, WorldConfig, WorldSummary, simulate_world
from training.exceptions import SimulationError, TrainingError

__all__ = [
    "ATTACK_KINDS",
    "SimulationError",
    "TrainingError",
    "WorldConfig",
    "WorldSummary",
    "simulate_world",
]
