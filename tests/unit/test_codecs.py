"""`stream.codecs`: every codec decodes; an undecodable batch becomes placeholders, not an error.

Record batches are built with aiokafka's own builder and read back through aiokafka's own
`PartitionRecords` (what its fetcher does with a fetch response), with `stream.codecs`' record
set in between. The real broker and worker: tests/integration/test_codecs_worker.py.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from stream.codecs import (
    MARKER_HEADER,
    UndecodableBatch,
    _TolerantRecords,
    codec_name,
    missing_codecs,
    split_undecodable,
)

TP = TopicPartition("events", 3)
_ATTRIBUTES_AT = struct.calcsize(">qiib") + 4  # after BaseOffset, Length, Epoch, Magic, CRC
_CRC_AT = struct.calcsize(">qiib")


def _batch(base: int, values: list[bytes], codec: int = 0) -> bytearray:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=0, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for i, value in enumerate(values):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=value, headers=[])
    buf = builder.build()
    struct.pack_into(">q", buf, 0, base)  # the broker assigns the base offset (not in the CRC)
    return buf


def _recrc(buf: bytearray) -> bytearray:
    struct.pack_into(">I", buf, _CRC_AT, calc_crc32c(bytes(buf[_ATTRIBUTES_AT:])))
    return buf


def _unknown_codec(base: int, values: list[bytes]) -> bytearray:
    """A valid batch (good CRC) whose attributes name codec 5, which no Kafka has."""
    buf = _batch(base, values)
    (attrs,) = struct.unpack_from(">h", buf, _ATTRIBUTES_AT)
    struct.pack_into(">h", buf, _ATTRIBUTES_AT, (attrs & ~0x07) | 0x05)
    return _recrc(buf)


def _bad_crc(base: int, values: list[bytes]) -> bytearray:
    buf = _batch(base, values)
    buf[-1] ^= 0xFF
    return buf


def _read(data: bytes, fetch_offset: int = 0) -> list[Any]:
    records = _TolerantRecords(MemoryRecords, data)
    return list(PartitionRecords(TP, records, [], fetch_offset, None, None, True, READ_UNCOMMITTED))


def test_every_kafka_codec_decodes_here() -> None:
    assert missing_codecs() == []
    values = [b'{"event_id": "e%d"}' % i for i in range(20)]
    for codec in (1, 2, 3, 4):
        got = _read(bytes(_batch(40, values, codec)))
        assert [r.value for r in got] == values, codec_name(codec)
        assert [r.offset for r in got] == list(range(40, 60))


def test_undecodable_batches_become_placeholders_for_each_offset() -> None:
    good_a, lost = [b"a0", b"a1", b"a2"], [b"x3", b"x4", b"x5", b"x6"]
    good_b, corrupt = [b"b7"], [b"c8", b"c9"]
    unknown = _unknown_codec(3, lost)
    data = bytes(_batch(0, good_a, 3) + unknown + _batch(7, good_b, 4) + _bad_crc(8, corrupt))
    got = _read(data)

    assert [r.offset for r in got] == list(range(10)), "every offset once, no gap"
    assert [r.value for r in got[:3]] == good_a
    assert got[7].value == b"b7"
    headers = [dict(r.headers) for r in got]
    assert all(MARKER_HEADER not in h for h in headers[:3] + headers[7:8])
    assert [headers[i][MARKER_HEADER] for i in (3, 4, 5, 8)] == [b""] * 4  # continuations
    assert b"Unknown compression codec 0x05" in headers[6][MARKER_HEADER]
    assert b"CRC" in headers[9][MARKER_HEADER]

    good, bad = split_undecodable([SimpleNamespace(message=r) for r in got])
    assert [e.message.value for e in good] == [*good_a, b"b7"]
    assert [(b.first_offset, b.last_offset, b.codec) for b in bad] == [
        (3, 6, "codec-5"),
        (8, 9, "none"),
    ]
    assert bad[0].raw == bytes(unknown), "the dead letter keeps the batch as fetched"
    assert (bad[0].topic, bad[0].partition) == ("events", 3)


def test_a_fetch_from_inside_an_undecodable_batch_still_reaches_its_last_offset() -> None:
    data = bytes(_unknown_codec(10, [b"x"] * 5) + _batch(15, [b"y"]))
    got = _read(data, fetch_offset=12)
    assert [r.offset for r in got] == [12, 13, 14, 15]
    _, bad = split_undecodable([SimpleNamespace(message=r) for r in got])
    assert [(b.first_offset, b.last_offset) for b in bad] == [(10, 14)]


def test_dead_letter_headers_and_cut() -> None:
    batch = UndecodableBatch("ev", 2, 100, 104, "lz4", "UnsupportedCodecError: no lz4", b"z" * 50)
    key, value, headers = batch.dead_letter(max_bytes=20)
    h = dict(headers)
    assert key is None
    assert value == b"z" * 20
    assert h["field"] == b"batch"
    assert h["reason"] == b"undecodable record batch (lz4): UnsupportedCodecError: no lz4"
    assert (h["source_topic"], h["source_partition"], h["source_offset"]) == (b"ev", b"2", b"100")
    assert (h["source_last_offset"], h["records"], h["codec"]) == (b"104", b"5", b"lz4")
    assert (h["truncated"], h["original_bytes"]) == (b"1", b"50")
    assert "ev[2] offsets 100-104" in batch.describe()


@pytest.mark.parametrize(("attrs", "name"), [(0, "none"), (0x11, "gzip"), (0x24, "zstd")])
def test_codec_name(attrs: int, name: str) -> None:
    assert codec_name(attrs) == name


def test_the_worker_side_declares_and_the_image_checks_every_codec() -> None:
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    extras = {
        m.group(1): set(m.group(2).split(","))
        for m in (re.match(r"([a-z-]+)\[([a-z0-9,]+)\]", d) for d in deps)
        if m
    }
    assert {"lz4", "snappy", "zstd"} <= extras["aiokafka"]  # the worker's consumer
    assert {"lz4", "snappy", "zstd"} <= extras["kafka-python"]  # riskstream replay
    dockerfile = (root / "docker" / "worker.Dockerfile").read_text()
    assert "from stream.codecs import missing_codecs" in dockerfile
