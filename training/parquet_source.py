"""The columnar backend of the corpus: a Parquet dataset that `riskstream ingest` writes.

Layout of a dataset folder::

    dataset.json                         what was ingested: counts, refusals by field, partitions
    events/day=YYYY-MM-DD/bucket=NNN/part-0.parquet
    labels.jsonl, feedback.jsonl         copied beside the events when given
    refused.jsonl                        every refused row: file, row, field, error

Rows are partitioned by the UTC day of `ts` and bucketed by a hash of `user_id`; inside a
file they are sorted by (user_id, ts_ms, line). Besides the contract's fields each row carries
`line` (its line in the source: ties in time keep file order) and `record`, the event's
`events.encode_event` bytes under the spec in `dataset.json` (category code provisional: it is
re-derived from `category` for the spec a reader uses). Repeated event ids are dropped at ingest
(the first in file order stays), so a reader needs no set of seen ids.

Reading goes bucket by bucket: a bucket holds every event of its users, whatever the day, so
one bucket's columns are the most that is held besides the users already built.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from events import RECORD_DTYPE, RECORD_SIZE, EncodingSpec, Event, ParseStats, encode_event
from events.contract import OPTIONAL_FIELDS, OTHER_TYPE
from events.parse import MAX_FUTURE_MS
from events.window import records_ts_ms
from training.corpus import EventIds, SourceRead, UserHistory, sessions
from training.exceptions import DataError
from training.progress import Progress

__all__ = [
    "DATASET_FORMAT",
    "DATASET_VERSION",
    "MANIFEST",
    "SCHEMA",
    "ParquetSource",
    "bucket_of",
    "is_dataset",
    "partition_path",
]

logger = logging.getLogger(__name__)

MANIFEST: Final = "dataset.json"
DATASET_FORMAT: Final = "riskstream-events"
DATASET_VERSION: Final = 1
DAY_MS: Final = 86_400_000
_ARROW_TYPE: Final = {"str": pa.string(), "amount": pa.float64(), "count": pa.int64()}
#: The dataset's columns: provenance, the required fields, the optional ones, the record.
SCHEMA: Final = pa.schema(
    [
        ("line", pa.int64()),
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("type", pa.string()),  # as sent: an unknown type keeps its name
        *(
            (name, _ARROW_TYPE.get(kind, pa.string()))
            for name, (kind, _) in OPTIONAL_FIELDS.items()
        ),
        ("record", pa.binary(RECORD_SIZE)),
    ]
)
_READ_COLUMNS: Final = [
    "line",
    "user_id",
    "ts_ms",
    "type",
    "order_id",
    "category",
    "record",
]
#: Spec settings the stored records depend on (the category code is re-derived on reading).
_RECORD_SETTINGS: Final = (
    "version",
    "event_types",
    "price_edges",
    "amount_edges",
    "quantity_edges",
)


def bucket_of(user_id: str, buckets: int) -> int:
    """The user-hash bucket of `user_id` (stable across runs and machines)."""
    return zlib.crc32(user_id.encode()) % buckets


def day_text(day: int) -> str:
    """Days since the epoch as YYYY-MM-DD."""
    return str(np.datetime64(day, "D"))


def partition_path(day: int, bucket: int) -> str:
    """A partition's file, relative to the dataset folder."""
    return f"events/day={day_text(day)}/bucket={bucket:03d}/part-0.parquet"


def is_dataset(path: Path) -> bool:
    """Whether `path` is a dataset folder (it has a `dataset.json`)."""
    return path.is_dir() and (path / MANIFEST).is_file()


def load_manifest(path: Path) -> dict[str, Any]:
    """The dataset's `dataset.json`, checked."""
    where = path / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(where.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path}: not an events dataset (no {MANIFEST}; see riskstream ingest)"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: unreadable ({exc})") from None
    if manifest.get("format") != DATASET_FORMAT or manifest.get("version") != DATASET_VERSION:
        raise DataError(
            f"{where}: format {manifest.get('format')!r} version {manifest.get('version')!r}, "
            f"this code reads {DATASET_FORMAT!r} version {DATASET_VERSION}"
        )
    return manifest


def _read(path: Path, columns: list[str] | None) -> pa.Table:
    """One partition file, on this thread: Arrow's reader threads each keep a malloc arena,
    measured at ~100 B/event left resident after the tables were freed (40 without)."""
    return pq.read_table(path, columns=columns, use_threads=False, pre_buffer=False)


