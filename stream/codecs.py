"""Compressed input, and the record batches the worker cannot decode.

Kafka producers compress whole record batches (gzip, snappy, lz4, zstd). aiokafka decodes gzip
itself and the other three through `cramjam` (its `lz4`, `snappy` and `zstd` extras, which the
worker's dependencies pull in). `missing_codecs()` names those this process cannot decode.

A batch that still cannot be decoded (a codec newer than this aiokafka, a library missing, a
corrupt batch: bad CRC, a payload that does not decompress, records that do not parse) would
raise in aiokafka's fetcher, and Faust's consumer would die on it; restarted, it would fetch the
same batch and die again. The policy instead: **the batch is dead-lettered whole and skipped**.

- `tolerate_undecodable_batches()` (called by `stream.transport.worker_transport`) wraps the
  record sets of aiokafka's fetcher: a batch that fails to decode becomes one empty placeholder
  record per offset it covers, so that Faust's offset tracking sees no gap; the last one
  carries the batch's raw bytes and the error in its headers.
- the agent takes the placeholders out of each micro-batch (`split_undecodable`) and
  `dead_letter_undecodable` publishes one dead letter per batch to the dead-letter topic
  before the micro-batch is acknowledged (at-least-once, as every other dead letter): `field`
  `batch`, `reason`, `source_topic`, `source_partition`, `source_offset` (its first offset),
  `source_last_offset`, `codec`, `records`, and as value the raw batch (v2 format, header
  included), cut to `dlq_max_bytes`. It logs one ERROR line and counts
  `undecodable_batches_total{codec}` (and `dlq_total{reason="batch"}`).

Only a fetch response whose framing is broken (a batch shorter than any batch header, so that
its offsets are unknown) still raises: there is nothing to skip to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from stream.dlq import dead_letter_of
from stream.publish import Record, Send, publish_all

if TYPE_CHECKING:
    from stream.prometheus import Metrics
    from stream.settings import WorkerSettings

__all__ = [
    "CODEC_NAMES",
    "MARKER_HEADER",
    "UndecodableBatch",
    "dead_letter_undecodable",
    "missing_codecs",
    "split_undecodable",
    "tolerate_undecodable_batches",
]

log = logging.getLogger(__name__)

#: The compression codec ids of the record batch attributes (its lowest three bits).
CODEC_NAMES: Final = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
#: The header of a placeholder record: empty on all but the last offset of the batch.
MARKER_HEADER: Final = "x-riskstream-undecodable"
_FIRST_OFFSET: Final = "x-riskstream-first-offset"
_CODEC: Final = "x-riskstream-codec"
_LOG_OVERHEAD: Final = 12  # BaseOffset (int64) + Length (int32) before every batch


def missing_codecs() -> list[str]:
    """The codecs aiokafka cannot decode in this process (gzip it always can)."""
    from aiokafka import codec

    have = {"snappy": codec.has_snappy, "lz4": codec.has_lz4, "zstd": codec.has_zstd}
    return [name for name, check in have.items() if not check()]


def codec_name(attributes: int) -> str:
    """The codec of a record batch's attributes.

    >>> codec_name(0x03), codec_name(0x13), codec_name(0x07)
    ('lz4', 'lz4', 'codec-7')
    """
    return CODEC_NAMES.get(attributes & 0x07, f"codec-{attributes & 0x07}")


# -- the fetcher side (aiokafka's consumer thread) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Placeholder:
    """Stands in for one offset of an undecodable batch (what aiokafka reads of a record)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    checksum: None = None


