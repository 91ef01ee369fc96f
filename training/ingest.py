"""`riskstream ingest`: event JSON lines into a Parquet dataset (`training.parquet_source`).

Two passes, memory bounded by one chunk and one partition (plus 24 bytes per event for the
repeated-id check):

1. The file is cut into chunks at line ends; each chunk is parsed with the shared
   `events.parse_event` and encoded with `events.encode_event` (in `jobs` processes), and its
   rows are spilled to a temporary Arrow file per (day, bucket) partition. A refused line is
   recorded with its file, line and field; a 128-bit hash of every event id is kept.
2. Repeated event ids are found from the hashes (the first in file order stays); each partition
   is read back, rid of repeats, sorted by (user_id, ts_ms, line) and written as one Parquet file.

The same input gives a byte-identical dataset (fixed file names, fixed sort, no timestamps).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from events import (
    EncodingSpec,
    InvalidEvent,
    InvalidLabel,
    ParseStats,
    encode_event,
    parse_event,
    parse_label,
)
from events.contract import OPTIONAL_FIELDS
from events.stats import MAX_DISTINCT_UNKNOWN_TYPES
from training.corpus import FAR_FUTURE_MS, read_lines
from training.exceptions import DataError
from training.parquet_source import (
    DATASET_FORMAT,
    DATASET_VERSION,
    DAY_MS,
    MANIFEST,
    SCHEMA,
    bucket_of,
    day_text,
    partition_path,
)
from training.progress import Progress

__all__ = ["IngestReport", "ingest"]

CHUNK_BYTES: Final = 8 << 20
#: Refused rows named one by one in the report (all of them go to refused.jsonl).
_SHOW_REFUSED: Final = 10
_OVERFLOW: Final = "<other names>"
_DATASET_NAMES: Final = frozenset(
    {
        MANIFEST,
        "events",
        "labels.jsonl",
        "feedback.jsonl",
        "refused.jsonl",
        ".ingest-tmp",
        ".events-new",
    }
)


@dataclass
class IngestReport:
    """What `ingest` did: counts, refusals, where."""

    out: Path
    lines: int = 0
    events: int = 0  # rows written
    duplicates: int = 0
    refused: int = 0
    refused_by_field: Counter[str] = field(default_factory=Counter)
    first_refused: list[dict[str, Any]] = field(default_factory=list)
    partitions: int = 0
    days: int = 0
    buckets: int = 0
    bytes: int = 0
    wall_s: float = 0.0


@dataclass
class _Chunk:
    table: pa.Table
    hashes: npt.NDArray[np.uint64]  # (n, 2)
    stats: ParseStats
    refusals: list[tuple[int, str, str]]  # (line in chunk, field, error)
    lines: int


def _chunks(path: Path, size: int) -> list[tuple[int, int]]:
    """Byte ranges of about `size` that start and end at line ends."""
    total = path.stat().st_size
    out, start = [], 0
    with path.open("rb") as f:
        while start < total:
            f.seek(min(start + size, total))
            f.readline()
            end = min(f.tell(), total)
            out.append((start, end))
            start = end
    return out


def _columns() -> dict[str, list[Any]]:
    return {name: [] for name in SCHEMA.names}


def parse_chunk(path: Path, start: int, end: int, now_ms: int) -> _Chunk:
    """Parse lines [start, end) of `path`: rows (line numbers counted from the chunk), hashes."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(end - start)
    cols = _columns()
    spec = EncodingSpec()
    stats, refusals, digests = ParseStats(), [], []
    optional = list(OPTIONAL_FIELDS)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            event = parse_event(line, now_ms=now_ms)
        except InvalidEvent as exc:
            stats.refused_event(exc)
            refusals.append((lineno, exc.field, str(exc)))
            continue
        stats.accepted(event)
        cols["line"].append(lineno)
        cols["event_id"].append(event.event_id)
        cols["user_id"].append(event.user_id)
        cols["ts_ms"].append(event.ts_ms)
        cols["type"].append(event.raw_type if event.raw_type is not None else event.type)
        for name in optional:
            cols[name].append(getattr(event, name))
        cols["record"].append(encode_event(event, spec))
        digests.append(hashlib.blake2b(event.event_id.encode(), digest_size=16).digest())
    table = pa.table(cols, schema=SCHEMA)
    hashes = np.frombuffer(b"".join(digests), dtype=np.uint64).reshape(-1, 2)
    return _Chunk(table, hashes, stats, refusals, len(lines))


