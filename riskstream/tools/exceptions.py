"""The errors of `riskstream replay` and `riskstream alerts`."""

from __future__ import annotations

from events.exceptions import RiskstreamError

__all__ = ["ToolError"]


class ToolError(RiskstreamError):
    """A replay or alerts command was given something it cannot use (one-line message)."""