class _TolerantBatch:
    """One record batch: its records, or (when they cannot be had) placeholders."""

    def __init__(self, batch: Any, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw
        self._crc_ok = True
        self._records: Iterator[Any] | None = None

    def __getattr__(self, name: str) -> Any:  # base_offset, next_offset, producer_id, ...
        return getattr(self._batch, name)

    def validate_crc(self) -> bool:
        # A bad CRC is reported as this batch's error instead of raised for the whole fetch.
        self._crc_ok = bool(self._batch.validate_crc())
        return True

    def __iter__(self) -> Iterator[Any]:
        if self._records is None:
            self._records = self._decode()
        return self._records

    def __next__(self) -> Any:  # aiokafka reads a control batch's marker with next()
        return next(iter(self))

    def _decode(self) -> Iterator[Any]:
        if not self._crc_ok:
            return self._placeholders("CorruptRecordException: CRC mismatch")
        try:
            return iter(list(self._batch))
        except Exception as exc:  # whatever decoding raised: the batch is lost
            return self._placeholders(f"{type(exc).__name__}: {exc}")

    def _placeholders(self, error: str) -> Iterator[_Placeholder]:
        batch = self._batch
        last = int(batch.next_offset) - 1
        first = int(getattr(batch, "base_offset", last))
        ts: int = getattr(batch, "max_timestamp", None) or getattr(batch, "timestamp", None) or -1
        codec = codec_name(int(getattr(batch, "attributes", 0)))
        for offset in range(first, last):
            yield _Placeholder(offset, ts, 0, None, b"", [(MARKER_HEADER, b"")])
        headers = [
            (MARKER_HEADER, error.encode(errors="replace") or b"?"),
            (_FIRST_OFFSET, str(first).encode()),
            (_CODEC, codec.encode()),
        ]
        yield _Placeholder(last, ts, 0, None, bytes(self._raw), headers)


class _TolerantRecords:
    """aiokafka's `MemoryRecords` of one fetched partition, handing out `_TolerantBatch`es."""

    riskstream_tolerant: Final = True

    def __init__(self, inner_type: Callable[[bytes], Any], data: bytes) -> None:
        self._inner = inner_type(data)
        self._view = memoryview(data)
        self._pos = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def has_next(self) -> bool:
        return bool(self._inner.has_next())

    def next_batch(self) -> _TolerantBatch | None:
        pos = self._pos
        batch = self._inner.next_batch()
        if batch is None:
            return None
        # The same walk as aiokafka's: batches lie end to end, each 12 + Length bytes.
        length = int.from_bytes(self._view[pos + 8 : pos + _LOG_OVERHEAD], "big", signed=True)
        self._pos = pos + _LOG_OVERHEAD + length
        return _TolerantBatch(batch, self._view[pos : self._pos])


def tolerate_undecodable_batches() -> bool:
    """Make aiokafka's fetcher (in this process) hand out placeholders for undecodable batches
    instead of raising; idempotent. Returns False where this aiokafka has no hook for it."""
    from aiokafka.consumer import fetcher

    missing = missing_codecs()
    if missing:
        log.warning(
            "aiokafka cannot decode %s here (install aiokafka[lz4,snappy,zstd]): batches "
            "compressed so will be dead-lettered",
            ", ".join(missing),
        )
    current = getattr(fetcher, "MemoryRecords", None)
    if current is None:
        log.warning("aiokafka's fetcher has no MemoryRecords: undecodable batches will stop "
                    "the worker")  # fmt: skip
        return False
    if getattr(current, "riskstream_tolerant", False):
        return True
    inner_type = current

    class TolerantRecords(_TolerantRecords):
        def __init__(self, data: bytes) -> None:
            super().__init__(inner_type, data)

    fetcher.MemoryRecords = TolerantRecords
    return True


# -- the agent side (the event loop) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UndecodableBatch:
    """A record batch that could not be decoded, as its last placeholder reported it."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    codec: str
    error: str
    raw: bytes  # the whole batch as the broker sent it (header included)

    @property
    def reason(self) -> str:
        return f"undecodable record batch ({self.codec}): {self.error}"

    def describe(self) -> str:
        """Where it was and why, on one line."""
        return (
            f"{self.topic}[{self.partition}] offsets {self.first_offset}-{self.last_offset}: "
            f"{self.reason}"
        )

    def dead_letter(self, max_bytes: int) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        """(key, value, headers) of its dead letter: the raw batch, cut to `max_bytes`."""
        extra = [
            ("source_last_offset", str(self.last_offset).encode()),
            ("codec", self.codec.encode()),
            ("records", str(self.last_offset - self.first_offset + 1).encode()),
        ]
        d = dead_letter_of(None, self.raw, field="batch", reason=self.reason, topic=self.topic,
                           partition=self.partition, offset=self.first_offset,
                           max_bytes=max_bytes, extra=extra)  # fmt: skip
        return d.key, d.value, list(d.headers)


def _headers(message: Any) -> Mapping[str, Any]:
    headers = getattr(message, "headers", None) or ()
    if isinstance(headers, Mapping):
        return headers
    return {name: value for name, value in headers}


def _undecodable(message: Any) -> UndecodableBatch | bool:
    """False for an ordinary message; True for a placeholder that is not its batch's last;
    the `UndecodableBatch` for the last."""
    headers = _headers(message)
    error = headers.get(MARKER_HEADER)
    if error is None:
        return False
    if not error:
        return True
    first = headers.get(_FIRST_OFFSET) or b""
    return UndecodableBatch(
        topic=message.topic,
        partition=message.partition,
        first_offset=int(first) if first.isdigit() else message.offset,
        last_offset=message.offset,
        codec=(headers.get(_CODEC) or b"?").decode(errors="replace"),
        error=bytes(error).decode(errors="replace"),
        raw=bytes(message.value or b""),
    )


def split_undecodable(events: Sequence[Any]) -> tuple[list[Any], list[UndecodableBatch]]:
    """The Faust events of a micro-batch that carry messages, and the undecodable batches
    whose placeholders it held (each once, at its last offset). Acknowledge all of `events`."""
    good: list[Any] = []
    bad: list[UndecodableBatch] = []
    for event in events:
        found = _undecodable(event.message)
        if found is False:
            good.append(event)
        elif isinstance(found, UndecodableBatch):
            bad.append(found)
    return good, bad


async def dead_letter_undecodable(
    batches: Sequence[UndecodableBatch], send: Send, settings: WorkerSettings, metrics: Metrics
) -> None:
    """Log, count and publish each batch's dead letter; returns once the broker has them all
    (retrying with backoff, as the runtime does for every other dead letter)."""
    for batch in batches:
        log.error("skipped %s; dead-lettered to %s", batch.describe(), settings.dlq_topic)
    records: list[Record] = [
        (settings.dlq_topic, *batch.dead_letter(settings.dlq_max_bytes)) for batch in batches
    ]
    await publish_all(
        send, records, max_backoff_s=settings.retry_max_backoff_s, dlq_topic=settings.dlq_topic,
        on_retry=metrics.retries.labels("broker").inc, what="dead letters of undecodable batches",
    )  # fmt: skip
    for batch in batches:
        metrics.undecodable_batches.labels(batch.codec).inc()
        metrics.dlq.labels("batch").inc()
