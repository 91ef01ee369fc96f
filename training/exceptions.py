"""Errors raised by the training side (labels, datasets, trainers); the simulator's own
`SimulationError` lives in `simulator.exceptions` (re-exported here for old imports)."""

from __future__ import annotations

from events.exceptions import RiskstreamError
from simulator.exceptions import SimulationError

__all__ = ["SimulationError", "TrainingError"]


class TrainingError(RiskstreamError):
    """Root of the errors raised under `training/`."""


class DataError(TrainingError):
    """A training input file breaks its contract; the message names the file and line."""
