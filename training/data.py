"""Load a corpus: events (JSON lines) grouped into per-user, time-sorted record arrays, plus the
label episodes from `labels.jsonl` and those derived from delayed feedback: chargebacks (by
`order_id`) and analysts' decisions (`riskstream labels export`: a confirmed case is a positive
episode, a false positive a known negative, each known from its `ts`).

Parsing and encoding are the shared ones (`events.parse_event`, `events.encode_event`), so a
record here is byte-for-byte what the stream worker appends to its window.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, repeat
from pathlib import Path
from typing import IO, Any, Final, cast, overload

import numpy as np
import numpy.typing as npt
import orjson

from events import (
    RECORD_DTYPE,
    EncodingSpec,
    InvalidEvent,
    InvalidLabel,
    Label,
    ParseStats,
    encode_event,
    parse_event,
    parse_label,
    parse_ts_ms,
)
from events.window import records_ts_ms
from training.exceptions import DataError
from training.progress import Progress

__all__ = ["FEEDBACK_KINDS", "REVIEW_KINDS", "Corpus", "EventIds", "UserHistory", "load_corpus"]

logger = logging.getLogger(__name__)

#: Offline data is history: the parser's "too far in the future" check is for live streams.
FAR_FUTURE_MS: Final = 4_000_000_000_000
FEEDBACK_KINDS: Final = frozenset({"chargeback", "confirmed_fraud"})
#: Feedback lines from analysts' decisions: a positive episode, or a known negative.
REVIEW_KINDS: Final = frozenset({"review_confirmed", "review_false_positive"})
_LOG_FIRST: Final = 5  # refusals / unknown orders logged one by one before going quiet
_PROGRESS_CHUNK: Final = 1 << 20  # bytes between progress-bar updates


class EventIds(Sequence[str]):
    """A user's event ids packed in one UTF-8 buffer with offsets: ~20 B per id where a list
    of `str` takes ~75 B; an id is decoded when read."""

    __slots__ = ("_blob", "_ends")

    def __init__(self, ids: Sequence[str]) -> None:
        encoded = [i.encode() for i in ids]
        self._blob = b"".join(encoded)
        ends = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=ends[1:])
        self._ends = ends

    def __len__(self) -> int:
        return len(self._ends) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        return self._blob[int(self._ends[i]) : int(self._ends[i + 1])].decode()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventIds):
            return self._blob == other._blob and bool(np.array_equal(self._ends, other._ends))
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EventIds({list(self)!r})"


@dataclass
class UserHistory:
    """One user's events, sorted by (ts, file order), event ids unique."""

    user_id: str
    records: npt.NDArray[np.void]  # RECORD_DTYPE
    event_ids: EventIds
    ts_ms: npt.NDArray[np.int64]
    session: npt.NDArray[np.int32]  # a new session after > session_gap_s of inactivity
    order_ids: dict[str, int]  # order_id -> index of the user's (first) purchase carrying it

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class Corpus:
    """Everything the trainer reads: users sorted by id, the spec that encoded them, episodes."""

    users: list[UserHistory]
    spec: EncodingSpec
    episodes: list[Label]
    parse_stats: ParseStats
    duplicates: int  # events dropped because their event_id was seen before
    refused: int  # lines refused by parse_event
    unknown_orders: int = 0  # feedback lines whose order_id no purchase carries
    session_gap_s: int = 1800
    sources: dict[str, str] = field(default_factory=dict)  # "events"/"labels"/"feedback" -> path
    #: When each episode became known (epoch ms), for those from analysts' decisions; an
    #: episode absent here counts as known from the start (labels, chargebacks).
    known_ms: dict[int, int] = field(default_factory=dict)
    #: Known negatives: spans an analyst judged not to be `label` (false positives).
    negatives: list[Label] = field(default_factory=list)
    negatives_known_ms: list[int] = field(default_factory=list)

    def known_before(self, cut_ms: int) -> Corpus:
        """This corpus without the decisions known at or after `cut_ms` (positives and known
        negatives alike): what a training whose cut is `cut_ms` may learn from."""
        keep = [i for i in range(len(self.episodes)) if self.known_ms.get(i, cut_ms - 1) < cut_ms]
        known = {new: self.known_ms[old] for new, old in enumerate(keep) if old in self.known_ms}
        negs = [i for i, t in enumerate(self.negatives_known_ms) if t < cut_ms]
        dropped = len(self.episodes) - len(keep) + len(self.negatives) - len(negs)
        if dropped:
            logger.info("%d decisions known at or after the cut left out", dropped)
        return replace(
            self,
            episodes=[self.episodes[i] for i in keep],
            known_ms=known,
            negatives=[self.negatives[i] for i in negs],
            negatives_known_ms=[self.negatives_known_ms[i] for i in negs],
        )

    @property
    def n_events(self) -> int:
        """Events kept (after refusals and duplicates)."""
        return sum(len(u.records) for u in self.users)

    def user_index(self) -> dict[str, int]:
        """user_id -> index into `users`."""
        return {u.user_id: i for i, u in enumerate(self.users)}


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