def _parse_job(args: tuple[Path, int, int, int]) -> _Chunk:
    return parse_chunk(*args)


def _merge_stats(into: ParseStats, more: ParseStats) -> None:
    into.events += more.events
    into.refused_by_field.update(more.refused_by_field)
    for name, n in sorted(more.unknown_types.items()):
        if name not in into.unknown_types and len(into.unknown_types) >= MAX_DISTINCT_UNKNOWN_TYPES:
            name = _OVERFLOW
        into.unknown_types[name] += n


def _parsed(path: Path, jobs: int, now_ms: int, chunk_bytes: int) -> Iterator[_Chunk]:
    tasks = [(path, a, b, now_ms) for a, b in _chunks(path, chunk_bytes)]
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(_parse_job, tasks)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        # In file order, at most 2 × jobs chunks in flight: parsed tables never pile up
        # while the spills are written.
        pending: deque[Future[_Chunk]] = deque()
        for task in tasks:
            pending.append(pool.submit(_parse_job, task))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _check_labels(path: Path) -> None:
    with path.open("rb") as f:
        for lineno, line in read_lines(path, f, False, "labels"):
            try:
                parse_label(line)
            except InvalidLabel as exc:
                raise DataError(f"{path}:{lineno}: bad label line: {exc}") from exc


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        path,
        compression="zstd",
        row_group_size=1 << 20,
        write_statistics=True,
        store_schema=True,
    )


def ingest(
    events: Path,
    out: Path,
    *,
    labels: Path | None = None,
    feedback: Path | None = None,
    buckets: int = 16,
    jobs: int = 1,
    progress: bool = True,
    now_ms: int = FAR_FUTURE_MS,
    chunk_bytes: int = CHUNK_BYTES,
    allow: list[str] | None = None,
) -> IngestReport:
    """Write the dataset for `events` (JSON lines) into the folder `out` (replacing a dataset
    there); labels and feedback are copied beside it (labels checked line by line).
    `out` may hold a dataset already (it is replaced) and the names in `allow`, nothing else."""
    began = time.perf_counter()
    events, out = Path(events), Path(out)
    for p in (events, labels, feedback):
        if p is not None and not Path(p).is_file():
            raise DataError(f"{p}: no such file")
    if not 1 <= buckets <= 4096:
        raise DataError(f"--buckets: must be in 1..4096, got {buckets}")
    ours = {*_DATASET_NAMES, *(allow or [])}
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if other:
            raise DataError(
                f"--out {out}: holds {other[0]!r}, not part of a dataset; give an empty or new "
                "folder (or an earlier dataset, which is replaced)"
            )
    if labels is not None:
        _check_labels(Path(labels))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".ingest-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    report = IngestReport(out=out, buckets=buckets)
    stats = ParseStats()
    hashes: list[npt.NDArray[np.uint64]] = []
    line_numbers: list[npt.NDArray[np.int64]] = []
    spills: dict[tuple[int, int], int] = {}
    refused_path = tmp / "refused.jsonl"
    try:
        with refused_path.open("wb") as refused_out, Progress(
            f"ingest {events.name}", events.stat().st_size, unit="B", enabled=progress,
            transient=True, unit_scale=True, summary=progress,
        ) as bar:  # fmt: skip
            base = 0
            for n, chunk in enumerate(_parsed(events, jobs, now_ms, chunk_bytes)):
                for lineno, fld, error in chunk.refusals:
                    row = {"file": events.name, "row": base + lineno, "field": fld, "error": error}
                    refused_out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
                    if len(report.first_refused) < _SHOW_REFUSED:
                        report.first_refused.append(row)
                _merge_stats(stats, chunk.stats)
                table = chunk.table.set_column(
                    0, "line", pc.add(chunk.table["line"], pa.scalar(base, pa.int64()))
                )
                base += chunk.lines
                hashes.append(chunk.hashes)
                line_numbers.append(table["line"].to_numpy())
                _spill(table, n, buckets, tmp, spills)
                bar.update(chunk_bytes)
            report.lines = base
        drop = _repeats(hashes, line_numbers)
        del hashes, line_numbers
        report.duplicates = len(drop)
        partitions = _write_partitions(tmp, out, spills, drop, progress)
        report.partitions = len(partitions)
        report.days = len({p["day"] for p in partitions})
        report.events = sum(p["rows"] for p in partitions)
        report.bytes = sum(p["bytes"] for p in partitions)
        report.refused = stats.refused
        report.refused_by_field = stats.refused_by_field
        os.replace(refused_path, out / "refused.jsonl")
        for name, src in (("labels.jsonl", labels), ("feedback.jsonl", feedback)):
            if src is not None:
                shutil.copyfile(src, out / name)
            else:
                (out / name).unlink(missing_ok=True)
        manifest = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "buckets": buckets,
            "encoding": EncodingSpec().to_dict(),
            "source": {
                "events": events.name,
                "labels": labels.name if labels is not None else None,
                "feedback": feedback.name if feedback is not None else None,
            },
            "lines": report.lines,
            "parsed": stats.events,
            "events": report.events,
            "duplicates": report.duplicates,
            "refused": stats.refused,
            "refused_by_field": dict(sorted(stats.refused_by_field.items())),
            "unknown_types": dict(sorted(stats.unknown_types.items())),
            "partitions": partitions,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.wall_s = time.perf_counter() - began
    return report