def _numpy_records(column: pa.ChunkedArray) -> npt.NDArray[np.void]:
    """The fixed-width `record` column as a writable RECORD_DTYPE array (one copy)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data = arr.buffers()[1]
    raw = np.frombuffer(data, dtype=RECORD_DTYPE, count=len(arr), offset=arr.offset * RECORD_SIZE)
    return raw.copy()


def _string_buffers(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """A string column as (UTF-8 bytes, offsets): row i is bytes[offsets[i]:offsets[i + 1]]."""
    arr = column.combine_chunks().cast(pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return data, offsets


def _category_codes(column: pa.ChunkedArray, spec: EncodingSpec) -> npt.NDArray[np.uint8]:
    """Each row's category code under `spec` (0 where absent)."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    names = encoded.dictionary.to_pylist()
    lut = np.array([0, *(spec.category_code(n) for n in names)], dtype=np.uint8)
    idx: npt.NDArray[np.int64] = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    codes: npt.NDArray[np.uint8] = lut[idx.astype(np.int64) + 1]
    return codes


def _row_events(table: pa.Table) -> list[Event]:
    """Rows back into events (the slow path, for a spec the stored records do not fit)."""
    names = [n for n in OPTIONAL_FIELDS if n in table.column_names]
    events = []
    for row in table.select(["event_id", "user_id", "ts_ms", "type", *names]).to_pylist():
        etype, raw_type = row.pop("type"), None
        if etype not in _KNOWN:
            raw_type, etype = etype, OTHER_TYPE
        extra = {k: v for k, v in row.items() if k in OPTIONAL_FIELDS and v is not None}
        events.append(
            Event(row["event_id"], row["user_id"], row["ts_ms"], etype, raw_type, **extra)
        )
    return events


_KNOWN: Final = frozenset(EncodingSpec().event_types) - {OTHER_TYPE}