def _lines(path: Path, f: IO[bytes], progress: bool, desc: str) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its newline) for the non-blank lines, with a byte progress bar."""
    size = path.stat().st_size
    with Progress(
        desc, size, unit="B", enabled=progress, transient=True, unit_scale=True, summary=progress
    ) as bar:
        pending = 0
        for lineno, line in enumerate(f, start=1):
            pending += len(line)
            if pending >= _PROGRESS_CHUNK:
                bar.update(pending)
                pending = 0
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield lineno, line
        bar.update(pending)


def _read_events(
    path: Path, spec: EncodingSpec | None, now_ms: int, progress: bool
) -> tuple[_Builder, ParseStats, int]:
    builder, stats, duplicates = _Builder(), ParseStats(), 0
    seen: set[str] = set()
    # Without a spec, encode with a provisional one and fix the category field once the
    # vocabulary is fitted: one pass over the file instead of two.
    enc_spec = spec if spec is not None else EncodingSpec()
    with path.open("rb") as f:
        for lineno, line in _lines(path, f, progress, f"read {path.name}"):
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
            ids = builder.event_ids[slot]
            if event.order_id is not None and event.type == "purchase":
                builder.orders[slot].append((len(ids), event.order_id))
            ids.append(eid)
            builder.records[slot] += encode_event(event, enc_spec)
            if spec is None:
                builder.categories[slot].append(builder.category(event.category))
    if stats.refused > _LOG_FIRST:
        logger.warning("%s: %d event lines refused in all", path, stats.refused)
    return builder, stats, duplicates


def _build_users(
    b: _Builder, spec: EncodingSpec, fix_categories: bool, gap_s: int
) -> list[UserHistory]:
    lut = np.array([spec.category_code(name) for name in b.cat_names], dtype=np.uint8)
    gap_ms = gap_s * 1000
    users: list[UserHistory] = []
    for slot in sorted(range(len(b.user_ids)), key=b.user_ids.__getitem__):
        raw = np.frombuffer(b.records[slot], dtype=RECORD_DTYPE)
        order = np.argsort(records_ts_ms(raw), kind="stable")  # ties keep file order
        records = raw[order]  # a writable copy
        if fix_categories:
            records["category"] = lut[np.frombuffer(b.categories[slot], dtype=np.uint32)[order]]
        ids = b.event_ids[slot]
        in_order = bool((order == np.arange(len(order))).all())
        event_ids = EventIds(ids if in_order else [ids[i] for i in order.tolist()])
        ts = records_ts_ms(records)
        session = np.zeros(len(ts), dtype=np.int32)
        np.cumsum(np.diff(ts) > gap_ms, out=session[1:])
        order_ids: dict[str, int] = {}
        if b.orders[slot]:
            rank = np.empty(len(order), dtype=np.intp)
            rank[order] = np.arange(len(order))
            for pos, oid in sorted((int(rank[p]), o) for p, o in b.orders[slot]):
                order_ids.setdefault(oid, pos)
        users.append(UserHistory(b.user_ids[slot], records, event_ids, ts, session, order_ids))
        # Drop the per-event objects as we go: keeps the peak near one copy of the data.
        b.records[slot], b.categories[slot], b.event_ids[slot] = bytearray(), array("I"), []
    return users


def _read_labels(path: Path) -> list[Label]:
    episodes: list[Label] = []
    with path.open("rb") as f:
        for lineno, line in _lines(path, f, False, "labels"):
            try:
                lab = parse_label(line)
            except InvalidLabel as exc:
                raise DataError(f"{path}:{lineno}: bad label line: {exc}") from exc
            episodes.append(lab)
    return episodes


def _load_feedback(path: Path, lineno: int, line: bytes) -> dict[str, Any]:
    where = f"{path}:{lineno}"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{where}: bad feedback line: not valid JSON ({exc})") from exc
    if type(obj) is not dict:
        raise DataError(f"{where}: bad feedback line: must be a JSON object")
    return cast(dict[str, Any], obj)


def _parse_review(path: Path, lineno: int, obj: dict[str, Any]) -> tuple[Label, int]:
    """A decision's feedback line: (episode, when it became known)."""
    where = f"{path}:{lineno}"
    try:
        known = parse_ts_ms(obj.get("ts"))
    except ValueError as exc:
        raise DataError(f"{where}: ts: {exc}") from exc
    fields = {k: obj.get(k) for k in ("user_id", "label", "start", "end")}
    try:
        lab = parse_label(orjson.dumps(fields))
    except InvalidLabel as exc:
        raise DataError(f"{where}: bad decision line: {exc}") from exc
    return Label(lab.user_id, lab.label, lab.start_ms, lab.end_ms, obj["kind"], "review"), known


