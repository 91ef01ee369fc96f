"""`riskstream bench decide`: latency of the decision service under an open-loop load.

The service runs as its own process (`riskstream decide serve`, one ONNX Runtime thread) on a
real Redis; the windows of `users` users are filled first with `prefill` events each (appended
with the worker's own store, so scoring sees full-length windows). Then, for each rate, requests
are sent on a fixed schedule (request i at t0 + i / rate) whether or not earlier ones have been
answered — an open loop: a slow answer does not slow the sender, so queueing shows in the
latency instead of hiding in a lower rate. Latency is measured from the scheduled send time to
the answer. Beside it, the ceilings of the parts in the same run: one Redis window read, one
window scored by the model alone.

The load comes from its own process by default (`riskstream.bench.decide_load`: raw asyncio
HTTP/1.1 keep-alive, a light client whose CPU is reported beside the service's); `loadgen="httpx"`
is the earlier generator (httpx inside the bench process), kept to compare against.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis

from events import encode_event, parse_event, select_window
from events.contract import EVENT_TYPES
from export import load_bundle
from riskstream.bench.core import BenchResult
from riskstream.bench.decide_load import open_loop
from riskstream.decide.keys import add_key
from riskstream.localstack import find_free_port
from stream.redis_windows import RedisWindowStore

__all__ = ["bench_decide"]

#: A shopper's mix (most of traffic is browsing): random types over all kinds make nearly every
#: window look like an attack, and every alert costs an occlusion (one more model call).
_MIX = {"page_view": 40, "search": 15, "click": 25, "add_to_cart": 6, "remove_from_cart": 2,
        "checkout": 3, "purchase": 3, "login": 3, "logout": 1, "review": 1,
        "coupon_apply": 1}  # fmt: skip
_TYPES = [t for t in _MIX if t in EVENT_TYPES]
_WEIGHTS = [_MIX[t] for t in _TYPES]


def _event(user: int, seq: int, ts_ms: int, run: str) -> dict[str, Any]:
    rng = random.Random(user * 1_000_003 + seq)
    return {
        "event_id": f"{run}-{user}-{seq}", "user_id": f"bench-{run}-{user}", "ts": ts_ms,
        "type": rng.choices(_TYPES, _WEIGHTS)[0], "device_id": f"d{user % 97}",
        "ip": f"10.0.{user % 250}.1",
        "country": "DE", "amount": round(rng.uniform(1, 300), 2), "currency": "EUR",
    }  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def _open_loop(url: str, key: str, bodies: list[bytes], rate: float) -> dict[str, Any]:
    """Send `bodies` at `rate`/s on a fixed schedule; latencies (ms) from the scheduled time."""
    latencies: list[float] = []
    server: list[float] = []  # the service's own time per call (from its handler's start)
    errors = 0
    fallbacks = 0
    decisions = {"allow": 0, "review": 0, "block": 0}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        async def one(body: bytes, due: float) -> None:
            nonlocal errors, fallbacks
            try:
                resp = await client.post("/v1/decide", content=body, headers=headers)
                if resp.status_code != 200:
                    errors += 1
                    return
                answer = orjson.loads(resp.content)
                if answer["fallback"]:
                    fallbacks += 1
                decisions[answer["decision"]] += 1
                server.append(float(answer["latency_ms"]))
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append((time.perf_counter() - due) * 1000)

        took = await open_loop(bodies, rate, one)
    return {"latencies_ms": latencies, "server_ms": server, "decisions": decisions,
            "fallbacks": fallbacks, "errors": errors, "took_s": took}  # fmt: skip


def _row(
    rate: float, sent: int, seen: dict[str, Any], service_cpu_s: float | None
) -> dict[str, Any]:
    lat, server = seen["latencies_ms"], seen["server_ms"]
    took = seen["took_s"]
    decisions = seen["decisions"]
    return {
        "rate_req_s": rate,
        "sent": sent,
        "answered_per_s": round(len(lat) / took, 1),
        "p50_ms": round(_pct(lat, 50), 2),
        "p90_ms": round(_pct(lat, 90), 2),
        "p99_ms": round(_pct(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else float("nan"),
        "server_p50_ms": round(_pct(server, 50), 2),
        "server_p99_ms": round(_pct(server, 99), 2),
        "errors": seen["errors"],
        # what the errors were, and pooled connections found closed and sent again (raw only)
        "errors_by": seen.get("errors_by", {}),
        "stale_retries": seen.get("stale_retries"),
        "fallbacks": seen["fallbacks"],
        "review_or_block": decisions.get("review", 0) + decisions.get("block", 0),
        # CPU in % of one core over the rate's run (the machine has two)
        "loadgen_cpu_pct": round(100 * seen["cpu_s"] / took, 1) if "cpu_s" in seen else None,
        "service_cpu_pct": (
            round(100 * service_cpu_s / took, 1) if service_cpu_s is not None else None
        ),
    }


class _RedisProbe:
    """PINGs Redis every 10 ms from a thread while a rate runs: the Redis server's own answer
    time beside the service's (on a loaded machine Redis waits for a core too)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._stop = threading.Event()
        self.samples: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            began = time.perf_counter()
            try:
                self._client.ping()
            except redis.RedisError:
                continue
            self.samples.append((time.perf_counter() - began) * 1000)

    def __enter__(self) -> _RedisProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()


