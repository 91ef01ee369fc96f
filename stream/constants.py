"""Every Redis key riskstream writes, in one place: the prefixes, and what goes after them.

A key is ``<prefix><kind>:<tag>[:<suffix>]``. The global prefix (default ``"rs:"``) is set per
store, so several deployments or test runs can share one Redis. The tag is a hash of the user
id in braces (see `stream.keys`): the raw id never appears in a key, and every key of one user
lands in the same Redis Cluster hash slot, so one script may touch all of them.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "COOLDOWN_KIND",
    "DEFAULT_PREFIX",
    "USER_TAG_BYTES",
    "WINDOW_KIND",
]

#: Global prefix of every key, unless a store is given another.
DEFAULT_PREFIX: Final = "rs:"
#: A user's window of event records (a string of fixed-size records, oldest first).
WINDOW_KIND: Final = "w:"
#: A user's alert cooldown of one alert type (present while alerts of that type are held back).
COOLDOWN_KIND: Final = "cd:"
#: Digest size of the user tag's hash: 64 bits, so two users of 10**8 share a tag with odds
#: of about 3e-4 in all (they would only share a slot and a key pair, never mix records).
USER_TAG_BYTES: Final = 8
