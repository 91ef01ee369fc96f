"""Errors of the local service stack (embedded broker, Redis, topic setup)."""

from __future__ import annotations

from events.exceptions import RiskstreamError

__all__ = [
    "BrokerStartError",
    "LocalStackError",
    "PostgresStartError",
    "RedisStartError",
    "TopicSetupError",
]


class LocalStackError(RiskstreamError):
    """A local service could not be started, reached or set up."""


class BrokerStartError(LocalStackError):
    """The Kafka-compatible broker did not start or did not answer in time.

    The message ends with the tail of the broker's log where there is one.
    """


class RedisStartError(LocalStackError):
    """Redis (given by URL) did not answer PING, or the embedded Valkey did not start."""


class TopicSetupError(LocalStackError):
    """Topics could not be created, or did not show up in metadata as asked."""


class PostgresStartError(LocalStackError):
    """PostgreSQL (given by URL) did not answer, or the embedded server did not start."""
