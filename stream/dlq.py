"""Dead letters: what a refused message becomes on a dead-letter topic, bounded in size (the
worker's `events.dlq` and the review service's `alerts.dlq` alike: `dead_letter_of`).

A dead letter carries the original bytes, so that it can be fixed and replayed, but never more
than `dlq_max_bytes` of them (a setting, default 64 KiB: the contract's own limit, so every
message refused for anything but its size is kept whole). A longer value keeps its first
`dlq_max_bytes` bytes, and the headers say so: `truncated=1`, `original_bytes`, and the `sha256`
of the whole. The key keeps at most `DLQ_MAX_KEY_BYTES` (`key_truncated=1`,
`original_key_bytes`). Without the cap a refused 1 MiB message would exceed the producer's
request size (Faust's default: 1,000,000 bytes), its publication would fail on every retry,
and the partition would stall behind it. Should the broker still refuse a dead letter as too
large (its `message.max.bytes` below ours), it is sent with its headers only (`without_value`).

A flood of bad input must not flood the log either: `DeadLetterLog` writes one line per
`every_s` at most, with the count of those it did not show.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Final

from events import InvalidEvent
from stream.messages import Incoming

__all__ = [
    "DLQ_MAX_KEY_BYTES",
    "DeadLetter",
    "DeadLetterLog",
    "dead_letter",
    "dead_letter_of",
    "is_too_large",
    "truncation_headers",
    "without_value",
]

log = logging.getLogger("stream.processor")  # where dead letters were always logged

#: A dead letter keeps at most this much of the original key.
DLQ_MAX_KEY_BYTES: Final = 1024
#: The `reason` and `field` headers keep at most this much (a reason may quote the input).
_MAX_REASON_BYTES: Final = 1000
_MAX_FIELD_BYTES: Final = 200

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original bytes (or their first `dlq_max_bytes`) and why they were refused (headers
    carry the reason and source, and say whether and how the value was cut)."""

    key: bytes | None
    value: bytes
    field: str
    reason: str
    headers: tuple[tuple[str, bytes], ...]


def truncation_headers(value: bytes) -> Headers:
    """The headers of a dead letter whose value was cut: the original's length and sha256.

    >>> truncation_headers(b"abc")[:2]
    [('truncated', b'1'), ('original_bytes', b'3')]
    """
    return [
        ("truncated", b"1"),
        ("original_bytes", str(len(value)).encode()),
        ("sha256", hashlib.sha256(value).hexdigest().encode()),
    ]


def dead_letter(msg: Incoming, exc: InvalidEvent, max_bytes: int) -> DeadLetter:
    """The dead letter of `msg`, refused for `exc`, its value cut to `max_bytes`."""
    return dead_letter_of(
        msg.key, msg.value, field=exc.field, reason=exc.reason, topic=msg.topic,
        partition=msg.partition, offset=msg.offset, max_bytes=max_bytes,
    )  # fmt: skip


def dead_letter_of(
    key: bytes | None,
    value: bytes | None,
    *,
    field: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int,
    extra: Headers | None = None,
) -> DeadLetter:
    """The dead letter of the message at `topic[partition]@offset`, refused for `reason` (at
    `field`): the one place its headers are built, for the worker's `events.dlq` and the review
    service's `alerts.dlq` alike. The value is cut to `max_bytes`, the key to
    `DLQ_MAX_KEY_BYTES`, and the headers say so. `extra` headers follow the source's.

    >>> d = dead_letter_of(b"u1", b"{}", field="ts", reason="missing", topic="events",
    ...                    partition=3, offset=7, max_bytes=1)
    >>> [name for name, _ in d.headers][:6]
    ['reason', 'field', 'source_topic', 'source_partition', 'source_offset', 'truncated']
    >>> d.value
    b'{'
    """
    value = value or b""
    headers: Headers = [
        ("reason", reason.encode()[:_MAX_REASON_BYTES]),
        ("field", field.encode()[:_MAX_FIELD_BYTES]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        *(extra or ()),
    ]
    if len(value) > max_bytes:
        headers += truncation_headers(value)
        value = value[:max_bytes]
    if key is not None and len(key) > DLQ_MAX_KEY_BYTES:
        headers += [("key_truncated", b"1"), ("original_key_bytes", str(len(key)).encode())]
        key = key[:DLQ_MAX_KEY_BYTES]
    return DeadLetter(key, value, field, reason, tuple(headers))


def without_value(value: bytes, headers: Headers | None) -> Headers:
    """The headers of a dead letter sent without its value (the broker refused it as too
    large): the truncation headers of `value`, unless it was cut already and has them."""
    kept = list(headers or [])
    if any(name == "truncated" for name, _ in kept):
        return kept
    return kept + truncation_headers(value)


def is_too_large(exc: BaseException) -> bool:
    """Whether a failed send was refused for its size (by the client or by the broker)."""
    from aiokafka.errors import MessageSizeTooLargeError

    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain (Faust wraps aiokafka's error), never a cycle
        if seen is None:
            return False
        if isinstance(seen, MessageSizeTooLargeError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class DeadLetterLog:
    """Logs dead letters, one line per `every_s` at most (the first at once); those the parser
    refused with `InvalidEvent` and those it failed on (a bug: with the traceback) apart."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = {False: -math.inf, True: -math.inf}
        self._unlogged = {False: 0, True: 0}

    def report(self, msg: Incoming, exc: BaseException, *, unexpected: bool = False) -> None:
        """Count one dead letter; log it if the last line of its kind is `every_s` old.
        `unexpected`: the parser raised something other than `InvalidEvent`."""
        self._unlogged[unexpected] += 1
        now = time.monotonic()
        if now - self._last[unexpected] < self.every_s:
            return
        more = self._unlogged[unexpected] - 1
        log.log(
            logging.ERROR if unexpected else logging.WARNING,
            "dead letter %s[%d]@%d: %s%s",
            msg.topic, msg.partition, msg.offset, exc,
            f" (and {more} more since the last report)" if more else "",
            exc_info=exc if unexpected else None,
        )  # fmt: skip
        self._last[unexpected] = now
        self._unlogged[unexpected] = 0
