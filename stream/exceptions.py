"""Errors of the stream worker."""

from events.exceptions import RiskstreamError

__all__ = ["StreamError"]


class StreamError(RiskstreamError):
    """Root of stream worker errors."""
