"""The decision bench's load generator: its own process, raw asyncio HTTP/1.1 keep-alive.

`RISKSTREAM_DECIDE_KEY=KEY python -m riskstream.bench.decide_load PORT RATE BODIES` sends each
line of the file BODIES (one JSON event a line) as `POST /v1/decide` at `RATE`/s on a fixed
schedule (request i at t0 + i / RATE), open loop: a request whose turn has come goes out on an
idle connection, or on a new one when all are busy, whatever is still unanswered. Latency is
taken from the scheduled send time to the end of the answer. A pooled connection the service
had already closed (its keep-alive timeout) is found when the request gets no byte back: the
request goes again on a new connection, as HTTP clients do, and is counted (`stale_retries`).
It prints one JSON object (latencies, the service's own `latency_ms`, decisions, errors by
kind, its own CPU seconds) on stdout.

Why not httpx in the bench process: on two cores its per-request cost (~1 ms of CPU) was a large
share of what the service itself spent, and it ran on the same cores as the service.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

__all__ = ["run_load"]


class _Conn:
    """One keep-alive connection; `call` sends a request and reads one answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def call(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body


async def run_load(port: int, key: str, bodies: list[bytes], rate: float) -> dict[str, Any]:
    """Send `bodies` at `rate`/s open loop to 127.0.0.1:`port`; what was seen."""
    head = (
        f"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    ).encode()
    idle: list[_Conn] = []
    latencies: list[float] = []
    server: list[float] = []
    decisions: dict[str, int] = {}
    fallbacks = 0
    errors: dict[str, int] = {}  # by kind: "status 429", "IncompleteReadError", ...
    stale = 0  # idle connections the service had closed (keep-alive timeout): sent again
    opened = 0

    def failed(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one(body: bytes, due: float) -> None:
        nonlocal fallbacks, opened, stale
        request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        conn = idle.pop() if idle else None
        while True:
            reused = conn is not None
            try:
                if conn is None:
                    opened += 1
                    conn = _Conn(*await asyncio.open_connection("127.0.0.1", port))
                status, answer = await conn.call(request)
                break
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if conn is not None:
                    conn.writer.close()
                # A pooled connection closed by the service before it read the request: sent
                # again on a new one, as HTTP clients do (the decision is idempotent by
                # event_id); its latency still runs from the scheduled time.
                if reused and isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
                    stale += 1
                    conn = None
                    continue
                failed(type(exc).__name__)
                return
        done = time.perf_counter()
        idle.append(conn)
        if status != 200:
            failed(f"status {status}")
            return
        latencies.append((done - due) * 1000)
        doc = orjson.loads(answer)
        server.append(float(doc["latency_ms"]))
        decisions[doc["decision"]] = decisions.get(doc["decision"], 0) + 1
        if doc["fallback"]:
            fallbacks += 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    took = await open_loop(bodies, rate, one)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for conn in idle:
        conn.writer.close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "latencies_ms": latencies,
        "server_ms": server,
        "decisions": decisions,
        "fallbacks": fallbacks,
        "errors": sum(errors.values()),
        "errors_by": errors,
        "stale_retries": stale,
        "took_s": took,
        "connections": opened,
        "cpu_s": cpu,
    }


async def open_loop(
    bodies: list[bytes], rate: float, one: Callable[[bytes, float], Coroutine[Any, Any, None]]
) -> float:
    """`one(body, due)` started for body i at t0 + i / `rate`, whatever is still unanswered
    (open loop); waits for all and returns the seconds from t0."""
    t0 = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []
    for i, body in enumerate(bodies):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body, due)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    port, rate, path = int(argv[0]), float(argv[1]), argv[2]
    key = os.environ["RISKSTREAM_DECIDE_KEY"]
    with open(path, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    result = asyncio.run(run_load(port, key, bodies, rate))
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
