"""Cost of the allow / deny lists (`stream.lists`): load time, memory and lookup per batch.

    riskstream bench lists-lookup --entries 1000000 [--batch 1024] [--out DIR]

Writes a lists file of `--entries` entries (users, devices and payment methods 30 % each, IP
prefixes 10 % over /16, /24 and /32; half deny, half allow; reasons drawn from 1,000), parses it
as the worker does (`load_lists`), and reports: the file's size, the load time, the arrays'
bytes, the process's RSS growth over the load (reasons and Python's transient objects included),
and `ListSet.lookup` per batch of `--batch` events (a third of them hitting an entry), events/s
and µs per event. Prints a markdown table; with --out, also JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from events import Event
from riskstream.bench.core import machine_info
from stream.lists import load_lists


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _write(path: Path, n: int, rng: random.Random) -> dict[str, list[str]]:
    kept: dict[str, list[str]] = {"user": [], "device": [], "payment": [], "ip": []}
    with path.open("w") as fh:
        for i in range(n):
            r = rng.random()
            action = "deny" if i % 2 else "allow"
            reason = f"case {rng.randrange(1000)}: reviewed by the risk team"
            if r < 0.3:
                kind, value = "user", f"u-{i:09d}"
            elif r < 0.6:
                kind, value = "device", f"d-{i:09d}-{rng.getrandbits(32):08x}"
            elif r < 0.9:
                kind, value = "payment", f"pm-{rng.getrandbits(64):016x}"
            else:
                length = rng.choice((24, 32))
                a = rng.getrandbits(32) >> (32 - length) << (32 - length)
                ip = ".".join(str(a >> s & 255) for s in (24, 16, 8, 0))
                kind, value = "ip", f"{ip}/{length}"
            if len(kept[kind]) < 10_000:
                kept[kind].append(value)
            fh.write(f"{action} {kind} {value} 2099-01-01 {reason}\n")
    return kept


def _events(kept: dict[str, list[str]], batch: int, rng: random.Random) -> list[Event]:
    out = []
    for i in range(batch):
        hit = i % 3 == 0
        ip = rng.choice(kept["ip"]).split("/")[0] if hit else f"192.0.2.{i % 250}"
        out.append(Event(
            event_id=f"e{i}", user_id=rng.choice(kept["user"]) if hit else f"x-{i}",
            ts_ms=0, type="click",
            device_id=rng.choice(kept["device"]) if hit else f"dx-{i}",
            payment_method=f"pm-none-{i}", ip=ip,
        ))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="riskstream bench lists-lookup", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lists.txt"
        kept = _write(path, args.entries, rng)
        size = path.stat().st_size
        rss0 = _rss_kib()
        began = time.perf_counter()
        lists = load_lists([path])
        load_s = time.perf_counter() - began
        rss1 = _rss_kib()
    events = _events(kept, args.batch, rng)
    now = int(time.time() * 1000)
    hits = sum(d is not None or a is not None for d, a in lists.lookup(events, now))
    began = time.perf_counter()
    for _ in range(args.rounds):
        lists.lookup(events, now)
    per_batch = (time.perf_counter() - began) / args.rounds
    began = time.perf_counter()  # how fast this Python runs now (a busy host shows here)
    for i in range(200_000):
        hash(("user", i))
    ref_ns = (time.perf_counter() - began) / 200_000 * 1e9
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "entries": lists.entries,
        "file_mb": size / 1e6,
        "load_s": load_s,
        "arrays_mb": lists.nbytes / 1e6,
        "bytes_per_entry": lists.nbytes / max(lists.entries, 1),
        "rss_growth_mb": (rss1 - rss0) / 1024,
        "ip_prefix_lengths": {f"{a}/v{v}": list(ls) for (a, v), ls in lists.net_lengths.items()},
        "batch": args.batch,
        "hits_in_batch": hits,
        "lookup_ms_per_batch": per_batch * 1000,
        "lookup_us_per_event": per_batch / args.batch * 1e6,
        "events_per_s": args.batch / per_batch,
        "reference_tuple_hash_ns": ref_ns,
        "load_average": os.getloadavg(),
    }
    rows = [
        ("entries", f"{result['entries']:,}"),
        ("file size", f"{result['file_mb']:.1f} MB"),
        ("load (parse + build)", f"{load_s:.1f} s"),
        ("arrays", f"{result['arrays_mb']:.1f} MB ({result['bytes_per_entry']:.0f} B/entry)"),
        ("RSS growth over the load", f"{result['rss_growth_mb']:.1f} MB"),
        (f"lookup, batch of {args.batch} ({hits} hit)",
         f"{result['lookup_ms_per_batch']:.2f} ms ({result['lookup_us_per_event']:.2f} µs/event,"
         f" {result['events_per_s']:,.0f} events/s)"),
        ("reference: one `hash((str, int))` in this process", f"{ref_ns:.0f} ns"),
        ("load average (1, 5, 15 min)", ", ".join(f"{x:.1f}" for x in os.getloadavg())),
    ]  # fmt: skip
    print("| measure | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "lists_lookup.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
