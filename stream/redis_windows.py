"""Users' windows in Redis: one string of records per user, one script call per batch.

`RedisWindowStore` keeps exactly what `events.InMemoryWindowStore` keeps (records in time
order, the last N, idempotent by event id, events later than the allowed lateness refused), as
a plain Redis string per user: 64 records of
27 bytes cost under 2 KB of Redis memory with the key. `append_batch` sends a whole batch of
events (many users, a user any number of times) as one EVALSHA of `lua/window_append.lua`,
which applies the items in order, so the results equal appending them one by one.

A window expires `ttl_s` after its last change (default T, the policy's `max_age_s`): by then,
with event time keeping up with wall time, nothing in it can share a window with the user's
next event, which `select_window` bounds by T.

The script reads every window before it writes any, so an item that fails (a key of another
type) leaves the whole batch unapplied. Redis runs nothing else meanwhile: about 10 µs per item
with full N=64 windows, so batches of up to ~1,000 block it for ~10 ms at most.

On Redis Cluster one script call may only touch one hash slot, so `append_batch` groups the
batch by slot (a user's keys share a slot through the user's hash tag, so each user's items
keep their order) and sends one EVALSHA per slot, all of a primary's calls in one pipeline,
every primary's written before any reply is read: one round trip per primary per batch.
Results still come back in input order. A slot whose primary answers MOVED/ASK (resharding)
is re-sent by redis-py to the right node; a primary without the script (a replica promoted
since) gets it and only its calls are re-sent; any other error fails the whole batch, which
the worker retries (slots already applied answer `duplicate` for those items then).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Final

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException

from events.encoding import EID_SLICE, RECORD_SIZE
from events.window import AppendResult, WindowPolicy
from stream.exceptions import WindowStoreError
from stream.keys import DEFAULT_PREFIX, check_prefix, window_key

__all__ = ["RedisWindowStore", "load_script"]

_SCRIPT_NAME: Final = "window_append.lua"
# Raised by redis-py: RedisError for the server and the connection, RedisClusterException for
# the cluster client's own routing failures (which is not a RedisError).
_REDIS_ERRORS: Final = (redis.RedisError, RedisClusterException)

_PENDING: Final = AppendResult(b"", duplicate=False)  # placeholder until a slot's reply is in

RedisClient = redis.Redis | RedisCluster


@cache
def load_script() -> str:
    """The Lua source of the batch append (shipped as package data)."""
    return resources.files("stream").joinpath("lua", _SCRIPT_NAME).read_text(encoding="utf-8")


class RedisWindowStore:
    """A `events.WindowStore` on Redis, with `append_batch` for one round trip per batch.

    `client` must return bytes (``decode_responses=False``): records are binary.
    """

    def __init__(
        self,
        client: RedisClient,
        policy: WindowPolicy,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int | None = None,
        lateness_s: float = 0.0,
    ) -> None:
        ttl = policy.max_age_s if ttl_s is None else ttl_s
        if type(ttl) is not int or ttl <= 0:
            raise ValueError(f"ttl_s: must be a positive integer, got {ttl_s!r}")
        if lateness_s < 0:
            raise ValueError(f"lateness_s: must be >= 0 (0: no bound), got {lateness_s!r}")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("client: must not decode responses (windows are binary records)")
        self._client = client
        self._policy = policy
        self._prefix = check_prefix(prefix)
        self._ttl_s = ttl
        self._script = client.register_script(load_script())
        self._argv: tuple[int, ...] = (
            policy.max_events,
            RECORD_SIZE,
            ttl,
            EID_SLICE.start,
            EID_SLICE.stop - EID_SLICE.start,
            int(lateness_s * 1000),
        )
        self._cluster = isinstance(client, RedisCluster)

    def __repr__(self) -> str:
        return f"RedisWindowStore({self._policy!r}, prefix={self._prefix!r}, ttl_s={self._ttl_s})"

    @property
    def policy(self) -> WindowPolicy:
        """The N and T this store keeps."""
        return self._policy

    @property
    def prefix(self) -> str:
        """The global key prefix of this store."""
        return self._prefix

    @property
    def ttl_s(self) -> int:
        """Seconds an unchanged window lives."""
        return self._ttl_s

    def key(self, user_id: str) -> str:
        """The Redis key of the user's window."""
        return window_key(self._prefix, user_id)

    def append(self, user_id: str, record: bytes) -> AppendResult:
        """Append a record unless its event id is already stored (then change nothing)."""
        return self.append_batch([(user_id, record)])[0]

    def append_batch(self, items: Sequence[tuple[str, bytes]]) -> list[AppendResult]:
        """Append every `(user_id, record)` in order: one EVALSHA (on a cluster, one per slot).

        The results equal those of `append` called on each item in turn.
        """
        keys: list[str] = []
        records: list[bytes] = []
        key_of: dict[str, str] = {}
        for user_id, record in items:
            if len(record) != RECORD_SIZE:
                raise ValueError(f"record: {len(record)} bytes, expected {RECORD_SIZE}")
            key = key_of.get(user_id)
            if key is None:
                key = key_of[user_id] = self.key(user_id)
            keys.append(key)
            records.append(bytes(record))
        if not keys:
            return []
        if not self._cluster:
            return self._run(keys, records)
        return self._run_cluster(keys, records)

    def get(self, user_id: str) -> bytes:
        """The user's stored records, oldest first (empty when unknown or expired)."""
        try:
            stored = self._client.get(self.key(user_id))
        except _REDIS_ERRORS as exc:
            raise WindowStoreError(f"reading a window failed: {exc}") from exc
        if isinstance(stored, str):  # only a decoding client answers str, refused in __init__
            raise WindowStoreError("reading a window failed: the client decoded the records")
        return stored or b""

    def delete(self, user_id: str) -> bool:
        """Forget the user's window; whether there was one."""
        try:
            return bool(self._client.delete(self.key(user_id)))
        except _REDIS_ERRORS as exc:
            raise WindowStoreError(f"deleting a window failed: {exc}") from exc

    def memory_usage(self, user_id: str) -> int:
        """Bytes Redis spends on the user's window key and value (0 when there is none)."""
        try:
            used = self._client.memory_usage(self.key(user_id), samples=0)
        except _REDIS_ERRORS as exc:
            raise WindowStoreError(f"MEMORY USAGE of a window failed: {exc}") from exc
        return int(used or 0)

    @staticmethod
    def _slot_groups(keys: Sequence[str]) -> list[list[int]]:
        """Indices of `keys` grouped by cluster hash slot, each group in input order."""
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()), []).append(i)
        return list(groups.values())

    def _run(self, keys: list[str], records: list[bytes]) -> list[AppendResult]:
        """One script call over keys that share a slot (any keys outside a cluster)."""
        try:
            reply: Any = self._script(keys=keys, args=[*self._argv, *records])
        except _REDIS_ERRORS as exc:
            raise WindowStoreError(f"appending {len(keys)} records failed: {exc}") from exc
        return self._parse(reply, len(keys))

    def _run_cluster(self, keys: list[str], records: list[bytes]) -> list[AppendResult]:
        """One script call per slot, pipelined per primary; each slot's items keep their order,
        results go back to input order."""
        groups = self._slot_groups(keys)
        try:
            replies = self._cluster_calls(groups, keys, records)
        except _REDIS_ERRORS as exc:
            raise WindowStoreError(f"appending {len(keys)} records failed: {exc}") from exc
        results: list[AppendResult] = [_PENDING] * len(keys)
        for indices, reply in zip(groups, replies, strict=True):
            for i, result in zip(indices, self._parse(reply, len(indices)), strict=True):
                results[i] = result
        return results

    def _cluster_calls(
        self, groups: list[list[int]], keys: list[str], records: list[bytes]
    ) -> list[Any]:
        """Each group's script reply. redis-py's cluster pipeline has no `evalsha` (blocked),
        and would ask a node COMMAND GETKEYS for every call to route it: the calls go as raw
        commands, each to its slot's primary from the client's slot table."""
        assert isinstance(self._client, RedisCluster)
        client = self._client
        replies: list[Any] = [None] * len(groups)
        todo = list(range(len(groups)))
        for _attempt in range(2):
            pipe = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
            for g in todo:
                group_keys = [keys[i] for i in groups[g]]
                pipe.execute_command(
                    "EVALSHA", self._script.sha, len(group_keys), *group_keys, *self._argv,
                    *(records[i] for i in groups[g]),
                    target_nodes=client.get_node_from_key(group_keys[0]),  # type: ignore[no-untyped-call]
                )  # fmt: skip
            missing = []
            for g, reply in zip(todo, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(g)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    replies[g] = reply
            if not missing:
                return replies
            client.script_load(load_script())  # SCRIPT LOAD goes to every primary
            todo = missing
        raise WindowStoreError("the append script is missing on a primary after SCRIPT LOAD")

    @staticmethod
    def _parse(reply: Any, count: int) -> list[AppendResult]:
        """The script's flat reply ``[stored, flag, ...]`` as results."""
        if not isinstance(reply, list) or len(reply) != 2 * count:
            raise WindowStoreError(
                f"the append script answered {type(reply).__name__}, expected {2 * count} items"
            )
        return [
            AppendResult(bytes(reply[j]), duplicate=reply[j + 1] == 1, late=reply[j + 1] == 2)
            for j in range(0, len(reply), 2)
        ]
