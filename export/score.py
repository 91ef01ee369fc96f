"""`riskstream score`: every event of a file scored as the stream would score it (torch-free).

Events are read in file order (a user's Kafka partition order), appended to an in-memory window
store with the stream's rules (cap N, idempotent by event id) and scored on `select_window`:
the backtest and the parity reference for the worker. Refused lines and redelivered events
are counted, not scored (the worker sends the first to the dead-letter topic, skips the second).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import orjson
from tqdm import tqdm

from events import (
    InMemoryWindowStore,
    InvalidEvent,
    encode_event,
    format_ts_ms,
    parse_event,
    select_window,
)
from events.terminal import bars_wanted
from events.window import Records
from export.exceptions import ExportError
from export.loader import Bundle, load_bundle

if TYPE_CHECKING:
    from training.evaluate import Scorer

__all__ = ["ScoreSummary", "bundle_scorer", "score_file"]

log = logging.getLogger(__name__)

#: Offline files are history: the parser's future bound is for live streams.
_FAR_FUTURE_MS: Final = 4_000_000_000_000
_LOG_FIRST: Final = 5


@dataclass(frozen=True)
class ScoreSummary:
    """What `score_file` did."""

    lines: int
    scored: int
    refused: int
    duplicates: int


def score_file(
    bundle: Bundle, events: Path, out: Path, *, batch_size: int = 256, progress: bool = True
) -> ScoreSummary:
    """Write `{event_id, user_id, ts, fraud, abnormal_click}` per scored event to `out`."""
    store = InMemoryWindowStore(bundle.policy)
    pending: list[tuple[str, str, int, Records]] = []
    lines = refused = duplicates = scored = 0

    def flush(sink: IO[bytes]) -> None:
        nonlocal scored
        probs = bundle.score_windows([w for *_, w in pending], max_batch=batch_size)
        rows = (
            orjson.dumps(
                {
                    "event_id": eid,
                    "user_id": uid,
                    "ts": format_ts_ms(ts),
                    "fraud": float(p[0]),
                    "abnormal_click": float(p[1]),
                }
            )
            + b"\n"
            for (eid, uid, ts, _), p in zip(pending, probs, strict=True)
        )
        sink.writelines(rows)
        scored += len(pending)
        pending.clear()

    try:
        total = events.stat().st_size
        bar_on = bars_wanted(progress)  # \r frames only on a terminal, never in a log
        with events.open("rb") as src, out.open("wb") as sink:
            bar = tqdm(total=total, unit="B", unit_scale=True, desc="score", disable=not bar_on)
            for line in src:
                bar.update(len(line))
                if not line.strip():
                    continue
                lines += 1
                try:
                    event = parse_event(line, now_ms=_FAR_FUTURE_MS)
                except InvalidEvent as exc:
                    refused += 1
                    if refused <= _LOG_FIRST:
                        log.warning("%s line %d refused: %s", events, lines, exc)
                    continue
                result = store.append(event.user_id, encode_event(event, bundle.spec))
                if result.duplicate:
                    duplicates += 1
                    continue
                window = select_window(result.stored, bundle.policy)
                pending.append((event.event_id, event.user_id, event.ts_ms, window))
                if len(pending) >= batch_size * 16:  # sort a few batches' worth by length
                    flush(sink)
            if pending:
                flush(sink)
            bar.close()
    except OSError as exc:
        raise ExportError(f"{exc.filename or events}: {exc.strerror or exc}") from exc
    return ScoreSummary(lines, scored, refused, duplicates)


def bundle_scorer(path: Path) -> Scorer:
    """A bundle's served graph as the trainer's `Scorer`, for `riskstream evaluate`."""
    from training.evaluate import Scorer  # torch: only where a bundle is evaluated

    bundle = load_bundle(path)
    return Scorer(
        bundle.spec,
        bundle.policy,
        bundle.thresholds,
        bundle.manifest.session_gap_s,
        f"bundle {bundle.model_version} ({bundle.variant} on {bundle.provider})",
        score_windows=bundle.score_windows,
    )
