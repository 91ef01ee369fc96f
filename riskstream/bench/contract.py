"""Parse + validate (and encode) throughput on one core, over simulated wire messages."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from events import EncodingSpec, encode_event, parse_event
from events.terminal import bars_wanted
from riskstream.bench.core import BenchResult, pin_to_one_core
from simulator import WorldConfig, simulate_world

__all__ = ["bench_parse"]


def _best_rate(fn: object, lines: list[bytes], repeats: int) -> float:
    assert callable(fn)
    best = 0.0
    for _ in tqdm(range(repeats), desc="  repeats", leave=False, disable=not bars_wanted(True)):
        start = time.perf_counter()
        for line in lines:
            fn(line)
        best = max(best, len(lines) / (time.perf_counter() - start))
    return best


def bench_parse(events: Path | None, limit: int, repeats: int) -> BenchResult:
    """Events/s for parse + validate, and for parse + validate + encode (best of `repeats`)."""
    pinned = pin_to_one_core()
    with tempfile.TemporaryDirectory() as tmp:
        if events is None:
            simulate_world(WorldConfig(users=4000, days=1.0, seed=1), Path(tmp), progress=True)
            events = Path(tmp) / "events.jsonl"
        with events.open("rb") as fh:
            lines = [line for _, line in zip(range(limit), fh, strict=False)]
    now_ms = int(time.time() * 1000)
    spec = EncodingSpec()
    parse_rate = _best_rate(lambda raw: parse_event(raw, now_ms=now_ms), lines, repeats)
    encode_rate = _best_rate(
        lambda raw: encode_event(parse_event(raw, now_ms=now_ms), spec), lines, repeats
    )
    mean_bytes = sum(map(len, lines)) / max(len(lines), 1)
    return BenchResult(
        name="parse",
        rows=[
            {"step": "parse + validate", "events/s": parse_rate, "µs/event": 1e6 / parse_rate},
            {
                "step": "parse + validate + encode",
                "events/s": encode_rate,
                "µs/event": 1e6 / encode_rate,
            },
        ],
        notes=[
            f"{len(lines):,} simulated messages, mean {mean_bytes:.0f} bytes, "
            f"best of {repeats}; {pinned}",
            "target: parse + validate >= 100,000 events/s on one core",
        ],
    )
