"""The worker's Redis client: a plain `redis.Redis`, or a `RedisCluster` for Redis Cluster.

A cluster is chosen by the URL's scheme, ``redis+cluster://`` (``rediss+cluster://`` with TLS),
or by `cluster=True` (`--redis-cluster`, `RISKSTREAM_REDIS_CLUSTER`). Any node's address will
do: the client reads the slot table from it and follows MOVED/ASK redirections itself.

>>> cluster_url("redis+cluster://:pw@10.0.0.1:7000/0")
('redis://:pw@10.0.0.1:7000/0', True)
>>> cluster_url("rediss://h:6380/1")
('rediss://h:6380/1', False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import redis
from redis.cluster import RedisCluster

__all__ = ["CLUSTER_SCHEMES", "cluster_url", "redis_client"]

#: URL scheme → the scheme redis-py's `from_url` knows.
CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Seconds a call may wait to connect or for a reply before it fails (and the batch is retried).
SOCKET_TIMEOUT_S: Final = 5.0


def cluster_url(url: str) -> tuple[str, bool]:
    """The URL for redis-py and whether its scheme asks for a cluster."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if sep and plain is not None:
        return f"{plain}://{rest}", True
    return url, False


def redis_client(
    url: str, *, cluster: bool = False, tls_ca: Path | None = None
) -> redis.Redis | RedisCluster:
    """A client (bytes replies) on `url`, a cluster client when asked for by flag or scheme.

    A cluster client retries a call on its own through a failover (connection errors refresh
    its slot table, then it tries again, 3 times); what still fails reaches the caller as a
    Redis error, which the worker retries with backoff like any other.
    """
    plain_url, by_scheme = cluster_url(url)
    kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
    }
    if tls_ca is not None:
        kwargs["ssl_ca_certs"] = str(tls_ca)
    if cluster or by_scheme:
        return RedisCluster.from_url(plain_url, **kwargs)
    return redis.Redis.from_url(plain_url, **kwargs)
