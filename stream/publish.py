"""Publishing with retry: the one place the worker puts messages on the broker and waits.

`publish_all(send, records, ...)` sends every record, waits until the broker has each one, and
resends those that failed with exponential backoff (0.1 s doubling up to `max_backoff_s`) until
none is left. It returns only then: the caller acknowledges the batch's offsets after it, so
a failure delays the commit and never loses a message (at-least-once: a resend may duplicate
one the broker did take). Both the runtime's alerts, scores and dead letters
(`stream.runtime`) and the dead letters of undecodable batches (`stream.codecs`) go out here.

A dead letter the broker (or the producer) refuses as too large would be refused on every
retry and stall its partition for good: when `dlq_topic` is given, such a record is resent with
its headers only (`stream.dlq.without_value`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from stream.dlq import Headers, is_too_large, without_value

__all__ = ["FIRST_BACKOFF_S", "Headers", "Record", "Send", "publish_all"]

log = logging.getLogger(__name__)

#: (topic, key, value, headers): one message to publish.
Record = tuple[str, bytes | None, bytes, Headers | None]
#: (topic name, key, value, headers) → awaitable that completes when the broker has it.
Send = Callable[[str, bytes | None, bytes, Headers | None], Awaitable[Any]]

#: The first wait before a resend; it doubles up to the caller's `max_backoff_s`.
FIRST_BACKOFF_S: Final = 0.1


def _headers_only(record: Record) -> Record:
    topic, key, value, headers = record
    log.error("a dead letter of %d bytes was refused as too large: sending its headers only",
              len(value))  # fmt: skip
    return (topic, key, b"", without_value(value, headers))


async def publish_all(
    send: Send,
    records: Sequence[Record],
    *,
    max_backoff_s: float,
    dlq_topic: str | None = None,
    on_retry: Callable[[], object] | None = None,
    what: str = "messages",
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> int:
    """Send `records` concurrently and resend the failed ones with backoff until the broker
    has them all; returns how many rounds it took (1: no retry).

    `dlq_topic`: records to it refused as too large are resent with their headers only.
    `on_retry`: called once per round that had failures (e.g. to count it). `what` names the
    records in the warning. Any failure is retried: the caller's stop (cancellation) ends it.
    """
    pending = list(records)
    backoff = FIRST_BACKOFF_S
    rounds = 0
    while pending:
        rounds += 1
        results = await asyncio.gather(*(send(*r) for r in pending), return_exceptions=True)
        failed = [
            _headers_only(r)
            if dlq_topic is not None and r[0] == dlq_topic and r[2] and is_too_large(exc)
            else r
            for r, exc in zip(pending, results, strict=True)
            if isinstance(exc, BaseException)
        ]
        if not failed:
            break
        if on_retry is not None:
            on_retry()
        first = next(exc for exc in results if isinstance(exc, BaseException))
        log.warning("%d of %d %s not published (%s); retrying in %.1f s",
                    len(failed), len(pending), what, first, backoff)  # fmt: skip
        pending = failed
        await sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)
    return rounds
