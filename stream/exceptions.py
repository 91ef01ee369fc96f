"""Errors of the stream worker."""

from events.exceptions import RiskstreamError

__all__ = [
    "CooldownStoreError",
    "PreflightError",
    "RedisStateError",
    "RulesError",
    "SettingsError",
    "StreamError",
    "WindowStoreError",
]


class StreamError(RiskstreamError):
    """Root of stream worker errors."""


class RedisStateError(StreamError):
    """Redis, where the worker keeps its state, failed; the cause is chained. The batch is
    retried (every write is idempotent)."""


class WindowStoreError(RedisStateError):
    """The window store's Redis failed (connection, script, cluster); the cause is chained."""


class CooldownStoreError(RedisStateError):
    """Reading or setting alert cooldowns in Redis failed; the cause is chained."""


class RulesError(StreamError):
    """A rules file that cannot be used; the message names the rule and the key."""


class SettingsError(StreamError):
    """A setting that cannot be used (e.g. a secret file that is missing); the message names
    the setting and the file, never a secret."""


class PreflightError(StreamError):
    """A start-up mistake found before the worker starts (bundle, rules, Redis); one line."""