def _parse_feedback(path: Path, lineno: int, obj: dict[str, Any]) -> tuple[str, int, str]:
    where = f"{path}:{lineno}"
    order_id, kind = obj.get("order_id"), obj.get("kind")
    if type(order_id) is not str or not order_id:
        raise DataError(f"{where}: order_id: is required and must be a non-empty string")
    if kind not in FEEDBACK_KINDS:
        kinds = sorted(FEEDBACK_KINDS | REVIEW_KINDS)
        raise DataError(f"{where}: kind: must be one of {kinds}, got {kind!r}")
    try:
        ts_ms = parse_ts_ms(obj.get("ts"))
    except ValueError as exc:
        raise DataError(f"{where}: ts: {exc}") from exc
    return order_id, ts_ms, str(kind)


@dataclass
class _Feedback:
    episodes: list[Label] = field(default_factory=list)
    known_ms: dict[int, int] = field(default_factory=dict)  # index into episodes -> known at
    negatives: list[Label] = field(default_factory=list)
    negatives_known_ms: list[int] = field(default_factory=list)
    unknown: int = 0


def _read_feedback(path: Path, users: list[UserHistory]) -> _Feedback:
    """Fraud episodes from the session start (by inactivity) to each charged-back purchase;
    analysts' decisions as positive episodes or known negatives, with when they were known."""
    owner: dict[str, int] = {}
    for ui, user in enumerate(users):  # users are sorted by id: the first owner wins
        for oid in user.order_ids:
            owner.setdefault(oid, ui)
    out = _Feedback()
    episodes = out.episodes
    seen: set[tuple[str, int, int, str]] = set()
    unknown = 0
    with path.open("rb") as f:
        for lineno, line in _lines(path, f, False, "feedback"):
            obj = _load_feedback(path, lineno, line)
            if obj.get("kind") in REVIEW_KINDS:
                episode, known = _parse_review(path, lineno, obj)
                if episode.kind == "review_confirmed":
                    out.known_ms[len(episodes)] = known
                    episodes.append(episode)
                else:
                    out.negatives.append(episode)
                    out.negatives_known_ms.append(known)
                continue
            order_id, _, kind = _parse_feedback(path, lineno, obj)
            who = owner.get(order_id)
            if who is None:
                unknown += 1
                if unknown <= _LOG_FIRST:
                    logger.warning("%s:%d: no purchase carries order %s", path, lineno, order_id)
                continue
            user = users[who]
            k = user.order_ids[order_id]
            first = int(np.searchsorted(user.session, user.session[k], side="left"))
            key = (user.user_id, int(user.ts_ms[first]), int(user.ts_ms[k]), kind)
            if key in seen:  # a second chargeback for the same order adds nothing
                continue
            seen.add(key)
            episodes.append(Label(key[0], "fraud", key[1], key[2], kind, "feedback"))
    if unknown:
        logger.warning("%s: %d feedback lines name an unknown order", path, unknown)
    out.unknown = unknown
    return out


def load_corpus(
    events: Path,
    labels: Path | None = None,
    feedback: Path | None = None,
    *,
    spec: EncodingSpec | None = None,
    session_gap_s: int = 1800,
    progress: bool = True,
    now_ms: int | None = None,
) -> Corpus:
    """Read events (and optionally labels and feedback) into a `Corpus`.

    Refused event lines and duplicate event ids are counted and skipped; a bad label or
    feedback line raises `DataError` naming file:line. Without `spec`, one is fitted on the
    categories of the kept events.
    """
    events = Path(events)
    now = now_ms if now_ms is not None else FAR_FUTURE_MS
    if session_gap_s <= 0:
        raise DataError(f"session_gap_s: must be > 0, got {session_gap_s}")
    for path in (events, labels, feedback):
        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: no such file")
    builder, stats, duplicates = _read_events(events, spec, now, progress)
    fitted = spec if spec is not None else builder.fit_spec()
    users = _build_users(builder, fitted, spec is None, session_gap_s)
    del builder
    episodes = _read_labels(Path(labels)) if labels is not None else []
    fb = _read_feedback(Path(feedback), users) if feedback is not None else _Feedback()
    unknown = fb.unknown
    known_ms = {len(episodes) + i: t for i, t in fb.known_ms.items()}
    episodes.extend(fb.episodes)
    known = {u.user_id for u in users}
    orphans = sum(e.user_id not in known for e in episodes)
    if orphans:
        logger.warning("%d episodes name users without events", orphans)
    corpus = Corpus(
        users=users,
        spec=fitted,
        episodes=episodes,
        parse_stats=stats,
        duplicates=duplicates,
        refused=stats.refused,
        unknown_orders=unknown,
        session_gap_s=session_gap_s,
        known_ms=known_ms,
        negatives=fb.negatives,
        negatives_known_ms=fb.negatives_known_ms,
        sources={
            name: str(p)
            for name, p in (("events", events), ("labels", labels), ("feedback", feedback))
            if p is not None
        },
    )
    logger.info(
        "corpus: %d users, %d events, %d episodes (%d refused, %d duplicates)",
        len(users),
        corpus.n_events,
        len(episodes),
        corpus.refused,
        duplicates,
    )
    return corpus
