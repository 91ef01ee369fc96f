"""The decision bench's load generator (`riskstream.bench.decide_load`) against a small HTTP/1.1
server of the test's own: a pooled connection the server closed is sent again and counted,
anything else that fails is counted by kind, and nothing failed enters the latencies."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from riskstream.bench.decide_load import run_load

ANSWER = orjson.dumps({"latency_ms": 1.5, "decision": "allow", "fallback": False})


async def _serve(
    per_connection: int, status_of: dict[int, int]
) -> tuple[asyncio.Server, list[int]]:
    """Answers `per_connection` requests on a connection, then closes it while the client may
    still hold it as idle; request i (over all connections) gets `status_of.get(i, 200)`."""
    seen = [0]
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(per_connection):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))  # fmt: skip
            await reader.readexactly(length)
            status = status_of.get(seen[0], 200)
            seen[0] += 1
            body = ANSWER if status == 200 else b"{}"
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body
            )
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await handle(reader, writer)

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    return server, seen, handlers


def _run(per_connection: int, status_of: dict[int, int], n: int) -> tuple[dict[str, Any], int]:
    async def go() -> tuple[dict[str, Any], int]:
        server, seen, handlers = await _serve(per_connection, status_of)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await run_load(port, "k", [b'{"event_id": "e"}'] * n, rate=200.0)
            await asyncio.gather(*handlers)  # the client closed its connections: each ends
        return result, seen[0]

    return asyncio.run(go())


def test_a_connection_closed_by_the_service_is_sent_again_not_counted_an_error() -> None:
    result, answered = _run(per_connection=3, status_of={}, n=40)
    assert answered == 40
    assert result["errors"] == 0
    assert result["errors_by"] == {}
    assert len(result["latencies_ms"]) == 40
    assert result["stale_retries"] >= 1  # every third request found its connection closed
    assert result["decisions"] == {"allow": 40}


def test_failures_are_counted_by_kind_and_kept_out_of_the_latencies() -> None:
    result, answered = _run(per_connection=1000, status_of={3: 429, 7: 503, 8: 429}, n=20)
    assert answered == 20
    assert result["errors_by"] == {"status 429": 2, "status 503": 1}
    assert result["errors"] == 3
    assert len(result["latencies_ms"]) == 17
    assert result["stale_retries"] == 0
