"""Errors raised by the simulator."""

from __future__ import annotations

from events.exceptions import RiskstreamError

__all__ = ["SimulationError"]


class SimulationError(RiskstreamError):
    """The simulator was given a bad argument; the message names it."""
