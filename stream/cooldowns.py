"""Alert cooldowns in Redis: while a (user, alert type) key lives, that pair raises no alert.

One pipeline per batch to read them (`held`), one to set them (`start`, called only after the
broker has the alerts, so a crash in between re-raises the alert with the same id). Keys come
from `stream.keys.cooldown_key` (the user's hash tag: the same cluster slot as the window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from stream.exceptions import CooldownStoreError
from stream.keys import DEFAULT_PREFIX, check_prefix, cooldown_key

__all__ = ["CooldownStore"]

_REDIS_ERRORS: Final = (redis.RedisError, RedisClusterException)


class CooldownStore:
    """Per (user, alert type): whether an alert is held back, and starting the hold.

    `cooldown_s=0` disables cooldowns: nothing is held, nothing is written, no Redis call.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        cooldown_s: int,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if type(cooldown_s) is not int or cooldown_s < 0:
            raise ValueError(f"cooldown_s: must be a non-negative integer, got {cooldown_s!r}")
        self._client = client
        self._prefix = check_prefix(prefix)
        self.cooldown_s = cooldown_s

    def __repr__(self) -> str:
        return f"CooldownStore(cooldown_s={self.cooldown_s}, prefix={self._prefix!r})"

    def key(self, user_id: str, alert_type: str) -> str:
        """The Redis key of the pair's cooldown."""
        return cooldown_key(self._prefix, user_id, alert_type)

    def held(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """For each `(user_id, alert_type)`: whether it is in its cooldown (one pipeline)."""
        if not pairs or self.cooldown_s == 0:
            return [False] * len(pairs)
        try:
            pipe = self._client.pipeline(transaction=False)
            for user_id, alert_type in pairs:
                pipe.exists(self.key(user_id, alert_type))
            replies = pipe.execute()
        except _REDIS_ERRORS as exc:
            raise CooldownStoreError(f"reading {len(pairs)} cooldowns failed: {exc}") from exc
        return [bool(r) for r in replies]

    def start(self, alerted: Sequence[tuple[str, str, str]]) -> None:
        """Hold back further alerts of each `(user_id, alert_type, event_id)` for `cooldown_s`
        (the key's value names the triggering event)."""
        if not alerted or self.cooldown_s == 0:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for user_id, alert_type, event_id in alerted:
                pipe.set(self.key(user_id, alert_type), event_id, ex=self.cooldown_s)
            pipe.execute()
        except _REDIS_ERRORS as exc:
            raise CooldownStoreError(f"setting {len(alerted)} cooldowns failed: {exc}") from exc

    def ping(self) -> None:
        """Raise `CooldownStoreError` unless the Redis behind the worker's state answers."""
        try:
            self._client.ping()
        except _REDIS_ERRORS as exc:
            raise CooldownStoreError(f"PING failed: {exc}") from exc
