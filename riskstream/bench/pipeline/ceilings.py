"""The parts alone: the model on the worker's windows, the Redis window script, cost vs N.

Each works on the benchmark's own event stream, so its figure is comparable with the pipeline's:
the model scores the windows the worker would score (every event's window, in stream order,
contiguous batches of the worker's size); the window script appends the same events.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import redis

from events import RECORD_DTYPE, EncodingSpec, Event, encode_event, parse_event
from events.window import InMemoryWindowStore, Records, WindowPolicy, select_window
from export.loader import Bundle, load_bundle, make_session, run_session, score_windows
from stream.processor import SCORE_CHUNK
from stream.redis_windows import RedisWindowStore

__all__ = [
    "BenchEvents",
    "full_window",
    "load_cpu_bundle",
    "model_ceiling",
    "model_cost_at",
    "parse_encode_ceiling",
    "redis_ceiling",
    "stream_windows",
]

_BUDGET_S: Final = 3.0  # timed seconds per figure


@dataclass(frozen=True)
class BenchEvents:
    """The stream every part of the benchmark runs on: raw lines, keys, parsed events."""

    lines: list[bytes]
    keys: list[bytes]
    events: list[Event]
    ids: list[str]

    @classmethod
    def load(cls, path: Path, limit: int | None = None) -> BenchEvents:
        lines = [line for line in path.read_bytes().splitlines() if line.strip()][:limit]
        events = [parse_event(line) for line in lines]
        keys = [e.user_id.encode() for e in events]
        return cls(lines, keys, events, [e.event_id for e in events])


def stream_windows(bundle: Bundle, events: Sequence[Event]) -> list[Records]:
    """Every event's window, as the worker would score it (in-memory store, same policy)."""
    store = InMemoryWindowStore(bundle.policy)
    out: list[Records] = []
    for event in events:
        result = store.append(event.user_id, encode_event(event, bundle.spec))
        if not result.duplicate:
            out.append(select_window(result.stored, bundle.policy))
    return out


Score = Callable[[Sequence[Records], int], object]


def _time_batches(score: Score, windows: Sequence[Records], batch: int) -> dict[str, float]:
    """Windows/s of `score` on contiguous batches (after one warm-up), and per-batch ms."""
    score(windows[:batch], batch)
    took: list[float] = []
    scored = 0
    start = batch
    while sum(took) < _BUDGET_S or len(took) < 5:
        chunk = windows[start : start + batch]
        if len(chunk) < batch:
            start = 0
            continue
        began = time.perf_counter()
        score(chunk, batch)
        took.append(time.perf_counter() - began)
        scored += len(chunk)
        start += batch
    ms = np.array(took) * 1000
    return {
        "windows_per_s": scored / sum(took),
        "batch_p50_ms": float(np.percentile(ms, 50)),
        "batch_p99_ms": float(np.percentile(ms, 99)),
        "mean_events_per_window": float(np.mean([len(w) for w in windows])),
    }


def model_ceiling(bundle: Bundle, windows: Sequence[Records], batch: int) -> dict[str, float]:
    """The model alone at the worker's batch size, on the stream's own windows, scored as the
    worker scores a batch (length-sorted chunks of `SCORE_CHUNK`)."""
    if len(windows) < 2 * batch:
        raise ValueError(f"need ≥ {2 * batch} windows for batch {batch}, have {len(windows)}")
    chunk = min(batch, SCORE_CHUNK)
    return _time_batches(lambda w, _b: bundle.score_windows(w, max_batch=chunk), windows, batch)


def full_window(bundle: Bundle, n: int) -> Records:
    """A window of `n` events of one user, one a minute (as if the policy's N were `n`)."""
    kinds = ("page_view", "click", "add_to_cart", "click", "search")
    events = [Event(f"cost-{i}", "cost-user", 1_790_000_000_000 + i * 60_000, kinds[i % 5])
              for i in range(n)]  # fmt: skip
    records = b"".join(encode_event(e, bundle.spec) for e in events)
    return select_window(records, WindowPolicy(max_events=n, max_age_s=10**9))


def model_cost_at(bundle: Bundle, max_events: int, batch: int, workdir: Path) -> dict[str, float]:
    """The bundle's architecture exported (untrained: the cost does not depend on weights) for
    windows of `max_events`, timed on full windows of that length, FP32."""
    import torch

    from events import windows_to_inputs
    from export.graphs import export_fp32
    from training.model import EventBert, ModelConfig

    config = {**bundle.manifest.source["model"], "max_len": max_events}
    torch.manual_seed(0)
    model = EventBert(ModelConfig.from_dict(config)).eval()
    window = full_window(bundle, max_events)
    graph = workdir / f"cost-n{max_events}.onnx"
    export_fp32(model, windows_to_inputs([window, window], bundle.spec), graph)
    session = make_session(graph)
    figures = _time_batches(
        lambda w, b: score_windows(lambda x: run_session(session, x), bundle.spec, w, b),
        [window] * (batch * 4),
        batch,
    )
    return figures


