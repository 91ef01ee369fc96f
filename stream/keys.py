"""Redis key builders: a user's window and alert cooldown keys share one cluster hash tag.

>>> window_key("rs:", "alice")
'rs:w:{4deaec0cce54da89}'
>>> cooldown_key("rs:", "alice", "fraud")
'rs:cd:{4deaec0cce54da89}:fraud'
>>> from redis.crc import key_slot
>>> slot = key_slot(window_key("rs:", "alice").encode())
>>> slot == key_slot(cooldown_key("rs:", "alice", "abnormal_click").encode())
True
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from stream.constants import COOLDOWN_KIND, USER_TAG_BYTES, WINDOW_KIND

__all__ = ["check_prefix", "cooldown_key", "user_tag", "window_key"]

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
