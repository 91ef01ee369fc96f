"""Sorting and writing: events sorted by (ts, event_id) across the whole world, labels, feedback.

Event lines carry a fixed-width key prefix (`core.KEY_CHARS`), so sorting the raw bytes sorts
by (ts_ms, event_id). Past `spill_at` lines, sorted runs go to disk and are merged at the end,
which keeps memory flat however large the world.
"""

from __future__ import annotations

import heapq
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Final

import orjson
from tqdm import tqdm

from events.terminal import bars_wanted
from simulator.core import DAY_MS, KEY_CHARS, Episode, rng_for, utc_text

__all__ = ["EventSink", "write_feedback", "write_labels"]

_CHUNK: Final = 1 << 16


class EventSink:
    """Collects key-prefixed event lines (`lines` is appended to by the actors)."""

    def __init__(self, tmp_dir: Path, spill_at: int = 600_000) -> None:
        self.lines: list[bytes] = []
        self._tmp = tmp_dir
        self._spill_at = spill_at
        self._runs: list[Path] = []
        self._spilled = 0

    def maybe_spill(self) -> None:
        """Spill a sorted run to disk once enough lines are held in memory."""
        if len(self.lines) >= self._spill_at:
            self._spill()

    def _spill(self) -> None:
        self.lines.sort()
        path = self._tmp / f"run-{len(self._runs):05d}.bin"
        with path.open("wb") as f:
            f.writelines(self.lines)
        self._runs.append(path)
        self._spilled += len(self.lines)
        self.lines.clear()  # in place: the actors hold `lines.append`

    def write(self, path: Path, progress: bool) -> int:
        """Write every event, sorted, to `path` (atomically); returns the event count."""
        total = self._spilled + len(self.lines)
        part = path.with_name(path.name + ".part")
        with (
            tqdm(
                total=total,
                desc="write events",
                unit="ev",
                unit_scale=True,
                disable=not bars_wanted(progress),
            ) as bar,
            part.open("wb") as out,
        ):
            if not self._runs:
                self.lines.sort()
                for i in range(0, len(self.lines), _CHUNK):
                    out.writelines(line[KEY_CHARS:] for line in self.lines[i : i + _CHUNK])
                    bar.update(min(_CHUNK, len(self.lines) - i))
            else:
                if self.lines:
                    self._spill()
                with ExitStack() as stack:
                    runs = [stack.enter_context(p.open("rb")) for p in self._runs]
                    done = 0
                    for line in heapq.merge(*runs):
                        out.write(line[KEY_CHARS:])
                        done += 1
                        if done == _CHUNK:
                            bar.update(done)
                            done = 0
                    bar.update(done)
                for p in self._runs:
                    p.unlink()
        self.lines.clear()
        os.replace(part, path)
        return total


def write_labels(path: Path, episodes: list[Episode]) -> None:
    """One label line per episode, ordered by start time."""
    ordered = sorted(episodes, key=lambda e: (e.start_ms, e.user_id, e.kind, e.end_ms))
    with path.open("wb") as out:
        for e in ordered:
            line = {
                "user_id": e.user_id,
                "label": e.label,
                "start": utc_text(e.start_ms),
                "end": utc_text(e.end_ms),
                "kind": e.kind,
                "source": "simulator",
            }
            out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))


def write_feedback(path: Path, seed: int, orders: list[tuple[str, int]], share: float = 0.8) -> int:
    """Chargebacks for about `share` of the fraudulent orders, 1-20 days after the purchase.

    Returns how many were written. The trainer may only learn of fraud this way, late.
    """
    rng = rng_for(seed, 3)
    backs: list[tuple[int, str]] = []
    for order, t in sorted(orders, key=lambda o: (o[1], o[0])):
        if rng.random() < share:
            # Most chargebacks arrive within a week or two; a few take the full 20 days.
            delay = int(min(20.0, 1.0 + rng.expovariate(1.0 / 6.0)) * DAY_MS)
            backs.append((t + delay, order))
    backs.sort()
    with path.open("wb") as out:
        for ts, order in backs:
            line = {"order_id": order, "ts": utc_text(ts), "kind": "chargeback"}
            out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
    return len(backs)
