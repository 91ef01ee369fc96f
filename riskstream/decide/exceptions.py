"""Errors of the decision service."""

from events.exceptions import RiskstreamError

__all__ = ["ApiKeyError", "DecideError"]


class DecideError(RiskstreamError):
    """Root of the decision service's errors (one line, never a secret)."""


class ApiKeyError(DecideError):
    """The API keys file cannot be used; the message names the file and the line."""
