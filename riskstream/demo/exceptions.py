"""The errors of `riskstream demo`."""

from __future__ import annotations

from events.exceptions import RiskstreamError

__all__ = ["DemoError"]


class DemoError(RiskstreamError):
    """A demo step failed; the message names the step."""