def _spill(
    table: pa.Table, chunk: int, buckets: int, tmp: Path, spills: dict[tuple[int, int], int]
) -> None:
    """The chunk's rows, one Arrow file per (day, bucket) partition it touches."""
    if table.num_rows == 0:
        return
    days = np.floor_divide(table["ts_ms"].to_numpy(), DAY_MS)
    users = table["user_id"].to_pylist()
    bucket = np.fromiter((bucket_of(u, buckets) for u in users), dtype=np.int64, count=len(users))
    key = days * buckets + bucket
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
    for part in np.split(order, cuts):
        k = int(key[part[0]])
        day, b = divmod(k, buckets)
        where = tmp / f"{day}-{b}"
        where.mkdir(exist_ok=True)
        with (
            pa.OSFile(str(where / f"{chunk:07d}.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, SCHEMA) as w,
        ):
            w.write_table(table.take(pa.array(part)))
        spills[(day, b)] = spills.get((day, b), 0) + len(part)


def _repeats(
    hashes: list[npt.NDArray[np.uint64]], lines: list[npt.NDArray[np.int64]]
) -> npt.NDArray[np.int64]:
    """Line numbers of the rows whose event id an earlier line already had (sorted)."""
    if not hashes:
        return np.zeros(0, dtype=np.int64)
    h = np.concatenate(hashes)
    ln = np.concatenate(lines)
    order = np.lexsort((ln, h[:, 1], h[:, 0]))
    hs = h[order]
    again = np.zeros(len(order), dtype=bool)
    again[1:] = (hs[1:] == hs[:-1]).all(axis=1)
    return np.sort(ln[order][again])


def _write_partitions(
    tmp: Path,
    out: Path,
    spills: dict[tuple[int, int], int],
    drop: npt.NDArray[np.int64],
    progress: bool,
) -> list[dict[str, Any]]:
    staging = out / ".events-new"
    shutil.rmtree(staging, ignore_errors=True)
    partitions = []
    with Progress(
        "write partitions",
        len(spills),
        unit="part",
        enabled=progress,
        transient=True,
        summary=progress,
    ) as bar:
        for day, b in sorted(spills):
            where = tmp / f"{day}-{b}"
            parts = [
                pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in sorted(where.iterdir())
            ]
            table = pa.concat_tables(parts)
            if len(drop):
                keep = ~np.isin(table["line"].to_numpy(), drop)
                if not keep.all():
                    table = table.filter(pa.array(keep))
            table = table.sort_by(
                [("user_id", "ascending"), ("ts_ms", "ascending"), ("line", "ascending")]
            )
            rel = partition_path(day, b)
            if table.num_rows:
                _write_parquet(table, staging / rel.removeprefix("events/"))
                size = (staging / rel.removeprefix("events/")).stat().st_size
                partitions.append(
                    {
                        "day": day_text(day),
                        "bucket": b,
                        "file": rel,
                        "rows": table.num_rows,
                        "bytes": size,
                    }
                )
            shutil.rmtree(where)
            bar.update(1)
    shutil.rmtree(out / "events", ignore_errors=True)
    if partitions:
        os.replace(staging, out / "events")
    else:
        shutil.rmtree(staging, ignore_errors=True)
    return partitions
