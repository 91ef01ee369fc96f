"""Load a corpus: events (JSON lines) grouped into per-user, time-sorted record arrays, plus the
label episodes from `labels.jsonl` and those derived from delayed feedback: chargebacks (by
`order_id`) and analysts' decisions (`riskstream labels export`: a confirmed case is a positive
episode, a false positive a known negative, each known from its `ts`).

Parsing and encoding are the shared ones (`events.parse_event`, `events.encode_event`), so a
record here is byte-for-byte what the stream worker appends to its window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, cast

import numpy as np
import orjson

from events import EncodingSpec, InvalidLabel, Label, ParseStats, parse_label, parse_ts_ms
from training.corpus import FAR_FUTURE_MS, EventIds, EventSource, UserHistory
from training.corpus import read_lines as _lines
from training.exceptions import DataError
from training.jsonl_source import JsonlSource
from training.parquet_source import ParquetSource, is_dataset

__all__ = [
    "FAR_FUTURE_MS",
    "FEEDBACK_KINDS",
    "REVIEW_KINDS",
    "Corpus",
    "EventIds",
    "UserHistory",
    "beside",
    "load_corpus",
    "open_source",
]

logger = logging.getLogger(__name__)

FEEDBACK_KINDS: Final = frozenset({"chargeback", "confirmed_fraud"})
#: Feedback lines from analysts' decisions: a positive episode, or a known negative.
REVIEW_KINDS: Final = frozenset({"review_confirmed", "review_false_positive"})
_LOG_FIRST: Final = 5  # unknown orders logged one by one before going quiet


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


def open_source(events: Path) -> EventSource:
    """The backend for `events`: a dataset folder (`riskstream ingest`) or a JSON-lines file."""
    events = Path(events)
    if events.is_dir():
        if not is_dataset(events):
            raise DataError(
                f"{events}: a folder but not an events dataset (no dataset.json); "
                "give a JSON-lines file or a folder written by `riskstream ingest`"
            )
        return ParquetSource(events)
    if not events.is_file():
        raise DataError(f"{events}: no such file")
    return JsonlSource(events)


def beside(
    events: Path, labels: Path | None, feedback: Path | None
) -> tuple[Path | None, Path | None]:
    """The labels and feedback to read with `events`: those given, else (for a dataset folder)
    the ones kept beside its events."""
    if Path(events).is_dir() and is_dataset(Path(events)):
        source = ParquetSource(Path(events))
        labels = labels if labels is not None else source.labels()
        feedback = feedback if feedback is not None else source.feedback()
    return labels, feedback


def load_corpus(
    events: Path,
    labels: Path | None = None,
    feedback: Path | None = None,
    *,
    spec: EncodingSpec | None = None,
    session_gap_s: int = 1800,
    progress: bool = True,
    now_ms: int | None = None,
    kept_labels: bool = True,
    event_ids: bool = False,
) -> Corpus:
    """Read events (and optionally labels and feedback) into a `Corpus`.

    `events` is a JSON-lines file or a dataset folder (`riskstream ingest`); for a dataset,
    the labels and feedback kept beside it are read when `labels`/`feedback` are not given
    (unless `kept_labels` is false). Refused event lines and duplicate event ids are counted and
    skipped; a bad label or feedback line raises `DataError` naming file:line. Without `spec`,
    one is fitted on the categories of the kept events. Each user's event ids are kept only
    with `event_ids` (nothing in training reads them).
    """
    now = now_ms if now_ms is not None else FAR_FUTURE_MS
    if session_gap_s <= 0:
        raise DataError(f"session_gap_s: must be > 0, got {session_gap_s}")
    for path in (labels, feedback):
        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: no such file")
    source = open_source(events)
    if kept_labels:
        labels = labels if labels is not None else source.labels()
        feedback = feedback if feedback is not None else source.feedback()
    read = source.read(spec, session_gap_s, now, progress, event_ids)
    users, fitted, stats, duplicates = read.users, read.spec, read.parse_stats, read.duplicates
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
