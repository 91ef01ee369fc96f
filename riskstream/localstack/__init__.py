"""Local real services for tests and `riskstream dev up`: Tansu broker, Redis/Valkey (one server
or a cluster), PostgreSQL, topics.

Nothing here imports pytest; the test fixtures in `tests/conftest.py` wrap these classes.
"""

from __future__ import annotations

from riskstream.localstack.broker import (
    DEFAULT_STORAGE_URL,
    TansuBroker,
    find_free_port,
    find_free_ports,
)
from riskstream.localstack.exceptions import (
    BrokerStartError,
    LocalStackError,
    PostgresStartError,
    RedisStartError,
    TopicSetupError,
)
from riskstream.localstack.postgres_server import DATABASE_URL_ENV, PostgresService
from riskstream.localstack.redis_cluster import RedisClusterService
from riskstream.localstack.redis_server import REDIS_URL_ENV, RedisService, ping_redis
from riskstream.localstack.topics import create_topics, describe_partition_counts

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_STORAGE_URL",
    "REDIS_URL_ENV",
    "BrokerStartError",
    "LocalStackError",
    "PostgresService",
    "PostgresStartError",
    "RedisClusterService",
    "RedisService",
    "RedisStartError",
    "TansuBroker",
    "TopicSetupError",
    "create_topics",
    "describe_partition_counts",
    "find_free_port",
    "find_free_ports",
    "ping_redis",
]
