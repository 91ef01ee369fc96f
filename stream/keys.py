"""Every Redis key riskstream writes, in one place: the prefixes, and the builders.

A key is ``<prefix><kind>:<tag>[:<suffix>]``. The global prefix (default ``"rs:"``) is set per
store, so several deployments or test runs can share one Redis. The tag is a hash of the user
id in braces: the raw id never appears in a key, and every key of one user lands in the same
Redis Cluster hash slot, so one script may touch all of them.

>>> window_key("rs:", "alice")
'rs:w:{4deaec0cce54da89}'
>>> cooldown_key("rs:", "alice", "fraud")
'rs:cd:{4deaec0cce54da89}:fraud'
>>> cooldown_key(shadow_prefix("rs:"), "alice", "fraud")
'rs:shadow:cd:{4deaec0cce54da89}:fraud'
>>> from redis.crc import key_slot
>>> slot = key_slot(window_key("rs:", "alice").encode())
>>> slot == key_slot(cooldown_key("rs:", "alice", "abnormal_click").encode())
True
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = [
    "COOLDOWN_KIND",
    "DEFAULT_PREFIX",
    "SHADOW_KIND",
    "USER_TAG_BYTES",
    "WINDOW_KIND",
    "check_prefix",
    "cooldown_key",
    "shadow_prefix",
    "user_tag",
    "window_key",
]

#: Global prefix of every key, unless a store is given another.
DEFAULT_PREFIX: Final = "rs:"
#: A user's window of event records (a string of fixed-size records, oldest first).
WINDOW_KIND: Final = "w:"
#: A user's alert cooldown of one alert type (present while alerts of that type are held back).
COOLDOWN_KIND: Final = "cd:"
#: Under the global prefix: the shadow model's own keys (its alert cooldowns), apart from the
#: live model's, so that the shadow never holds back a live alert nor the reverse.
SHADOW_KIND: Final = "shadow:"
#: Digest size of the user tag's hash: 64 bits, so two users of 10**8 share a tag with odds
#: of about 3e-4 in all (they would only share a slot and a key pair, never mix records).
USER_TAG_BYTES: Final = 8

# Alert types are the contract's label names; anything else in a key is refused, not escaped.
_ALERT_TYPE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it can start a key: braces would replace the user's hash tag.

    >>> check_prefix("rs:")
    'rs:'
    """
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"prefix: {prefix!r} must not contain '{{' or '}}' (the hash tag)")
    return prefix


def user_tag(user_id: str) -> str:
    """The user's cluster hash tag: a 64-bit blake2b of the id, hex, in braces.

    >>> user_tag("alice")
    '{4deaec0cce54da89}'
    """
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=USER_TAG_BYTES).hexdigest()
    return "{" + digest + "}"


def window_key(prefix: str, user_id: str) -> str:
    """The key of the user's window: ``<prefix>w:{<tag>}``."""
    return f"{check_prefix(prefix)}{WINDOW_KIND}{user_tag(user_id)}"


def cooldown_key(prefix: str, user_id: str, alert_type: str) -> str:
    """The key of the user's cooldown for one alert type: ``<prefix>cd:{<tag>}:<alert_type>``."""
    if not _ALERT_TYPE.fullmatch(alert_type):
        raise ValueError(f"alert_type: {alert_type!r} must match {_ALERT_TYPE.pattern}")
    return f"{check_prefix(prefix)}{COOLDOWN_KIND}{user_tag(user_id)}:{alert_type}"


def shadow_prefix(prefix: str) -> str:
    """The prefix of the shadow model's keys: ``<prefix>shadow:`` (its cooldowns are
    ``<prefix>shadow:cd:{<tag>}:<alert_type>``, in the user's slot like the live ones)."""
    return f"{check_prefix(prefix)}{SHADOW_KIND}"
