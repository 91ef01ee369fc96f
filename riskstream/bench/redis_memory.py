"""Redis cost of the stream's windows: memory per active user, and `append_batch` events/s.

    riskstream bench redis-memory --users 20000 [--redis-url URL] [--out DIR]

Fills a full N=64 window for every user through `RedisWindowStore.append_batch`, measures the
server's `used_memory` growth per user and MEMORY USAGE of one window key, then appends new
events to random full windows at each batch size (each append pushes the oldest record out,
the stream's steady state) and reports events/s. Prints a markdown table; deletes every key it
wrote (all under a fresh prefix) even when interrupted. On a shared Redis, other clients'
writes blur the `used_memory` figure; MEMORY USAGE is exact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis

from events.encoding import RECORD_DTYPE, RECORD_SIZE
from events.window import WindowPolicy
from riskstream.bench.core import machine_info
from stream.redis_windows import RedisWindowStore

FILL_BATCH = 1024
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def make_records(rng: np.random.Generator, count: int, ts_s: int) -> list[bytes]:
    """`count` click records with random event id hashes (new events, with odds of a clash
    in one window of about 64**2 / 2**49)."""
    records = np.zeros(count, dtype=RECORD_DTYPE)
    records["ts_s"] = ts_s + np.arange(count) // 100
    records["eid_lo"] = rng.integers(0, 2**32, size=count, dtype=np.uint32)
    records["eid_hi"] = rng.integers(0, 2**16, size=count, dtype=np.uint16)
    raw = records.tobytes()
    return [raw[i : i + RECORD_SIZE] for i in range(0, len(raw), RECORD_SIZE)]


def used_memory(client: redis.Redis) -> int:
    """The server's allocated bytes."""
    return int(client.info("memory")["used_memory"])


def fill(store: RedisWindowStore, users: Sequence[str], rng: np.random.Generator) -> float:
    """Give every user a full window (N records, round robin); the seconds it took."""
    n = store.policy.max_events
    records = make_records(rng, n * len(users), 1_793_577_600)
    items = [(users[i % len(users)], rec) for i, rec in enumerate(records)]
    start = time.perf_counter()
    for at in range(0, len(items), FILL_BATCH):
        store.append_batch(items[at : at + FILL_BATCH])
    return time.perf_counter() - start


def throughput(
    store: RedisWindowStore,
    users: Sequence[str],
    batch_size: int,
    events: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Events/s and ms per batch of appending new events to random users' full windows."""
    records = make_records(rng, events, 1_793_600_000)
    picks = rng.integers(0, len(users), size=events)
    items = [(users[int(u)], rec) for u, rec in zip(picks, records, strict=True)]
    batches = [items[at : at + batch_size] for at in range(0, len(items), batch_size)]
    start = time.perf_counter()
    for batch in batches:
        results = store.append_batch(batch)
        assert not any(r.duplicate for r in results)
    elapsed = time.perf_counter() - start
    return events / elapsed, 1000 * elapsed / len(batches)


def cleanup(client: redis.Redis, prefix: str) -> int:
    """Delete every key under `prefix`; how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="riskstream bench redis-memory",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_URL)
    parser.add_argument("--max-events", type=int, default=64, help="N of the window")
    parser.add_argument("--events", type=int, default=200_000, help="appends per batch size")
    parser.add_argument("--batch-sizes", default="1,32,256,1024")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write redis_memory.json here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    prefix = f"rsbench:{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(args.redis_url)
    store = RedisWindowStore(client, WindowPolicy(args.max_events, 7 * 86400), prefix=prefix)
    users = [f"user-{i}" for i in range(args.users)]
    server = client.info("server")
    rows: list[tuple[str, str]] = []
    try:
        store.append("warm-up", make_records(rng, 1, 1)[0])  # loads the script
        store.delete("warm-up")
        before = used_memory(client)
        fill_s = fill(store, users, rng)
        grown = used_memory(client) - before
        key_bytes = store.memory_usage(users[0])
        rows += [
            ("server", f"{server.get('server_name', 'redis')} {server['redis_version']}"),
            ("users (full windows)", f"{args.users:,} × {args.max_events} records"),
            ("value bytes per window", f"{args.max_events * RECORD_SIZE:,}"),
            ("MEMORY USAGE of one window key", f"{key_bytes:,} B (key {store.key(users[0])!r})"),
            ("used_memory growth per user", f"{grown / args.users:,.0f} B"),
            ("fill (batches of 1024)", f"{args.users * args.max_events / fill_s:,.0f} events/s"),
        ]
        for size in (int(s) for s in args.batch_sizes.split(",")):
            # One by one is slow: fewer events keep the run short.
            events = args.events if size > 1 else min(args.events, 20_000)
            rate, ms = throughput(store, users, size, events, rng)
            rows.append(
                (f"append_batch, batch {size}", f"{rate:,.0f} events/s ({ms:.2f} ms/batch)")
            )
    finally:
        deleted = cleanup(client, prefix)
        client.close()
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\n(deleted {deleted:,} keys under {prefix!r})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "name": "redis_memory",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "command": " ".join(
                ["riskstream bench redis-memory", *(sys.argv[1:] if argv is None else argv)]
            ),
            "figures": dict(rows),
        }
        (args.out / "redis_memory.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
