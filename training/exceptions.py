"""Errors raised by the training side (simulator, labels, datasets, trainers)."""

from __future__ import annotations

from events.exceptions import RiskstreamError

__all__ = ["SimulationError", "TrainingError"]


class TrainingError(RiskstreamError):
    """Root of the errors raised under `training/`."""


class SimulationError(TrainingError):
    """The simulator was given a bad argument; the message names it."""


class DataError(TrainingError):
    """A training input file breaks its contract; the message names the file and line."""
