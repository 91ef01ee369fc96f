"""The decision service's HTTP side (Starlette): auth, limits, deadline, JSON errors, metrics.

- `POST /v1/decide` an event (the topic's contract) → the decision (`riskstream.decide.decider`).
- `POST /v1/score` the same call, answering the scores, thresholds and versions only.
- `GET /health` Redis and the model; `GET /metrics` Prometheus; `GET /openapi.json` the schema.

`/v1/*` needs an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) from the keys
file; a key over its rate gets 429. A body over the contract's size limit gets 413, an event that
breaks the contract 422 naming the field. The call has a deadline: past it the answer is the
fallback decision, not a hang.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from events import Event, InvalidEvent, load_schema
from events.contract import MAX_EVENT_BYTES
from riskstream.decide.decider import DECISIONS, Decider
from riskstream.decide.keys import KeyStore

__all__ = ["RateLimiter", "create_app"]

log = logging.getLogger(__name__)

_SCORE_FIELDS: Final = ("event_id", "user_id", "scores", "thresholds", "duplicate",
                        "model_version", "rules_version", "fallback", "latency_ms")  # fmt: skip
#: Latency buckets (s): the targets are p50 ≤ 10 ms and p99 ≤ 50 ms.
_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)


@dataclass
class RateLimiter:
    """A token bucket per key name: `rate_per_s` calls a second, bursts of `burst` (0: none)."""

    rate_per_s: float
    burst: float = 0.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, name: str, now: float | None = None) -> bool:
        """Take one token of `name`'s bucket; False when it is empty.

        >>> r = RateLimiter(1.0, burst=2)
        >>> [r.allow("a", now=0.0) for _ in range(3)], r.allow("a", now=1.0)
        ([True, True, False], True)
        """
        if self.rate_per_s <= 0:
            return True
        cap = self.burst or self.rate_per_s
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(name, (cap, t))
            tokens = min(cap, tokens + (t - last) * self.rate_per_s)
            ok = tokens >= 1
            self._buckets[name] = (tokens - 1 if ok else tokens, t)
        return ok


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "decide_latency_seconds", "Time to answer /v1/decide and /v1/score (server side).",
            ["endpoint", "decision"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "decide_requests", "Calls by outcome.", ["endpoint", "outcome"], registry=self.registry
        )
        self.model = Gauge(
            "decide_model_info", "The model and rules versions served (value 1).",
            ["model_version", "rules_version"], registry=self.registry,
        )  # fmt: skip


_Item = tuple[bytes, Event, "asyncio.Future[dict[str, Any] | InvalidEvent]"]


class _Batcher:
    """Concurrent calls as one batch: while a batch runs (one thread, one Redis script call,
    one model run), the calls that arrive queue; the next batch takes them all (one event per
    user: a user's later event waits for the batch after). Nothing waits on purpose unless
    `wait_s` > 0, so a lone call is answered as soon as alone. A call whose caller gave up (the
    deadline) before its batch started is dropped, not run: under overload the queue sheds."""

    def __init__(self, decider: Decider, wait_s: float, max_batch: int) -> None:
        self.decider = decider
        self.wait_s = wait_s
        self.max_batch = max_batch
        self._queue: list[_Item] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, body: bytes, event: Event) -> asyncio.Future[dict[str, Any] | InvalidEvent]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        fut: asyncio.Future[dict[str, Any] | InvalidEvent] = loop.create_future()
        self._queue.append((body, event, fut))
        assert self._wake is not None
        self._wake.set()
        return fut

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rest: list[_Item] = []
        users: set[str] = set()
        for item in self._queue:
            if item[2].done():  # given up by its caller: not run
                continue
            user = item[1].user_id
            if user in users or len(batch) >= self.max_batch:
                rest.append(item)
            else:
                users.add(user)
                batch.append(item)
        self._queue = rest
        return batch

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.wait_s > 0:
                await asyncio.sleep(self.wait_s)
            while batch := self._take():
                items = [(body, event) for body, event, _ in batch]
                now = self.decider.now_ms()
                try:
                    answers = await asyncio.to_thread(self.decider.decide_batch, items, now)
                    results = list(zip(batch, answers, strict=True))
                except Exception as exc:  # a bug: each call of the batch gets it, the loop goes on
                    log.exception("a decision batch failed")
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (*_, fut), answer in results:
                    if not fut.done():
                        fut.set_result(answer)


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def openapi(max_bytes: int) -> dict[str, Any]:
    """The service's OpenAPI 3.1 document (the request body is the event's JSON Schema)."""
    event = load_schema("event")
    decision = {
        "type": "object",
        "required": ["decision", "event_id", "user_id", "scores", "model_version", "fallback"],
        "properties": {
            "decision": {"enum": list(DECISIONS)},
            "scores": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
            "thresholds": {"type": "object", "additionalProperties": {"type": "number"}},
            "heads": {"type": "array"}, "reasons": {"type": "array"},
            "rules_hit": {"type": "array", "items": {"type": "string"}},
            "driving_events": {"type": "array", "items": {"type": "string"}},
            "model_version": {"type": "string"}, "rules_version": {"type": "string"},
            "fallback": {"type": ["string", "null"]}, "latency_ms": {"type": "number"},
        },
    }  # fmt: skip
    error = {"type": "object", "required": ["error", "detail"],
             "properties": {"error": {"type": "string"}, "detail": {"type": "string"},
                            "field": {"type": "string"}}}  # fmt: skip

    def answer(what: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": what, "content": {"application/json": {"schema": schema}}}

    responses = {
        "200": answer("the decision", decision),
        "401": answer("no or unknown API key", error),
        "413": answer(f"body over {max_bytes} bytes", error),
        "422": answer("the event breaks the contract; `field` names it", error),
        "429": answer("the key is over its rate", error),
    }
    body = {"required": True, "content": {"application/json": {"schema": event}}}
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "riskstream decide", "version": "1"},
        "paths": {
            "/v1/decide": {"post": {
                "summary": "allow, review or block one event",
                "requestBody": body, "responses": responses, "security": security,
            }},
            "/v1/score": {"post": {
                "summary": "scores of one event's window",
                "requestBody": body, "responses": responses, "security": security,
            }},
            "/health": {"get": {
                "summary": "Redis and model state", "responses": {"200": {"description": "ok"}},
            }},
        },
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }},
    }  # fmt: skip


def create_app(
    decider: Decider,
    keys: KeyStore,
    *,
    rate_per_s: float = 0.0,
    burst: float = 0.0,
    max_body_bytes: int = MAX_EVENT_BYTES,
    max_in_flight: int = 8,
    batch_wait_s: float = 0.0,
    max_batch: int = 32,
) -> Starlette:
    """The ASGI app around `decider`. At most `max_in_flight` decisions are under way at once
    (queued or running, until the caller's deadline: a call given up stops counting, though a
    batch already running for it goes on until Redis' own timeout, so under Redis stalls the
    bound is loose): beyond that a call gets the fallback decision at once (`"fallback":
    "overloaded"`) instead of queueing behind the others. Concurrent calls are decided in
    batches of up to `max_batch` (`_Batcher`)."""
    limiter = RateLimiter(rate_per_s, burst)
    metrics = _Metrics()
    schema = openapi(max_body_bytes)
    deadline = decider.policy.timeout_s
    in_flight = [0]
    in_flight_lock = threading.Lock()

    batcher = _Batcher(decider, batch_wait_s, max_batch)

    def _done(_fut: asyncio.Future[Any]) -> None:
        with in_flight_lock:
            in_flight[0] -= 1

    async def _call(request: Request, endpoint: str) -> Response:
        began = time.perf_counter()
        key = _presented_key(request)
        name = keys.check(key) if key else None
        if name is None:
            metrics.requests.labels(endpoint, "unauthorized").inc()
            resp = _error(401, "unauthorized", "an API key is needed (Authorization: Bearer)")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        if not limiter.allow(name):
            metrics.requests.labels(endpoint, "rate_limited").inc()
            return _error(429, "rate_limited", f"over {rate_per_s:g} calls/s for this key")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            metrics.requests.labels(endpoint, "too_large").inc()
            return _error(413, "too_large", f"the body is over {max_body_bytes} bytes")
        body = await request.body()
        if len(body) > max_body_bytes:
            metrics.requests.labels(endpoint, "too_large").inc()
            return _error(413, "too_large", f"the body is over {max_body_bytes} bytes")
        try:
            event = decider.parse(body, decider.now_ms())
            with in_flight_lock:
                busy = in_flight[0] >= max_in_flight
                if not busy:
                    in_flight[0] += 1
            if busy:
                result = decider.fallback(event, "overloaded", began)
            else:
                fut = batcher.submit(body, event)
                fut.add_done_callback(_done)
                try:
                    answer = await asyncio.wait_for(
                        fut, timeout=max(0.0, deadline - (time.perf_counter() - began))
                    )
                except TimeoutError:
                    answer = decider.fallback(event, "timeout", began)
                if isinstance(answer, InvalidEvent):
                    raise answer
                result = answer
        except InvalidEvent as exc:
            metrics.requests.labels(endpoint, "invalid").inc()
            return _error(422, "invalid_event", str(exc), field=exc.field)
        elapsed = time.perf_counter() - began
        result["latency_ms"] = round(elapsed * 1000, 3)
        outcome = "fallback" if result["fallback"] else "ok"
        metrics.requests.labels(endpoint, outcome).inc()
        metrics.latency.labels(endpoint, result["decision"]).observe(elapsed)
        metrics.model.labels(result["model_version"], result["rules_version"]).set(1)
        if endpoint == "score":
            result = {k: result[k] for k in _SCORE_FIELDS}
        return Response(orjson.dumps(result), media_type="application/json")

    async def decide(request: Request) -> Response:
        return await _call(request, "decide")

    async def score(request: Request) -> Response:
        return await _call(request, "score")

    async def health(_request: Request) -> Response:
        redis_ok = await asyncio.to_thread(decider.ping)
        serving = decider.slot.current
        return JSONResponse(
            {
                "status": "ok" if redis_ok else "degraded",
                "redis": "ok" if redis_ok else "down",
                "on_redis_down": decider.policy.on_redis_down,
                "model_version": serving.model_version,
                "variant": serving.bundle.variant,
                "rules_version": decider.rules.rules.version,
                "model_reloads": decider.slot.reloads,
                "model_refused": decider.slot.refused,
                "fallbacks": dict(decider.fallbacks),
                "pid": os.getpid(),  # which worker answered (`serve --workers N`)
            },
            status_code=200 if redis_ok else 503,
        )

    async def prometheus(_request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(_request: Request) -> Response:
        return JSONResponse(schema)

    return Starlette(
        routes=[
            Route("/v1/decide", decide, methods=["POST"]),
            Route("/v1/score", score, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ]
    )
