"""The JSON-lines backend of the corpus: one file of events in the wire contract.

Every line is parsed and encoded with the shared `events.parse_event` / `events.encode_event`;
refused lines and repeated event ids are counted and skipped (the first occurrence wins).
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Final

import numpy as np

from events import (
    RECORD_DTYPE,
    RECORD_SIZE,
    EncodingSpec,
    InvalidEvent,
    ParseStats,
    encode_event,
    parse_event,
)
from events.window import records_ts_ms
from training.corpus import EventIds, SourceRead, UserHistory, read_lines, sessions

__all__ = ["JsonlSource"]

logger = logging.getLogger(__name__)

_LOG_FIRST: Final = 5  # refusals logged one by one before going quiet


class _Builder:
    """Per-user accumulators while reading: record bytes, event ids, category codes.

    Records go into one `bytearray` per user and category codes into an `array`: compact
    buffers, not a Python object (~50 B) per event.
    """

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}
        self.user_ids: list[str] = []
        self.records: list[bytearray] = []
        self.event_ids: list[list[str]] = []
        self.categories: list[array[int]] = []  # index into cat_names (0 = absent)
        self.orders: list[list[tuple[int, str]]] = []  # (file-order position, order_id)
        self.cat_index: dict[str | None, int] = {None: 0}
        self.cat_names: list[str | None] = [None]
        self.cat_counts: list[int] = [0]

    def slot(self, user_id: str) -> int:
        slot = self.slots.get(user_id)
        if slot is None:
            slot = self.slots[user_id] = len(self.user_ids)
            self.user_ids.append(user_id)
            self.records.append(bytearray())
            self.event_ids.append([])
            self.categories.append(array("I"))
            self.orders.append([])
        return slot

    def category(self, name: str | None) -> int:
        code = self.cat_index.get(name)
        if code is None:
            code = self.cat_index[name] = len(self.cat_names)
            self.cat_names.append(name)
            self.cat_counts.append(0)
        self.cat_counts[code] += 1
        return code

    def fit_spec(self) -> EncodingSpec:
        # The spec's own fit over every kept event's category, fed from the counts.
        counts = zip(self.cat_names[1:], self.cat_counts[1:], strict=True)
        return EncodingSpec.fit(chain.from_iterable(repeat(n, c) for n, c in counts))


def _read_events(
    path: Path, spec: EncodingSpec | None, now_ms: int, progress: bool, keep_ids: bool
) -> tuple[_Builder, ParseStats, int]:
    builder, stats, duplicates = _Builder(), ParseStats(), 0
    seen: set[str] = set()
    # Without a spec, encode with a provisional one and fix the category field once the
    # vocabulary is fitted: one pass over the file instead of two.
    enc_spec = spec if spec is not None else EncodingSpec()
    with path.open("rb") as f:
        for lineno, line in read_lines(path, f, progress, f"read {path.name}"):
            try:
                event = parse_event(line, now_ms=now_ms)
            except InvalidEvent as exc:
                stats.refused_event(exc)
                if stats.refused <= _LOG_FIRST:
                    logger.warning("%s:%d: event refused: %s", path, lineno, exc)
                continue
            stats.accepted(event)
            eid = event.event_id
            if eid in seen:
                duplicates += 1
                continue
            seen.add(eid)
            slot = builder.slot(event.user_id)
            record = builder.records[slot]
            if event.order_id is not None and event.type == "purchase":
                builder.orders[slot].append((len(record) // RECORD_SIZE, event.order_id))
            if keep_ids:
                builder.event_ids[slot].append(eid)
            record += encode_event(event, enc_spec)
            if spec is None:
                builder.categories[slot].append(builder.category(event.category))
    if stats.refused > _LOG_FIRST:
        logger.warning("%s: %d event lines refused in all", path, stats.refused)
    return builder, stats, duplicates


def _build_users(
    b: _Builder, spec: EncodingSpec, fix_categories: bool, gap_s: int, keep_ids: bool
) -> list[UserHistory]:
    lut = np.array([spec.category_code(name) for name in b.cat_names], dtype=np.uint8)
    users: list[UserHistory] = []
    for slot in sorted(range(len(b.user_ids)), key=b.user_ids.__getitem__):
        raw = np.frombuffer(b.records[slot], dtype=RECORD_DTYPE)
        order = np.argsort(records_ts_ms(raw), kind="stable")  # ties keep file order
        records = raw[order]  # a writable copy
        if fix_categories:
            records["category"] = lut[np.frombuffer(b.categories[slot], dtype=np.uint32)[order]]
        event_ids = None
        if keep_ids:
            ids = b.event_ids[slot]
            in_order = bool((order == np.arange(len(order))).all())
            event_ids = EventIds(ids if in_order else [ids[i] for i in order.tolist()])
        ts = records_ts_ms(records)
        order_ids: dict[str, int] = {}
        if b.orders[slot]:
            rank = np.empty(len(order), dtype=np.intp)
            rank[order] = np.arange(len(order))
            for pos, oid in sorted((int(rank[p]), o) for p, o in b.orders[slot]):
                order_ids.setdefault(oid, pos)
        session = sessions(ts, gap_s)
        users.append(UserHistory(b.user_ids[slot], records, event_ids, ts, session, order_ids))
        # Drop the per-event objects as we go: keeps the peak near one copy of the data.
        b.records[slot], b.categories[slot], b.event_ids[slot] = bytearray(), array("I"), []
    return users


@dataclass
class JsonlSource:
    """Events as JSON lines (one file); labels and feedback are given separately."""

    path: Path

    def read(
        self,
        spec: EncodingSpec | None,
        session_gap_s: int,
        now_ms: int,
        progress: bool,
        event_ids: bool = False,
    ) -> SourceRead:
        builder, stats, duplicates = _read_events(self.path, spec, now_ms, progress, event_ids)
        fitted = spec if spec is not None else builder.fit_spec()
        users = _build_users(builder, fitted, spec is None, session_gap_s, event_ids)
        return SourceRead(users, fitted, stats, duplicates)

    def labels(self) -> Path | None:
        return None

    def feedback(self) -> Path | None:
        return None