def _tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of process `pid` and its children (the service's workers)."""
    try:
        import psutil  # type: ignore[import-untyped]

        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        total = 0.0
        for p in procs:
            t = p.cpu_times()
            total += t.user + t.system
        return total
    except Exception:  # psutil missing or a worker gone: the figure is left out
        return None


def _raw_load(port: int, key: str, bodies: list[bytes], rate: float, tmp: Path) -> dict[str, Any]:
    path = tmp / "bodies.jsonl"
    path.write_bytes(b"\n".join(bodies) + b"\n")
    # The API key by the environment: never on a command line (ps, /proc/*/cmdline).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RISKSTREAM_DECIDE_KEY": key}
    done = subprocess.run(
        [sys.executable, "-m", "riskstream.bench.decide_load", str(port), str(rate), str(path)],
        env=env, capture_output=True, check=False, timeout=len(bodies) / rate + 120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.decode()[-2000:]}")
    seen: dict[str, Any] = orjson.loads(done.stdout)
    return seen


def _ceilings(bundle_path: Path, store: RedisWindowStore, user_ids: list[str]) -> dict[str, Any]:
    """One window read from Redis, one window scored by the model alone (ms, median of 300)."""
    bundle = load_bundle(bundle_path, "cpu", variant="fp32", threads=1, spin=False)
    reads, scores = [], []
    windows = []
    for i in range(300):
        began = time.perf_counter()
        stored = store.get(user_ids[i % len(user_ids)])
        reads.append((time.perf_counter() - began) * 1000)
        windows.append(select_window(stored, store.policy))
    for w in windows:
        began = time.perf_counter()
        bundle.score_windows([w])
        scores.append((time.perf_counter() - began) * 1000)
    return {"redis_get_p50_ms": round(statistics.median(reads), 3),
            "model_one_window_p50_ms": round(statistics.median(scores), 3),
            "window_events": int(statistics.median(len(w) for w in windows))}  # fmt: skip


def bench_decide(
    bundle: Path,
    redis_url: str,
    rates: list[float],
    *,
    seconds: float = 10.0,
    users: int = 500,
    prefill: int = 60,
    timeout_ms: int = 100,
    workers: int = 1,
    threads: int = 1,
    http: str = "auto",
    loop: str = "asyncio",
    loadgen: str = "raw",
    max_batch: int = 32,
) -> BenchResult:
    """The service's latency at each of `rates` (requests/s), open loop, on `redis_url`:
    `decide serve --workers W --threads T --http H --loop L`, the load from `loadgen`."""
    if loadgen not in ("raw", "httpx"):
        raise ValueError(f"loadgen: raw or httpx, got {loadgen!r}")
    load_before = os.getloadavg()[0]
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-decide:{run}:"
    client = redis.Redis.from_url(redis_url)
    now_ms = int(time.time() * 1000)
    spec_bundle = load_bundle(bundle, "cpu", variant="fp32", threads=1, spin=False)
    store = RedisWindowStore(client, spec_bundle.policy, prefix=prefix, lateness_s=3600.0)
    start_ms = now_ms - 3_600_000
    for u in range(users):  # windows of `prefill` events, one script call per user
        events = [_event(u, s, start_ms + s * 30_000, run) for s in range(prefill)]
        records = [encode_event(parse_event(orjson.dumps(e), now_ms=now_ms), spec_bundle.spec)
                   for e in events]  # fmt: skip
        store.append_batch([(events[0]["user_id"], r) for r in records])
    ceilings = _ceilings(bundle, store, [f"bench-{run}-{u}" for u in range(users)])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        key = add_key(keys, "bench")
        port = find_free_port()
        log_path = Path(tmp) / "serve.log"
        log_file = log_path.open("wb")  # not a pipe: a full pipe would stall the service
        env = {**os.environ, "RISKSTREAM_REDIS_URL": redis_url, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "riskstream", "decide", "serve", "--bundle", str(bundle),
             "--port", str(port), "--keys-file", str(keys), "--redis-prefix", prefix,
             "--timeout-ms", str(timeout_ms), "--threads", str(threads), "--workers",
             str(workers), "--http", http, "--loop", loop, "--max-batch", str(max_batch)],
            env=env, stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60 + 20 * workers
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"decide serve did not start: {err}")
                time.sleep(0.2)
            seq = prefill
            for n, rate in enumerate([rates[0], *rates]):  # the first rate once more, to warm up
                count = int(rate * seconds)
                bodies = []
                for i in range(count):
                    u = random.Random(seq * 7 + i).randrange(users)
                    ts = int(time.time() * 1000) - 1000
                    bodies.append(orjson.dumps(_event(u, seq + i, ts, run)))
                seq += count
                cpu0 = _tree_cpu_s(proc.pid)
                with _RedisProbe(redis_url) as probe:
                    if loadgen == "raw":
                        seen = _raw_load(port, key, bodies, rate, Path(tmp))
                    else:
                        seen = asyncio.run(_open_loop(url, key, bodies, rate))
                cpu1 = _tree_cpu_s(proc.pid)
                cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
                if n:
                    row = _row(rate, count, seen, cpu)
                    row["redis_ping_p50_ms"] = round(_pct(probe.samples, 50), 2)
                    row["redis_ping_p99_ms"] = round(_pct(probe.samples, 99), 2)
                    rows.append(row)
        finally:
            proc.terminate()
            proc.wait(10)
            log_file.close()
            stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(stale), 500):
                client.delete(*stale[i : i + 500])
    notes = [
        f"bundle {spec_bundle.model_version} (fp32), windows of {ceilings['window_events']} "
        f"events, {users} users, {seconds:g} s per rate, open loop",
        f"service: decide serve --workers {workers} --threads {threads} (ONNX Runtime threads "
        f"per worker) --http {http} --loop {loop} --max-batch {max_batch}; "
        f"load generator: {loadgen} "
        + (
            "(its own process, raw asyncio HTTP/1.1 keep-alive)"
            if loadgen == "raw"
            else "(httpx in the bench process)"
        ),
        "redis_ping_*: a PING every 10 ms from the bench process during each rate (the Redis "
        "server's own answer time: on a loaded machine it waits for a core too)",
        "cpu_pct: % of one core over each rate's run (loadgen: the generator's process; "
        "service: the service and its workers)",
        f"ceilings in the same run: one Redis window GET p50 {ceilings['redis_get_p50_ms']} ms, "
        f"the model alone on one window p50 {ceilings['model_one_window_p50_ms']} ms",
        "latency: from each request's scheduled send time to its answer (client side, HTTP); "
        "server_*: the service's own time from its handler's start (queueing before it excluded)",
        f"load average before: {load_before:.1f}, at the end: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores "
        "(a shared machine: other sessions' tests ran beside it)",
    ]
    return BenchResult("decide", rows, notes)