@dataclass
class ParquetSource:
    """An events dataset folder (`riskstream ingest`, `simulate --format parquet`)."""

    path: Path

    def __post_init__(self) -> None:
        self.manifest = load_manifest(self.path)

    def labels(self) -> Path | None:
        found = self.path / "labels.jsonl"
        return found if found.is_file() else None

    def feedback(self) -> Path | None:
        found = self.path / "feedback.jsonl"
        return found if found.is_file() else None

    def contract_rows(self, chunk_rows: int = 8192) -> Iterator[dict[str, Any]]:
        """Every event as its contract fields (`ts` in epoch ms, empty fields left out), in the
        order of the lines it was ingested from: what replaying the original file would send
        (`riskstream backtest` on a dataset)."""
        names = ["line", "event_id", "user_id", "ts_ms", "type", *OPTIONAL_FIELDS]
        parts = [_read(self.path / p["file"], names) for p in self.manifest["partitions"]]
        if not parts:
            return
        table = pa.concat_tables(parts)
        table = table.take(pc.sort_indices(table, [("line", "ascending")]))
        for start in range(0, table.num_rows, chunk_rows):
            for row in table.slice(start, chunk_rows).to_pylist():
                del row["line"]
                row["ts"] = row.pop("ts_ms")
                yield {k: v for k, v in row.items() if v is not None}

    def files_by_bucket(self) -> list[list[Path]]:
        """Each bucket's partition files, in day order."""
        out: list[list[Path]] = [[] for _ in range(int(self.manifest["buckets"]))]
        for part in self.manifest["partitions"]:
            out[int(part["bucket"])].append(self.path / part["file"])
        return out

    def fit_spec(self) -> EncodingSpec:
        """A spec fitted on the categories of every kept event (`EncodingSpec.fit`)."""
        counts: Counter[str] = Counter()
        for part in self.manifest["partitions"]:
            col = _read(self.path / part["file"], ["category"])["category"]
            for item in pc.value_counts(col.drop_null()).to_pylist():
                counts[item["values"]] += item["counts"]
        return EncodingSpec.fit(chain.from_iterable(repeat(n, c) for n, c in counts.items()))

    def parse_stats(self) -> ParseStats:
        m = self.manifest
        return ParseStats(
            events=int(m["parsed"]),
            unknown_types=Counter(m["unknown_types"]),
            refused_by_field=Counter(m["refused_by_field"]),
        )

    def read(
        self,
        spec: EncodingSpec | None,
        session_gap_s: int,
        now_ms: int,
        progress: bool,
        event_ids: bool = False,
    ) -> SourceRead:
        # Arrow's default pool (mimalloc) keeps the pages a bucket freed: measured on 195k
        # events, 400 B/event still resident after the read against 125 with the system's.
        previous = pa.default_memory_pool()
        pa.set_memory_pool(pa.system_memory_pool())
        try:
            fitted = spec if spec is not None else self.fit_spec()
            stored = self.manifest["encoding"]
            given = fitted.to_dict()
            fast = all(given[k] == stored[k] for k in _RECORD_SETTINGS)
            stats = self.parse_stats()
            users: list[UserHistory] = []
            buckets = self.files_by_bucket()
            self._read_buckets(
                buckets, fitted, fast, session_gap_s, now_ms, stats, users, progress, event_ids
            )
        finally:
            pa.set_memory_pool(previous)
        users.sort(key=lambda u: u.user_id)
        return SourceRead(users, fitted, stats, int(self.manifest["duplicates"]))

    def _read_buckets(
        self,
        buckets: list[list[Path]],
        fitted: EncodingSpec,
        fast: bool,
        session_gap_s: int,
        now_ms: int,
        stats: ParseStats,
        users: list[UserHistory],
        progress: bool,
        event_ids: bool,
    ) -> None:
        with Progress(
            f"read {self.path.name}", int(self.manifest["events"]), unit="ev",
            enabled=progress, transient=True, unit_scale=True, summary=progress,
        ) as bar:  # fmt: skip
            for files in buckets:
                if not files:
                    continue
                # the slow path encodes every field; the ids only when asked for
                columns = (_READ_COLUMNS + ["event_id"] * event_ids) if fast else None
                table = pa.concat_tables(_read(f, columns) for f in files)
                bar.update(table.num_rows)
                table = self._drop_future(table, now_ms, stats)
                users.extend(self._bucket_users(table, fitted, fast, session_gap_s, event_ids))
                del table

    def _drop_future(self, table: pa.Table, now_ms: int, stats: ParseStats) -> pa.Table:
        """Rows stamped over 24 h after `now_ms` are refused, as `parse_event` refuses them."""
        late = pc.greater(table["ts_ms"], now_ms + MAX_FUTURE_MS)
        n = pc.sum(late).as_py() or 0
        if not n:
            return table
        stats.events -= n
        stats.refused_by_field["ts"] += n
        return table.filter(pc.invert(late))

    def _bucket_users(
        self, table: pa.Table, spec: EncodingSpec, fast: bool, gap_s: int, keep_ids: bool
    ) -> list[UserHistory]:
        if table.num_rows == 0:
            return []
        # Stable sort by user: rows of a user stay in (day, ts, line) order, i.e. (ts, line).
        table = table.take(pc.sort_indices(table, sort_keys=[("user_id", "ascending")]))
        if fast:
            records = _numpy_records(table["record"])
        else:
            # ^ the stored records were encoded under other bucket edges: encode again.
            encoded = b"".join(encode_event(e, spec) for e in _row_events(table))
            records = np.frombuffer(encoded, dtype=RECORD_DTYPE).copy()
        records["category"] = _category_codes(table["category"], spec)
        ts = records_ts_ms(records)
        n = table.num_rows
        # User boundaries: where the (sorted) user_id's dictionary index changes.
        uids = pc.dictionary_encode(table["user_id"].combine_chunks())
        index = uids.indices.to_numpy()
        starts = np.flatnonzero(np.diff(index, prepend=-1))
        ends = np.append(starts[1:], n)
        names = uids.dictionary.to_pylist()
        if keep_ids:
            eid_data, eid_off = _string_buffers(table["event_id"])
            eid_bytes = eid_data.tobytes()
        purchases = pc.and_(pc.equal(table["type"], "purchase"), pc.is_valid(table["order_id"]))
        purchase_rows = np.flatnonzero(purchases.to_numpy(zero_copy_only=False))
        order_col = table["order_id"]
        orders: dict[int, dict[str, int]] = {}
        for p in purchase_rows.tolist():
            u = int(np.searchsorted(starts, p, side="right")) - 1
            orders.setdefault(u, {}).setdefault(str(order_col[p].as_py()), p - int(starts[u]))
        out = []
        for u, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            user_id = names[int(index[s])]
            ids = None
            if keep_ids:
                lo = int(eid_off[s])
                ids = EventIds.from_buffers(
                    eid_bytes[lo : int(eid_off[e])], eid_off[s : e + 1] - lo
                )
            user_ts = ts[s:e]
            out.append(
                UserHistory(
                    user_id, records[s:e], ids, user_ts, sessions(user_ts, gap_s), orders.get(u, {})
                )
            )
        return out
