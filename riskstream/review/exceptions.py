"""The errors of the review service and `riskstream labels`."""

from __future__ import annotations

from events.exceptions import RiskstreamError

__all__ = ["AuthError", "ReviewError"]


class ReviewError(RiskstreamError):
    """The review service could not start, reach its database or broker, or refused input."""


class AuthError(ReviewError):
    """A users file is unreadable, or a user name or password is refused."""
