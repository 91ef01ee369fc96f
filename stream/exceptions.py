"""Errors of the stream worker."""

from events.exceptions import RiskstreamError

__all__ = ["RulesError", "StreamError", "WindowStoreError"]


class StreamError(RiskstreamError):
    """Root of stream worker errors."""


class WindowStoreError(StreamError):
    """The window store's Redis failed (connection, script, cluster); the cause is chained."""


class RulesError(StreamError):
    """A rules file that cannot be used; the message names the rule and the key."""
