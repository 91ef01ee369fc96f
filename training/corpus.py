"""What a corpus is made of, and the interface its readers share.

A corpus is read by one of two backends, each an `EventSource`: JSON lines
(`training.jsonl_source`, the wire contract, one file) or a columnar dataset
(`training.parquet_source`, a folder that `riskstream ingest` writes). Both give the same
`SourceRead`: users sorted by id, each with its records (the shared `events.encode_event`
bytes), event ids, times, sessions and purchase order ids. `training.data.load_corpus` picks
the backend and adds the labels and feedback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol, overload

import numpy as np
import numpy.typing as npt

from events import EncodingSpec, ParseStats
from training.progress import Progress

__all__ = [
    "FAR_FUTURE_MS",
    "EventIds",
    "EventSource",
    "SourceRead",
    "UserHistory",
    "read_lines",
    "sessions",
]

#: Offline data is history: the parser's "too far in the future" check is for live streams.
FAR_FUTURE_MS: Final = 4_000_000_000_000
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

    @classmethod
    def from_buffers(cls, blob: bytes, ends: npt.NDArray[np.integer]) -> EventIds:
        """Ids already packed: `blob[ends[i]:ends[i + 1]]` is id i (UTF-8), `ends[0] == 0`."""
        out = cls.__new__(cls)
        out._blob = blob
        out._ends = np.asarray(ends, dtype=np.int64)
        return out

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
    #: Kept only when asked (`load_corpus(event_ids=True)`): training needs none (a record
    #: carries the id's 48-bit hash), and they were ~24 B of every event's ~140.
    event_ids: EventIds | None
    ts_ms: npt.NDArray[np.int64]
    session: npt.NDArray[np.int32]  # a new session after > session_gap_s of inactivity
    order_ids: dict[str, int]  # order_id -> index of the user's (first) purchase carrying it

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class SourceRead:
    """What a backend gives `load_corpus`."""

    users: list[UserHistory]  # sorted by user_id
    spec: EncodingSpec  # the one given, or fitted on the kept events' categories
    parse_stats: ParseStats
    duplicates: int  # events dropped because their event_id was seen before


class EventSource(Protocol):
    """A corpus backend: where the events are, and how to read them into users."""

    path: Path

    def read(
        self,
        spec: EncodingSpec | None,
        session_gap_s: int,
        now_ms: int,
        progress: bool,
        event_ids: bool = False,
    ) -> SourceRead:
        """Every kept event, grouped by user; without `spec`, one fitted on the categories;
        each user's event ids only with `event_ids`."""
        ...

    def labels(self) -> Path | None:
        """The label file that comes with the events, if any (a dataset keeps one beside)."""
        ...

    def feedback(self) -> Path | None:
        """Likewise the feedback file."""
        ...


def sessions(ts_ms: npt.NDArray[np.int64], gap_s: int) -> npt.NDArray[np.int32]:
    """Session numbers of a user's sorted times: a new one after > `gap_s` of inactivity."""
    session = np.zeros(len(ts_ms), dtype=np.int32)
    np.cumsum(np.diff(ts_ms) > gap_s * 1000, out=session[1:])
    return session


def read_lines(path: Path, f: IO[bytes], progress: bool, desc: str) -> Iterator[tuple[int, bytes]]:
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