def redis_ceiling(
    client: redis.Redis,
    bundle: Bundle,
    events: Sequence[Event],
    batch: int,
    max_events: int,
    *,
    fold: bool = False,
) -> dict[str, float]:
    """The window script alone: `append_batch` of the stream's events in batches, events/s.

    `fold`: the stream's users are folded onto few ids, whose windows are filled (untimed)
    first, so every append returns a full window of `max_events`: the script's cost grows with
    what it returns, and this is its worst case at that N.
    """
    max_age_s = 10**9 if fold else bundle.policy.max_age_s
    policy = WindowPolicy(max_events=max_events, max_age_s=max_age_s)
    prefix = f"rsbench:{uuid.uuid4().hex[:8]}:"
    store = RedisWindowStore(client, policy, prefix=prefix)
    items = [(e.user_id, encode_event(e, bundle.spec)) for e in events]
    warm = batch
    if fold:
        users = max(1, len(items) // (4 * max_events))
        items = [(f"fold{i % users}", rec) for i, (_, rec) in enumerate(items)]
        warm = users * max_events
    for start in range(0, warm, batch):  # loads the script (and fills folded windows)
        store.append_batch(items[start : min(start + batch, warm)])
    items = items[warm:]
    took: list[float] = []
    done = 0
    returned = 0
    try:
        for start in range(0, len(items) - batch + 1, batch):
            began = time.perf_counter()
            results = store.append_batch(items[start : start + batch])
            took.append(time.perf_counter() - began)
            done += batch
            returned += sum(len(r.stored) for r in results)
            if sum(took) >= _BUDGET_S and len(took) >= 5:
                break
    finally:
        for key_batch in _chunks(list(client.scan_iter(match=f"{prefix}*", count=1000)), 500):
            client.delete(*key_batch)
    ms = np.array(took) * 1000
    return {
        "events_per_s": done / sum(took),
        "batch_p50_ms": float(np.percentile(ms, 50)),
        "batch_p99_ms": float(np.percentile(ms, 99)),
        "mean_returned_events": returned / max(done, 1) / 27,
    }


def _chunks(items: list[bytes], size: int) -> list[list[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def load_cpu_bundle(path: Path, variant: str | None) -> Bundle:
    """The bundle as a CPU worker would load it (its default variant unless one is named, ONNX
    Runtime's threads not spinning: `WorkerSettings.inference_spin`)."""
    return load_bundle(path, "cpu", variant=variant, spin=False)


def parse_encode_ceiling(
    lines: Sequence[bytes], spec: EncodingSpec, batch: int
) -> dict[str, float]:
    """Parse + encode alone, events/s: today's per-event path (`parse_event` → `encode_event`,
    what the worker runs) beside the parts a batch-level path could replace: JSON alone per
    message (orjson), JSON of a whole batch in one orjson call, and records packed per event
    (struct) vs a batch of them in one numpy conversion."""
    chunks = [list(lines[i : i + batch]) for i in range(0, len(lines) - batch + 1, batch)]
    if not chunks:
        raise ValueError(f"need ≥ {batch} events for batch {batch}, have {len(lines)}")
    sample = [parse_event(line) for line in chunks[0]]
    records = b"".join(encode_event(e, spec) for e in sample)
    fields = np.frombuffer(records, RECORD_DTYPE).tolist()
    assert RECORD_DTYPE.fields is not None
    pack = struct.Struct("<" + "".join(t[0].char for t in RECORD_DTYPE.fields.values()))
    if b"".join(pack.pack(*f) for f in fields) != records:  # the candidates make the same bytes
        raise AssertionError("the record layout and RECORD_DTYPE disagree")

    def per_event(chunk: list[bytes]) -> object:
        return [encode_event(parse_event(line), spec) for line in chunk]

    def json_each(chunk: list[bytes]) -> object:
        return [orjson.loads(line) for line in chunk]

    def json_batch(chunk: list[bytes]) -> object:
        return orjson.loads(b"[" + b",".join(chunk) + b"]")

    return {
        "parse_encode_per_event": _rate(per_event, chunks),
        "json_per_event": _rate(json_each, chunks),
        "json_per_batch": _rate(json_batch, chunks),
        "pack_per_event": _rate(lambda _c: [pack.pack(*f) for f in fields], [sample]),
        "pack_numpy_batch": _rate(
            lambda _c: np.array(fields, dtype=RECORD_DTYPE).tobytes(), [sample]
        ),
    }


def _rate(work: Callable[[list[Any]], object], chunks: Sequence[list[Any]]) -> float:
    """Items/s of `work` over `chunks`, round and round for about a second."""
    work(chunks[0])
    done, took, i = 0, 0.0, 0
    while took < _BUDGET_S / 3:
        chunk = chunks[i % len(chunks)]
        began = time.perf_counter()
        work(chunk)
        took += time.perf_counter() - began
        done += len(chunk)
        i += 1
    return done / took
